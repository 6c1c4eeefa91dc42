"""How the book's tables show a 95% interval: ``[lo, hi]`` with the images left out, and wide
tables whose cells are each a mean over images with its interval
(:mod:`vitcls_utils.base.uncertainty` computes them; this module only writes them)."""
from __future__ import annotations

from typing import Iterable, List, Mapping, Optional, Sequence

import pandas as pd

from ..base.uncertainty import bootstrap, bootstrap_ratio


def interval_text(interval, digits: int = 2) -> str:
    """An interval as a table shows it: ``[lo, hi]``, with ``(n excluded)`` where images
    without a number were left out; "–" where nothing was measured.

    Args:
        interval: a :class:`~vitcls_utils.base.uncertainty.Interval`; digits: decimals.

    Returns:
        The text.
    """
    if interval.n == 0:
        return "–"
    text = f"[{interval.low:.{digits}f}, {interval.high:.{digits}f}]"
    return text + (f" ({interval.excluded} excluded)" if interval.excluded else "")


def interval_column(per_image: Iterable, digits: int = 2, seed: int = 0) -> List[str]:
    """A table's "95% CI" column: each row's per-image values bootstrapped over images and
    written by :func:`interval_text` (``[lo, hi]``, ``(k excluded)``, "–" where a row has no
    values: NaN in place of an array).

    Args:
        per_image: one entry per row, an array of per-image values (or NaN).
        digits: decimals; seed: the bootstrap's seed.

    Returns:
        The column's text, a string per row.
    """
    return [interval_text(bootstrap(values, seed=seed), digits) for values in per_image]


def interval_cells(frame: pd.DataFrame, index: str, columns: str, values: str, digits: int = 3,
                   seed: int = 0, bounds_only: bool = False,
                   denominators: Optional[str] = None) -> pd.DataFrame:
    """A wide table whose cells are the mean of each row's per-image values with its 95%
    bootstrap interval over images: ``0.512 [0.490, 0.533]`` (``bounds_only``: ``[0.490,
    0.533]``), with ``(k excluded)`` where images had no finite value.

    Args:
        frame: one row per cell; ``values`` holds each row's per-image array.
        index, columns: the columns that become the wide table's rows and columns.
        values: the per-image column; digits: decimals; seed: the bootstrap's seed.
        denominators: a per-image column of counts: each cell is then the pooled rate
            sum(values) / sum(denominators) (:func:`~vitcls_utils.base.uncertainty.
            bootstrap_ratio`, images without a count excluded).

    Returns:
        DataFrame of text, indexed by ``index``, a column per value of ``columns``.
    """
    def interval_of(row):
        if denominators is None:
            return bootstrap(row[values], seed=seed)
        return bootstrap_ratio(row[values], row[denominators], seed=seed)

    def cell(interval) -> str:
        text = interval_text(interval, digits) if bounds_only else interval.format(digits)
        return text + (f" ({interval.excluded} excluded)"
                       if interval.excluded and not bounds_only else "")

    shown = frame.assign(_cell=[cell(interval_of(row)) for _, row in frame.iterrows()])
    return shown.pivot(index=index, columns=columns, values="_cell")


def interval_wide(frame: pd.DataFrame, index: str, columns: Sequence[str], value: str,
                  digits: int = 3, seed: int = 0) -> pd.DataFrame:
    """A wide table from a long frame of one row per unit (an image, a class): each cell the
    mean of its units' ``value`` with the 95% bootstrap interval that resamples them,
    ``0.512 [0.490, 0.533]`` (:func:`interval_cells`).

    Args:
        frame: one row per unit and cell, with the ``index``, ``columns`` and ``value``
            columns.
        index: the column that becomes the rows; columns: those whose values, joined by ", ",
            name the table's columns (e.g. ``["layer", "variant"]``: "mlp, ViT-B/16").
        value: the column averaged; digits: decimals; seed: the bootstrap's seed.

    Returns:
        DataFrame of text indexed by ``index``, a column per combination of ``columns``.
    """
    keys = [index, *columns]
    cells = frame.groupby(keys, sort=True)[value].apply(lambda v: v.to_numpy()).reset_index()
    cells["cell"] = cells[list(columns)].astype(str).agg(", ".join, axis=1)
    return interval_cells(cells, index, "cell", value, digits, seed).rename_axis(columns=None)


def with_interval_columns(frame: pd.DataFrame, per_image: Mapping[str, str], digits: int = 3,
                          seed: int = 0) -> pd.DataFrame:
    """A table whose rows carry per-image arrays, as a page shows it: each mean column
    followed by its "<column>, 95% CI" (:func:`interval_column`), the arrays dropped.

    Args:
        frame: a row per table row, with the mean columns and their per-image columns.
        per_image: {mean column: its per-image column}; other columns are kept as they are.
        digits: decimals; seed: the bootstrap's seed.

    Returns:
        The table, the interval columns placed after their means.
    """
    out = frame.drop(columns=list(per_image.values()))
    for column, images in per_image.items():
        out.insert(out.columns.get_loc(column) + 1, f"{column}, 95% CI",
                   interval_column(frame[images], digits, seed))
    return out
