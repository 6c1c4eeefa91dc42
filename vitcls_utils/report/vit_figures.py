"""Chapter 5's figures (the ViT paper's Fig. 6, 7, 10, 11 and the few-shot curves): functions of
arrays and tidy frames that return a Figure, in the book's theme
(:mod:`vitcls_utils.report.vilas_figures`).
"""
from __future__ import annotations

from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import SEED


def components_figure(components, shares, title: str = "", columns: int = 7) -> plt.Figure:
    """Fig. 7 left: each principal component of the patch-embedding filters as an RGB patch,
    min-max scaled on its own, with its share of the variance.

    Args:
        components: [k, 3, P, P] the components, as from
            :func:`vitcls_utils.analysis.anatomy.patch_embedding_components`.
        shares: [k] each component's share of the variance (fraction in [0, 1]).
        title: the figure's suptitle.
        columns: panels per row.
    Returns:
        A Figure with a grid of k panels, ``columns`` per row, each titled with its share (%).
    """
    components = np.asarray(components)
    k = len(components)
    rows = (k + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(1.25 * columns, 1.4 * rows + 0.4),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        image = components[i].transpose(1, 2, 0)
        span = max(float(image.max() - image.min()), 1e-12)
        ax.imshow((image - image.min()) / span, interpolation="nearest")
        ax.set_title(f"{i + 1}: {100 * float(shares[i]):.1f}%", fontsize="x-small")
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def position_similarity_figure(similarity, title: str = "") -> plt.Figure:
    """Fig. 7 centre / Fig. 10: tile (r, c) holds the cosine similarity of patch (r, c)'s
    position embedding to every patch's, on the grid; one colour scale for all tiles.

    Args:
        similarity: [rows, cols, rows, cols] cosine similarities, as from
            :func:`vitcls_utils.analysis.anatomy.position_similarity`.
        title: the figure's suptitle.
    Returns:
        A Figure with a [rows, cols] grid of tiles (1-based row and column labels) and one
        colour bar over [-1, 1].
    """
    similarity = np.asarray(similarity)
    rows, cols = similarity.shape[:2]
    size = min(7.5, 0.55 * max(rows, cols) + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols / max(rows, cols) + 0.8, size),
                             squeeze=False, gridspec_kw={"wspace": 0.06, "hspace": 0.06})
    shown = None
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            shown = ax.imshow(similarity[r, c], vmin=-1, vmax=1, cmap="viridis",
                              interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(str(r + 1), fontsize="x-small", rotation=0, labelpad=6)
            if r == rows - 1:
                ax.set_xlabel(str(c + 1), fontsize="x-small")
    fig.colorbar(shown, ax=axes, shrink=0.6, label="cosine similarity")
    fig.suptitle(title, fontweight="bold")
    return fig


def attention_distance_figure(frame: pd.DataFrame, title: str = "", unit: str = "pixels",
                              control: Optional[pd.DataFrame] = None) -> plt.Figure:
    """Fig. 7 right / Fig. 11: every head's mean attention distance per block (points), with the
    random-init control's heads in grey where given.

    Args:
        frame: :func:`vitcls_utils.analysis.anatomy.attention_distances`: columns ``block``
            (1-based), ``head`` and ``distance``.
        title: the axes' title.
        unit: the distance's unit for the y label ("pixels" or "patches").
        control: the random-init control's frame, same columns; None or empty: not drawn.
    Returns:
        A Figure with one axes: heads as jittered points, their mean as a line.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    if control is not None and not control.empty:
        ax.scatter(control.block + 0.18, control.distance, s=10, color="0.65",
                   label="random init", zorder=1)
    rng = np.random.default_rng(SEED)
    jitter = rng.uniform(-0.12, 0.12, len(frame))
    ax.scatter(frame.block + jitter, frame.distance, s=14, c=frame["head"], cmap="tab20",
               label="heads (colour: head index)", zorder=2)
    mean = frame.groupby("block").distance.mean()
    ax.plot(mean.index, mean.values, color="k", lw=1.2, label="mean over heads")
    ax.set(xlabel="block", ylabel=f"mean attention distance ({unit})", title=title)
    ax.set_xticks(sorted(set(frame.block)))
    ax.set_ylim(bottom=0)
    ax.legend(loc="lower right", frameon=True, fontsize="small")
    fig.tight_layout()
    return fig


def fewshot_figure(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """k-shot top-1 per block, one panel per token choice, one line per shot count.

    Args:
        table: :func:`vitcls_utils.analysis.fewshot.fewshot_by_block`: columns ``token``,
            ``block``, ``shots`` and ``accuracy`` (fraction in [0, 1]).
        title: the figure's suptitle.
    Returns:
        A Figure with a panel per token choice, sharing the y axis.
    """

    def draw(ax, part):
        part = part.assign(shots=part.shots.astype(str) + "-shot")
        sns.lineplot(data=part, x="block", y="accuracy", hue="shots", marker="o", ax=ax,
                     palette="crest", seed=SEED)

    return _token_panels(table, draw, title)


def decoders_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """The bridge: per token choice, the class-space projection's top-1 per block (solid, black)
    beside each k-shot probe's (dashed).

    Args:
        frame: :func:`vitcls_utils.analysis.fewshot.decoders_by_block`: columns ``token``,
            ``block``, ``decoder`` ("projection" or "<k>-shot LSR") and ``accuracy`` (fraction).
        title: the figure's suptitle.
    Returns:
        A Figure with a panel per token choice, sharing the y axis.
    """
    probes = [d for d in dict.fromkeys(frame.decoder) if d != "projection"]
    colours = dict(zip(probes, sns.color_palette("crest", len(probes))))

    def draw(ax, part):
        for decoder, lines in part.groupby("decoder", sort=False):
            projection = decoder == "projection"
            ax.plot(lines.block, lines.accuracy, marker="o", ms=3.5,
                    color="k" if projection else colours[decoder], ls="-" if projection else "--",
                    lw=1.8 if projection else 1.2,
                    label="class-space projection" if projection else decoder)

    return _token_panels(frame, draw, title)


def _token_panels(frame: pd.DataFrame, draw, title: str) -> plt.Figure:
    """One panel of top-1 per block for each token choice of ``frame``, drawn by ``draw(ax,
    rows)``; shared axes, whole block numbers."""
    tokens = list(dict.fromkeys(frame.token))
    fig, axes = plt.subplots(1, len(tokens), figsize=(3.3 * len(tokens) + 0.6, 3.3),
                             sharey=True, squeeze=False)
    for ax, token in zip(axes[0], tokens):
        part = frame[frame.token == token]
        draw(ax, part)
        blocks = sorted(set(int(b) for b in part.block))
        ax.set(title=token, xlabel="block", ylabel="top-1 (test stimuli)", ylim=(0, 1.02))
        ax.set_xticks(blocks[::max(1, len(blocks) // 6)])
        ax.legend(fontsize="x-small", frameon=True)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def distance_and_gain_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """The bridge: mean attention distance per block (left axis) beside the per-block change of
    identifiability of [CLS] and of the image tokens (right axis).

    Args:
        frame: :func:`vitcls_utils.analysis.anatomy.distance_and_gain`: columns ``block``,
            ``distance`` (pixels) and, where present, "gain [CLS]" and "gain image".
        title: the axes' title.
    Returns:
        A Figure with one axes: the distance as a line, the gains as bars on a twin y axis.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(frame.block, frame.distance, color="k", marker="o", label="attention distance")
    ax.set(xlabel="block", ylabel="mean attention distance (px)", title=title)
    ax.set_ylim(bottom=0)
    gain_ax = ax.twinx()
    gain_ax.grid(False)
    for column, colour in (("gain [CLS]", "#d1495b"), ("gain image", "#00798c")):
        if column in frame and frame[column].notna().any():
            gain_ax.bar(frame.block + (-0.2 if "CLS" in column else 0.2), frame[column],
                        width=0.38, color=colour, alpha=0.6, label=f"identifiability {column}")
    gain_ax.axhline(0, color="0.4", lw=0.8)
    gain_ax.set_ylabel("identifiability change from the block before")
    handles = ax.get_legend_handles_labels()[0] + gain_ax.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + gain_ax.get_legend_handles_labels()[1]
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3,
              fontsize="x-small", frameon=False)
    ax.set_xticks(sorted(set(frame.block)))
    fig.tight_layout()
    return fig
