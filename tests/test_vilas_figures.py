"""Figures are reproducible to the pixel: confidence bands and jitter are seeded."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd

from vitcls_utils.report import vilas_figures as plots


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plots.plt.close(fig)
    return buffer.getvalue()


def frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"block": np.repeat(np.arange(1, 5), 30),
                         "layer": np.tile(["attn", "mlp"], 60),
                         "rate": rng.random(120) * 100})


def test_bands_and_jitter_are_the_same_in_every_run():
    data = frame(0)
    for draw in (lambda: plots.per_block_figure(data, "rate", "layer", "%"),
                 lambda: plots.per_class_figure(data, "rate", "%")):
        first = png(draw())
        np.random.seed(12345)  # the global generator's state must not matter
        assert png(draw()) == first


def test_the_global_generator_is_left_as_it_was():
    np.random.seed(7)
    expected = np.random.random()
    np.random.seed(7)
    png(plots.per_class_figure(frame(1), "rate", "%"))
    assert np.random.random() == expected
