"""Cost of chapter 8's tuned class-space lens, CPU by default.

1. The toy ViT: collecting the residuals of the training split (240 images, 8 image tokens
   each), training every translator for the notebook's 300 steps, and the held-out comparison.
2. ViT-B/16 size (random init, ``vit_b16_random``, 224 px, 1000 classes): the lens's readout
   per image, every block and every token through its translator and the final norm and head,
   against a plain forward of the same images; and the seconds of one training step on
   ``--rows`` rows per kind.

Usage::

    .venv/bin/python benchmarks/tuned_lens_cost.py [--device cuda]

Prints a markdown table and writes ``benchmarks/results/tuned_lens_cost.json``.
"""
from __future__ import annotations

import argparse
import json
import os
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
    parser.add_argument("--images", type=int, default=4, help="B/16 images per timing")
    parser.add_argument("--rows", type=int, default=64, help="B/16 rows per kind per step")
    args = parser.parse_args()

    import torch

    from vitcls_utils.analysis import tuned_lens as tl
    from vitcls_utils.datasets.kinds import ToyDataset
    from vitcls_utils.model.hooks import capture
    from vitcls_utils.model.loading import load_variant

    rows = []
    toy = load_variant("toy", device=args.device)
    train, test = ToyDataset(split="train", n_per_class=10), ToyDataset(n_per_class=5)
    data = {}
    took = seconds(lambda: data.update(train=tl.collect(toy, train)))
    rows.append({"what": f"toy: collect residuals, {len(train)} training images", "value": took,
                 "unit": "s"})
    data["test"] = tl.collect(toy, test, tokens_per_image=10 ** 6)
    lens = {}
    took = seconds(lambda: lens.update(l=tl.train_lens(toy, data["train"], steps=300, lr=3e-3)))
    rows.append({"what": "toy: train all 24 translators (2 kinds x 12 blocks), 300 steps",
                 "value": took, "unit": "s"})
    took = seconds(lambda: tl.compare(lens["l"], data["test"]))
    rows.append({"what": f"toy: held-out comparison, {len(test)} images x 50 tokens",
                 "value": took, "unit": "s"})

    big = load_variant("vit_b16_random", device=args.device)
    blens = tl.TunedLens(big).to(args.device)
    images = torch.randn(args.images, 3, 224, 224, device=args.device)
    sites = [f"blocks.{i}.hook_resid_post" for i in range(12)]

    def readout():
        with torch.no_grad(), capture(big, sites) as cache:
            big(images)
            x = torch.stack([cache[s] for s in sites])
            blens.logits("image", x[:, :, 1:])
            blens.logits("cls", x[:, :, 0])

    def forward():
        with torch.no_grad():
            big(images)

    readout()
    per_image = seconds(readout, 3) / args.images
    plain = seconds(forward, 3) / args.images
    rows.append({"what": "B/16 (random init): lens readout of all 12 blocks x 197 tokens, "
                         "per image (forward included)", "value": per_image, "unit": "s"})
    rows.append({"what": "B/16: plain forward, per image", "value": plain, "unit": "s"})
    feats = {k: torch.randn(12, args.rows, 768) for k in ("cls", "image")}
    fake = tl.LensData(feats, {k: torch.zeros(args.rows, dtype=torch.long) for k in feats},
                       torch.log_softmax(torch.randn(1, 1000), -1), torch.zeros(1))
    step = seconds(lambda: tl.train_lens(big, fake, steps=3, batch_rows=args.rows), 1) / 3
    rows.append({"what": f"B/16: one training step, {args.rows} rows per kind, 24 translators",
                 "value": step, "unit": "s"})

    machine = (f"{platform.machine()}, {os.cpu_count()} CPU threads, torch threads "
               f"{torch.get_num_threads()}; 4 agents shared 2 cores while this ran")
    out = {"machine": machine, "device": args.device, "rows": rows}
    (HERE / "results" / "tuned_lens_cost.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"{machine}, device {args.device}\n\n| what | value | unit |\n|---|---|---|")
    for row in rows:
        print(f"| {row['what']} | {row['value']:.4g} | {row['unit']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
