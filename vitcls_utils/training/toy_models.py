"""Training the embedded default's tiny ViTs, ConViT and CNN on the synthetic dataset of
:mod:`vitcls_utils.datasets.toy` (``make toy-model``), with their recipe and model card."""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from ..datasets.toy import (COLOURS, GENERATOR_VERSION, IMAGE_SIZE, NUM_CLASSES, P_PREFERRED_SCENE,
                            PATCH_SIZE, SCENES, SHAPES, SPLIT_SIZES, TEXTURES, TOY_PREPROCESS,
                            generate, split_indices)
#: The shared recipe of the shipped checkpoints; RECIPES holds each model's changes to it.
RECIPE = {
    "steps": 2000, "batch_size": 128, "lr": 1e-3, "weight_decay": 0.05, "warmup_steps": 100,
    "schedule": "linear warm-up, cosine decay to 0", "optimizer": "AdamW (0.9, 0.999)",
    "grad_clip": 1.0, "augmentation": "random horizontal flip", "seed": 0,
    "train_per_class": SPLIT_SIZES["train"], "drop_path_rate": 0.0, "cutmix_alpha": 0.0,
    "cutmix_prob": 1.0, "avg_pool_loss": 0.0,
}
RECIPES = {
    # The [CLS] toy also trains the same head on the average of its final image tokens
    # (``avg_pool_loss``, weight 0.5). Trained on the [CLS] alone (earlier recipes, with and
    # without CutMix), a model this small leaves most image tokens unreadable by the head at
    # the last block, unlike the paper's pretrained ViTs; the auxiliary term stands in for
    # that pretraining. The model's output is still the [CLS] alone.
    "toy": {"steps": 4000, "drop_path_rate": 0.1, "avg_pool_loss": 0.5},
    "toy_gap": {},
    # Chapter 6's convolutional partner of the toy ViTs (Ghiasi et al.'s ViT-vs-CNN
    # comparisons): a narrow ResNet-18 under the shared recipe, budget and seed.
    "toy_cnn": {},
    # Chapter 7's pair, one recipe for both (the ConViT paper trains ConViT with DeiT's): the
    # shared budget, with the [CLS] toy's auxiliary image-token loss so that the image tokens
    # the chapter's class-identifiability bridge reads are trained towards the head too.
    "toy_convit": {"avg_pool_loss": 0.5},
    "toy_deit": {"avg_pool_loss": 0.5},
}


def avg_pool_logits(model, features):
    """The head applied to the mean of the final-normed image (non-prefix) tokens."""
    return model.head(features[:, model.num_prefix_tokens:].mean(1))


def split_arrays(split: str, seed: int = 0, n_per_class: Optional[int] = None):
    """All images of a split as a uint8 array [I, H, W, 3] and labels [I] (class-major)."""
    indices = split_indices(split, n_per_class)
    images = np.stack([np.asarray(generate(split, i, seed).image) for i in indices])
    labels = np.asarray([i // SPLIT_SIZES[split] for i in indices], dtype=np.int64)
    return images, labels


def to_input(images: np.ndarray):
    """uint8 [B, H, W, 3] -> the model input of TOY_PREPROCESS, float32 [B, 3, H, W]."""
    import torch

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(TOY_PREPROCESS.mean).view(1, 3, 1, 1)
    std = torch.tensor(TOY_PREPROCESS.std).view(1, 3, 1, 1)
    return (x - mean) / std


def cutmix(x, y, num_classes: int, alpha: float, rng: np.random.Generator):
    """CutMix on a batch: a box of area 1 - lam (lam ~ Beta(alpha, alpha)) from the batch in
    reverse order is pasted into every image; the targets mix the two labels by area."""
    import torch

    height, width = x.shape[-2:]
    lam = rng.beta(alpha, alpha)
    box_h, box_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
    top, left = rng.integers(0, height - box_h + 1), rng.integers(0, width - box_w + 1)
    x = x.clone()
    x[..., top:top + box_h, left:left + box_w] = x.flip(0)[..., top:top + box_h,
                                                         left:left + box_w]
    kept = 1 - box_h * box_w / (height * width)
    one_hot = torch.nn.functional.one_hot(y, num_classes).float()
    return x, kept * one_hot + (1 - kept) * one_hot.flip(0)


def _log(message: str) -> None:
    print(message, flush=True)  # progress shows at once through pipes, `tee` and workers


def _optimize(model, recipe: dict, train_x: np.ndarray, train_y: np.ndarray, log,
              started: float, key: str) -> None:
    """The recipe's optimisation steps on ``model`` (in place)."""
    import math
    import time

    import torch
    from timm.optim import param_groups_weight_decay
    from torch.nn.functional import cross_entropy

    params = param_groups_weight_decay(model, recipe["weight_decay"])
    optimizer = torch.optim.AdamW(params, lr=recipe["lr"], betas=(0.9, 0.999))
    steps, warmup = recipe["steps"], recipe["warmup_steps"]

    def lr_at(step: int) -> float:
        if step < warmup:
            return recipe["lr"] * (step + 1) / warmup
        return recipe["lr"] * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))

    gen = torch.Generator().manual_seed(recipe["seed"])
    mix_rng = np.random.default_rng(recipe["seed"])
    order = torch.randperm(len(train_y), generator=gen)
    cursor, running = 0, []
    for step in range(steps):
        if cursor + recipe["batch_size"] > len(order):
            order, cursor = torch.randperm(len(train_y), generator=gen), 0
        batch = order[cursor:cursor + recipe["batch_size"]].numpy()
        cursor += recipe["batch_size"]
        x = to_input(train_x[batch])
        flip = torch.rand(len(batch), generator=gen) < 0.5
        x[flip] = x[flip].flip(-1)
        y = torch.from_numpy(train_y[batch])
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        target = y  # class indices, or class probabilities under CutMix
        if recipe["cutmix_alpha"] > 0 and mix_rng.random() < recipe["cutmix_prob"]:
            x, target = cutmix(x, y, NUM_CLASSES, recipe["cutmix_alpha"], mix_rng)
        features = model.forward_features(x)  # model(x) is forward_head of these
        loss = cross_entropy(model.forward_head(features), target)
        if recipe["avg_pool_loss"] > 0:
            loss = loss + recipe["avg_pool_loss"] * cross_entropy(
                avg_pool_logits(model, features), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe["grad_clip"])
        optimizer.step()
        running.append(loss.item())
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"{key} step {step + 1}/{steps} loss {np.mean(running):.3f} "
                f"({time.perf_counter() - started:.0f} s)")
            running = []


def train(key: str, out_dir, recipe: Optional[dict] = None, log=_log,
          threads: Optional[int] = None) -> dict:
    """Train a toy variant from its seeded init and write ``<out_dir>/<key>.safetensors``.

    Args:
        recipe: changes to the model's recipe (``RECIPE`` updated with ``RECIPES[key]``).
        threads: torch CPU threads; the result is reproducible for a given CPU and count.

    Returns the training record (recipe, val top-1, seconds) that the model card shows.
    """
    import time
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from ..model.loading import build_model
    from ..model.layout import fused_attention
    from ..model.registry import get_variant

    recipe = {**RECIPE, **RECIPES.get(key, {}), **(recipe or {})}
    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    torch.manual_seed(recipe["seed"])
    variant = get_variant(key)
    model = build_model(variant, seed=recipe["seed"],
                        drop_path_rate=recipe["drop_path_rate"]).train()
    train_x, train_y = split_arrays("train", seed=recipe["seed"],
                                    n_per_class=recipe["train_per_class"])
    val_x, val_y = split_arrays("val", seed=recipe["seed"])
    with fused_attention(model):  # SDPA while training (faster); analyses use explicit attention
        _optimize(model, recipe, train_x, train_y, log, started, key)
    model.eval()
    with torch.no_grad():
        top5 = torch.cat([model(to_input(val_x[i:i + 256])).topk(5, -1).indices
                          for i in range(0, len(val_y), 256)]).numpy()
    pred = top5[:, 0]
    record = {
        "key": key, "arch": variant.arch, "model_kwargs": dict(variant.model_kwargs),
        "params": int(sum(p.numel() for p in model.parameters())), "recipe": recipe,
        "val_images": int(len(val_y)), "val_correct": int((pred == val_y).sum()),
        "val_top1": float((pred == val_y).mean()),
        "val_top5": float((top5 == val_y[:, None]).any(1).mean()),
        "train_seconds": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / f"{key}.safetensors"), metadata={"generator_version":
                                                                 str(GENERATOR_VERSION)})
    log(f"{key}: val top-1 {100 * record['val_top1']:.2f}% "
        f"({record['val_correct']}/{record['val_images']}), {record['train_seconds']} s")
    return record


def write_model_card(records: List[dict], out_dir) -> None:
    """``MODEL_CARD.md`` and ``training.json`` beside the checkpoints."""
    import json
    from pathlib import Path

    out = Path(out_dir)
    (out / "training.json").write_text(json.dumps({r["key"]: r for r in records}, indent=1,
                                                  sort_keys=True) + "\n")
    lines = [
        "# Toy models: model card", "",
        "Tiny ViTs and a tiny CNN trained from scratch on the synthetic segmented dataset of "
        f"`vitcls_utils/toy.py` (generator version {GENERATOR_VERSION}: {NUM_CLASSES} classes = "
        f"{len(SHAPES)} shapes x {len(COLOURS)} colours x {len(TEXTURES)} textures, "
        f"{len(SCENES)} scenes, each class on its preferred scene with probability "
        f"{P_PREFERRED_SCENE}). They are the offline default of every notebook; they are not "
        "models of ImageNet.", "",
        "| key | architecture | params | val top-1 | training time |", "|---|---|---|---|---|",
    ]
    for r in records:
        kwargs = ", ".join(f"{k}={v}" for k, v in r["model_kwargs"].items())
        lines.append(f"| `{r['key']}` | timm `{r['arch']}` ({kwargs}, "
                     f"classes={NUM_CLASSES}) | {r['params']:,} | "
                     f"{100 * r['val_top1']:.2f}% ({r['val_correct']}/{r['val_images']}) | "
                     f"{r['train_seconds'] / 60:.1f} min, {r['threads']} CPU thread(s) |")
    lines.append("")
    for r in records:
        lines.append(f"Recipe of `{r['key']}`: "
                     + "; ".join(f"{k} {v}" for k, v in r["recipe"].items()) + ".")
        lines.append("")
    lines.append("`avg_pool_loss` is the weight of an auxiliary loss during training only: the "
                 "same head applied to the mean of the final-normed image tokens. The [CLS] "
                 "models' output is their [CLS] alone, as in the paper's token-pooled ViTs.")
    lines.append("")
    lines.append("`toy_convit` and `toy_deit` are chapter 7's pair, trained under one recipe, "
                 "budget and seed. timm's ConViT takes its width per head (`embed_dim=16` x 4 "
                 "heads = 64, the toy DeiT's width); its blocks 1-10 are GPSA and its [CLS] "
                 "joins before block 11. The DeiT is timm's `deit_tiny_patch16_224` at the toy "
                 "size, the toy [CLS] ViT's architecture.")
    lines.append("")
    runs = {(tuple(r.get("run_keys", [r["key"]])), r.get("run_jobs", 1),
             r.get("run_seconds", r["train_seconds"]), r.get("cpu", "")) for r in records}
    for keys, jobs, seconds, cpu in sorted(runs):
        where = f"on {cpu}" if cpu else "on the 2-core machine of an earlier build"
        together = jobs > 1 and len(keys) > 1
        names = (" and " if together else " then ").join(f"`{k}`" for k in keys)
        lines.append(f"Training {names}{' side by side' if together else ''} took "
                     f"{seconds / 60:.1f} min of wall-clock {where}, data generation and "
                     "validation included.")
    lines += ["", f"Images {IMAGE_SIZE}x{IMAGE_SIZE}, patch {PATCH_SIZE}: a 7x7 token grid "
              "(50 tokens with [CLS], like ViT-B/32) for the ViTs; the CNN is timm's ResNet-18 "
              "with a quarter of its widths (chapter 6's convolutional baseline). Validation: the `val` split "
              f"({SPLIT_SIZES['val']} images per class, generator seed 0). Attention ran fused "
              "(SDPA) during training and explicit in every analysis; the two agree to float "
              "precision.", "",
              "Rebuild: `make toy-model` (every model, one after the other, two threads each; "
              "deterministic for a given CPU and thread count; "
              "another CPU may differ in the last float bits and hence in a few predictions).",
              ""]
    (out / "MODEL_CARD.md").write_text("\n".join(lines))


def _cpu_name() -> str:
    """The CPU model and core count, for the model card's training times."""
    import os
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name} ({os.cpu_count()} cores)"


def train_all(keys: Sequence[str], out_dir, recipe: Optional[dict] = None, jobs: int = 1,
              threads: int = 2) -> List[dict]:
    """Train ``keys``, ``jobs`` of them at a time in worker processes of ``threads`` threads.

    The shipped checkpoints were trained one after the other with two threads, which on a
    2-core machine is faster than two models side by side with one thread each; a fixed thread
    count keeps the result independent of the machine's core count. ``jobs`` > 1 suits
    machines with more cores.
    """
    import time
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    started = time.perf_counter()
    if jobs <= 1 or len(keys) == 1:
        records = [train(key, out_dir, recipe, threads=threads) for key in keys]
    else:
        with ProcessPoolExecutor(min(jobs, len(keys)), mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(train, key, out_dir, recipe, threads=threads) for key in keys]
            records = [f.result() for f in futures]
    seconds = round(time.perf_counter() - started, 1)
    for r in records:
        r.update(run_keys=list(keys), run_jobs=jobs, run_seconds=seconds, cpu=_cpu_name())
    return records


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m vitcls_utils.training.toy_models [--out DIR] [--keys toy toy_gap toy_cnn]
    [--steps N] [--jobs J] [--threads T]``: train the toy models and write their model card."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description="train the toy models shipped in data/toy/")
    parser.add_argument("--out", default=None, help="output folder (default: data/toy)")
    parser.add_argument("--keys", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps")
    parser.add_argument("--jobs", type=int, default=1, help="models trained at once")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads per model (the shipped checkpoints used 2)")
    args = parser.parse_args(argv)
    from ..model.registry import data_dir

    out = Path(args.out or data_dir() / "toy")
    override = {"steps": args.steps} if args.steps else {}
    records = train_all(args.keys, out, override, jobs=args.jobs, threads=args.threads)
    if (out / "training.json").is_file():  # keep the records of models not retrained now
        kept = json.loads((out / "training.json").read_text())
        records += [r for k, r in kept.items() if k not in args.keys]
    records.sort(key=lambda r: r["key"])
    write_model_card(records, out)
    print(f"written {out}/MODEL_CARD.md")


if __name__ == "__main__":
    main()
