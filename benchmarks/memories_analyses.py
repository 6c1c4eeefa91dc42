"""Time of the chapter-3 (key-value memory) analyses, separately from the extraction they read.

ViT-B/16 at random init on ``--images`` synthetic JPEGs (5 per class): one extraction pass with
the chapter-3 sites and top-5 key indices, then each analysis of ``vitcls_utils.analysis.memories`` on
the store (value projections, E5b, E6, E10, E11 both rules, E12, E13), timed one by one.

Usage::

    .venv/bin/python benchmarks/memories_analyses.py            # 500 images, CPU

Prints a markdown table and writes ``benchmarks/results/memories_analyses.json``.
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


def write_images(root: Path, n_images: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(n_images):
        folder = root / str(i // 5)  # class index folders, 5 images each
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="vit_b16_random")
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    import torch

    import vitcls_utils as vu
    from vitcls_utils.analysis import memories as mem
    from vitcls_utils.stores.extraction import extract

    timings = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "images", args.images)
        model = vu.load_variant(args.variant, device=args.device)
        dataset = vu.ImageFolderDataset(root / "images", num_classes=model.num_classes)
        started = time.perf_counter()
        path = extract(model, dataset, root / "out", kinds=mem.KINDS, key_topk=mem.KEY_TOPK,
                          batch_size=args.batch_size, progress=False)
        timings["extraction (4 site kinds + top-5 keys)"] = time.perf_counter() - started
        res = vu.open_store(path)
        # a random model gets every image wrong, which would skip E12's test: mark 80% right
        right = np.random.default_rng(0).random(len(res.labels)) < 0.8
        res.pred = np.where(right, res.labels, res.pred)
        control = vu.load_variant(args.variant, device="cpu", seed=1)

        def timed(name, fn):
            started = time.perf_counter()
            value = fn()
            timings[name] = time.perf_counter() - started
            return value

        memories = timed("value projections E·W (model)", lambda: mem.Memories.of(model))
        random = mem.Memories.of(control)
        agreement = timed("E10 class-value agreement",
                          lambda: mem.class_value_agreement(memories))
        timed("E10 Wilcoxon vs random (per block x layer)", lambda: mem.agreement_vs_random(
            agreement, mem.class_value_agreement(random)))
        timed("E5b sub-layer change rate (both definitions)", lambda: (
            mem.sublayer_change_rate(res), mem.sublayer_change_rate(res, exact=True)))
        timed("E6 residual composition (both)", lambda: (
            mem.residual_composition(res), mem.residual_composition(res, paper=True)))
        timed("E11 key-value agreement (code rule)",
              lambda: mem.key_value_agreement(res, memories))
        timed("E11 key-value agreement (paper's text)",
              lambda: mem.key_value_agreement(res, memories, paper_text=True))
        timed("E12 correct vs misclassified (300 permutations)",
              lambda: mem.correct_vs_misclassified(res, memories))
        timed("E13 memory compositionality", lambda: mem.memory_compositionality(res, memories))

    analyses = sum(v for k, v in timings.items() if not k.startswith("extraction"))
    record = {"variant": args.variant, "images": args.images, "device": args.device,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "machine": platform.machine(), "timings_s": timings,
              "analyses_total_s": analyses}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "memories_analyses.json").write_text(json.dumps(record, indent=1))
    print("| step | seconds |\n|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| **all analyses** | **{analyses:.2f}** |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
