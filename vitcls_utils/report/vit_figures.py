"""Chapter 5's figures (the ViT paper's Fig. 6, 7, 10, 11 and the few-shot curves): functions of
arrays and tidy frames that return a Figure, in the book's theme and sizes
(:mod:`vitcls_utils.report.style`): at most the text column's width, legends below the axes.
"""
from __future__ import annotations

from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .style import HEIGHT, SEED, WIDTH, block_ticks, grid_shape, legend_below, subplots


def components_figure(components, shares, title: str = "", columns: int = 7) -> plt.Figure:
    """Fig. 7 left: each principal component of the patch-embedding filters as an RGB patch,
    min-max scaled on its own, with its share of the variance.

    Args:
        components: [k, 3, P, P] the components, as from
            :func:`vitcls_utils.analysis.anatomy.patch_embedding_components`.
        shares: [k] each component's share of the variance (fraction in [0, 1]).
        title: the figure's suptitle.
        columns: panels per row (the figure stays the column's width).
    Returns:
        A Figure with a grid of k panels, ``columns`` per row, each titled with its share of
        the variance (%); RGB patches, so no colour bar.
    """
    components = np.asarray(components)
    k = len(components)
    rows = (k + columns - 1) // columns
    side = WIDTH / columns
    fig, axes = subplots(rows, columns, height=(side + 0.25) * rows + 0.4,
                         width=side * columns, squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= k:
            continue
        image = components[i].transpose(1, 2, 0)
        span = max(float(image.max() - image.min()), 1e-12)
        ax.imshow((image - image.min()) / span, interpolation="nearest")
        ax.set_title(f"{i + 1}: {100 * float(shares[i]):.1f}%", fontsize="x-small")
    fig.suptitle(title)
    return fig


def position_similarity_figure(similarity, title: str = "") -> plt.Figure:
    """Fig. 7 centre / Fig. 10: tile (r, c) holds the cosine similarity of patch (r, c)'s
    position embedding to every patch's, on the grid; one colour scale for all tiles.

    Args:
        similarity: [rows, cols, rows, cols] cosine similarities, as from
            :func:`vitcls_utils.analysis.anatomy.position_similarity`.
        title: the axes' title.
    Returns:
        A Figure with one axes holding the [rows, cols] tiles (white gaps between them, 1-based
        row and column ticks) and one labelled colour bar over [-1, 1].
    """
    similarity = np.asarray(similarity, dtype=float)
    rows, cols = similarity.shape[:2]
    gap = max(1, round(max(rows, cols) / 7))
    step_y, step_x = rows + gap, cols + gap
    mosaic = np.full((rows * step_y - gap, cols * step_x - gap), np.nan)
    for r in range(rows):
        for c in range(cols):
            mosaic[r * step_y:r * step_y + rows, c * step_x:c * step_x + cols] = similarity[r, c]
    fig, ax = subplots(height=WIDTH - 0.6)
    cmap = plt.get_cmap("viridis").with_extremes(bad="white")
    shown = ax.imshow(mosaic, vmin=-1, vmax=1, cmap=cmap, interpolation="nearest")
    ax.grid(False)
    for axis, n, step, size in ((ax.xaxis, cols, step_x, cols), (ax.yaxis, rows, step_y, rows)):
        ticks = list(range(0, n, max(1, -(-n // 12))))
        axis.set_ticks([t * step + (size - 1) / 2 for t in ticks], [str(t + 1) for t in ticks])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set(xlabel="patch column (tile)", ylabel="patch row (tile)", title=title)
    fig.colorbar(shown, ax=ax, shrink=0.8, label="cosine similarity of the\nposition embeddings")
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
        A Figure with one axes: heads as jittered points, their mean as a line, the legend
        below.
    """
    fig, ax = subplots()
    if control is not None and not control.empty:
        ax.scatter(control.block + 0.18, control.distance, s=10, color="0.65",
                   label="random-init control's heads", zorder=1)
    rng = np.random.default_rng(SEED)
    jitter = rng.uniform(-0.12, 0.12, len(frame))
    ax.scatter(frame.block + jitter, frame.distance, s=14, c=frame["head"], cmap="tab20",
               label="heads (colour: head index)", zorder=2)
    mean = frame.groupby("block").distance.mean()
    ax.plot(mean.index, mean.values, color="k", lw=1.2, label="mean over heads")
    ax.set(xlabel="block", ylabel=f"mean attention distance\n({unit})", title=title)
    block_ticks(ax, frame.block)
    ax.set_ylim(bottom=0)
    legend_below(fig, [ax])
    return fig


def fewshot_figure(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """k-shot top-1 per block, one panel per token choice, one line per shot count.

    Args:
        table: :func:`vitcls_utils.analysis.fewshot.fewshot_by_block`: columns ``token``,
            ``block``, ``shots`` and ``accuracy`` (fraction in [0, 1]).
        title: the figure's suptitle.
    Returns:
        A Figure with a panel per token choice, two per row, sharing the axes; the legend
        below.
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
        A Figure with a panel per token choice, two per row, sharing the axes; the legend
        below.
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
    rows)``, two per row; shared axes, whole block numbers, one legend below."""
    tokens = list(dict.fromkeys(frame.token))
    rows, cols = grid_shape(len(tokens), 2)
    fig, axes = subplots(rows, cols, height=2.5 * rows + 0.9, sharex=True, sharey=True,
                         squeeze=False)
    for ax, token in zip(axes.flat, tokens):
        part = frame[frame.token == token]
        draw(ax, part)
        ax.set(title=token, xlabel="block", ylabel="top-1 accuracy on the\ntest stimuli (fraction)",
               ylim=(0, 1.02))
        block_ticks(ax, part.block, 6)
        ax.label_outer()
    for ax in axes.flat[len(tokens):]:
        ax.axis("off")
    fig.suptitle(title)
    legend_below(fig, axes, title="")
    return fig


def distance_and_gain_figure(frame: pd.DataFrame, title: str = "",
                             unit: str = "pixels") -> plt.Figure:
    """The bridge: mean attention distance per block (left axis) beside the per-block change of
    identifiability of [CLS] and of the image tokens (right axis).

    Args:
        frame: :func:`vitcls_utils.analysis.anatomy.distance_and_gain`: columns ``block``,
            ``distance`` (in ``unit``) and, where present, "gain [CLS]" and "gain image".
        title: the axes' title.
        unit: the distance's unit ("pixels", the default of ``attention_distances``, or
            "patches").
    Returns:
        A Figure with one axes: the distance as a line, the gains as bars on a twin y axis, the
        legend below.
    """
    fig, ax = subplots(height=HEIGHT + 0.2)
    ax.plot(frame.block, frame.distance, color="k", marker="o", label="attention distance")
    ax.set(xlabel="block", ylabel=f"mean attention distance\n({unit})", title=title)
    ax.set_ylim(bottom=0)
    gain_ax = ax.twinx()
    gain_ax.grid(False)
    for column, colour in (("gain [CLS]", "#d1495b"), ("gain image", "#00798c")):
        if column in frame and frame[column].notna().any():
            name = "[CLS]" if "CLS" in column else "image tokens"
            gain_ax.bar(frame.block + (-0.2 if "CLS" in column else 0.2), frame[column],
                        width=0.38, color=colour, alpha=0.6,
                        label=f"identifiability change, {name}")
    gain_ax.axhline(0, color="0.4", lw=0.8)
    gain_ax.set_ylabel("change in class identifiability\nfrom the block before")
    block_ticks(ax, frame.block)
    legend_below(fig, [ax, gain_ax], title="")
    return fig
