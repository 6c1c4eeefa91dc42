"""Cost of the full extraction over a plain forward, and its memory as the dataset grows.

1. Throughput: ViT-B/16 (random init), 224 px, batches of ``--batch-size`` in memory: images/s of
   the plain forward vs the extraction step (36 sites x 197 tokens projected onto 1000 classes
   and reduced to rank / top-1 / true logit). Target: ratio <= 1.5 (FLOP floor about 1.31).
2. Memory: peak RSS of a whole ``extract()`` run (JPEG folder -> store) at 64 and 512 images,
   each in a fresh process. Target: growth < 10%.

Usage::

    .venv/bin/python benchmarks/extract_overhead.py                 # CPU, both parts
    .venv/bin/python benchmarks/extract_overhead.py --device cuda --batch-size 256 --skip-rss

Store are printed as a markdown table and written to ``benchmarks/results/<name>.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def throughput(variant: str, device: str, batch_size: int, repeats: int, precision: str) -> dict:
    import torch

    import vitcls_utils as vu
    from vitcls_utils.stores.extraction import DEFAULT_KINDS
    from vitcls_utils.stores.site_reducer import SiteReducer
    from vitcls_utils.model.hooks import block_sites
    from vitcls_utils.model.layout import TokenLayout

    model = vu.load_variant(variant, device=device)
    dev = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, 224, 224, generator=gen).to(dev)
    labels = torch.randint(0, model.num_classes, (batch_size,), generator=gen).to(dev)
    sites = block_sites(model, DEFAULT_KINDS)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def plain() -> None:
        with torch.inference_mode(), torch.autocast(dev.type, torch.bfloat16,
                                                    enabled=precision == "bf16"):
            model(images).float().argmax(-1).cpu()

    reducer = SiteReducer(model, sites, precision=precision)

    def full() -> None:
        for tensor in reducer(images, labels).values():
            tensor.cpu()

    forward_s, extract_s = [], []
    plain(), full()  # warm-up
    for _ in range(repeats):  # interleaved, so drift hits both alike
        for fn, times in ((plain, forward_s), (full, extract_s)):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - start)
    fwd, ext = statistics.median(forward_s), statistics.median(extract_s)
    return {"variant": variant, "device": str(dev), "batch_size": batch_size,
            "precision": precision, "sites": len(sites), "tokens": TokenLayout.of(model).n_tokens,
            "forward_img_s": batch_size / fwd, "extract_img_s": batch_size / ext,
            "ratio": ext / fwd, "repeats": repeats,
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
            platform.processor() or platform.machine(), "threads": torch.get_num_threads()}


def make_jpegs(root: Path, n_images: int, per_class: int = 4) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n_images):
        folder = root / str(i // per_class)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    return root


def rss_child(data_dir: str, out: str, variant: str, batch_size: int) -> None:
    """Run one extraction and print its peak resident set size (MiB) as JSON."""
    import vitcls_utils as vu
    from vitcls_utils.datasets.kinds import ImageFolderDataset
    from vitcls_utils.stores.extraction import extract

    model = vu.load_variant(variant, device="cpu")
    dataset = ImageFolderDataset(Path(data_dir), num_classes=model.num_classes)
    start = time.perf_counter()
    extract(model, dataset, out, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"images": len(dataset), "peak_rss_mib": peak_mib, "seconds": seconds}))


def memory(variant: str, batch_size: int, counts) -> list:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for count in counts:
            data = make_jpegs(Path(tmp) / f"jpegs{count}", count)
            result = subprocess.run(
                [sys.executable, __file__, "--rss-child", str(data), "--rss-out",
                 str(Path(tmp) / f"store{count}"), "--variant", variant,
                 "--batch-size", str(batch_size)],
                capture_output=True, text=True, check=True)
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"  {count} images: {rows[-1]}", file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="vit_b16_random")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rss-images", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument("--name", default=None, help="results file name (default from device)")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--rss-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.rss_out, args.variant, args.batch_size)
        return

    result = {"throughput": throughput(args.variant, args.device, args.batch_size,
                                       args.repeats, args.precision)}
    t = result["throughput"]
    print(f"| {t['variant']} | {t['device_name']} ({t['threads']} threads) | batch "
          f"{t['batch_size']} {t['precision']} | forward {t['forward_img_s']:.2f} img/s | "
          f"extraction {t['extract_img_s']:.2f} img/s | ratio {t['ratio']:.3f} (target <= 1.5) |")
    if not args.skip_rss:
        rows = memory(args.variant, args.batch_size, args.rss_images)
        growth = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"] - 1
        result["memory"] = {"runs": rows, "growth": growth}
        print("| images | peak RSS (MiB) | seconds |")
        for row in rows:
            print(f"| {row['images']} | {row['peak_rss_mib']:.0f} | {row['seconds']:.1f} |")
        print(f"peak RSS growth {rows[0]['images']} -> {rows[-1]['images']} images: "
              f"{100 * growth:+.1f}% (target < 10%)")
    name = args.name or f"extract_overhead_{t['device'].split(':')[0]}_{args.precision}"
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written {out}")


if __name__ == "__main__":
    main()
