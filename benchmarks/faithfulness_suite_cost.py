"""Cost of chapter 4's faithfulness suite per image at toy size (catalogue E17), CPU by default.

On the shipped toy ViT (12 blocks, 49 image tokens) and ``--images`` toy images: the maps of
every method; the suite's curves per map method (MoRF, LeRF, deletion, insertion at
``--steps`` points, ROAD at ``--levels`` levels, the imputation included); the imputation
alone; and the randomisation check (cascading and independent, every layer) per map method.
Each is divided by the number of images.

Usage::

    .venv/bin/python benchmarks/faithfulness_suite_cost.py [--images 24] [--device cuda]

Prints a markdown table and writes ``benchmarks/results/faithfulness_suite_cost.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def seconds(fn) -> float:
    """Wall time of one call of ``fn()``."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--levels", type=int, default=9)
    args = parser.parse_args()

    import numpy as np

    from vitcls_utils.analysis import faithfulness_suite as suite
    from vitcls_utils.analysis import randomisation_check as check
    from vitcls_utils.analysis import suite_maps
    from vitcls_utils.datasets.kinds import build_dataset
    from vitcls_utils.model.loading import load_variant

    model = load_variant("toy", device=args.device)
    data = build_dataset("toy", None, num_classes=24, n_per_class=5)
    images, labels, _ = suite_maps.sample_images(model, data, args.images)
    n = len(images)
    rows = []
    maps = {}
    took = seconds(lambda: maps.update(suite_maps.method_maps(model, images, labels)))
    rows.append({"what": f"maps of {len(maps) - 1} methods and the random map", "value": took / n})
    levels = suite.road_levels(args.levels)
    for method in ("class_space", "random"):
        took = seconds(lambda: suite.suite_curves(model, images, labels, maps[method],
                                                  args.steps, levels))
        rows.append({"what": f"every curve of one map ({method}): 4 x {args.steps + 1} points "
                             f"+ ROAD 2 x {len(levels)} levels", "value": took / n})
    source = images.numpy()
    removed = np.zeros(source.shape[-2:], dtype=bool)
    removed[: int(0.9 * removed.shape[0])] = True
    took = seconds(lambda: [suite.noisy_linear_impute(image, removed) for image in source])
    rows.append({"what": "ROAD's imputation alone, 90% of the pixels", "value": took / n})
    few = max(2, n // 3)
    for method in ("gradient", "class_space", "gradient_rollout"):
        for mode in check.MODES:
            took = seconds(lambda: check.mprt(model, images[:few], labels[:few],
                                              suite_maps.map_function(method), mode=mode))
            rows.append({"what": f"randomisation check, {method}, {mode} "
                                 f"({len(check.randomisable_layers(model))} layers)",
                         "value": took / few})
    print(f"| per image ({n} toy images, {args.device}) | seconds |\n|---|---|")
    for row in rows:
        print(f"| {row['what']} | {row['value']:.3f} |")
    out = HERE / "results" / "faithfulness_suite_cost.json"
    out.write_text(json.dumps({"device": args.device, "machine": platform.machine(),
                               "cpus": os.cpu_count(), "images": n, "steps": args.steps,
                               "levels": len(levels), "unit": "s per image", "rows": rows},
                              indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
