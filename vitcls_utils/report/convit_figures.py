"""Chapter 7's figures (ConViT, d'Ascoli et al. 2021): gates, learned locality, nonlocality
beside DeiT's, attention maps with their gates, masking, sample efficiency and the
identifiability bridge. Functions of tidy frames and arrays that return a Figure, in the book's
sizes (:mod:`vitcls_utils.report.style`): at most the text column's width, legends below the
axes, the paper's values drawn apart from this run's, a colour bar on the attention maps."""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm

from .style import (HEIGHT, WIDTH, block_ticks, draw_reported, grid_shape, legend_below,
                    subplots)


def gating_figure(gates: pd.DataFrame, title: str = "",
                  paper: Optional[pd.DataFrame] = None, paper_label: Optional[str] = None,
                  reported_label: str = "reported") -> plt.Figure:
    """σ(λ) of every head per GPSA layer (dots) and their mean (line); the gates printed on
    the paper's figures (black crosses, labelled with their model) where given.

    Args:
        gates: this run's gates, columns ``layer``, ``head`` (1-based) and ``gate`` (σ(λ) in
            [0, 1]), as from :func:`vitcls_utils.analysis.convit.gates`.
        title: the axes' title.
        paper: the paper's printed gates (same columns, :func:`convit_tables.paper_gates`); None
            or empty: none drawn.
        paper_label: the former name of ``reported_label``, used where that is left at
            "reported"; None: not used.
        reported_label: the legend entry of the paper's gates (e.g. "reported, ConViT-Ti").
    Returns:
        A Figure with one axes: gate against GPSA layer, the legend below.
    """
    name = paper_label if paper_label is not None and reported_label == "reported" \
        else reported_label
    fig, ax = subplots()
    heads = gates["head"].nunique()
    offsets = (gates["head"] - (heads + 1) / 2) * 0.5 / max(heads, 1)
    ax.scatter(gates.layer + offsets, gates.gate, s=16, color="#30638e", label="heads, this run")
    mean = gates.groupby("layer").gate.mean()
    ax.plot(mean.index, mean.values, color="#30638e", lw=1.5, label="mean, this run")
    if paper is not None and not paper.empty:
        top = paper["head"].max()
        poffsets = (paper["head"] - (top + 1) / 2) * 0.5 / top
        draw_reported(ax, paper.layer + poffsets, paper.gate, label=name).set_linestyle("")
    ax.set(xlabel="GPSA layer", ylabel="gate σ(λ)\n(0: content, 1: positional)",
           ylim=(-0.04, 1.04), title=title)
    ax.set_xticks(sorted(gates.layer.unique()))
    legend_below(fig, [ax])
    return fig


def locality_figure(local: pd.DataFrame, title: str = "") -> plt.Figure:
    """Left: each head's locality strength α per layer. Right: each head's attention centre
    (key minus query, in patches), coloured by layer, sized by its gate.

    Args:
        local: columns ``layer``, ``head``, ``strength`` (α), ``centre_x``, ``centre_y`` (patches;
            NaN: no centre, not drawn) and ``gate``, as from
            :func:`vitcls_utils.analysis.convit.locality`.
        title: the figure's suptitle.
    Returns:
        A Figure with two axes: strength per layer (left) and the centres, y downwards (right);
        the layers' colours in a legend below.
    """
    fig, (left, right) = subplots(1, 2, height=HEIGHT + 0.3)
    layers = sorted(local.layer.unique())
    palette = dict(zip(layers, sns.color_palette("viridis", len(layers))))
    left.scatter(local.layer, local.strength, s=16, c=[palette[v] for v in local.layer])
    left.set(xlabel="GPSA layer", ylabel="locality strength α", title="strength")
    left.set_xticks(layers)
    left.axhline(0, color="0.6", lw=0.8)
    shown = local.dropna(subset=["centre_x"])
    right.scatter(shown.centre_x, shown.centre_y, s=12 + 60 * shown.gate,
                  c=[palette[v] for v in shown.layer], alpha=0.8)
    right.axhline(0, color="0.7", lw=0.6)
    right.axvline(0, color="0.7", lw=0.6)
    right.set(xlabel="centre δx (patches)", ylabel="centre δy (patches)",
              title="centres (size: gate)")
    right.invert_yaxis()  # rows grow downwards, as in the image
    handles = [plt.Line2D([], [], ls="", marker="o", color=palette[v], label=f"layer {v}")
               for v in layers]
    fig.suptitle(title)
    legend_below(fig, [left, right], extra=handles, title="GPSA layer (colour)")
    return fig


def nonlocality_figure(frames: Mapping[str, pd.DataFrame], title: str = "") -> plt.Figure:
    """Nonlocality (mean attention distance in patches) per layer: heads as dots and their
    mean as a line, one colour per model.

    Args:
        frames: {model label: columns ``block`` (1-based), ``head``, ``distance`` (patches)}, as
            from :func:`vitcls_utils.analysis.anatomy.attention_distances`; the first model's
            blocks set the ticks.
        title: the axes' title.
    Returns:
        A Figure with one axes: nonlocality against layer, one colour per model, the legend
        below.
    """
    fig, ax = subplots()
    colours = dict(zip(frames, sns.color_palette("colorblind", len(frames))))
    for label, frame in frames.items():
        ax.scatter(frame.block, frame.distance, s=9, alpha=0.45, color=colours[label])
        mean = frame.groupby("block").distance.mean()
        ax.plot(mean.index, mean.values, marker="o", ms=4, color=colours[label], label=label)
    ax.set(xlabel="layer", ylabel="nonlocality: mean attention\ndistance (patches)", title=title)
    block_ticks(ax, next(iter(frames.values())).block)
    heads = plt.Line2D([], [], ls="", marker="o", ms=4, color="0.5", alpha=0.6,
                       label="a head (dots)")
    legend_below(fig, [ax], extra=[heads])
    return fig


def attention_maps_figure(maps: Mapping[int, "np.ndarray"], gates: Mapping[int, "np.ndarray"],
                          title: str = "", query=None) -> plt.Figure:
    """One row per layer, one panel per head: a query patch's attention on a log colour scale,
    each GPSA head titled with its gate σ(λ) (MHSA layers have none).

    Args:
        maps: {0-based block: [heads, rows, cols] attention of the query patch}, as from
            :func:`vitcls_utils.analysis.convit.query_attention_maps`; rows follow its order.
        gates: {0-based block: [heads] gates σ(λ)}; a block missing (MHSA) gets no σ in titles.
        title: the figure's suptitle.
        query: (row, column) of the query patch, marked with a cross on every panel; None: none.
    Returns:
        A Figure with a panel per head, at most 6 per row (a layer's heads wrap onto further
        rows; unused panels off), and one shared, labelled log colour bar.
    """
    blocks = list(maps)
    heads = max(int(maps[b].shape[0]) for b in blocks)
    per_block, cols = grid_shape(heads, 6)
    side = (WIDTH - 1.0) / cols
    fig, axes = subplots(len(blocks) * per_block, cols, squeeze=False, width=side * cols + 1.0,
                         height=(side + 0.4) * len(blocks) * per_block + 0.6)
    values = np.concatenate([np.asarray(maps[b]).ravel() for b in blocks])
    floor = max(float(values[values > 0].min()) if (values > 0).any() else 1e-6, 1e-6)
    norm = LogNorm(vmin=floor, vmax=max(float(values.max()), floor * 10))
    image = None
    for b, block in enumerate(blocks):
        gate = gates.get(block)
        for slot in range(per_block * cols):
            ax = axes[b * per_block + slot // cols, slot % cols]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if slot % cols == 0:
                ax.set_ylabel(f"layer {block + 1}", fontsize="small")
            if slot >= maps[block].shape[0]:
                ax.axis("off")
                continue
            image = ax.imshow(np.clip(np.asarray(maps[block][slot]), floor, None), norm=norm,
                              cmap="magma")
            if query is not None:
                ax.scatter([query[1]], [query[0]], marker="x", s=14, color="#00c2d1")
            label = f"h{slot + 1}" + (f"\nσ={gate[slot]:.2f}" if gate is not None else "")
            ax.set_title(label, fontsize="x-small")
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight (log scale)")
    fig.suptitle(title + ("\n× marks the query patch" if query is not None else ""))
    return fig


def masking_figure(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """Top-1 (%) under each test-time mask, per model (this run), as bars.

    Args:
        table: a row per (model, mask) with columns ``model``, ``mask`` and ``top1`` (%), e.g.
            :func:`convit_tables.masking` with "top-1, this run" renamed ``top1``.
        title: the axes' title.
    Returns:
        A Figure with one axes: grouped bars, masks on x, one hue per model, the legend below.
    """
    fig, ax = subplots(height=HEIGHT + 0.4)
    sns.barplot(data=table, x="mask", y="top1", hue="model", ax=ax, palette="colorblind")
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_ha("right")
    ax.set(xlabel="", ylabel="top-1 (%)", ylim=(0, 102), title=title)
    legend_below(fig, [ax])
    return fig


def sample_efficiency_figure(runs: pd.DataFrame, paper: Optional[pd.DataFrame] = None,
                             title: str = "", reported_label: str = "reported") -> plt.Figure:
    """Top-1 against the fraction of training data kept (log axis): this run's toy pair
    (solid) and the paper's DeiT-S and ConViT-S on ImageNet (black crosses on dotted lines).

    Args:
        runs: a row per run with columns ``model`` (a label; one containing "ConViT" is drawn
            as the ConViT), ``fraction`` (of the training set) and ``top1`` (%); seeds averaged.
        paper: the paper's Table 2 with columns ``fraction``, ``deit_top1`` and ``convit_top1``
            (%), as from ``reported.convit_table("table2")``; None: not drawn.
        title: the axes' title.
        reported_label: names the paper's series in the legend, after their model
            ("DeiT-S, ImageNet (reported)").
    Returns:
        A Figure with one axes: top-1 against fraction (log x), one line per model and source,
        the legend below.
    """
    fig, ax = subplots()
    colours = {"DeiT": "#00798c", "ConViT": "#d1495b"}
    for model, rows in runs.groupby("model", sort=False):
        mean = rows.groupby("fraction").top1.mean()
        family = "ConViT" if "ConViT" in model else "DeiT"
        ax.plot(mean.index, mean.values, marker="o", color=colours[family],
                label=f"{model} (this run)")
    if paper is not None:
        for family, column in (("DeiT", "deit_top1"), ("ConViT", "convit_top1")):
            draw_reported(ax, paper.fraction, paper[column], colours[family],
                          f"{family}-S, ImageNet ({reported_label})")
    ax.set_xscale("log")
    fractions = sorted(set(runs.fraction) | (set(paper.fraction) if paper is not None else set()))
    ax.set_xticks(fractions, [f"{100 * f:g}" for f in fractions], minor=False)
    ax.minorticks_off()
    ax.set(xlabel="training set kept (%, log scale; steps kept equal)", ylabel="top-1 (%)",
           ylim=(0, 102), title=title)
    legend_below(fig, [ax])
    return fig


def bridge_figure(frame: pd.DataFrame, masked: Optional[pd.DataFrame] = None,
                  title: str = "") -> plt.Figure:
    """Per block: image-token (solid) and [CLS] (dashed) identifiability of the ConViT and its
    DeiT; beneath, the ConViT's mean gate and both models' nonlocality; and, where given, the
    ConViT's image-token identifiability under each mask.

    Args:
        frame: :func:`convit_tables.bridge`: columns ``model``, ``block`` (1-based),
            ``image_identifiability``, ``cls_identifiability``, ``nonlocality`` and ``gate``.
        masked: the ConViT's per-block readout under each mask, columns ``mask``, ``block`` and
            ``image_identifiability`` (:func:`vitcls_utils.analysis.convit.evaluate_masks` with
            ``by_block``); None: no third panel.
        title: the top panel's title.
    Returns:
        A Figure with two or three panels stacked over a shared block axis: identifiability;
        nonlocality with the mean gate as bars on a twin axis; identifiability under the masks;
        each panel's legend under it.
    """
    panels = 3 if masked is not None else 2
    fig, axes = subplots(panels, 1, height=2.9 * panels + 0.3, sharex=True)
    top, middle = axes[0], axes[1]
    styles: Dict[str, str] = {}
    for i, model in enumerate(frame.model.unique()):
        rows = frame[frame.model == model]
        colour = sns.color_palette("colorblind", 4)[i]
        styles[model] = colour
        top.plot(rows.block, rows.image_identifiability, marker="o", ms=3, color=colour,
                 label=f"{model}: image tokens")
        if rows.cls_identifiability.notna().any():
            top.plot(rows.block, rows.cls_identifiability, ls="--", marker="^", ms=4,
                     color=colour, label=f"{model}: [CLS]")
    top.set(ylabel="class identifiability", ylim=(0, 1.02), title=title)
    for model, rows in frame.groupby("model", sort=False):
        middle.plot(rows.block, rows.nonlocality, marker="o", ms=3, color=styles[model],
                    label=f"{model}: nonlocality")
    middle.set(ylabel="nonlocality (patches)")
    gate_axis = middle.twinx()
    gate_axis.grid(False)
    gated = frame.dropna(subset=["gate"])
    gate_axis.bar(gated.block, gated.gate, width=0.5, alpha=0.25, color="#edae49",
                  label="ConViT: mean gate σ(λ)")
    gate_axis.set(ylabel="mean gate σ(λ)", ylim=(0, 1))
    if masked is not None:
        ax = axes[2]
        colours = sns.color_palette("viridis", masked["mask"].nunique())
        for colour, (mask, rows) in zip(colours, masked.groupby("mask", sort=False)):
            ax.plot(rows.block, rows.image_identifiability, marker="o", ms=3, color=colour,
                    label=mask)
        ax.set(ylabel="image-token class\nidentifiability", ylim=(0, 1.02))
    axes[-1].set_xlabel("block")
    block_ticks(axes[-1], frame.block)
    for panel, shown in zip(axes[:-1], ([top], [middle, gate_axis])):
        _legend_under(panel, shown)
    legend_below(fig, [axes[-1]] if masked is not None else [middle, gate_axis],
                 title="mask" if masked is not None else "")
    return fig


def _legend_under(ax: plt.Axes, shown) -> None:
    """The entries of ``shown`` in a legend right under ``ax`` (whose tick labels the panel
    below shows)."""
    handles, labels = [], []
    for each in shown:
        h, l = each.get_legend_handles_labels()
        handles, labels = handles + h, labels + l
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.04), ncols=2,
              frameon=False, fontsize="small")


def zoo_figure(table: pd.DataFrame, title: str = "") -> plt.Figure:
    """Table 1 as bars: each model's top-1 (this run) beside its paper model's reported one
    (hatched).

    Args:
        table: :func:`convit_tables.zoo`: columns ``model``, "top-1, this run", "top-1, paper"
            (%, NaN: no bar) and "paper model".
        title: the axes' title.
    Returns:
        A Figure with one axes: bars per model, this run's and the paper's side by side, the
        legend below.
    """
    reported = "reported (their Ti model, ImageNet)" \
        if table["paper model"].str.endswith("-Ti").all() else "reported (ImageNet)"
    long = pd.concat([
        pd.DataFrame({"model": table.model, "top-1 (%)": table["top-1, this run"],
                      "source": "this run"}),
        pd.DataFrame({"model": table.model, "top-1 (%)": table["top-1, paper"],
                      "source": reported}),
    ])
    fig, ax = subplots(width=max(4.8, 1.1 * len(table) + 2.5))
    sns.barplot(data=long.dropna(subset=["top-1 (%)"]), x="model", y="top-1 (%)", hue="source",
                hue_order=["this run", reported], ax=ax, palette="colorblind")
    for bar in ax.containers[-1] if len(ax.containers) > 1 else []:
        bar.set(hatch="///", edgecolor="white")
    ax.set(xlabel="", ylim=(0, 102), title=title)
    legend = legend_below(fig, [ax], title="")
    for patch in legend.get_patches()[1:] if legend is not None else []:
        patch.set(hatch="///", edgecolor="white")
    return fig
