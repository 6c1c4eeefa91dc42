"""Chapter 6's figures (Ghiasi et al. 2022): the isolation curves, the per-patch heatmap, the
fg/bg and low-pass comparisons, feature visualisations with their top images, and the bridges'
per-block curves. Functions of tidy frames and arrays that return a Figure, in the book's sizes
(:mod:`vitcls_utils.report.style`): at most the text column's width, legends below the axes,
the paper's values drawn apart from this run's, a colour bar on every map."""
from __future__ import annotations

import textwrap
from typing import Dict, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.patches import Patch

from .style import WIDTH, block_ticks, colour_scale, draw_reported, legend_below, subplots

MODE_LABELS = {"isolate": "[CLS] isolated up to L", "drop": "patches dropped after L"}
CONDITIONS = {"L": "L: [CLS] isolated up to block L", "edit": "stimulus edit"}


def isolation_figure(sweep: pd.DataFrame, paper: Optional[Dict[str, pd.DataFrame]] = None,
                     title: str = "", paper_label: Optional[str] = None,
                     reported_label: str = "reported") -> plt.Figure:
    """Top-1 (%) against L for both interventions (solid), the paper's logged sweeps beside
    them (black crosses on dotted lines in the intervention's colour, labelled with their
    model).

    Args:
        sweep: :func:`vitcls_utils.analysis.cls_isolation.sweep`: a row per (mode, L) with
            columns ``mode`` ("isolate" or "drop"), ``L`` and ``top1`` (%).
        paper: {mode: the paper's logged sweep, columns ``L`` and ``top1``}, as from
            :func:`ghiasi_tables.paper_sweeps`; None: not drawn.
        title: the axes' title.
        paper_label: the former name of ``reported_label``, used where that is left at
            "reported"; None: not used.
        reported_label: names the paper's curves in the legend (e.g. "reported,
            ViT-B/16-384").
    Returns:
        A Figure with one axes: top-1 against L, one colour per intervention, the legend below.
    """
    name = paper_label if paper_label is not None and reported_label == "reported" \
        else reported_label
    fig, ax = subplots()
    colours = dict(zip(MODE_LABELS, sns.color_palette("colorblind", 2)))
    for mode, rows in sweep.groupby("mode", sort=False):
        ax.plot(rows.L, rows.top1, marker="o", ms=4, color=colours[mode],
                label=f"{MODE_LABELS[mode]} (this run)")
        logged = (paper or {}).get(mode)
        if logged is not None and not logged.empty:
            draw_reported(ax, logged.L, logged.top1, colours[mode],
                          f"{MODE_LABELS[mode]} ({name})")
    ax.set(xlabel="L (blocks)", ylabel="top-1 (%)", ylim=(-2, 102), title=title)
    block_ticks(ax, sweep.L, 13)
    legend_below(fig, [ax], ncols=1 if paper else None)
    return fig


def heatmap_figure(heat: np.ndarray, title: str = "", label: str = "top-1 (%)") -> plt.Figure:
    """Ghiasi's Fig. 7: the head's accuracy on each patch position of the last block.

    Args:
        heat: [rows, cols] accuracy (%) of each patch position (``PatchReadout.heatmap()``);
            annotated with its values up to 8 rows.
        title: the axes' title.
        label: the colour bar's label.
    Returns:
        A Figure with one square heatmap and its labelled colour bar.
    """
    heat = np.asarray(heat)
    fig, ax = subplots(height=4.0, width=4.8)
    sns.heatmap(heat, ax=ax, cmap="viridis", square=True, cbar_kws={"label": label},
                annot=heat.shape[0] <= 8, fmt=".0f", annot_kws={"fontsize": "x-small"},
                xticklabels=False, yticklabels=False)
    ax.set(title=title, xlabel="patch column", ylabel="patch row")
    return fig


def fgbg_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Table 2 as bars: per model, foreground and background top-5 as % of the full image's,
    this run's models and the paper's.

    Args:
        frame: :func:`ghiasi_tables.table2`: columns ``model``, ``source``, ``foreground`` and
            ``background`` (top-5 as % of the full image's).
        title: the axes' title.
    Returns:
        A Figure with one axes: bars per model, foreground and background side by side (the
        paper's models hatched), the legend below.
    """
    colours = dict(zip(("foreground", "background"), sns.color_palette("colorblind", 2)))
    fig, ax = subplots(width=max(4.5, 0.75 * len(frame) + 2))
    x = np.arange(len(frame))
    for offset, column in ((-0.2, "foreground"), (0.2, "background")):
        bars = ax.bar(x + offset, frame[column], width=0.38, color=colours[column], label=column)
        for bar, source in zip(bars, frame.source):
            if source != "this run":  # the paper's models
                bar.set(hatch="///", edgecolor="white")
    ax.set_xticks(x, frame.model, rotation=30, ha="right")
    ax.set(xlabel="", ylabel="top-5, % of the\nfull image's", ylim=(0, 105), title=title)
    extra = [Patch(facecolor="0.6", hatch="///", edgecolor="white", label=source)
             for source in dict.fromkeys(frame.source) if source != "this run"]
    legend_below(fig, [ax], extra=extra)
    return fig


def lowpass_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Ghiasi's Fig. 16: top-1 against the low-pass cutoff (cycles per image, largest first),
    one line per model; the unfiltered image at the left.

    Args:
        frame: :func:`ghiasi_tables.lowpass_frame`: columns ``model``, ``cutoff`` (cycles per
            image; NaN: the full image) and ``top1`` (%).
        title: the axes' title.
    Returns:
        A Figure with one axes: top-1 against the cutoff, one line per model, the legend below.
    """
    fig, ax = subplots()
    order = sorted(frame.cutoff.dropna().unique(), reverse=True)
    positions = {c: i + 1 for i, c in enumerate(order)}
    for model, rows in frame.groupby("model", sort=False):
        x = [0 if pd.isna(c) else positions[c] for c in rows.cutoff]
        ax.plot(x, rows.top1, marker="o", ms=4, label=model)
    ax.set_xticks([0] + list(positions.values()), ["full"] + [f"{c:g}" for c in order])
    ax.set(xlabel="low-pass cutoff (cycles per image)", ylabel="top-1 (%)", ylim=(-2, 102),
           title=title)
    legend_below(fig, [ax])
    return fig


def block_curves_figure(frame: pd.DataFrame, condition: str, title: str = "",
                        chance: Optional[float] = 0.5) -> plt.Figure:
    """The bridges: per block, [CLS] (left) and image-token (right) class identifiability,
    one line per ``condition`` (an L: shades of one colour; an edit: distinct colours).

    Args:
        frame: a row per (condition, block): ``block``, the ``condition`` column,
            ``cls_identifiability`` and ``image_identifiability`` (a column all NaN gets no
            panel), e.g. :func:`vitcls_utils.analysis.cls_isolation.identifiability_by_block`.
        condition: the column a line stands for ("L" or "edit").
        title: the figure's suptitle.
        chance: the identifiability drawn as a dashed line; None: none.
    Returns:
        A Figure with one or two panels sharing the y axis ([CLS], image tokens), one legend
        below them.
    """
    columns = [c for c in ("cls_identifiability", "image_identifiability")
               if frame[c].notna().any()]
    fig, axes = subplots(1, len(columns), sharey=True, squeeze=False)
    frame = frame.assign(**{condition: frame[condition].astype(str)})
    levels = list(dict.fromkeys(frame[condition]))
    colours = dict(zip(levels, sns.color_palette("crest_r" if condition == "L" else "colorblind",
                                                 len(levels))))
    for ax, column in zip(axes[0], columns):
        sns.lineplot(data=frame, x="block", y=column, hue=condition, marker="o", ms=4, ax=ax,
                     palette=colours)
        if chance is not None:
            ax.axhline(chance, color="0.5", ls="--", lw=1, label=f"chance ({chance:g})")
        ax.set(title="[CLS]" if column.startswith("cls") else "image tokens (mean)",
               ylabel="class identifiability", ylim=(0, 1.02))
        block_ticks(ax, frame.block, 6)
    fig.suptitle(title)
    legend_below(fig, axes[0], title=CONDITIONS.get(condition, condition))
    return fig


def unit_figure(rows: Sequence[dict], n_top: int = 4) -> plt.Figure:
    """Ghiasi's Fig. 1/3: per unit, its visualisation, its top images and the patch activation
    map on the best one; each dict holds ``image`` [3, S, S], ``top`` (views), ``map``
    [rows, cols], ``title`` and, optionally, a ``caption`` shown under the picture.

    Args:
        rows: a dict per unit (:func:`vitcls_utils.analysis.featureviz.unit_panels`): ``image``
            [3, S, S] in [0, 1], ``top`` [n][H, W, 3] views, ``map`` [rows, cols], ``title``;
            optional ``top_titles`` [n] str and ``caption``.
        n_top: top images shown per unit.
    Returns:
        A Figure with a row per unit: its visualisation, ``n_top`` top images, the map (scaled
        to [0, 1] per unit), and one labelled colour bar under them.
    """
    cols = 2 + n_top
    side = WIDTH / cols
    captions = any(row.get("caption") for row in rows)
    fig, axes = subplots(len(rows), cols, height=(side + (0.85 if captions else 0.4)) * len(rows)
                         + 0.8, squeeze=False)
    for r, row in enumerate(rows):
        axes[r, 0].imshow(np.asarray(row["image"]).transpose(1, 2, 0))
        axes[r, 0].set_title(textwrap.fill(str(row["title"]), int(side * 15)), fontsize="x-small")
        if row.get("caption"):
            axes[r, 0].text(0.0, -0.04, textwrap.fill(row["caption"], int(side * 16)),
                            transform=axes[r, 0].transAxes, fontsize="x-small", va="top",
                            ha="left")
        for c in range(n_top):
            ax = axes[r, 1 + c]
            if c < len(row["top"]):
                ax.imshow(row["top"][c])
                top_title = row["top_titles"][c] if "top_titles" in row else f"top {c + 1}"
                ax.set_title(textwrap.shorten(str(top_title), int(side * 14),
                                             placeholder="…"),
                             fontsize="x-small")
        heat = np.asarray(row["map"], dtype=float)
        heat = (heat - heat.min()) / max(float(heat.max() - heat.min()), 1e-12)
        axes[r, -1].imshow(heat, cmap="magma", vmin=0, vmax=1)
        axes[r, -1].set_title("map on top 1", fontsize="x-small")
        for ax in axes[r]:
            ax.axis("off")
    colour_scale(fig, axes, "the unit's activation on each patch of its top image,\nscaled to "
                 "[0, 1] per unit", cmap="magma")
    return fig



def rate_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per block, the share (%) of image tokens (and of [CLS]) whose class projection ranks the
    true class first: the per-patch head readout at every depth.

    Args:
        frame: a row per block with columns ``block``, ``image_top1`` and ``cls_top1`` (%; all
            NaN: no [CLS] line), e.g. one L of
            :func:`vitcls_utils.analysis.cls_isolation.identifiability_by_block`.
        title: the axes' title.
    Returns:
        A Figure with one axes: the rates against block, the legend below.
    """
    fig, ax = subplots()
    ax.plot(frame.block, frame.image_top1, marker="o", ms=4, label="image tokens")
    if frame.cls_top1.notna().any():
        ax.plot(frame.block, frame.cls_top1, marker="s", ms=4, label="[CLS]")
    ax.set(xlabel="block", ylabel="tokens whose projection\nranks the true class first (%)",
           ylim=(-2, 102), title=title)
    block_ticks(ax, frame.block)
    legend_below(fig, [ax])
    return fig


def agreement_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per block, how often a strong unit's top stimuli are of a class its value vector
    promotes (the model; the random control dashed; chance grey).

    Args:
        frame: :func:`ghiasi_tables.agreement_by_block`: columns ``block``, ``agreement``,
            ``chance`` and, optionally, ``control`` (shares in [0, 1]).
        title: the axes' title.
    Returns:
        A Figure with one axes: agreement against block, the legend below.
    """
    fig, ax = subplots()
    ax.plot(frame.block, frame.agreement, marker="o", ms=4, label="this model")
    if "control" in frame:
        ax.plot(frame.block, frame.control, marker="o", ms=3, ls="--", color="0.45",
                label="random-init control")
    ax.axhline(float(frame.chance.iloc[0]), color="0.6", ls=":", lw=1, label="chance")
    ax.set(xlabel="block", ylabel="top images of a class the\nvalue vector promotes (share)",
           ylim=(0, 1.02), title=title)
    block_ticks(ax, frame.block)
    legend_below(fig, [ax])
    return fig
