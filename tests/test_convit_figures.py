"""Chapter 7's figures: sized for the book's column (no text under 9 px as displayed), legends
off the data, a labelled colour bar on the attention maps, the paper's values as their own
labelled series."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_vilas_figures import (book_theme, colour_bars, legend_texts,  # noqa: F401
                                legends_off_the_data, readable, reported_lines)
from vitcls_utils.report import convit_figures as figures

BLOCKS = np.arange(1, 13)
RNG = np.random.default_rng(0)


def gates(heads: int = 4) -> pd.DataFrame:
    return pd.DataFrame([(layer, head, RNG.uniform(0, 1)) for layer in range(1, 11)
                         for head in range(1, heads + 1)], columns=["layer", "head", "gate"])


def locality() -> pd.DataFrame:
    frame = gates()
    return frame.assign(strength=RNG.uniform(0, 3, len(frame)),
                        centre_x=RNG.normal(0, 1.5, len(frame)),
                        centre_y=RNG.normal(0, 1.5, len(frame)))


def distances(scale: float) -> pd.DataFrame:
    return pd.DataFrame([(b, h, scale * RNG.uniform(0.5, 1.5)) for b in BLOCKS for h in range(4)],
                        columns=["block", "head", "distance"])


def maps(heads: int) -> dict:
    return {b: RNG.dirichlet(np.ones(196), heads).reshape(heads, 14, 14) for b in (1, 9)}


def bridge() -> pd.DataFrame:
    return pd.DataFrame([dict(model=m, block=b, image_identifiability=RNG.uniform(.4, 1),
                              cls_identifiability=RNG.uniform(.4, 1), nonlocality=1 + .2 * b,
                              gate=RNG.uniform(0, 1) if "ConViT" in m and b <= 10 else np.nan)
                         for m in ("toy ConViT", "toy DeiT") for b in BLOCKS])


MASKED = pd.DataFrame([(m, b, RNG.uniform(.4, 1)) for m in ("none", "position embedding",
                                                             "content, 10 GPSA") for b in BLOCKS],
                      columns=["mask", "block", "image_identifiability"])
RUNS = pd.DataFrame([(m, f, s, RNG.uniform(20, 80)) for m in ("toy DeiT", "toy ConViT")
                     for f in (0.05, 0.1, 0.5, 1.0) for s in range(2)],
                    columns=["model", "fraction", "seed", "top1"])
TABLE2 = pd.DataFrame({"fraction": [0.05, 0.1, 0.5, 1.0], "deit_top1": [34.8, 48.0, 75.7, 79.9],
                       "convit_top1": [47.8, 59.6, 76.7, 81.4]})

FIGURES = {
    "gating": lambda: figures.gating_figure(gates(), "Fig. 6", gates(),
                                            reported_label="reported, ConViT-Ti"),
    "locality": lambda: figures.locality_figure(locality(), "locality"),
    "nonlocality": lambda: figures.nonlocality_figure({"toy ConViT": distances(2),
                                                       "toy DeiT": distances(3)}, "Fig. 5"),
    "maps_4": lambda: figures.attention_maps_figure(maps(4), {1: RNG.random(4)}, "Fig. 7", (7, 7)),
    "maps_16": lambda: figures.attention_maps_figure(maps(16), {}, "Fig. 7", (7, 7)),
    "masking": lambda: figures.masking_figure(pd.DataFrame(
        [(mo, ma, RNG.uniform(0, 100)) for mo in ("toy ConViT", "toy DeiT")
         for ma in ("none", "position embedding", "content, all GPSA", "position, all GPSA")],
        columns=["model", "mask", "top1"]), "Tables 5 and 6"),
    "sample_efficiency": lambda: figures.sample_efficiency_figure(RUNS, TABLE2, "Table 2"),
    "bridge": lambda: figures.bridge_figure(bridge(), MASKED, "bridge"),
    "bridge_two_panels": lambda: figures.bridge_figure(bridge(), None, "bridge"),
    "zoo": lambda: figures.zoo_figure(pd.DataFrame(
        {"model": ["toy ConViT", "toy DeiT"], "top-1, this run": [70.0, 65.0],
         "top-1, paper": [73.1, 72.2], "paper model": ["ConViT-Ti", "DeiT-Ti"]}), "Table 1"),
}


@pytest.mark.parametrize("name", FIGURES)
def test_figures_fit_the_column_and_keep_legends_off_the_data(name):
    fig = FIGURES[name]()
    readable(fig)
    legends_off_the_data(fig)


@pytest.mark.parametrize("heads, rows", [(4, 2), (16, 6)])
def test_attention_maps_wrap_heads_into_rows_under_one_labelled_log_scale(heads, rows):
    fig = FIGURES[f"maps_{heads}"]()
    assert colour_bars(fig) == ["attention weight (log scale)"]
    shown = [ax for ax in fig.axes if ax.get_images()]
    assert len(shown) == 2 * heads
    assert len({round(ax.get_position().y0, 3) for ax in shown}) == rows


def test_the_papers_values_are_black_crosses_labelled_with_their_model():
    fig = FIGURES["gating"]()
    assert reported_lines(fig) and "reported, ConViT-Ti" in legend_texts(fig)
    fig = figures.gating_figure(gates(), "Fig. 6", gates(), "paper: ConViT-Ti, ImageNet val")
    assert "paper: ConViT-Ti, ImageNet val" in legend_texts(fig)  # the notebooks' call
    fig = FIGURES["sample_efficiency"]()
    assert len(reported_lines(fig)) == 2
    assert {"DeiT-S, ImageNet (reported)", "ConViT-S, ImageNet (reported)"} <= set(
        legend_texts(fig))
    assert not reported_lines(figures.sample_efficiency_figure(RUNS, None, "Table 2"))


def test_reported_bars_are_hatched_and_named_reported():
    fig = FIGURES["zoo"]()
    assert "reported (their Ti model, ImageNet)" in legend_texts(fig)
    assert [bar.get_hatch() for bar in fig.axes[0].patches if bar.get_height() > 0] == \
        [None, None, "///", "///"]
