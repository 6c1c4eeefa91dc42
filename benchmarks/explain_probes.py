"""Cost of the chapter-4 analyses on ViT-B/32 (random init), CPU by default.

1. Maps: seconds per image of each explanation method (batches of ``--batch-size``).
2. One perturbation curve: 48 forwards per image (n = 1..48 kept image tokens), per image.
3. Linear probes: the closed-form probes of one site (50 tokens) from ``--train`` images, and
   all 36 sites x 50 tokens fitted and applied in site groups under the 2 GB budget.

Usage::

    .venv/bin/python benchmarks/explain_probes.py

Prints a markdown table and writes ``benchmarks/results/explain_probes.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def write_images(root: Path, n_images: int, per_class: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n_images):
        folder = root / str(i // per_class)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(
            folder / f"{i}.jpg", quality=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="vit_b32_random")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--train", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch

    import vitcls_utils as vu
    from vitcls_utils.analysis import explanation_maps as explain, faithfulness, probing
    from vitcls_utils.model.hooks import block_sites

    model = vu.load_variant(args.variant, device=args.device)
    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "test", args.images, per_class=5, seed=0)
        write_images(root / "train", args.train, per_class=10, seed=1)
        test = vu.ImageFolderDataset(root / "test", num_classes=model.num_classes)
        train = vu.ImageFolderDataset(root / "train", num_classes=model.num_classes)
        maps = {}
        for method in explain.METHODS:
            started = time.perf_counter()
            maps[method] = explain.dataset_maps(method, model, test, batch_size=args.batch_size)
            timings[f"map: {method} (s/image)"] = (time.perf_counter() - started) / len(test)
        loader = explain.stimulus_batches(model, test, args.batch_size)
        started = time.perf_counter()
        faithfulness.faithfulness_curve(model, loader, explain.orders_from_maps(maps["class_space"]))
        timings["one perturbation curve, 48 points (s/image)"] = \
            (time.perf_counter() - started) / len(test)
        sites = block_sites(model, probing.KINDS)
        started = time.perf_counter()
        probes = probing.fit_probes(model, train, batch_size=args.batch_size, progress=False,
                                    sites=sites[:1])
        one = time.perf_counter() - started
        timings[f"fit the 50 probes of one site on {len(train)} images (s)"] = one
        started = time.perf_counter()
        probing.evaluate_probes(model, probes, test, batch_size=args.batch_size, progress=False)
        timings["apply one site's probes (s/image)"] = (time.perf_counter() - started) / len(test)
        started = time.perf_counter()
        probing.probe_results(model, train, test, batch_size=args.batch_size, progress=False)
        timings[f"fit and apply all 36 x 50 probes, {len(train)} + {len(test)} images, "
                f"2 GB groups (s)"] = time.perf_counter() - started

    record = {"variant": args.variant, "device": args.device, "images": args.images,
              "train_images": args.train, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "machine": platform.machine(), "timings": timings}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "explain_probes.json").write_text(json.dumps(record, indent=1))
    print("| step | time |\n|---|---|")
    for name, value in timings.items():
        print(f"| {name} | {value:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
