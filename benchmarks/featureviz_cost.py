"""Cost of chapter 6's feature visualisation and top-image pass, CPU by default.

1. Feature visualisation of one FFN unit on the toy ViT with Ghiasi et al.'s recipe (400 steps
   x 8 copies), for a unit of the first, middle and last block (the forward stops at the
   unit's block), and on a random-init ViT-B/16-384 (``--big-steps`` steps, per step).
2. The top-image pass: every unit of every block ranked in one streamed pass, images per
   second, against a plain forward of the same images; on the toy, and on ViT-B/16-384.

Usage::

    .venv/bin/python benchmarks/featureviz_cost.py [--device cuda]

Prints a markdown table and writes ``benchmarks/results/featureviz_cost.json``.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def seconds(fn, repeats: int = 1) -> float:
    """Median wall time of ``fn()``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--big-steps", type=int, default=3)
    parser.add_argument("--big-images", type=int, default=15)
    args = parser.parse_args()

    import torch

    from vitcls_utils.analysis import featureviz
    from vitcls_utils.datasets.kinds import build_dataset
    from vitcls_utils.running.dry_run import fabricate_imagenet_s
    from vitcls_utils.model.loading import load_variant

    rows = []
    toy = load_variant("toy", device=args.device)
    for block in (0, 5, 11):
        took = seconds(lambda: featureviz.visualize(toy, block, 0))
        rows.append({"what": f"toy: visualise one unit of block {block + 1} (400 x 8)",
                     "value": took, "unit": "s"})
    data = build_dataset("toy", None, num_classes=24)
    took = seconds(lambda: featureviz.top_images(toy, data, k=8, progress=False))
    rows.append({"what": f"toy: top images of all 3072 units, {len(data)} images, one pass",
                 "value": len(data) / took, "unit": "img/s"})
    loader = [torch.stack([toy.vitcls_info.variant.preprocess(data.load(i)[0])
                           for i in range(s, min(s + 32, len(data)))]).to(args.device)
              for s in range(0, len(data), 32)]

    def plain():
        with torch.no_grad():
            for x in loader:
                toy(x)
    rows.append({"what": "toy: plain forward of the same images (decoded beforehand)",
                 "value": len(data) / seconds(plain, 3), "unit": "img/s"})

    import tempfile

    big = load_variant("ghiasi_b16_384_random", device=args.device)
    recipe = featureviz.Recipe(steps=args.big_steps)
    took = seconds(lambda: featureviz.visualize(big, 11, 0, recipe))
    rows.append({"what": "ViT-B/16-384 random: one visualisation step, last block (8 copies)",
                 "value": took / (args.big_steps + 1), "unit": "s/step"})
    with tempfile.TemporaryDirectory() as tmp:
        tree = fabricate_imagenet_s(Path(tmp), n_classes=max(1, args.big_images // 5),
                                    n_images=5)  # ImageNet-S reads 5 per class
        images = build_dataset("imagenet-s", str(tree), num_classes=1000)
        took = seconds(lambda: featureviz.top_images(big, images, k=8, batch_size=8,
                                                     progress=False))
        rows.append({"what": f"ViT-B/16-384 random: top images of all 36864 units, "
                             f"{len(images)} images, one pass",
                     "value": len(images) / took, "unit": "img/s"})

    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if args.device.startswith("cuda"):
        machine = torch.cuda.get_device_name(0)
    print(f"| measured on {machine} | value |\n|---|---|")
    for row in rows:
        print(f"| {row['what']} | {row['value']:.2f} {row['unit']} |")
    out = HERE / "results" / "featureviz_cost.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "device": args.device, "rows": rows},
                              indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
