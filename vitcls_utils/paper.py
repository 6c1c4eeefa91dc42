"""The paper's reported numbers (``data/paper/reported.csv``) beside this run's."""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Dict, Mapping, Optional

import pandas as pd

from .registry import data_dir

if TYPE_CHECKING:
    from .store_reader import Store


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


def value_vector_descriptions(variant: str) -> pd.DataFrame:
    """Appendix A6b: the paper's reading of chosen MLP value vectors (block, column, classes)."""
    frame = pd.read_csv(data_dir() / "paper" / "value_vectors.csv")
    return frame[frame.variant == variant].drop(columns="variant").reset_index(drop=True)


def paper_series(metric: str, variant: str) -> pd.DataFrame:
    """A per-block reported series (block, value), empty where the paper has none."""
    frame = reported()
    rows = frame[(frame.metric == metric) & (frame.variant == variant) & frame.block.notna()]
    return rows[["block", "value"]].astype({"block": int}).sort_values("block")


def series_by(template: str, variant: str, column: str, levels) -> pd.DataFrame:
    """:func:`paper_series` of ``template.format(level)`` for each level, stacked, with the
    level in ``column`` (e.g. one reported line per sub-layer: ``column="layer"``). ``levels``
    may map a metric's level to the label shown."""
    labels = levels if isinstance(levels, dict) else {level: level for level in levels}
    return pd.concat([paper_series(template.format(level), variant).assign(**{column: label})
                      for level, label in labels.items()])


def paper_curve(metric: str, variant: str, n_blocks: int) -> pd.DataFrame:
    """:func:`paper_series` on the variant's own blocks: the paper plots deeper models on 12
    normalized blocks (ViT-L/16: the mean of blocks 2k-1 and 2k), drawn here at their centre."""
    series = paper_series(metric, variant)
    per_block = n_blocks // 12
    if n_blocks > 12 and n_blocks % 12 == 0:
        series = series.assign(block=per_block * series.block - (per_block - 1) / 2)
    return series


#: How metrics are named in tables.
METRIC_LABELS = {
    "identifiability_rate": "identifiability rate (%)",
    "identifiability_rate_image_tokens": "identifiability rate, every image token (%)",
    "images_with_identifiable_token": "images with an identifiable token (%)",
    "top1_accuracy": "top-1 accuracy (%)",
    "first_significant_block": "first block above random (p < 0.05)",
    "perturbation_baseline_accuracy": "top-1, every token kept",
    "perturbation_first_point_accuracy": "top-1 at the curve's first point (B17)",
    "accuracy_kept_removed": "% of tokens removed, top-1 >= the first point",
    "accuracy_kept_removed_unperturbed": "% of tokens removed, top-1 >= unperturbed",
}


def styled(table: pd.DataFrame, precision: int = 2):
    """A table for the book: readable metric names, no index, blanks shown as "–"."""
    if "metric" in table:
        table = table.assign(metric=table.metric.map(lambda m: METRIC_LABELS.get(m, m)))
    return table.style.hide(axis="index").format(precision=precision, na_rep="–")


def compare_table(stores: Mapping[str, "Store"]) -> pd.DataFrame:
    """Table 1 across variants: one row per store, this run's values beside the paper's."""
    from .identifiability import headline
    from .registry import get_variant

    rows = []
    for key, results in sorted(stores.items()):
        ours = headline(results)
        rows.append({
            "variant": get_variant(key).label,
            "dataset": results.manifest["config"]["dataset"]["name"],
            "images": int(ours["n_images"]),
            "identifiability rate (this run)": ours["identifiability_rate"],
            "identifiability rate (paper)": paper_value("identifiability_rate", key),
            "top-1 (this run)": ours["top1_accuracy"],
            "top-1 (paper)": paper_value("top1_accuracy", key),
        })
    return pd.DataFrame(rows)


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


def vit_table1() -> pd.DataFrame:
    """The ViT paper's Table 1: model, layers, width, mlp, heads, parameters_millions."""
    return pd.read_csv(data_dir() / "paper" / "vit_table1.csv")


def reference_top1(variant: str) -> Optional[float]:
    """The published ImageNet-1k top-1 (%) of an original ViT checkpoint, or None."""
    frame = pd.read_csv(data_dir() / "paper" / "vit_top1.csv")
    rows = frame[frame.variant == variant]
    return None if rows.empty else float(rows.value.iloc[0])


def vit_table1_side_by_side(own: Optional[Mapping[str, int]] = None,
                            own_label: str = "") -> pd.DataFrame:
    """The ViT paper's Table 1 beside timm's architectures, counted offline on the meta device
    (no weights): paper and timm parameters in millions; ``own`` (an
    :func:`~vitcls_utils.anatomy.architecture_row`) adds this run's variant as a last row."""
    from .anatomy import TABLE1_ARCHS, architecture_row

    rows = []
    for paper_row in vit_table1().itertuples():
        counted = architecture_row(TABLE1_ARCHS[paper_row.model])
        rows.append({"model": paper_row.model, "layers": counted["layers"],
                     "width": counted["width"], "MLP": counted["mlp"], "heads": counted["heads"],
                     "params, paper (M)": float(paper_row.parameters_millions),
                     "params, timm (M)": counted["parameters"] / 1e6,
                     "same shape as the paper": (counted["layers"], counted["width"],
                                                 counted["mlp"], counted["heads"])
                     == (paper_row.layers, paper_row.width, paper_row.mlp, paper_row.heads)})
    if own is not None:
        rows.append({"model": own_label, "layers": own["layers"], "width": own["width"],
                     "MLP": own["mlp"], "heads": own["heads"], "params, paper (M)": float("nan"),
                     "params, timm (M)": own["parameters"] / 1e6,
                     "same shape as the paper": None})
    return pd.DataFrame(rows)


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
    ``patch_maximum``, ``pooled_token``), or None where none is reported."""
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
    masks), ``table2`` (sample efficiency)."""
    if name not in CONVIT_TABLES:
        raise ValueError(f"ConViT tables are {CONVIT_TABLES}, not {name!r}")
    return pd.read_csv(data_dir() / "paper" / f"convit_{name}.csv")
