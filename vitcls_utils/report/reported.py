"""The numbers the four papers report, typed in from their tables, figures and authors' code
(``data/paper/``, each with its source): read here, shown beside this run's by the tables
modules of :mod:`vitcls_utils.report`."""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

import pandas as pd

from ..model.registry import data_dir


@lru_cache(maxsize=1)
def reported() -> pd.DataFrame:
    """Every reported value: metric, variant, block, value, unit, approximate, source.

    Returns:
        DataFrame of ``data/paper/reported.csv``, a row per value: ``metric``, ``variant``,
        ``block`` (nullable Int64, 1-based; empty for whole-model values), ``value``, ``unit``,
        ``approximate`` ("yes"/"no") and ``source``; cached, so do not modify it.
    """
    frame = pd.read_csv(data_dir() / "paper" / "reported.csv", dtype={"block": "Int64"})
    return frame


def paper_value(metric: str, variant: str, block: Optional[int] = None) -> Optional[float]:
    """The value the paper reports for exactly ``variant`` (see :func:`reported_value` for
    the one shown beside a run), or None where it reports none."""
    frame = reported()
    rows = frame[(frame.metric == metric) & (frame.variant == variant)]
    if block is not None:
        rows = rows[rows.block == block]
    return None if rows.empty else float(rows.value.iloc[0])


def value_vector_descriptions(variant: str) -> pd.DataFrame:
    """Appendix A6b: the paper's reading of chosen MLP value vectors (block, column, classes)."""
    frame = pd.read_csv(data_dir() / "paper" / "value_vectors.csv")
    return frame[frame.variant == variant].drop(columns="variant").reset_index(drop=True)


def paper_series(metric: str, variant: str) -> pd.DataFrame:
    """The per-block reported series shown beside ``variant``'s: its own where the paper
    reports it, else the nearest paper model's (:func:`compared_with`; label it with
    :func:`reported_label`), empty where there is none.

    Args:
        metric: the ``metric`` name in ``reported.csv`` (e.g. "identifiability_cls").
        variant: registry key of this run's model.
    Returns:
        DataFrame with columns ``block`` (int, 1-based) and ``value``, sorted by block.
    """
    frame, model = reported(), compared_with(variant, metric)
    rows = frame[(frame.metric == metric) & (frame.variant == model) & frame.block.notna()]
    return rows[["block", "value"]].astype({"block": int}).sort_values("block")


def series_by(template: str, variant: str, column: str, levels) -> pd.DataFrame:
    """:func:`paper_series` of ``template.format(level)`` for each level, stacked, with the
    level in ``column`` (e.g. one reported line per sub-layer: ``column="layer"``). ``levels``
    may map a metric's level to the label shown.

    Args:
        template: a metric name with one ``{}`` for the level (e.g. "memory_match_{}").
        variant: registry key.
        column: the name of the column that holds each row's level label.
        levels: the levels, a sequence, or a dict {level: label shown}.
    Returns:
        DataFrame with columns ``block``, ``value`` and ``column``, the levels stacked in order.
    """
    labels = levels if isinstance(levels, dict) else {level: level for level in levels}
    return pd.concat([paper_series(template.format(level), variant).assign(**{column: label})
                      for level, label in labels.items()])


def paper_curve(metric: str, variant: str, n_blocks: int) -> pd.DataFrame:
    """:func:`paper_series` on the variant's own blocks: the paper plots deeper models on 12
    normalized blocks (ViT-L/16: the mean of blocks 2k-1 and 2k), drawn here at their centre.

    Args:
        metric: the ``metric`` name in ``reported.csv``.
        variant: registry key.
        n_blocks: the variant's number of blocks.
    Returns:
        DataFrame with columns ``block`` (1-based; where ``n_blocks`` is a multiple of 12 above
        12, a float: the centre of the n_blocks / 12 blocks each point stands for) and ``value``.
    """
    series = paper_series(metric, variant)
    per_block = n_blocks // 12
    if n_blocks > 12 and n_blocks % 12 == 0:
        series = series.assign(block=per_block * series.block - (per_block - 1) / 2)
    return series


def vit_table1() -> pd.DataFrame:
    """The ViT paper's Table 1: model, layers, width, mlp, heads, parameters_millions."""
    return pd.read_csv(data_dir() / "paper" / "vit_table1.csv")


def reference_top1(variant: str) -> Optional[float]:
    """The published ImageNet-1k top-1 (%) of an original ViT checkpoint, or None.

    Args:
        variant: registry key.
    Returns:
        The top-1 (%), a float, or None where ``data/paper/vit_top1.csv`` has none.
    """
    frame = pd.read_csv(data_dir() / "paper" / "vit_top1.csv")
    rows = frame[frame.variant == variant]
    return None if rows.empty else float(rows.value.iloc[0])


def ghiasi_table1() -> pd.DataFrame:
    """Ghiasi et al.'s Table 1 and their logs' sweeps: quantity, variant, model, L, top1, top5,
    source (``quantity`` "isolate" / "drop" rows are the L sweeps)."""
    return pd.read_csv(data_dir() / "paper" / "ghiasi_table1.csv", dtype={"L": "Int64"})


def ghiasi_sweep(mode: str, variant: str = "ghiasi_b16_384") -> pd.DataFrame:
    """The logged top-1 (%) against L of "isolate" or "drop" for a variant (L, top1)."""
    frame = ghiasi_table1()
    rows = frame[(frame.quantity == mode) & (frame.variant == variant)]
    return rows[["L", "top1"]].astype({"L": int}).reset_index(drop=True)


def ghiasi_value(quantity: str, variant: str = "ghiasi_b16_384",
                 column: str = "top1") -> Optional[float]:
    """One of Table 1's numbers (``natural``, ``isolating_cls``, ``patch_average``,
    ``patch_maximum``, ``pooled_token``), or None where none is reported.

    Args:
        quantity: the row's ``quantity``, one of those above.
        variant: the registry key of the paper's model.
        column: "top1" or "top5".
    Returns:
        The value (%), a float, or None.
    """
    frame = ghiasi_table1()
    rows = frame[(frame.quantity == quantity) & (frame.variant == variant)]
    value = None if rows.empty else rows[column].iloc[0]
    return None if value is None or pd.isna(value) else float(value)


def ghiasi_table2() -> pd.DataFrame:
    """Ghiasi et al.'s Table 2: per model the full images' top-5 and the foreground and
    background top-5 as % of it, with the raw top-1 of their log."""
    return pd.read_csv(data_dir() / "paper" / "ghiasi_table2.csv")


CONVIT_TABLES = ("table1", "gates", "table5", "table6", "table2")


def convit_table(name: str) -> pd.DataFrame:
    """One of d'Ascoli et al.'s typed-in tables (``data/paper/convit_<name>.csv``): ``table1``
    (the zoo), ``gates`` (the σ(λ) printed on their maps), ``table5``/``table6`` (test-time
    masks), ``table2`` (sample efficiency).

    Args:
        name: one of ``CONVIT_TABLES``.
    Returns:
        DataFrame of the CSV as typed in (``model``, ``variant``, the table's numbers, ``source``).
    Raises:
        ValueError: for another name.
    """
    if name not in CONVIT_TABLES:
        raise ValueError(f"ConViT tables are {CONVIT_TABLES}, not {name!r}")
    return pd.read_csv(data_dir() / "paper" / f"convit_{name}.csv")


# ----------------------------------------------------------------------------------------------
# Which paper model a run is set beside, and whether the two agree
# ----------------------------------------------------------------------------------------------
#: the toy models and the paper models whose reported numbers they are shown beside, for
#: scale, nearest first: the toy ViT is ViT-B/32-like (7x7 grid, [CLS]), the GAP toy is the
#: paper's GAP model; a metric the nearest model lacks is taken from the next that has it
_TOY_BESIDE = {
    "toy": ("vit_b32", "vit_b16", "vit_l16", "vit_b16_miil", "vit_b16_refinement",
            "vit_b16_cifar100"),
    "toy_gap": ("vit_b16_gap", "vit_b32", "vit_b16"),
    "toy_random": ("vit_b32_random", "vit_b16_random"),
    "toy_gap_random": ("vit_b16_random", "vit_b32_random"),
}
#: how close this run must be to a reported value to agree, by unit (absolute)
TOLERANCE = {"%": 1.0, "identifiability": 0.02, "cosine": 0.02, "block": 0.0, "fraction": 0.05,
             "paper AUC": 0.02, "logit": 0.05,
             "percentage points": 1.0}


def compared_with(variant: str, metric: Optional[str] = None) -> Optional[str]:
    """The paper variant whose reported numbers are shown beside ``variant``'s: itself when
    the main paper reports it (one of its seven models, or a random control it reports), for
    a toy the nearest paper model that reports ``metric`` (any metric when None), else None
    (a control the paper reports nothing for)."""
    from ..model.registry import get_variant

    key, frame = get_variant(variant).key, reported()
    if key in set(frame.variant):
        return key
    candidates = _TOY_BESIDE.get(key, ())
    if metric is not None:
        has = set(frame[frame.metric == metric].variant)
        candidates = tuple(c for c in candidates if c in has) or candidates
    return candidates[0] if candidates else None


def reported_label(variant: str, metric: Optional[str] = None) -> str:
    """How a page labels the reported values beside ``variant``: "reported, ViT-B/32".

    Args:
        variant: registry key of this run's model.
        metric: the metric drawn (a toy's paper model can differ per metric); None: any.

    Returns:
        The label, naming the paper model whose values are shown ("reported" alone when none).
    """
    from ..model.registry import get_variant

    model = compared_with(variant, metric)
    return "reported" if model is None else f"reported, {get_variant(model).label}"


def why_not_comparable(variant: str, metric: Optional[str] = None) -> Optional[str]:
    """Why this run's numbers cannot be held against the reported ones (None when they can):
    another model on other stimuli, or a control the paper reports nothing for."""
    from ..model.registry import get_variant

    spec, model = get_variant(variant), compared_with(variant, metric)
    if model is None:
        return "the paper reports no value for this model"
    if model != spec.key:
        return (f"a toy model on synthetic images beside the paper's {get_variant(model).label} "
                "on ImageNet-S: shown for scale")
    return None


def reported_value(metric: str, variant: str, block: Optional[int] = None
                   ) -> Optional[float]:
    """The reported value shown beside ``variant``'s: of its paper model
    (:func:`compared_with`), or None where the paper reports none."""
    model = compared_with(variant, metric)
    return None if model is None else paper_value(metric, model, block)


def agreement(variant: str, metric: str, value: Optional[float],
              block: Optional[int] = None) -> str:
    """This run against the reported value of ``metric`` for ``variant``'s paper model, in
    words: "agrees (within 1.0)", "differs by +3.2", or why the two cannot be compared.

    Args:
        variant: registry key of this run's model.
        metric: the ``metric`` name in ``reported.csv``.
        value: this run's value, in the reported unit (None or NaN: not computed).
        block: the 1-based block, for a per-block metric.

    Returns:
        A short phrase for a table's "agreement" column.
    """
    theirs = reported_value(metric, variant, block)
    if theirs is None:
        return "not reported"
    if value is None or value != value:
        return "not computed in this run"
    why = why_not_comparable(variant, metric)
    if why is not None:
        return f"not comparable: {why}"
    unit = reported()[(reported().metric == metric)].unit.iloc[0]
    tolerance = TOLERANCE.get(unit, 0.0)
    difference = value - theirs
    if abs(difference) <= tolerance:
        return f"agrees (within {tolerance:g})" if tolerance else "agrees"
    return f"differs by {difference:+.2f}"
