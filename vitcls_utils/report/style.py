"""The book's figure style: one seaborn theme for every chapter's figures.

Figures are reproducible to the pixel: seaborn's bootstrapped confidence bands get a fixed
seed (``SEED``) and the strip plots' jitter is drawn from a seeded generator.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import seaborn as sns


def set_theme() -> None:
    """The book's look (seaborn's whitegrid style in its notebook context), applied once per notebook.

    Returns:
        None; seaborn's and matplotlib's global settings change.
    """
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95,
                  rc={"figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold"})


SEED = 0  # of the confidence bands' bootstrap and the strip plots' jitter


@contextlib.contextmanager
def seeded_global_rng(seed: int = SEED) -> Iterator[None]:
    """numpy's global generator seeded for the block, then restored: seaborn's strip plot
    draws its jitter from it and takes no seed."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
