"""The main paper's figures (Vilas et al. 2023, chapters 1-4): functions that take tidy
DataFrames and return a Figure, in the book's theme (:mod:`vitcls_utils.report.style`)."""
from __future__ import annotations

from typing import Dict, Optional

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .style import SEED, seeded_global_rng
from ..base.stats import stars

TOKEN_COLOURS = {"[CLS]": "#d1495b", "image": "#00798c",
                 "class-labeled": "#edae49", "context-labeled": "#66a182"}


def _finish(fig: plt.Figure, ax: plt.Axes, blocks, ylabel: str, ylim, title: str) -> plt.Figure:
    """The shared frame of the per-block figures: chance line, labels, block ticks, legend."""
    ax.axhline(0.5, color="0.4", ls="--", lw=1)
    ax.set(xlabel="block", ylabel=ylabel, ylim=ylim, title=title)
    ax.set_xticks(sorted(set(blocks)))
    ax.legend(loc="lower right", frameon=True)
    fig.tight_layout()
    return fig


def evolution_figure(frame: pd.DataFrame, title: str = "",
                     paper: Optional[pd.DataFrame] = None) -> plt.Figure:
    """E4 / Fig 2: mean identifiability per block, one line per token type, chance at 0.5; the
    paper's values where given (columns block, value, token) as crosses on dotted lines.

    Args:
        frame: :func:`vitcls_utils.analysis.identifiability.evolution`: columns ``block``
            (1-based), ``token`` ("[CLS]" or "image") and ``identifiability`` (in [0, 1]).
        title: the axes' title.
        paper: the paper's values, columns ``block``, ``value`` and ``token``; None or empty:
            none drawn.
    Returns:
        A Figure with one axes: identifiability against block, legend lower right.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sns.lineplot(data=frame, x="block", y="identifiability", hue="token", marker="o",
                 palette=TOKEN_COLOURS, ax=ax, seed=SEED)
    if paper is not None and not paper.empty:
        for token, part in paper.groupby("token", sort=False):
            ax.plot(part.block, part.value, ls=":", marker="x", lw=1,
                    color=TOKEN_COLOURS.get(token, "0.35"))
        ax.plot([], [], ls=":", marker="x", color="0.35", label="paper, approx.")
    return _finish(fig, ax, frame.block, "class identifiability", (0, 1.02), title)


def block_boxes_figure(boxes: pd.DataFrame, tests: Optional[pd.DataFrame] = None,
                       title: str = "") -> plt.Figure:
    """A2 / Fig 3a: identifiability boxplots per block, one box per token group ([CLS] and image
    tokens, or class- and context-labeled tokens), outliers hidden, with a star above the blocks
    where the test in ``tests`` gives p < 0.05.

    Args:
        boxes: a row per (block, token group): ``block``, ``token`` and the box statistics
            ``median``, ``q1``, ``q3``, ``whislo``, ``whishi``, ``mean``
            (:func:`vitcls_utils.analysis.identifiability.block_boxes` and its kin).
        tests: a row per block with columns ``block`` and ``p_value``; None: no stars.
        title: the axes' title.
    Returns:
        A Figure with one axes: side-by-side boxes per block, chance at 0.5.
    """
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
    """E5a / A4: % image tokens whose true-class logit grows in each block.

    Args:
        frame: :func:`vitcls_utils.analysis.identifiability.block_change_rate`: columns
            ``block`` and ``change_rate`` (fraction in [0, 1]).
        paper: the paper's values, columns ``block`` and ``value``; None or empty: none drawn.
        title: the axes' title.
    Returns:
        A Figure with one axes: change rate against block, chance at 0.5.
    """
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(frame.block, frame.change_rate, marker="o", color=TOKEN_COLOURS["image"],
            label="this run")
    if paper is not None and not paper.empty:
        ax.plot(paper.block, paper.value, marker="x", ls=":", color="0.3",
                label="paper (read off the plot)")
    return _finish(fig, ax, frame.block, "change rate", (0, 1.02), title)


def compare_evolution_figure(frames: Dict[str, pd.DataFrame]) -> plt.Figure:
    """Fig 2 across variants: [CLS] and image-token panels, one line per variant.

    Args:
        frames: {variant label: columns ``block`` (normalized, 1..12), ``token`` and
            ``identifiability``}, as from
            :func:`vitcls_utils.analysis.identifiability.normalized_blocks`.
    Returns:
        A Figure with two panels sharing the y axis ([CLS], image tokens); a panel stays empty
        where no variant has that token.
    """
    data = pd.concat([f.assign(variant=name) for name, f in frames.items()], ignore_index=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, token in zip(axes, ["[CLS]", "image"], strict=True):
        part = data[data.token == token]
        if not part.empty:
            sns.lineplot(data=part, x="block", y="identifiability", hue="variant", marker="o",
                         ax=ax, seed=SEED)
        ax.axhline(0.5, color="0.4", ls="--", lw=1)
        ax.set(title=f"{token} token" + ("s" if token == "image" else ""),
               xlabel="normalized block", ylim=(0, 1.02))
    axes[0].set_ylabel("class identifiability")
    fig.tight_layout()
    return fig


LAYER_COLOURS = {"attn": "#30638e", "mlp": "#edae49"}


def per_block_figure(frame: pd.DataFrame, y: str, hue: str, ylabel: str, title: str = "",
                     paper: Optional[pd.DataFrame] = None, chance: Optional[float] = None,
                     ylim=None, style: Optional[str] = None) -> plt.Figure:
    """A quantity per block, one line per ``hue`` (and ``style``) level; the paper's values,
    where given (columns block, value and ``hue``), as crosses on dotted lines.

    Args:
        frame: a row per point with columns ``block``, ``y``, ``hue`` (and ``style``); rows
            sharing (block, hue) are averaged with a confidence band.
        y: the column plotted.
        hue: the column whose levels are the lines.
        ylabel: the y axis's label.
        title: the axes' title.
        paper: the paper's values, columns ``block``, ``value`` and ``hue``; None or empty:
            none drawn.
        chance: a dashed horizontal line at this value; None: none.
        ylim: (bottom, top) of the y axis; None: automatic.
        style: a column whose levels set the line style; None: one style.
    Returns:
        A Figure with one axes.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    sns.lineplot(data=frame, x="block", y=y, hue=hue, style=style, marker="o", ax=ax,
                 seed=SEED)
    if paper is not None and not paper.empty:
        for level, part in paper.groupby(hue, sort=False):
            ax.plot(part.block, part.value, ls=":", marker="x", color="0.35", lw=1)
        ax.plot([], [], ls=":", marker="x", color="0.35", label="paper (read off the plot)")
    if chance is not None:
        ax.axhline(chance, color="0.4", ls="--", lw=1)
    ax.set(xlabel="block", ylabel=ylabel, title=title, ylim=ylim)
    ax.set_xticks(sorted(set(frame.block)))
    ax.legend(loc="best", frameon=True, fontsize="small")
    fig.tight_layout()
    return fig


def composition_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """E6 / Fig 3c: per block, the % of tokens whose top-1 matches each source, stacked (the
    categories overlap, so bars can exceed 100%).

    Args:
        frame: :func:`vitcls_utils.analysis.memories.residual_composition`: columns ``block``,
            ``source`` ("previous", "attn", "mlp", "composition") and ``percent``.
        title: the axes' title.
    Returns:
        A Figure with one axes: stacked bars per block, a dashed line at 100%.
    """
    wide = frame.pivot(index="block", columns="source", values="percent")
    wide = wide[[c for c in ("previous", "attn", "mlp", "composition") if c in wide]]
    colours = {"previous": "0.6", "attn": LAYER_COLOURS["attn"], "mlp": LAYER_COLOURS["mlp"],
               "composition": "#d1495b"}
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bottom = None
    for source in wide.columns:
        ax.bar(wide.index, wide[source], bottom=bottom, color=colours[source], label=source,
               width=0.75)
        bottom = wide[source] if bottom is None else bottom + wide[source]
    ax.axhline(100, color="0.3", ls="--", lw=1)
    ax.set(xlabel="block", ylabel="% of tokens (stacked)", title=title)
    ax.set_xticks(list(wide.index))
    ax.legend(loc="upper left", frameon=True, fontsize="small")
    fig.tight_layout()
    return fig


def per_class_figure(frame: pd.DataFrame, y: str, ylabel: str, title: str = "") -> plt.Figure:
    """Fig 4b / A7: per-class values per block (points) with their mean, attention and MLP
    side by side.

    Args:
        frame: a row per (block, layer, class) with columns ``block``, ``layer`` ("attn",
            "mlp") and ``y`` (:func:`vitcls_utils.analysis.memories.key_value_agreement`).
        y: the column plotted.
        ylabel: the y axis's label.
        title: the figure's suptitle.
    Returns:
        A Figure with a panel per layer present (attention, then MLP), sharing the y axis.
    """
    layers = [layer for layer in LAYER_COLOURS if layer in set(frame.layer)]
    fig, axes = plt.subplots(1, len(layers), figsize=(5 * len(layers), 3.6), sharey=True,
                             squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        part = frame[frame.layer == layer]
        with seeded_global_rng():
            sns.stripplot(data=part, x="block", y=y, color=LAYER_COLOURS[layer], alpha=0.35,
                          size=3, jitter=0.25, ax=ax, native_scale=True)
        means = part.groupby("block")[y].mean()
        ax.plot(means.index, means.to_numpy(), color="black", marker="o", lw=1.5, label="mean")
        ax.set(title=f"{layer}", xlabel="block", ylabel=ylabel)
        ax.legend(loc="upper left", fontsize="small")
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


METHOD_LABELS = {"class_space": "class space (ours)", "gradient_rollout": "Chefer (grad. rollout)",
                 "rollout": "attention rollout", "attention": "last-block attention",
                 "random": "random", "probe": "linear probe"}


def _overlay(ax: plt.Axes, view, heat, title: str) -> None:
    import numpy as np

    heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
    ax.imshow(view)
    ax.imshow(np.asarray(heat), cmap="jet", alpha=0.45, interpolation="bilinear")
    ax.set_title(title, fontsize="small")
    ax.axis("off")


def maps_figure(views, maps: Dict[str, "object"], titles, methods) -> plt.Figure:
    """Fig 5b / A10: one row per image: the image, then each method's map over it.

    Args:
        views: K images as the model sees them, [H, W, 3] uint8 each.
        maps: {method: [K, H, W] maps on those views}, as from
            :func:`vitcls_utils.analysis.explanation_maps.explain_images`; each map is scaled
            to [0, 1] for display.
        titles: K titles, one per image.
        methods: the keys of ``maps`` to show, in column order.
    Returns:
        A Figure with a [K, 1 + len(methods)] grid of panels.
    """
    rows, cols = len(views), len(methods) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.4 * rows), squeeze=False)
    for r, view in enumerate(views):
        axes[r, 0].imshow(view)
        axes[r, 0].set_title(titles[r], fontsize="small")
        axes[r, 0].axis("off")
        for c, method in enumerate(methods, start=1):
            _overlay(axes[r, c], view, maps[method][r], METHOD_LABELS.get(method, method))
    fig.tight_layout()
    return fig


def block_maps_figure(view, block_maps, title: str) -> plt.Figure:
    """Fig 5a: the class-space map of every block (heads summed) for one image and class.

    Args:
        view: the image as the model sees it, [H, W, 3] uint8.
        block_maps: [L, H, W] the map of each block on the view (e.g.
            ``maps["class_space_blocks"][k]`` of ``explain_images``).
        title: the figure's suptitle.
    Returns:
        A Figure with a panel per block, up to 6 per row.
    """
    n = len(block_maps)
    cols = min(n, 6)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.1 * rows), squeeze=False)
    for b, ax in enumerate(axes.flat):
        if b < n:
            _overlay(ax, view, block_maps[b], f"block {b + 1}")
        else:
            ax.axis("off")
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def perturbation_figure(curves: pd.DataFrame, title: str = "",
                        baselines: Optional[Dict[str, float]] = None) -> plt.Figure:
    """A11 / A12 right: top-1 accuracy vs % of image tokens removed, negative and positive,
    with horizontal ``baselines`` (name -> accuracy) drawn dashed.

    Args:
        curves: the curves of :func:`vitcls_utils.analysis.faithfulness.faithfulness_test`:
            columns ``method``, ``test`` ("negative", "positive"), ``removed`` (fraction of image
            tokens) and ``accuracy`` (in [0, 1]).
        title: the figure's suptitle.
        baselines: {name: accuracy in [0, 1]}, up to two lines (dashed, dotted); None: none.
    Returns:
        A Figure with two panels (negative, positive) sharing the y axis.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    data = curves.assign(method=curves.method.map(lambda m: METHOD_LABELS.get(m, m)),
                         removed=100 * curves.removed)
    for ax, test in zip(axes, ("negative", "positive"), strict=True):
        sns.lineplot(data=data[data.test == test], x="removed", y="accuracy", hue="method",
                     ax=ax, seed=SEED)
        for (name, value), style in zip((baselines or {}).items(), ("--", ":"), strict=False):
            ax.axhline(value, color="0.3", linestyle=style, linewidth=1, label=name)
        ax.set(title=f"{test} perturbation", xlabel="% of image tokens removed",
               ylabel="top-1 accuracy", ylim=(0, 1.02))
        ax.legend(fontsize="small")
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout()
    return fig


def probe_figure(table: pd.DataFrame, title: str) -> plt.Figure:
    """A12: top-1 accuracy per block of the linear probes and the class projection, one line
    per site kind and reader (``table`` from :func:`vitcls_utils.analysis.probing.probe_table`).

    Args:
        table: columns ``block``, ``site`` and one column per reader ("linear probe",
            "class projection"; top-1 as fractions in [0, 1]).
        title: the axes' title.
    Returns:
        A Figure with one axes, as :func:`per_block_figure` draws it.
    """
    long = table.melt(id_vars=["block", "site"], var_name="reader", value_name="top-1")
    long["line"] = long.site + ", " + long.reader
    return per_block_figure(long, "top-1", "line", "top-1 accuracy (image tokens)", title,
                            ylim=(0, 1.02))
