"""The main paper's figures (Vilas et al. 2023, chapters 1-4): functions that take tidy
DataFrames and return a Figure, in the book's theme and sizes (:mod:`vitcls_utils.report.style`):
at most the text column's width, legends below the axes, the paper's reported values as black
crosses on dotted lines, a colour bar under every map."""
from __future__ import annotations

import textwrap
from typing import Dict, Optional, Union

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .style import (HEIGHT, SEED, WIDTH, block_ticks, colour_scale, draw_reported, grid_shape,
                    legend_below, palette, reported_handle, seeded_global_rng, subplots)
from ..base.stats import stars

TOKEN_COLOURS = {"[CLS]": "#d1495b", "image": "#00798c",
                 "class-labeled": "#edae49", "context-labeled": "#66a182"}
LAYER_COLOURS = {"attn": "#30638e", "mlp": "#edae49"}
LAYER_NAMES = {"attn": "attention", "mlp": "MLP"}
IDENTIFIABILITY = "class identifiability"
#: A6's boxes: per class, the largest cosine similarity of its embedding and a value vector
AGREEMENT = "class-value agreement\n(max. cosine similarity)"


def palette_of(levels) -> Dict[str, object]:
    """One colour per level: the token and layer colours where they name every level."""
    return palette(levels, {**TOKEN_COLOURS, **LAYER_COLOURS})


def _finish(fig: plt.Figure, ax: plt.Axes, blocks, ylabel: str, ylim, title: str,
            chance: Optional[float] = 0.5, extra=()) -> plt.Figure:
    """The shared frame of the per-block figures: chance line, labels, block ticks, legend
    below."""
    if chance is not None:
        ax.axhline(chance, color="0.4", ls="--", lw=1, label=f"chance ({chance:g})")
    ax.set(xlabel="block", ylabel=ylabel, ylim=ylim, title=title)
    block_ticks(ax, blocks)
    legend_below(fig, [ax], extra=extra)
    return fig


def evolution_figure(frame: pd.DataFrame, title: str = "",
                     paper: Optional[pd.DataFrame] = None,
                     reported_label: str = "reported") -> plt.Figure:
    """E4 / Fig 2: mean identifiability per block, one line per token type, chance at 0.5; the
    paper's reported values where given as black crosses on dotted lines.

    Args:
        frame: :func:`vitcls_utils.analysis.identifiability.evolution`: columns ``block``
            (1-based), ``token`` ("[CLS]" or "image") and ``identifiability`` (in [0, 1]).
        title: the axes' title.
        paper: the paper's values, columns ``block``, ``value`` and ``token``; None or empty:
            none drawn.
        reported_label: the reported values' legend entry (e.g. "reported, ViT-B/32").
    Returns:
        A Figure with one axes: identifiability against block, the legend below it.
    """
    fig, ax = subplots()
    sns.lineplot(data=frame, x="block", y="identifiability", hue="token", marker="o",
                 palette=palette_of(frame.token), ax=ax, seed=SEED)
    extra = []
    if paper is not None and not paper.empty:
        for token, part in paper.groupby("token", sort=False):
            draw_reported(ax, part.block, part.value, TOKEN_COLOURS.get(token, "black"))
        extra = [reported_handle(reported_label)]
    return _finish(fig, ax, frame.block, f"{IDENTIFIABILITY} (mean)", (0, 1.02), title,
                   extra=extra)


def block_boxes_figure(boxes: pd.DataFrame, tests: Optional[pd.DataFrame] = None,
                       title: str = "", ylabel: Optional[str] = None,
                       chance: Union[float, None, str] = "auto") -> plt.Figure:
    """A2 / Fig 3a / A6: boxplots per block, one box per group ([CLS] and image tokens, class-
    and context-labeled tokens, or a layer's class-value agreement), outliers hidden, with a
    star above the blocks where the test in ``tests`` gives p < 0.05.

    Args:
        boxes: a row per (block, group): ``block``, ``token`` and the box statistics
            ``median``, ``q1``, ``q3``, ``whislo``, ``whishi``, ``mean``
            (:func:`vitcls_utils.analysis.identifiability.block_boxes` and its kin; groups
            "attn" and "mlp", as from :func:`vitcls_utils.analysis.memories.agreement_boxes`,
            are a layer's class-value agreement, a cosine similarity).
        tests: a row per block with columns ``block`` and ``p_value``; None: no stars.
        title: the axes' title.
        ylabel: the y axis's label; None: class identifiability, or class-value agreement for
            layers.
        chance: the dashed chance line; "auto": 0.5 for identifiability, none for the
            agreement (a cosine similarity has no chance level at 0.5); None: none.
    Returns:
        A Figure with one axes: side-by-side boxes per block, the legend below it.
    """
    tokens = list(dict.fromkeys(boxes.token))
    agreement = set(tokens) <= set(LAYER_COLOURS)
    ylabel = ylabel or (AGREEMENT if agreement else IDENTIFIABILITY)
    chance = (None if agreement else 0.5) if chance == "auto" else chance
    low, high = (min(0.0, float(boxes.whislo.min())), max(1.0, float(boxes.whishi.max())))
    if agreement:
        high = float(boxes.whishi.max())
    span = high - low
    fig, ax = subplots()
    width = 0.8 / len(tokens)
    colours = palette_of(tokens)
    for t, token in enumerate(tokens):
        part = boxes[boxes.token == token].sort_values("block")
        stats = [{"med": r.median, "q1": r.q1, "q3": r.q3, "whislo": r.whislo, "whishi": r.whishi,
                  "mean": r.mean, "fliers": []} for r in part.itertuples()]
        positions = part.block.to_numpy() + (t - (len(tokens) - 1) / 2) * width
        drawn = ax.bxp(stats, positions=positions, widths=width * 0.9, patch_artist=True,
                       showfliers=False, manage_ticks=False)
        for patch in drawn["boxes"]:
            patch.set(facecolor=colours[token], alpha=0.75)
        ax.plot([], [], color=colours[token], lw=6, label=LAYER_NAMES.get(token, token))
    if tests is not None:
        for row in tests.itertuples():
            ax.text(row.block, high + 0.03 * span, stars(row.p_value), ha="center",
                    va="bottom", fontsize=13)
    return _finish(fig, ax, boxes.block, ylabel, (low, high + 0.12 * span), title, chance)


def change_rate_figure(frame: pd.DataFrame, paper: Optional[pd.DataFrame] = None,
                       title: str = "", reported_label: str = "reported") -> plt.Figure:
    """E5a / A4: the fraction of image tokens whose true-class logit grows in each block.

    Args:
        frame: :func:`vitcls_utils.analysis.identifiability.block_change_rate`: columns
            ``block`` and ``change_rate`` (fraction in [0, 1]).
        paper: the paper's values, columns ``block`` and ``value``; None or empty: none drawn.
        title: the axes' title.
        reported_label: the reported values' legend entry (e.g. "reported, ViT-B/32").
    Returns:
        A Figure with one axes: change rate against block, chance at 0.5, the legend below.
    """
    fig, ax = subplots()
    ax.plot(frame.block, frame.change_rate, marker="o", color=TOKEN_COLOURS["image"],
            label="this run")
    if paper is not None and not paper.empty:
        draw_reported(ax, paper.block, paper.value, label=reported_label)
    return _finish(fig, ax, frame.block, "image tokens whose true-class\nlogit grows (fraction)",
                   (0, 1.02), title)


def compare_evolution_figure(frames: Dict[str, pd.DataFrame]) -> plt.Figure:
    """Fig 2 across variants: [CLS] and image-token panels, one line per variant, one colour
    per variant in both panels, the legend below both.

    Args:
        frames: {variant label: columns ``block`` (normalized, 1..12), ``token`` and
            ``identifiability``}, as from
            :func:`vitcls_utils.analysis.identifiability.normalized_blocks`.
    Returns:
        A Figure with two panels sharing the y axis ([CLS], image tokens); a panel stays empty
        where no variant has that token.
    """
    data = pd.concat([f.assign(variant=name) for name, f in frames.items()], ignore_index=True)
    colours = dict(zip(frames, sns.color_palette(n_colors=len(frames))))
    fig, axes = subplots(1, 2, height=HEIGHT + 0.25 * (len(frames) // 3), sharey=True)
    for ax, token in zip(axes, ["[CLS]", "image"], strict=True):
        part = data[data.token == token]
        if not part.empty:
            sns.lineplot(data=part, x="block", y="identifiability", hue="variant", marker="o",
                         palette={v: colours[v] for v in part.variant.unique()}, ax=ax,
                         seed=SEED)
        ax.axhline(0.5, color="0.4", ls="--", lw=1, label="chance (0.5)")
        ax.set(title=f"{token} token" + ("s" if token == "image" else ""),
               xlabel="normalized block", ylim=(0, 1.02))
        block_ticks(ax, data.block, 6)
    axes[0].set_ylabel(f"{IDENTIFIABILITY} (mean)")
    legend_below(fig, axes, title="variant (24-block models: blocks 2k−1 and 2k averaged)")
    return fig


def per_block_figure(frame: pd.DataFrame, y: str, hue: str, ylabel: str, title: str = "",
                     paper: Optional[pd.DataFrame] = None, chance: Optional[float] = None,
                     ylim=None, style: Optional[str] = None,
                     reported_label: str = "reported") -> plt.Figure:
    """A quantity per block, one line per ``hue`` (and ``style``) level; the paper's reported
    values, where given (columns block, value and ``hue``), as black crosses on dotted lines
    in their level's colour.

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
        reported_label: the reported values' legend entry (e.g. "reported, ViT-B/32").
    Returns:
        A Figure with one axes, the legend below it.
    """
    fig, ax = subplots()
    colours = palette_of(frame[hue])
    sns.lineplot(data=frame, x="block", y=y, hue=hue, style=style, marker="o", ax=ax,
                 palette=colours, seed=SEED)
    extra = []
    if paper is not None and not paper.empty:
        for level, part in paper.groupby(hue, sort=False):
            draw_reported(ax, part.block, part.value, colours.get(level, "black"))
        extra = [reported_handle(reported_label)]
    if chance is not None:
        ax.axhline(chance, color="0.4", ls="--", lw=1)
    ax.set(xlabel="block", ylabel=ylabel, title=title, ylim=ylim)
    block_ticks(ax, frame.block)
    legend_below(fig, [ax], extra=extra)
    return fig


def composition_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """E6 / Fig 3c: per block, the % of tokens whose top-1 matches each source, stacked (the
    categories overlap, so bars can exceed 100%).

    Args:
        frame: :func:`vitcls_utils.analysis.memories.residual_composition`: columns ``block``,
            ``source`` ("previous", "attn", "mlp", "composition") and ``percent``.
        title: the axes' title.
    Returns:
        A Figure with one axes: stacked bars per block, a dashed line at 100%, the legend below.
    """
    wide = frame.pivot(index="block", columns="source", values="percent")
    wide = wide[[c for c in ("previous", "attn", "mlp", "composition") if c in wide]]
    colours = {"previous": "0.6", "attn": LAYER_COLOURS["attn"], "mlp": LAYER_COLOURS["mlp"],
               "composition": "#d1495b"}
    names = {"previous": "the block's input", "attn": "the attention output",
             "mlp": "the MLP output", "composition": "none of them (composition)"}
    fig, ax = subplots()
    bottom = None
    for source in wide.columns:
        ax.bar(wide.index, wide[source], bottom=bottom, color=colours[source],
               label=names[source], width=0.75)
        bottom = wide[source] if bottom is None else bottom + wide[source]
    ax.axhline(100, color="0.3", ls="--", lw=1)
    ax.set(xlabel="block", ylabel="tokens whose top-1 is the\nsource's (%, stacked)",
           title=title)
    block_ticks(ax, wide.index)
    legend_below(fig, [ax], title="top-1 after the block equals that of")
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
        A Figure with a panel per layer present (attention, then MLP), sharing the y axis, and
        the legend below them.
    """
    layers = [layer for layer in LAYER_COLOURS if layer in set(frame.layer)]
    fig, axes = subplots(1, len(layers), sharey=True, squeeze=False)
    for ax, layer in zip(axes[0], layers, strict=True):
        part = frame[frame.layer == layer]
        with seeded_global_rng():
            sns.stripplot(data=part, x="block", y=y, color=LAYER_COLOURS[layer], alpha=0.35,
                          size=3, jitter=0.25, ax=ax, native_scale=True)
        means = part.groupby("block")[y].mean()
        ax.plot(means.index, means.to_numpy(), color="black", marker="o", lw=1.5,
                label="mean over classes")
        ax.set(title=LAYER_NAMES[layer], xlabel="block", ylabel=ylabel)
        block_ticks(ax, part.block, 6)
    one = plt.Line2D([], [], ls="", marker="o", ms=4, color="0.5", alpha=0.6,
                     label="a class (jittered)")
    fig.suptitle(title)
    legend_below(fig, axes[0], extra=[one])
    return fig


METHOD_LABELS = {"class_space": "class space (ours)", "gradient_rollout": "Chefer (grad. rollout)",
                 "rollout": "attention rollout", "attention": "last-block attention",
                 "random": "random", "probe": "linear probe"}
MAP_SCALE = "map, scaled to [0, 1] per panel (overlay at 45% opacity)"


def _overlay(ax: plt.Axes, view, heat, title: str, chars: int) -> None:
    import numpy as np

    heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
    ax.imshow(view)
    ax.imshow(np.asarray(heat), cmap="jet", alpha=0.45, interpolation="bilinear", vmin=0, vmax=1)
    ax.set_title(textwrap.fill(title, chars), fontsize="small")
    ax.axis("off")


def maps_figure(views, maps: Dict[str, "object"], titles, methods) -> plt.Figure:
    """Fig 5b / A10: one row per image: the image, then each method's map over it, and one
    colour bar under them.

    Args:
        views: K images as the model sees them, [H, W, 3] uint8 each.
        maps: {method: [K, H, W] maps on those views}, as from
            :func:`vitcls_utils.analysis.explanation_maps.explain_images`; each map is scaled
            to [0, 1] for display.
        titles: K titles, one per image.
        methods: the keys of ``maps`` to show, in column order.
    Returns:
        A Figure with a [K, 1 + len(methods)] grid of panels at most the column wide, and a
        colour bar.
    """
    rows, cols = len(views), len(methods) + 1
    side = min(1.9, WIDTH / cols)
    chars = int(side * 72 / (0.65 * 9))  # characters of a bold "small" title per panel
    fig, axes = subplots(rows, cols, height=(side + 0.45) * rows + 0.7, width=side * cols,
                         squeeze=False)
    for r, view in enumerate(views):
        axes[r, 0].imshow(view)
        axes[r, 0].set_title(textwrap.fill(str(titles[r]), chars), fontsize="small")
        axes[r, 0].axis("off")
        for c, method in enumerate(methods, start=1):
            _overlay(axes[r, c], view, maps[method][r], METHOD_LABELS.get(method, method), chars)
    colour_scale(fig, axes, MAP_SCALE)
    return fig


def block_maps_figure(view, block_maps, title: str) -> plt.Figure:
    """Fig 5a: the class-space map of every block (heads summed) for one image and class, and
    one colour bar under them.

    Args:
        view: the image as the model sees it, [H, W, 3] uint8.
        block_maps: [L, H, W] the map of each block on the view (e.g.
            ``maps["class_space_blocks"][k]`` of ``explain_images``).
        title: the figure's suptitle.
    Returns:
        A Figure with a panel per block, up to 4 per row, and a colour bar.
    """
    n = len(block_maps)
    rows, cols = grid_shape(n, 4)
    side = WIDTH / 4
    fig, axes = subplots(rows, cols, height=(side + 0.3) * rows + 1.0, width=side * cols,
                         squeeze=False)
    for b, ax in enumerate(axes.flat):
        if b < n:
            _overlay(ax, view, block_maps[b], f"block {b + 1}", 40)
        else:
            ax.axis("off")
    fig.suptitle(title)
    colour_scale(fig, axes, MAP_SCALE)
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
        A Figure with two panels (negative, positive) sharing the y axis, the legend below.
    """
    fig, axes = subplots(1, 2, sharey=True)
    data = curves.assign(method=curves.method.map(lambda m: METHOD_LABELS.get(m, m)),
                         removed=100 * curves.removed)
    colours = palette_of(data.method)
    for ax, test in zip(axes, ("negative", "positive"), strict=True):
        part = data[data.test == test]
        sns.lineplot(data=part, x="removed", y="accuracy", hue="method", ax=ax, seed=SEED,
                     palette={m: colours[m] for m in part.method.unique()})
        for (name, value), style in zip((baselines or {}).items(), ("--", ":"), strict=False):
            ax.axhline(value, color="0.3", linestyle=style, linewidth=1, label=name)
        ax.set(title=f"{test} perturbation", xlabel="image tokens removed (%)",
               ylabel="top-1 accuracy (fraction)", ylim=(0, 1.02))
    fig.suptitle(title)
    legend_below(fig, axes, title="")
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
    long = table.melt(id_vars=["block", "site"], var_name="reader", value_name="top-1",
                      value_vars=[c for c in ("linear probe", "class projection") if c in table])
    long["site, reader"] = long.site + ", " + long.reader
    return per_block_figure(long, "top-1", "site, reader",
                            "top-1 accuracy of image\ntokens (fraction)", title, ylim=(0, 1.02))
