"""Issue 21's one-GPU measurements, in one script that fits a short loan of a GPU machine.

1. Extraction img/s of a random-init ViT-B/16 (36 sites x 197 tokens x 1000 classes) at fp32 and
   at bf16 (forward in bfloat16, projection in fp32), against the plain forward on the same
   device, over batch sizes (the largest that fits is the one to use), with peak GPU memory.
2. Ranks that change under bf16: the same images reduced at fp32 and bf16; the share of
   (image, site, token) entries whose true-class rank differs, whose top-1 differs, and the
   largest rank change, per site kind.
3. Decoding: JPEG decode and preprocessing img/s of the stimulus loader with 0..N workers, to
   say whether decoding or the model bounds a run, and the same loader reading the
   preprocessed-stimulus cache (``vitcls cache``) instead, with the cache's build rate.
4. ``extract()`` end to end on those JPEGs (cache, forward, reduction, rows synced to disk) at
   the fastest fp32 batch, in fp32 and bf16.

Needs torch, timm, numpy and Pillow (no papermill, no internet). Writes
``benchmarks/results/gpu_scale.json`` (or ``--out``) and prints markdown tables.

Usage::

    python benchmarks/gpu_scale.py --device cuda                 # the full measurement
    python benchmarks/gpu_scale.py --device cpu --smoke          # a seconds-long check
    python benchmarks/gpu_scale.py --device cpu --decode-only --decode-images 1024 --workers 0 2
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(model, batch_size: int, precision: str, repeats: int) -> dict:
    """img/s of the plain forward and of the extraction step, and peak memory, at one batch."""
    import torch

    from vitcls_utils.stores.extraction import DEFAULT_KINDS
    from vitcls_utils.model.hooks import block_sites
    from vitcls_utils.stores.site_reducer import SiteReducer

    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, 224, 224, generator=gen).to(device)
    labels = torch.randint(0, model.num_classes, (batch_size,), generator=gen).to(device)
    reducer = SiteReducer(model, block_sites(model, DEFAULT_KINDS), precision=precision)

    def plain() -> None:
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16,
                                                    enabled=precision == "bf16"):
            model(images).float().argmax(-1).cpu()

    def full() -> None:
        for tensor in reducer(images, labels).values():
            tensor.cpu()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    plain(), full()  # warm-up
    times = {"plain": [], "full": []}
    for _ in range(repeats):
        for name, fn in (("plain", plain), ("full", full)):
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    plain_s, full_s = (statistics.median(times[k]) for k in ("plain", "full"))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"batch_size": batch_size, "precision": precision,
            "forward_img_s": batch_size / plain_s, "extract_img_s": batch_size / full_s,
            "ratio": full_s / plain_s, "peak_gib": peak}


def rank_changes(model, n_images: int, batch_size: int) -> list:
    """Per site kind: share of entries whose rank or top-1 differs between fp32 and bf16."""
    import torch

    from vitcls_utils.stores.extraction import DEFAULT_KINDS
    from vitcls_utils.model.hooks import block_sites
    from vitcls_utils.stores.site_reducer import SiteReducer

    device = next(model.parameters()).device
    sites = block_sites(model, DEFAULT_KINDS)
    out = {p: {"rank": [], "top1": []} for p in ("fp32", "bf16")}
    gen = torch.Generator().manual_seed(1)
    for start in range(0, n_images, batch_size):
        count = min(batch_size, n_images - start)
        images = torch.randn(count, 3, 224, 224, generator=gen).to(device)
        labels = torch.randint(0, model.num_classes, (count,), generator=gen).to(device)
        for precision in out:
            reduced = SiteReducer(model, sites, precision=precision)(images, labels)
            for key in ("rank", "top1"):
                out[precision][key].append(reduced[key].cpu().numpy())
    arrays = {p: {k: np.concatenate(v) for k, v in d.items()} for p, d in out.items()}
    rows = []
    for kind in DEFAULT_KINDS:
        cols = [i for i, s in enumerate(sites) if s.endswith(kind)]
        a, b = (arrays[p]["rank"][:, cols].astype(np.int64) for p in ("fp32", "bf16"))
        ta, tb = (arrays[p]["top1"][:, cols] for p in ("fp32", "bf16"))
        rows.append({"kind": kind, "entries": int(a.size),
                     "rank_changed_pct": float(100 * (a != b).mean()),
                     "rank0_changed_pct": float(100 * ((a == 0) != (b == 0)).mean()),
                     "top1_changed_pct": float(100 * (ta != tb).mean()),
                     "max_rank_change": int(np.abs(a - b).max()),
                     "median_change_where_changed": float(np.median(np.abs(a - b)[a != b]))
                     if (a != b).any() else 0.0})
    return rows


def write_jpegs(root: Path, n_images: int) -> None:
    """``n_images`` random 500x375 JPEGs (ImageNet's typical size) in 10 class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n_images):
        folder = root / str(i % 10)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (375, 500, 3), dtype=np.uint8)).save(
            folder / f"{i:05d}.jpg", quality=90)


def end_to_end(model, n_images: int, batch_size: int, workers: int) -> list:
    """img/s of ``extract()`` itself (loader from the stimulus cache, forward, reduction,
    rows written and synced to disk, progress files) on ``n_images`` JPEGs, fp32 and bf16."""
    from vitcls_utils.stores import stimulus_cache
    from vitcls_utils.datasets.kinds import ImageFolderDataset
    from vitcls_utils.stores.extraction import extract

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp) / "images", n_images)
        preprocess = model.vitcls_info.variant.preprocess
        stimulus_cache.build(ImageFolderDataset(Path(tmp) / "images", 1000), preprocess,
                             Path(tmp) / "out", num_workers=workers, progress=False)
        for precision in ("fp32", "bf16"):
            dataset = ImageFolderDataset(Path(tmp) / "images", 1000)
            start = time.perf_counter()
            extract(model, dataset, Path(tmp) / "out" / precision, batch_size=batch_size,
                    num_workers=workers, precision=precision, progress=False)
            _sync(next(model.parameters()).device)
            rows.append({"precision": precision, "images": n_images, "batch": batch_size,
                         "img_s": n_images / (time.perf_counter() - start)})
    return rows


def decode_rate(n_images: int, workers, device) -> list:
    """img/s of the stimulus loader (JPEG decode + the ViT-B/16 preprocessing), decoding the
    JPEGs and reading them from the preprocessed-stimulus cache, and the cache's build rate."""
    from vitcls_utils.stores import stimulus_cache
    from vitcls_utils.datasets.kinds import ImageFolderDataset
    from vitcls_utils.stores.stimulus_loader import stimulus_loader
    from vitcls_utils.model.layout import TokenLayout
    from vitcls_utils.datasets.preprocess import HF_VIT

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp) / "images", n_images)
        layout = TokenLayout(1, (14, 14), True)

        def rate(dataset, count: int) -> float:
            loader = stimulus_loader(dataset, HF_VIT, layout, 64, num_workers=count,
                                     device=device)
            start = time.perf_counter()
            for _ in loader:
                pass
            return n_images / (time.perf_counter() - start)

        for count in workers:
            rows.append({"source": "JPEG decode", "workers": count,
                         "img_s": rate(ImageFolderDataset(Path(tmp) / "images", 10), count)})
        start = time.perf_counter()
        stimulus_cache.build(ImageFolderDataset(Path(tmp) / "images", 10), HF_VIT,
                             Path(tmp) / "results", num_workers=max(workers), progress=False)
        rows.append({"source": "cache build", "workers": max(workers),
                     "img_s": n_images / (time.perf_counter() - start)})
        for count in workers:
            cached = stimulus_cache.use(ImageFolderDataset(Path(tmp) / "images", 10),
                                        Path(tmp) / "results")
            rows.append({"source": "cache read", "workers": count, "img_s": rate(cached, count)})
    return rows


def table(rows: list) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                       for v in row.values()) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variant", default="vit_b16_random")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rank-images", type=int, default=1024)
    parser.add_argument("--decode-images", type=int, default=2048)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4, 8, 16])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the script")
    parser.add_argument("--decode-only", action="store_true",
                        help="only the decoding and cache rates (no model: a CPU measurement)")
    parser.add_argument("--out", default=str(HERE / "results" / "gpu_scale.json"))
    args = parser.parse_args()
    if args.smoke:
        args.batch_sizes, args.repeats, args.rank_images = [2], 1, 4
        args.decode_images, args.workers = 8, [0]
    import torch

    from vitcls_utils.model.loading import load_variant

    if args.decode_only:
        rows = decode_rate(args.decode_images, args.workers, torch.device(args.device))
        print(table(rows))
        return
    model = load_variant(args.variant, device=args.device)
    device = next(model.parameters()).device
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "variant": args.variant, "throughput": []}
    for precision in ("fp32", "bf16"):
        for batch_size in args.batch_sizes:
            try:
                row = throughput(model, batch_size, precision, args.repeats)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                print(f"batch {batch_size} at {precision}: out of memory", file=sys.stderr)
                break
            result["throughput"].append(row)
            print(row, file=sys.stderr, flush=True)
    result["rank_changes"] = rank_changes(model, args.rank_images, min(args.batch_sizes))
    result["decode"] = decode_rate(args.decode_images, args.workers, device)
    best = max((r for r in result["throughput"] if r["precision"] == "fp32"),
               key=lambda r: r["extract_img_s"])["batch_size"]
    result["end_to_end"] = end_to_end(model, args.decode_images, best, max(args.workers))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for name in ("throughput", "rank_changes", "decode", "end_to_end"):
        print(f"\n{name} ({result['device']})\n\n{table(result[name])}")


if __name__ == "__main__":
    main()
