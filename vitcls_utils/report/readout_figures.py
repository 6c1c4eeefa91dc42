"""Chapter 8's figures: the three readouts per block, the direct contributions of attention
and MLPs per block, the top heads' per-position maps, and the per-block ablation curve."""
from __future__ import annotations

from typing import Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .readout_tables import KIND_NAMES, READOUT_NAMES
from .style import block_ticks, colour_scale, legend_below, palette, subplots

READOUT_COLOURS = {"plain readout": "#30638e", "tuned lens": "#d1495b",
                   "linear probe": "#edae49"}


def lens_figure(table: pd.DataFrame, title: str) -> plt.Figure:
    """Per block: KL(final || readout) (left) and top-1 agreement with the model's final
    prediction (right), one line per readout, solid for [CLS] and dashed for image tokens.

    Args:
        table: :func:`~vitcls_utils.analysis.readout_bridges.readout_table`'s table.
        title: the figure's title.

    Returns:
        A Figure with two axes, the legend below.
    """
    fig, axes = subplots(1, 2)
    colours = palette(list(READOUT_COLOURS), READOUT_COLOURS)
    for (kind, readout), part in table.groupby(["kind", "readout"], sort=False):
        style = dict(color=colours[READOUT_NAMES[readout]], marker="o", ms=3,
                     ls="-" if kind == "cls" else "--",
                     label=f"{READOUT_NAMES[readout]}, {KIND_NAMES[kind]}")
        if readout != "probe":
            axes[0].plot(part.block, part.kl, **style)
        axes[1].plot(part.block, part.agreement, **style)
    axes[0].set(ylabel="KL(final ‖ readout), nats", xlabel="block")
    axes[1].set(ylabel="top-1 = model's prediction\n(fraction of tokens)", xlabel="block",
                ylim=(0, 1.02))
    for ax in axes:
        block_ticks(ax, table.block.unique())
    fig.suptitle(title)
    legend_below(fig, ncols=2)
    return fig


def writers_figure(writers: pd.DataFrame, title: str) -> plt.Figure:
    """Mean direct contribution to the true-class logit per block: all heads together, the
    top head, and the MLP.

    Args:
        writers: DataFrame of :func:`~vitcls_utils.analysis.logit_decomposition.block_writers`
            (0-based ``block``; ``attention``, ``head_logit``, ``mlp``).
        title: the axes' title.

    Returns:
        A Figure with one axes.
    """
    fig, ax = subplots()
    blocks = writers.block + 1
    for column, label, colour in (("attention", "attention (all heads + bias)", "#30638e"),
                                  ("head_logit", "its top head", "#00798c"),
                                  ("mlp", "MLP (+ bias)", "#edae49")):
        ax.plot(blocks, writers[column], marker="o", ms=3, color=colour, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="block", ylabel="direct contribution to the\ntrue-class logit (mean)",
           title=title)
    block_ticks(ax, blocks)
    legend_below(fig)
    return fig


def head_maps_figure(heads: np.ndarray, chosen: Sequence[Tuple[int, int, float]],
                     num_prefix: int, grid: Tuple[int, int], title: str) -> plt.Figure:
    """The top heads' direct contribution per source position, mean over images, as maps on
    the patch grid (the prefix tokens' share in each title).

    Args:
        heads: :attr:`~vitcls_utils.analysis.logit_decomposition.Decomposition.heads`
            [B, L, H, N].
        chosen: (block, head, mean contribution) of the heads drawn (0-based).
        num_prefix: prefix tokens before the image tokens; grid: the patch grid (rows, cols).
        title: the figure's title.

    Returns:
        A Figure, one map per head and one shared colour bar (logit units).
    """
    fig, axes = subplots(1, len(chosen), height=2.6, squeeze=False)
    maps = [heads[:, b, h, num_prefix:].mean(0).reshape(grid) for b, h, _ in chosen]
    bound = max(float(np.abs(m).max()) for m in maps) or 1.0
    for ax, m, (b, h, total) in zip(axes[0], maps, chosen):
        ax.imshow(m, cmap="RdBu_r", vmin=-bound, vmax=bound)
        prefix = heads[:, b, h, :num_prefix].sum(-1).mean()
        ax.set_title(f"block {b + 1}, head {h}\ntotal {total:.2f}, prefix {prefix:.2f}",
                     fontsize="small")
        ax.set_xticks([])
        ax.set_yticks([])
    colour_scale(fig, axes[0], "direct contribution per position (logit)", cmap="RdBu_r",
                 vmin=-bound, vmax=bound)
    fig.suptitle(title)
    return fig


def ablation_curve_figure(curve: pd.DataFrame, title: str) -> plt.Figure:
    """Per block: the drop of the true-class logit when all its heads are mean-ablated, with
    its 95% interval over images.

    Args:
        curve: :func:`~vitcls_utils.analysis.head_ablation.block_curve`'s table.
        title: the axes' title.

    Returns:
        A Figure with one axes.
    """
    fig, ax = subplots()
    est = np.array([i.estimate for i in curve.logit_drop])
    low = np.array([i.low for i in curve.logit_drop])
    high = np.array([i.high for i in curve.logit_drop])
    ax.errorbar(curve.block, est, yerr=[est - low, high - est], marker="o", ms=3,
                color="#30638e", capsize=2)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel="block (all heads mean-ablated)", ylabel="true-class logit drop", title=title)
    block_ticks(ax, curve.block)
    return fig
