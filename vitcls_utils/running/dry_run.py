"""A dry run of the whole paper matrix, offline: the seven architectures with random weights
written to files (loaded strictly through the same ``weights`` path as real checkpoints), a
fabricated ImageNet-S tree and CIFAR-100 folder, a run file, every notebook under both
profiles, and the book built from what ran.

``make paper-dry-run`` runs it; ``python -m vitcls_utils.running.dry_run --help`` lists the
knobs. The numbers it produces mean nothing (random weights, noise images); what it checks is
that every notebook runs for every variant, with its own weights, dataset and folder.
"""
from __future__ import annotations

import argparse
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image

from ..model.registry import PAPER_KEYS, get_variant
from ..base import paths

ROOT = paths.ROOT
#: classes of the fabricated ImageNet-S tree: the paper's explanation cases first
CASE_WNIDS = ("n02422699", "n04404412", "n04204347", "n07742313")


def fabricate_imagenet_s(root: Path, n_classes: int = 3, n_images: int = 5,
                         n_test: int = 10, seed: int = 0) -> Path:
    """An ImageNetS919 tree in the real layout (validation images, their masks, the test split,
    the class and category lists) with ``n_classes`` classes of noise images and a rectangle
    mask each. Returns the ImageNetS919 folder."""
    from ..datasets.kinds import imagenet_wnids

    wnids = list(imagenet_wnids())
    chosen = list(CASE_WNIDS[:n_classes]) + [w for w in wnids if w not in CASE_WNIDS]
    chosen = chosen[:n_classes]
    base = root / "ImageNetS919"
    base.mkdir(parents=True, exist_ok=True)
    (base / "LOC_synset_mapping.txt").write_text("".join(f"{w} class {i}\n"
                                                         for i, w in enumerate(wnids)))
    (base / "ImageNetS_categories_im919.txt").write_text("\n".join(chosen) + "\n")
    rng = np.random.default_rng(seed)
    for category, wnid in enumerate(chosen, start=1):
        for j in range(n_images):
            name = f"ILSVRC2012_val_{category * 100 + j:08d}"
            _noise(rng, (80, 64)).save(_mkdir(base / "validation" / wnid) / f"{name}.JPEG")
            mask = np.zeros((64, 80), dtype=np.int32)
            mask[8 + j:40, 10:50 + j] = category
            rgb = np.stack([mask % 256, mask // 256, np.zeros_like(mask)], -1).astype(np.uint8)
            Image.fromarray(rgb).save(_mkdir(base / "validation-segmentation" / wnid)
                                      / f"{name}.png")
        for j in range(n_test):
            _noise(rng, (64, 64)).save(_mkdir(base / "test" / wnid)
                                       / f"ILSVRC2012_test_{category * 100 + j:08d}.JPEG")
    return base


def fabricate_cifar100(root: Path, n_labels: int = 3, n_images: int = 5, seed: int = 0) -> Path:
    """A ``cifar-100-python/test`` file in torchvision's format with ``n_labels`` labels of
    ``n_images`` noise images each. Returns ``root``."""
    rng = np.random.default_rng(seed)
    labels = [label for label in range(n_labels) for _ in range(n_images)]
    data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    folder = _mkdir(root / "cifar-100-python")
    with open(folder / "test", "wb") as handle:
        pickle.dump({b"data": data, b"fine_labels": labels,
                     b"coarse_labels": [0] * len(labels)}, handle, protocol=2)
    return root


def write_random_weights(key: str, path: Path, seed: int = 1) -> Path:
    """The variant's architecture at a seeded random init, saved as safetensors: a checkpoint
    that loads strictly, as a real one must. The Refinement file also carries a token
    refinement head, which loading drops (as it drops the real one's)."""
    import torch
    from safetensors.torch import save_file

    from ..model.loading import build_model

    model = build_model(get_variant(key), seed=seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    for prefix in get_variant(key).drop_prefixes:
        state[f"{prefix}0.weight"] = torch.zeros(4, 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def write_run_file(out: Path, keys: Sequence[str], weights: dict, data: dict,
                   controls: bool = True, batch_size: int = 8, n_points: int = 4) -> Path:
    """The dry run's run file (YAML), in the schema of :mod:`vitcls_utils.running.run_file`."""
    import yaml

    content = {
        "profile": ["corrected", "authors"],
        "results_dir": str(out / "results"),
        "controls": controls,
        "data_dirs": {kind: str(folder) for kind, folder in data.items()},
        "defaults": {"batch_size": batch_size, "n_per_class": 1},
        # small on purpose: the dry run checks that everything runs, not what it finds
        "parameters": {"n_points": n_points, "n_permutations": 50, "n_random": 2,
                       "probe_kinds": ["resid_post"], "suite_images": 2, "suite_steps": 1,
                       "road_levels": 1, "mprt_images": 2, "mprt_steps": 1},
        "variants": {key: {"weights": str(weights[key])} for key in keys},
    }
    path = out / "paper-dry-run.yml"
    path.write_text("# written by vitcls_utils.running.dry_run: random weights, fabricated data\n"
                    + yaml.safe_dump(content, sort_keys=False))
    return path


def prepare(out: Path, keys: Sequence[str] = PAPER_KEYS, n_classes: int = 3,
            n_images: int = 5, controls: bool = True) -> Path:
    """Weights files, data and the run file of a dry run under ``out``; returns the run file."""
    out.mkdir(parents=True, exist_ok=True)
    data = {"imagenet-s": fabricate_imagenet_s(out / "data", n_classes, n_images),
            "cifar100": fabricate_cifar100(out / "data" / "cifar", n_classes, n_images)}
    weights = {}
    for key in keys:
        path = out / "weights" / f"{key}.safetensors"
        weights[key] = path if path.is_file() else write_random_weights(key, path)
    return write_run_file(out, keys, weights, data, controls=controls)


def book_folder(out: Path) -> Path:
    """A copy of the book's sources under ``out`` whose runs are the dry run's."""
    site = out / "site"
    (site / "book").mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, site / name)
    for page in (ROOT / "book").iterdir():
        target = site / "book" / page.name
        if page.name in ("runs", "_build"):
            continue
        if page.is_dir():
            shutil.copytree(page, target, dirs_exist_ok=True)
        else:
            shutil.copy(page, target)
    return site


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitcls_utils.running.dry_run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "_dryrun"), help="working folder")
    parser.add_argument("--variants", nargs="+", default=list(PAPER_KEYS))
    parser.add_argument("--notebooks", default="*")
    parser.add_argument("--profile", default=None, help="one profile (default: both)")
    parser.add_argument("--classes", type=int, default=3, help="classes of fabricated data")
    parser.add_argument("--images", type=int, default=5, help="images per class")
    parser.add_argument("--no-controls", action="store_true")
    parser.add_argument("--jobs", type=int, default=1, help="variants run at a time")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--no-book", action="store_true", help="skip the book build")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    started = time.perf_counter()
    run_file = prepare(out, args.variants, args.classes, args.images, not args.no_controls)
    site = book_folder(out)
    prepared = time.perf_counter() - started
    argv = ["run", "--config", str(run_file), "--notebooks", args.notebooks, "--device",
            args.device, "--jobs", str(args.jobs)]
    argv += ["--profile", args.profile] if args.profile else []
    code = _run_matrix(argv, site)
    ran = time.perf_counter() - started - prepared
    if code == 0 and not args.no_book:
        code = subprocess.call([str(Path(sys.executable).parent / "jupyter-book"), "build",
                                str(site), "--warningiserror", "--nitpick", "--keep-going"])
    total = time.perf_counter() - started
    print(f"dry run: prepared in {prepared:.0f} s, notebooks {ran:.0f} s, total {total:.0f} s; "
          f"book at {site / '_build' / 'html' / 'index.html'}", file=sys.stderr)
    return code


def _run_matrix(argv: List[str], site: Path) -> int:
    """``vitcls run`` with the runs written into the dry run's book folder."""
    from . import cli
    from . import runner

    return runner.main_run(cli.build_parser().parse_args(argv), runs_dir=site / "book" / "runs")


def _noise(rng: np.random.Generator, size) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    sys.exit(main())
