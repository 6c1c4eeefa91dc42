"""Chapter 6's figures: sized for the book's column (no text under 9 px as displayed), legends
off the data, colour bars on the maps, the paper's sweeps as their own labelled series."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_vilas_figures import (book_theme, colour_bars, legend_texts,  # noqa: F401
                                legends_off_the_data, readable, reported_lines)
from vitcls_utils.report import ghiasi_figures as figures

BLOCKS = np.arange(1, 13)
RNG = np.random.default_rng(0)


def sweep() -> pd.DataFrame:
    return pd.DataFrame([(mode, L, RNG.uniform(0, 100)) for mode in ("isolate", "drop")
                         for L in range(13)], columns=["mode", "L", "top1"])


def logged() -> dict:
    return {mode: pd.DataFrame({"L": range(0, 13, 2), "top1": np.linspace(0, 84, 7)})
            for mode in ("isolate", "drop")}


def curves(condition: str) -> pd.DataFrame:
    levels = [0, 3, 6, 12] if condition == "L" else ["full", "foreground", "low-pass 8"]
    return pd.DataFrame([(b, level, RNG.uniform(.4, 1), RNG.uniform(.4, 1)) for level in levels
                         for b in BLOCKS],
                        columns=["block", condition, "cls_identifiability",
                                 "image_identifiability"])


def units() -> list:
    return [dict(image=RNG.random((3, 32, 32)),
                 top=[RNG.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(4)],
                 map=RNG.random((8, 8)), title=f"block {b}, unit {u}",
                 top_titles=["goldfish", "great white shark", "tench, Tinca tinca", "cock"],
                 caption="writes: goldfish, tench, hammerhead, stingray, cock")
            for b, u in ((1, 17), (12, 3071))]


FGBG = pd.DataFrame({"model": ["toy ViT", "toy CNN", "ViT-B/16", "ResNet-50"],
                     "source": ["this run"] * 2 + ["paper (ImageNet train, boxes)"] * 2,
                     "foreground": [80, 60, 95, 85], "background": [30, 40, 20, 25]})

FIGURES = {
    "isolation": lambda: figures.isolation_figure(sweep(), logged(), "Table 1",
                                                  reported_label="reported, ViT-B/16-384"),
    "heatmap": lambda: figures.heatmap_figure(RNG.uniform(0, 100, (8, 8)), "Fig. 7"),
    "heatmap_14": lambda: figures.heatmap_figure(RNG.uniform(0, 100, (14, 14)), "Fig. 7"),
    "fgbg": lambda: figures.fgbg_figure(FGBG, "Table 2"),
    "lowpass": lambda: figures.lowpass_figure(pd.DataFrame(
        [(m, c, RNG.uniform(0, 100)) for m in ("toy ViT", "toy CNN")
         for c in (np.nan, 32, 16, 8, 4)], columns=["model", "cutoff", "top1"]), "Fig. 16"),
    "block_curves_L": lambda: figures.block_curves_figure(curves("L"), "L", "bridge"),
    "block_curves_edit": lambda: figures.block_curves_figure(curves("edit"), "edit", "bridge"),
    "units": lambda: figures.unit_figure(units(), 4),
    "rate": lambda: figures.rate_figure(pd.DataFrame(
        {"block": BLOCKS, "image_top1": np.linspace(5, 60, 12),
         "cls_top1": np.linspace(0, 99, 12)})),
    "agreement": lambda: figures.agreement_figure(pd.DataFrame(
        {"block": BLOCKS, "agreement": np.linspace(.1, .9, 12), "chance": .05, "control": .06})),
}


@pytest.mark.parametrize("name", FIGURES)
def test_figures_fit_the_column_and_keep_legends_off_the_data(name):
    fig = FIGURES[name]()
    readable(fig)
    legends_off_the_data(fig)


def test_maps_have_a_labelled_colour_bar():
    assert colour_bars(FIGURES["heatmap"]()) == ["top-1 (%)"]
    assert "activation" in colour_bars(FIGURES["units"]())[0]


def test_the_papers_sweeps_are_black_crosses_labelled_with_their_model():
    fig = FIGURES["isolation"]()
    assert len(reported_lines(fig)) == 2
    assert sum("(reported, ViT-B/16-384)" in t for t in legend_texts(fig)) == 2
    # the notebooks' positional call, with the former paper_label
    fig = figures.isolation_figure(sweep(), logged(), "Table 1", "paper: ViT-B/16-384")
    assert sum("(paper: ViT-B/16-384)" in t for t in legend_texts(fig)) == 2
    assert not reported_lines(figures.isolation_figure(sweep(), None, "Table 1"))


def test_the_papers_models_are_hatched_bars():
    ax = FIGURES["fgbg"]().axes[0]
    hatched = [bar.get_hatch() for bar in ax.patches]
    assert hatched == [None, None, "///", "///"] * 2
