"""ConViT's sample-efficiency experiment (d'Ascoli et al., Table 2), scaled to the toy set.

The paper keeps the first ⌊f·n_c⌋ images of every class and multiplies the epochs by 1/f, so
every fraction gets the same number of optimisation steps. Here the toy ConViT and toy DeiT are
trained under their shipped recipe on the first ⌊f·800⌋ training images of each class for the
same number of steps; ``make sample-efficiency`` writes ``data/toy/sample_efficiency.json``,
which the chapter's notebook plots. The f = 1 runs are the shipped checkpoints' own recipe, so
their records are taken from ``data/toy/training.json`` when the recipes agree exactly.
"""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from ..base.errors import VitclsError

FRACTIONS = (0.1, 0.3, 1.0)
KEYS = ("toy_deit", "toy_convit")
SEEDS = (0,)


def fraction_recipe(key: str, fraction: float, seed: int = 0,
                    changes: Optional[dict] = None) -> dict:
    """The shipped recipe of ``key`` (with ``changes``) on the first ⌊fraction·n⌋ training
    images per class; the steps stay the recipe's."""
    from .toy_models import RECIPE, RECIPES

    if not 0 < fraction <= 1:
        raise VitclsError(f"a training fraction is in (0, 1], not {fraction}")
    if key not in KEYS:
        raise VitclsError(f"the sweep trains {KEYS}, not {key!r}")
    recipe = {**RECIPE, **RECIPES[key], **(changes or {}), "seed": seed}
    recipe["train_per_class"] = max(1, math.floor(fraction * recipe["train_per_class"] + 1e-9))
    return recipe


def _row(key: str, fraction: float, seed: int, record: dict, source: str) -> dict:
    return {"key": key, "fraction": fraction, "seed": seed,
            "train_per_class": record["recipe"]["train_per_class"],
            "steps": record["recipe"]["steps"], "val_top1": record["val_top1"],
            "val_top5": record.get("val_top5"), "val_images": record["val_images"],
            "train_seconds": record["train_seconds"], "threads": record["threads"],
            "source": source, "recipe": record["recipe"]}


def _shipped(key: str, recipe: dict) -> Optional[dict]:
    """The shipped checkpoint's training record when it was trained with exactly ``recipe``."""
    from ..model.registry import data_dir

    path = data_dir() / "toy" / "training.json"
    record = json.loads(path.read_text()).get(key) if path.is_file() else None
    if record and record["recipe"] == recipe and record.get("val_top5") is not None:
        return record
    return None


def run(out: Path, keys: Sequence[str] = KEYS, fractions: Sequence[float] = FRACTIONS,
        seeds: Sequence[int] = SEEDS, threads: int = 2, log=print,
        changes: Optional[dict] = None) -> List[dict]:
    """Train every (key, fraction, seed) not yet in ``out`` and add its row to ``out``.

    The file is rewritten atomically after every run, so an interrupted sweep resumes where it
    stopped; a row whose recipe no longer matches the code is trained again. ``changes``
    alter the recipe for every run (a quick check; the shipped sweep has none).
    """
    from .toy_models import train

    out = Path(out)
    done: Dict[tuple, dict] = {}
    if out.is_file():
        for row in json.loads(out.read_text())["runs"]:
            done[(row["key"], row["fraction"], row["seed"])] = row
    rows = []
    for key in keys:
        for fraction in fractions:
            for seed in seeds:
                recipe = fraction_recipe(key, fraction, seed, changes)
                row = done.get((key, fraction, seed))
                if row is None or row["recipe"] != recipe:
                    record = _shipped(key, recipe)
                    if record is not None:
                        row = _row(key, fraction, seed, record, "data/toy/training.json")
                    else:
                        with tempfile.TemporaryDirectory() as tmp:  # the checkpoint is not kept
                            record = train(key, tmp, recipe, threads=threads, log=log)
                        row = _row(key, fraction, seed, record, "trained by this sweep")
                rows.append(row)
                done[(key, fraction, seed)] = row
                _write(out, list(done.values()))  # rows outside this call's grid are kept
    return rows


def _write(out: Path, rows: List[dict]) -> None:
    """``{"runs": rows}`` written to a temporary file, then renamed over ``out``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"protocol": __doc__.split("\n\n")[1].replace("\n", " "),
                               "runs": rows}, indent=1) + "\n")
    tmp.replace(out)


def load(path: Optional[Path] = None) -> List[dict]:
    """The rows of a sweep's JSON (the shipped one by default).

    Args:
        path: the sweep's JSON file; None: ``data/toy/sample_efficiency.json``.

    Returns:
        One dict per (key, fraction, seed) run: ``key``, ``fraction``, ``seed``,
        ``train_per_class``, ``steps``, ``val_top1``, ``val_top5``, ``val_images``,
        ``train_seconds``, ``threads``, ``source`` and ``recipe`` (a dict).

    Raises:
        VitclsError: when the file does not exist.
    """
    from ..model.registry import data_dir

    path = Path(path or data_dir() / "toy" / "sample_efficiency.json")
    if not path.is_file():
        raise VitclsError(f"no sample-efficiency results at {path}: run `make sample-efficiency`")
    return json.loads(path.read_text())["runs"]


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m vitcls_utils.training.sample_efficiency [--out FILE] [--fractions ...]
    [--seeds ...]``."""
    import argparse

    from ..model.registry import data_dir

    parser = argparse.ArgumentParser(description="ConViT vs DeiT on fractions of the toy set")
    parser.add_argument("--out", default=str(data_dir() / "toy" / "sample_efficiency.json"))
    parser.add_argument("--fractions", nargs="+", type=float, default=list(FRACTIONS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    run(Path(args.out), fractions=args.fractions, seeds=args.seeds, threads=args.threads)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
