"""Chapter 5's figures: sized for the book's column (no text under 9 px as displayed), legends
off the data, colour bars on maps, distances with their unit."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_vilas_figures import book_theme, colour_bars, legends_off_the_data, readable  # noqa: F401
from vitcls_utils.report import vit_figures as figures

BLOCKS = np.arange(1, 13)
RNG = np.random.default_rng(0)


def distances(scale: float = 40.0) -> pd.DataFrame:
    return pd.DataFrame([(b, h, scale * b / 12 * RNG.uniform(0.5, 1.5)) for b in BLOCKS
                         for h in range(6)], columns=["block", "head", "distance"])


def by_token(column: str, levels) -> pd.DataFrame:
    return pd.DataFrame([(t, b, level, RNG.uniform(0, 1)) for t in ("[CLS]", "image mean", "GAP")
                         for b in BLOCKS for level in levels],
                        columns=["token", "block", column, "accuracy"])


def position_similarity(n: int) -> np.ndarray:
    rows, cols = np.mgrid[0:n, 0:n]
    d = np.hypot(rows[:, :, None, None] - rows, cols[:, :, None, None] - cols)
    return np.cos(3 * d / n)


FIGURES = {
    "components": lambda: figures.components_figure(RNG.random((28, 3, 16, 16)),
                                                    np.linspace(0.2, 0.005, 28), "Fig. 7"),
    "position_7": lambda: figures.position_similarity_figure(position_similarity(7), "B/32"),
    "position_24": lambda: figures.position_similarity_figure(position_similarity(24), "L/16"),
    "distance": lambda: figures.attention_distance_figure(distances(), "Fig. 11", "pixels",
                                                          distances(60)),
    "fewshot": lambda: figures.fewshot_figure(by_token("shots", (1, 5, 10, 25)), "k-shot"),
    "decoders": lambda: figures.decoders_figure(
        by_token("decoder", ("projection", "5-shot LSR", "25-shot LSR")), "bridge"),
    "distance_and_gain": lambda: figures.distance_and_gain_figure(pd.DataFrame(
        {"block": BLOCKS, "distance": np.linspace(20, 90, 12), "gain [CLS]": RNG.normal(0, .1, 12),
         "gain image": RNG.normal(0, .1, 12)}), "bridge"),
}


@pytest.mark.parametrize("name", FIGURES)
def test_figures_fit_the_column_and_keep_legends_off_the_data(name):
    fig = FIGURES[name]()
    readable(fig)
    legends_off_the_data(fig)


@pytest.mark.parametrize("n", [7, 24])
def test_position_similarity_is_one_image_with_a_labelled_scale_over_minus_one_to_one(n):
    fig = figures.position_similarity_figure(position_similarity(n))
    assert colour_bars(fig) == ["cosine similarity of the\nposition embeddings"]
    image = fig.axes[0].get_images()[0]
    assert image.get_clim() == (-1, 1)
    ax = fig.axes[0]
    assert "patch" in ax.get_xlabel() and "patch" in ax.get_ylabel()
    assert len(ax.get_xticks()) <= 12  # 24 tiles a row: every other one numbered


def test_distances_carry_their_unit():
    fig = figures.attention_distance_figure(distances(), unit="patches")
    assert fig.axes[0].get_ylabel().endswith("(patches)")
    fig = figures.distance_and_gain_figure(pd.DataFrame({"block": BLOCKS, "distance": BLOCKS}),
                                           unit="patches")
    assert fig.axes[0].get_ylabel().endswith("(patches)")
    fig = figures.distance_and_gain_figure(pd.DataFrame({"block": BLOCKS, "distance": BLOCKS}))
    assert fig.axes[0].get_ylabel().endswith("(pixels)")


def test_three_token_panels_wrap_into_two_rows():
    fig = FIGURES["fewshot"]()
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    assert len(shown) == 3
    assert len({round(ax.get_position().y0, 3) for ax in shown}) == 2
