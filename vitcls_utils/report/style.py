"""The book's figure style: one seaborn theme, one set of sizes and one way of drawing legends,
reported values and colour bars, for every chapter's figures.

Sizes are set for the book's text column: sphinx-book-theme's main column is about 680-740 px
wide at a 1280 px window, and a notebook's PNG is embedded at its natural size (``DPI`` pixels
per inch, ``bbox_inches="tight"``), shrunk only when wider than the column. So every figure is
at most ``WIDTH`` inches wide (``WIDTH * DPI`` <= ``COLUMN_PX`` pixels) and shown unscaled, and
its smallest text (``x-small`` at ``FONT_SCALE``, 7.5 pt) is 11 px, above ``MIN_TEXT_PX``.
Panels that would not fit side by side wrap into rows (:func:`grid_shape`); legends go below
the axes (:func:`legend_below`), never on the data.

Figures are reproducible to the pixel: seaborn's bootstrapped confidence bands get a fixed
seed (``SEED``) and the strip plots' jitter is drawn from a seeded generator.
"""
from __future__ import annotations

import contextlib
import math
from typing import Dict, Iterator, Optional, Sequence, Tuple

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns

DPI = 110  # pixels per inch of the PNGs (figure.dpi and savefig.dpi)
COLUMN_PX = 680  # the narrowest main text column of the book's theme at 1280 px
WIDTH = 6.0  # inches: the widest figure, 672 px at DPI with the PNG's tight 0.1 in margins
HEIGHT = 3.3  # inches: one row of axes with a legend below
MIN_TEXT_PX = 9  # the smallest text allowed, in pixels as displayed
FONT_SCALE = 0.9  # of seaborn's notebook context: ticks 9.9 pt (15 px), x-small 7.5 pt (11 px)

#: The paper's reported values: black crosses on a dotted line (the line in the series' colour).
REPORTED = {"ls": ":", "lw": 1.4, "marker": "x", "ms": 7, "mew": 1.8, "mec": "black",
            "zorder": 4}


def set_theme() -> None:
    """The book's look (seaborn's whitegrid style in its notebook context, ``FONT_SCALE``),
    applied once per notebook.

    Returns:
        None; seaborn's and matplotlib's global settings change.
    """
    sns.set_theme(context="notebook", style="whitegrid", font_scale=FONT_SCALE,
                  rc={"figure.dpi": DPI, "savefig.dpi": DPI, "axes.titleweight": "bold",
                      "figure.figsize": (WIDTH, HEIGHT), "legend.fontsize": "small",
                      "legend.title_fontsize": "small", "figure.titlesize": "medium",
                      "figure.titleweight": "bold"})


SEED = 0  # of the confidence bands' bootstrap and the strip plots' jitter


@contextlib.contextmanager
def seeded_global_rng(seed: int = SEED) -> Iterator[None]:
    """numpy's global generator seeded for the block, then restored: seaborn's strip plot
    draws its jitter from it and takes no seed."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def subplots(rows: int = 1, cols: int = 1, height: float = HEIGHT, width: float = WIDTH,
             **kwargs):
    """``plt.subplots`` at the column's width with constrained layout (legends and colour bars
    outside the axes get their room).

    Args:
        rows, cols: the grid of axes.
        height: the figure's height in inches.
        width: its width in inches; at most ``WIDTH``.
        **kwargs: passed on to ``plt.subplots`` (``sharey``, ``squeeze``, ``gridspec_kw``...).
    Returns:
        (figure, axes) as ``plt.subplots`` returns them.
    """
    return plt.subplots(rows, cols, figsize=(min(width, WIDTH), height), layout="constrained",
                        **kwargs)


def grid_shape(n: int, most: int) -> Tuple[int, int]:
    """(rows, columns) of ``n`` panels wrapped at ``most`` per row, balanced (7 at 4 per row:
    2 rows of 4).

    Args:
        n: panels (at least 1).
        most: the most panels per row.
    Returns:
        (rows, columns).
    """
    n = max(1, n)
    rows = math.ceil(n / most)
    return rows, math.ceil(n / rows)


def legend_below(fig: plt.Figure, axes=(), title: Optional[str] = None,
                 ncols: Optional[int] = None, extra: Sequence = (), **kwargs):
    """One legend for the figure, below its axes: the entries of ``axes`` (all of the figure's
    where empty), each label once, then ``extra``; the axes' own legends are removed.

    Args:
        fig: a figure with constrained layout (:func:`subplots`).
        axes: the axes whose entries are shown (a sequence or an array); empty: every axes
            of ``fig``.
        title: the legend's title; None: the first removed legend's title, if any.
        ncols: columns of entries; None: as many as fit the figure's width (measured).
        extra: further handles (e.g. :func:`reported_handle`), labelled.
        **kwargs: passed on to ``fig.legend``.
    Returns:
        The Legend, or None where there is no entry.
    """
    entries: Dict[str, object] = {}
    for ax in list(np.ravel(axes)) or fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label and not label.startswith("_"):
                entries.setdefault(label, handle)
        if ax.get_legend() is not None:
            old = ax.get_legend().get_title().get_text()
            title = old if title is None and old else title
            ax.get_legend().remove()
    for handle in extra:
        entries.setdefault(handle.get_label(), handle)
    if not entries:
        return None
    kwargs = {"frameon": False, "fontsize": "small", "title_fontsize": "small", **kwargs}
    renderer = fig.canvas.get_renderer() if hasattr(fig.canvas, "get_renderer") else None
    if renderer is None and not ncols:
        ncols = min(len(entries), 2)
    for columns in [ncols] if ncols else range(len(entries), 0, -1):
        legend = fig.legend(list(entries.values()), list(entries), loc="outside lower center",
                            ncols=columns, title=title, **kwargs)
        if ncols or columns == 1 or \
                legend.get_window_extent(renderer).width <= 0.98 * fig.bbox.width:
            return legend
        legend.remove()


def palette(levels, known: Optional[Dict[str, object]] = None) -> Dict[str, object]:
    """One colour per level, the same in every panel of a figure: ``known``'s colours where
    it names every level, seaborn's palette otherwise.

    Args:
        levels: the levels, in order (repeats ignored).
        known: {level: colour} to use where it covers every level.
    Returns:
        {level: colour}.
    """
    levels = list(dict.fromkeys(levels))
    if known and all(level in known for level in levels):
        return {level: known[level] for level in levels}
    return dict(zip(levels, sns.color_palette(n_colors=len(levels))))


def colour_scale(fig: plt.Figure, axes, label: str, cmap="jet", vmin: float = 0.0,
                 vmax: float = 1.0, **kwargs):
    """One labelled colour bar under ``axes`` for maps drawn from ``vmin`` to ``vmax``.

    Args:
        fig: the figure.
        axes: the axes the bar spans (an array or a list).
        label: the quantity and its unit.
        cmap: the maps' colour map.
        vmin, vmax: the ends of the maps' scale.
        **kwargs: passed on to ``fig.colorbar`` (e.g. ``orientation``).
    Returns:
        The Colorbar.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    kwargs = {"orientation": "horizontal", "shrink": 0.6, "aspect": 40, **kwargs}
    return fig.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap=cmap), ax=axes, label=label,
                        **kwargs)


def draw_reported(ax: plt.Axes, x, y, colour="black", label: Optional[str] = None):
    """The paper's reported values as their own series: black crosses on a dotted line in
    ``colour`` (the colour of this run's series they belong to).

    Args:
        ax: the axes.
        x, y: the values' positions.
        colour: the dotted line's colour.
        label: the legend entry; None: none.
    Returns:
        The Line2D drawn.
    """
    return ax.plot(x, y, color=colour, label=label if label else "_reported", **REPORTED)[0]


def reported_handle(label: str):
    """A legend entry for reported values drawn in several colours: a black cross on a grey
    dotted line.

    Args:
        label: the entry's text.
    Returns:
        A Line2D not drawn on any axes.
    """
    return plt.Line2D([], [], color="0.45", label=label, **REPORTED)


def block_ticks(ax: plt.Axes, blocks, most: int = 12) -> None:
    """Whole-number ticks at ``blocks``, thinned to at most ``most`` so that they stay apart.

    Args:
        ax: the axes whose x ticks are set.
        blocks: the block numbers drawn.
        most: the most ticks shown.
    Returns:
        None.
    """
    shown = sorted({int(b) for b in blocks})
    ax.set_xticks(shown[::max(1, math.ceil(len(shown) / most))])
