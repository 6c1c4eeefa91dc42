"""Chapter 6's figures (Ghiasi et al. 2022): the isolation curves, the per-patch heatmap, the
fg/bg and low-pass comparisons, feature visualisations with their top images, and the bridges'
per-block curves. Functions of tidy frames and arrays that return a Figure."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

MODE_LABELS = {"isolate": "[CLS] isolated up to L", "drop": "patches dropped after L"}


def isolation_figure(sweep: pd.DataFrame, paper: Optional[Dict[str, pd.DataFrame]] = None,
                     title: str = "", paper_label: str = "paper") -> plt.Figure:
    """Top-1 (%) against L for both interventions (solid), the paper's logged sweeps beside
    them (hollow markers, their model).

    Args:
        sweep: :func:`vitcls_utils.analysis.cls_isolation.sweep`: a row per (mode, L) with
            columns ``mode`` ("isolate" or "drop"), ``L`` and ``top1`` (%).
        paper: {mode: the paper's logged sweep, columns ``L`` and ``top1``}, as from
            :func:`ghiasi_tables.paper_sweeps`; None: not drawn.
        title: the axes' title.
        paper_label: names the paper's curves in the legend.
    Returns:
        A Figure with one axes: top-1 against L, one colour per intervention.
    """
    fig, ax = plt.subplots(figsize=(8.2, 3.6))
    colours = dict(zip(MODE_LABELS, sns.color_palette("colorblind", 2)))
    for mode, rows in sweep.groupby("mode", sort=False):
        ax.plot(rows.L, rows.top1, marker="o", ms=4, color=colours[mode],
                label=f"{MODE_LABELS[mode]} (this run)")
        logged = (paper or {}).get(mode)
        if logged is not None and not logged.empty:
            ax.plot(logged.L, logged.top1, ls=":", marker="s", mfc="none", ms=5,
                    color=colours[mode], label=f"{MODE_LABELS[mode]} ({paper_label})")
    ax.set(xlabel="L (blocks)", ylabel="top-1 (%)", ylim=(-2, 102), title=title)
    ax.set_xticks(sorted(set(sweep.L)))
    ax.legend(fontsize="x-small", frameon=True, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def heatmap_figure(heat: np.ndarray, title: str = "", label: str = "top-1 (%)") -> plt.Figure:
    """Ghiasi's Fig. 7: the head's accuracy on each patch position of the last block.

    Args:
        heat: [rows, cols] accuracy (%) of each patch position (``PatchReadout.heatmap()``);
            annotated with its values up to 8 rows.
        title: the axes' title.
        label: the colour bar's label.
    Returns:
        A Figure with one square heatmap and its colour bar.
    """
    heat = np.asarray(heat)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    sns.heatmap(heat, ax=ax, cmap="viridis", square=True, cbar_kws={"label": label},
                annot=heat.shape[0] <= 8, fmt=".0f", annot_kws={"fontsize": 6},
                xticklabels=False, yticklabels=False)
    ax.set(title=title, xlabel="patch column", ylabel="patch row")
    fig.tight_layout()
    return fig


def fgbg_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Table 2 as bars: per model, foreground and background top-5 as % of the full image's,
    this run's models and the paper's.

    Args:
        frame: :func:`ghiasi_tables.table2`: columns ``model``, ``source``, ``foreground`` and
            ``background`` (top-5 as % of the full image's).
        title: the axes' title.
    Returns:
        A Figure with one axes: bars per model, foreground and background side by side.
    """
    long = frame.melt(id_vars=["model", "source"], value_vars=["foreground", "background"],
                      var_name="input", value_name="normalised top-5")
    fig, ax = plt.subplots(figsize=(max(4.5, 0.75 * frame.model.nunique() + 2), 3.6))
    sns.barplot(data=long, x="model", y="normalised top-5", hue="input", ax=ax,
                palette="colorblind")
    for label in ax.get_xticklabels():
        label.set_rotation(30)
        label.set_ha("right")
    ax.set(xlabel="", ylim=(0, 105), title=title)
    ax.legend(fontsize="x-small", frameon=True)
    fig.tight_layout()
    return fig


def lowpass_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Ghiasi's Fig. 16: top-1 against the low-pass cutoff (cycles per image, largest first),
    one line per model; the unfiltered image at the left.

    Args:
        frame: :func:`ghiasi_tables.lowpass_frame`: columns ``model``, ``cutoff`` (cycles per
            image; NaN: the full image) and ``top1`` (%).
        title: the axes' title.
    Returns:
        A Figure with one axes: top-1 against the cutoff, one line per model.
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    order = sorted(frame.cutoff.dropna().unique(), reverse=True)
    positions = {c: i + 1 for i, c in enumerate(order)}
    for model, rows in frame.groupby("model", sort=False):
        x = [0 if pd.isna(c) else positions[c] for c in rows.cutoff]
        ax.plot(x, rows.top1, marker="o", ms=4, label=model)
    ax.set_xticks([0] + list(positions.values()), ["full"] + [f"{c:g}" for c in order])
    ax.set(xlabel="low-pass cutoff (cycles per image)", ylabel="top-1 (%)", ylim=(-2, 102),
           title=title)
    ax.legend(fontsize="x-small", frameon=True)
    fig.tight_layout()
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
        A Figure with one or two panels sharing the y axis ([CLS], image tokens), one legend.
    """
    columns = [c for c in ("cls_identifiability", "image_identifiability")
               if frame[c].notna().any()]
    fig, axes = plt.subplots(1, len(columns), figsize=(4.0 * len(columns) + 1.6, 3.5),
                             sharey=True, squeeze=False)
    frame = frame.assign(**{condition: frame[condition].astype(str)})
    palette = "crest_r" if condition == "L" else "colorblind"
    for ax, column in zip(axes[0], columns):
        sns.lineplot(data=frame, x="block", y=column, hue=condition, marker="o", ms=4, ax=ax,
                     palette=palette, legend=ax is axes[0][0])
        if chance is not None:
            ax.axhline(chance, color="0.5", ls="--", lw=1)
        ax.set(title="[CLS]" if column.startswith("cls") else "image tokens (mean)",
               ylabel="class identifiability", ylim=(0, 1.02))
        ax.set_xticks(sorted(set(frame.block))[::max(1, len(set(frame.block)) // 6)])
    handles, labels = axes[0][0].get_legend_handles_labels()
    axes[0][0].get_legend().remove()
    fig.legend(handles, labels, title=condition, loc="center right", fontsize="x-small",
               title_fontsize="x-small", frameon=True)
    fig.suptitle(title, fontweight="bold")
    fig.tight_layout(rect=(0, 0, 1 - 1.3 / fig.get_figwidth(), 1))
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
        A Figure with a row per unit: its visualisation, ``n_top`` top images, the map.
    """
    cols = 2 + n_top
    captions = any(row.get("caption") for row in rows)
    fig, axes = plt.subplots(len(rows), cols,
                             figsize=(1.7 * cols, (2.25 if captions else 1.95) * len(rows)),
                             squeeze=False)
    for r, row in enumerate(rows):
        axes[r, 0].imshow(np.asarray(row["image"]).transpose(1, 2, 0))
        axes[r, 0].set_title(row["title"], fontsize="x-small")
        if row.get("caption"):
            axes[r, 0].text(0.0, -0.04, row["caption"], transform=axes[r, 0].transAxes,
                            fontsize="xx-small", va="top", ha="left", wrap=True)
        for c in range(n_top):
            ax = axes[r, 1 + c]
            if c < len(row["top"]):
                ax.imshow(row["top"][c])
                ax.set_title(row["top_titles"][c] if "top_titles" in row else f"top {c + 1}",
                             fontsize="xx-small")
        axes[r, -1].imshow(row["map"], cmap="magma")
        axes[r, -1].set_title("map on top 1", fontsize="x-small")
        for ax in axes[r]:
            ax.axis("off")
    fig.tight_layout()
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
        A Figure with one axes: the rates against block.
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    ax.plot(frame.block, frame.image_top1, marker="o", ms=4, label="image tokens (mean)")
    if frame.cls_top1.notna().any():
        ax.plot(frame.block, frame.cls_top1, marker="s", ms=4, label="[CLS]")
    ax.set(xlabel="block", ylabel="identifiable at rank 0 (%)", ylim=(-2, 102), title=title)
    ax.set_xticks(sorted(set(frame.block))[::max(1, len(set(frame.block)) // 12)])
    ax.legend(fontsize="x-small", frameon=True)
    fig.tight_layout()
    return fig


def agreement_figure(frame: pd.DataFrame, title: str = "") -> plt.Figure:
    """Per block, how often a strong unit's top stimuli are of a class its value vector
    promotes (the model; the random control dashed; chance grey).

    Args:
        frame: :func:`ghiasi_tables.agreement_by_block`: columns ``block``, ``agreement``,
            ``chance`` and, optionally, ``control`` (shares in [0, 1]).
        title: the axes' title.
    Returns:
        A Figure with one axes: agreement against block.
    """
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    ax.plot(frame.block, frame.agreement, marker="o", ms=4, label="this model")
    if "control" in frame:
        ax.plot(frame.block, frame.control, marker="o", ms=3, ls="--", color="0.45",
                label="random-init control")
    ax.axhline(float(frame.chance.iloc[0]), color="0.6", ls=":", lw=1, label="chance")
    ax.set(xlabel="block", ylabel="agreement", ylim=(0, 1.02), title=title)
    ax.set_xticks(sorted(set(frame.block))[::max(1, len(set(frame.block)) // 12)])
    ax.legend(fontsize="x-small", frameon=True)
    fig.tight_layout()
    return fig
