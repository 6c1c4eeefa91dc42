"""Figures: one seaborn theme, functions that take tidy DataFrames and return a Figure."""
from __future__ import annotations

from typing import Dict, Optional

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .stats import stars

TOKEN_COLOURS = {"[CLS]": "#d1495b", "image": "#00798c",
                 "class-labeled": "#edae49", "context-labeled": "#66a182"}


def set_theme() -> None:
    """The book's look (whitegrid, paper context), applied once per notebook."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95,
                  rc={"figure.dpi": 110, "savefig.dpi": 110, "axes.titleweight": "bold"})


def show(fig: plt.Figure) -> None:
    """Display a figure once in a notebook (and close it, so the inline backend does not
    display it a second time)."""
    from IPython.display import display

    display(fig)
    plt.close(fig)


def _finish(fig: plt.Figure, ax: plt.Axes, blocks, ylabel: str, ylim, title: str) -> plt.Figure:
    """The shared frame of the per-block figures: chance line, labels, block ticks, legend."""
    ax.axhline(0.5, color="0.4", ls="--", lw=1)
    ax.set(xlabel="block", ylabel=ylabel, ylim=ylim, title=title)
    ax.set_xticks(sorted(set(blocks)))
    ax.legend(loc="lower right", frameon=True)
    fig.tight_layout()
    return fig


def evolution_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """E4 / Fig 2: mean identifiability per block, one line per token type, chance at 0.5."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(data=frame, x="block", y="identifiability", hue="token", marker="o",
                 palette=TOKEN_COLOURS, ax=ax)
    return _finish(fig, ax, frame.block, "class identifiability", (0, 1.02), title)


def block_boxes_figure(boxes: pd.DataFrame, tests: Optional[pd.DataFrame] = None,
                       title: str = "") -> plt.Figure:
    """A2 / Fig 3a: identifiability boxplots per block, one box per token group ([CLS] and image
    tokens, or class- and context-labeled tokens), outliers hidden, with a star above the blocks
    where the test in ``tests`` gives p < 0.05."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    tokens = list(dict.fromkeys(boxes.token))
    width = 0.8 / len(tokens)
    for t, token in enumerate(tokens):
        part = boxes[boxes.token == token].sort_values("block")
        stats = [{"med": r.median, "q1": r.q1, "q3": r.q3, "whislo": r.whislo, "whishi": r.whishi,
                  "mean": r.mean, "fliers": []} for r in part.itertuples()]
        positions = part.block.to_numpy() + (t - (len(tokens) - 1) / 2) * width
        drawn = ax.bxp(stats, positions=positions, widths=width * 0.9, patch_artist=True,
                       showfliers=False, manage_ticks=False)
        for patch in drawn["boxes"]:
            patch.set(facecolor=TOKEN_COLOURS.get(token, "0.7"), alpha=0.75)
        ax.plot([], [], color=TOKEN_COLOURS.get(token, "0.7"), lw=6, label=token)
    if tests is not None:
        for row in tests.itertuples():
            ax.text(row.block, 1.03, stars(row.p_value), ha="center", va="bottom", fontsize=13)
    return _finish(fig, ax, boxes.block, "class identifiability", (0, 1.1), title)


def change_rate_figure(frame: pd.DataFrame, paper: Optional[pd.DataFrame] = None,
                       title: str = "") -> plt.Figure:
    """E5a / A4: % image tokens whose true-class logit grows in each block."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(frame.block, frame.change_rate, marker="o", color=TOKEN_COLOURS["image"],
            label="this run")
    if paper is not None and not paper.empty:
        ax.plot(paper.block, paper.value, marker="x", ls=":", color="0.3",
                label="paper (read off the plot)")
    return _finish(fig, ax, frame.block, "change rate", (0, 1.02), title)


def compare_evolution_figure(frames: Dict[str, pd.DataFrame]) -> plt.Figure:
    """Fig 2 across variants: [CLS] and image-token panels, one line per variant."""
    data = pd.concat([f.assign(variant=name) for name, f in frames.items()], ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, token in zip(axes, ["[CLS]", "image"], strict=True):
        part = data[data.token == token]
        if not part.empty:
            sns.lineplot(data=part, x="block", y="identifiability", hue="variant", marker="o",
                         ax=ax)
        ax.axhline(0.5, color="0.4", ls="--", lw=1)
        ax.set(title=f"{token} token" + ("s" if token == "image" else ""),
               xlabel="normalized block", ylim=(0, 1.02))
    axes[0].set_ylabel("class identifiability")
    fig.tight_layout()
    return fig
