"""The paper's reported numbers (``data/paper/reported.csv``) beside this run's."""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, Optional

import pandas as pd

from .variants import data_dir


@lru_cache(maxsize=1)
def reported() -> pd.DataFrame:
    """Every reported value: metric, variant, block, value, unit, approximate, source."""
    frame = pd.read_csv(data_dir() / "paper" / "reported.csv", dtype={"block": "Int64"})
    return frame


def paper_value(metric: str, variant: str, block: Optional[int] = None) -> Optional[float]:
    """The reported value, or None where the paper reports none for this variant."""
    frame = reported()
    rows = frame[(frame.metric == metric) & (frame.variant == variant)]
    if block is not None:
        rows = rows[rows.block == block]
    return None if rows.empty else float(rows.value.iloc[0])


#: How metrics are named in tables.
METRIC_LABELS = {
    "identifiability_rate": "identifiability rate (%)",
    "identifiability_rate_image_tokens": "identifiability rate, every image token (%)",
    "images_with_identifiable_token": "images with an identifiable token (%)",
    "top1_accuracy": "top-1 accuracy (%)",
}


def styled(table: pd.DataFrame, precision: int = 2):
    """A table for the book: readable metric names, no index, blanks shown as "–"."""
    shown = table.assign(metric=table.metric.map(lambda m: METRIC_LABELS.get(m, m)))
    return shown.style.hide(axis="index").format(precision=precision, na_rep="–")


def side_by_side(variant: str, ours: Dict[str, float]) -> pd.DataFrame:
    """One row per metric: the paper's value (blank when not reported), this run's, source."""
    frame = reported()
    rows = []
    for metric, value in ours.items():
        match = frame[(frame.metric == metric) & (frame.variant == variant) & frame.block.isna()]
        rows.append({
            "metric": metric,
            "paper": None if match.empty else float(match.value.iloc[0]),
            "this run": value,
            "source": "" if match.empty else match.source.iloc[0],
        })
    return pd.DataFrame(rows)
