"""The main paper's tables (Vilas et al. 2023, chapters 1-4): this run's numbers beside the
values the paper reports (:mod:`vitcls_utils.report.reported`). The measurements live in the
analysis modules by concept; this module only arranges them for a page."""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..analysis.context import (GROUP_NAMES, drop_interval, perturbed_rate, rate_interval,
                                unperturbed_rate)
from ..analysis.faithfulness import PAPER_ORDER_NAMES
from ..analysis.identifiability import (headline, headline_intervals, headline_per_image,
                                        identifiability_rate, top1_accuracy)
from ..analysis.memories import strongest_values, value_vector_classes
from .reported import (agreement, compared_with, paper_series, reported, reported_label,
                       reported_value, value_vector_descriptions)
from ..model.perturbations import perturbation_name
from ..model.registry import get_variant
from ..base.uncertainty import across_seeds, bootstrap, bootstrap_ratio_difference, paired_difference
from .intervals import interval_cells, interval_text  # noqa: F401 (the tables' names too)

if TYPE_CHECKING:
    from ..analysis.memories import Memories
    from ..stores.reader import Store


def compare_table(stores: Mapping[str, "Store"]) -> pd.DataFrame:
    """Table 1 across variants: one row per store, this run's values beside the values the
    paper reports for the model each is set beside (:func:`~vitcls_utils.report.reported.
    compared_with`: itself, or the nearest paper model for a toy).

    Args:
        stores: {registry key: that variant's unperturbed store}.
    Returns:
        DataFrame, a row per store (sorted by key): ``variant`` (label), ``dataset``,
        ``images``, "identifiability rate (this run)", its "95% CI" over images,
        "identifiability rate (reported)",
        "top-1 (this run)", its "top-1, 95% CI", "top-1 (reported)" (%; None where the paper
        reports none) and
        "reported for" (the paper model those values are of).
    """
    rows = []
    for key, results in sorted(stores.items()):
        ours, model = headline(results), compared_with(key, "identifiability_rate")
        cis = headline_intervals(results)
        rows.append({
            "variant": get_variant(key).label,
            "dataset": results.manifest["config"]["dataset"]["name"],
            "images": int(ours["n_images"]),
            "identifiability rate (this run)": ours["identifiability_rate"],
            "95% CI": interval_text(cis["identifiability_rate"]),
            "identifiability rate (reported)": reported_value("identifiability_rate", key),
            "top-1 (this run)": ours["top1_accuracy"],
            "top-1, 95% CI": interval_text(cis["top1_accuracy"]),
            "top-1 (reported)": reported_value("top1_accuracy", key),
            "reported for": "" if model is None else get_variant(model).label,
        })
    return pd.DataFrame(rows)


def headline_intervals_table(results: "Store", control: "Store", metrics: Sequence[str],
                             seed: int = 0) -> pd.DataFrame:
    """Table 1's intervals: per metric, this run's 95% interval over images, the random-init
    control's, and the paired difference (same images) with its interval and Wilcoxon p.

    Args:
        results: this run's store; control: the random-init control's, on the same images.
        metrics: metric names of :func:`~vitcls_utils.analysis.identifiability.headline_per_image`.
        seed: the bootstrap's seed.

    Returns:
        DataFrame, a row per metric in order: "95% CI", "random init, 95% CI", "trained −
        random init [95% CI]" and "resolved" ("yes" where that interval excludes zero).
    """
    ours, theirs = headline_per_image(results), headline_per_image(control)
    if len(ours["top1_accuracy"]) != len(theirs["top1_accuracy"]):
        raise ValueError("the control was run on other images; pair runs on the same stimuli")
    mine, control_ci = headline_intervals(results, seed), headline_intervals(control, seed)
    rows = []
    for metric in metrics:
        difference = paired_difference(ours[metric], theirs[metric], seed=seed)
        rows.append({"95% CI": interval_text(mine[metric]),
                     "random init, 95% CI": interval_text(control_ci[metric]),
                     "trained − random init [95% CI]": difference.format(2),
                     "resolved": "yes" if difference.excludes_zero else "no"})
    return pd.DataFrame(rows)


def interval_table(frame: pd.DataFrame, by: Sequence[str], value: str, seed: int = 0
                   ) -> pd.DataFrame:
    """Per group, the mean of ``value`` over its rows (its units: images, classes) with the 95%
    bootstrap interval that resamples those units; non-finite values excluded and counted.

    Args:
        frame: one row per unit and group; by: the grouping columns (e.g. block, layer).
        value: the column averaged; seed: the bootstrap's seed.

    Returns:
        DataFrame, a row per group: the ``by`` columns, ``mean``, ``95% CI`` (``[lo, hi]``,
        with the excluded count where there is one) and ``n`` (units averaged).
    """
    rows = []
    for keys, group in frame.groupby(list(by), sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        interval = bootstrap(group[value].to_numpy(), seed=seed)
        rows.append({**dict(zip(by, keys, strict=True)), "mean": interval.estimate,
                     "95% CI": interval_text(interval, 3), "n": interval.n})
    return pd.DataFrame(rows)


def across_seeds_table(controls: Mapping[int, "Store"], metrics: Sequence[str]) -> pd.DataFrame:
    """Table 1's control at several random-init seeds: per metric, each seed's value and the
    mean with its 95% interval across seeds (Student's t).

    Args:
        controls: {seed: the control's store at that seed}, same stimuli.
        metrics: metric names of :func:`~vitcls_utils.analysis.identifiability.headline`.

    Returns:
        DataFrame, a row per metric: ``metric``, ``seed <s>`` per seed, ``mean`` and
        ``95% CI across seeds``.
    """
    values = {seed: headline(store) for seed, store in sorted(controls.items())}
    rows = []
    for metric in metrics:
        interval = across_seeds([values[seed][metric] for seed in values])
        rows.append({"metric": metric, **{f"seed {seed}": values[seed][metric]
                                          for seed in values},
                     "mean": interval.estimate, "95% CI across seeds": interval.bounds(2)})
    return pd.DataFrame(rows)


def side_by_side(variant: str, ours: Dict[str, float]) -> pd.DataFrame:
    """One row per metric: this run's value, the reported one beside it (of the paper model
    :func:`~vitcls_utils.report.reported.compared_with` names), whether they agree, and the
    reported value's source.

    Args:
        variant: registry key of this run's model.
        ours: {metric name as in ``reported.csv``: this run's value}.
    Returns:
        DataFrame, a row per metric in ``ours``'s order: ``metric``, "this run", the column
        named by :func:`~vitcls_utils.report.reported.reported_label` (e.g. "reported,
        ViT-B/32"), ``agreement`` and ``source`` (whole-model values only).
    """
    frame, rows = reported(), []
    metrics = list(ours)
    model = compared_with(variant, metrics[0] if metrics else None)
    label = reported_label(variant, metrics[0] if metrics else None)
    for metric, value in ours.items():
        match = frame[(frame.metric == metric) & (frame.variant == model) & frame.block.isna()]
        rows.append({
            "metric": metric,
            "this run": value,
            label: None if match.empty else float(match.value.iloc[0]),
            "agreement": agreement(variant, metric, value),
            "source": "" if match.empty else match.source.iloc[0],
        })
    return pd.DataFrame(rows)


#: the reported metric of each attention perturbation
_PAPER_ATTENTION = {"self_only": "attention_perturbation_self_only",
                    "no_cls": "attention_perturbation_no_cls"}


def attention_table(variant: str, clean: Store, runs: Sequence[Store]) -> pd.DataFrame:
    """E7 table: last-block identifiability rate unperturbed and under each attention
    perturbation, with the authors' aggregation (B5) and the corrected one (image tokens on
    both sides), beside the reported value (which the authors' aggregation produced).

    Args:
        variant: registry key of this run's model, for the reported values.
        clean: the unperturbed store.
        runs: a store per attention perturbation (same stimuli).
    Returns:
        DataFrame, a row per run ("unperturbed" first, then the perturbations' names): ``run``,
        "authors' aggregation", "corrected aggregation", "corrected, 95% CI" (bootstrap over
        images, :func:`~vitcls_utils.analysis.context.rate_interval`), the reported column named by
        :func:`~vitcls_utils.report.reported.reported_label` (%; None where not reported),
        "top-1 (%)" and "drop, 95% CI (paired)": the mean over images of each image's
        unperturbed minus perturbed rate, in points, with its interval
        (:func:`~vitcls_utils.analysis.context.drop_interval`).
    """
    label = reported_label(variant, "attention_perturbation_self_only")
    rows = [{"run": "unperturbed",
             "authors' aggregation": identifiability_rate(clean, paper=True),
             "corrected aggregation": unperturbed_rate(clean),
             "corrected, 95% CI": interval_text(rate_interval(clean)),
             label: reported_value("identifiability_rate", variant),
             "top-1 (%)": top1_accuracy(clean), "drop, 95% CI (paired)": "–"}]
    for res in runs:
        name = perturbation_name(res.perturbation)
        metric = _PAPER_ATTENTION.get(name)
        rows.append({"run": name, "authors' aggregation": perturbed_rate(res, paper=True),
                     "corrected aggregation": perturbed_rate(res),
                     "corrected, 95% CI": interval_text(rate_interval(res)),
                     label: reported_value(metric, variant) if metric else None,
                     "top-1 (%)": 100 * res.accuracy,
                     "drop, 95% CI (paired)": drop_interval(clean, res).format(2)})
    return pd.DataFrame(rows)


def context_table(variant: str, clean: Store, runs: Mapping[str, Store],
                  labels: str = "aligned") -> pd.DataFrame:
    """E9 table: per group ("class", "context"), its tokens' last-block identifiability rate
    unperturbed and with the other group removed (``runs[group]`` keeps that group), with the
    authors' aggregation (B6) and the corrected one, beside the reported values.

    Args:
        variant: registry key of this run's model, for the reported values.
        clean: the unperturbed store.
        runs: {"class" or "context": the store with the other group's tokens removed}.
        labels: the token-label rule, "aligned" or "paper" (B15).
    Returns:
        DataFrame, a row per group: ``tokens``, ``unperturbed``, "removed, authors'
        aggregation", "removed, corrected aggregation", "unperturbed, 95% CI", "removed,
        corrected, 95% CI" (bootstrap over images), "<reported label>: unperturbed",
        "<reported label>: removed" (:func:`~vitcls_utils.report.reported.reported_label`)
        "top-1 when removed (%)" (rates in %; None where the paper reports none) and "drop,
        95% CI (paired)" (each image's unperturbed minus removed rate, averaged, with its
        interval).
    """
    label = reported_label(variant, "context_perturbation_class_tokens")
    rows = []
    for group, res in runs.items():
        rows.append({
            "tokens": GROUP_NAMES[group],
            "unperturbed": unperturbed_rate(clean, group, labels),
            "removed, authors' aggregation": perturbed_rate(res, paper=True),
            "removed, corrected aggregation": perturbed_rate(res),
            "unperturbed, 95% CI": interval_text(rate_interval(clean, group, labels)),
            "removed, corrected, 95% CI": interval_text(rate_interval(res)),
            f"{label}: unperturbed": reported_value(f"context_identifiability_{group}_tokens",
                                                    variant),
            f"{label}: removed": reported_value(f"context_perturbation_{group}_tokens", variant),
            "top-1 when removed (%)": 100 * res.accuracy,
            "drop, 95% CI (paired)": drop_interval(clean, res, group, labels).format(2),
        })
    return pd.DataFrame(rows)


def change_difference_table(diff: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """A5b's table: per block the class- minus context-labeled increment with its 95%
    interval (each image's tokens of both groups pooled, whole images resampled) and whether
    that interval excludes zero, beside the permutation test.

    Args:
        diff: :func:`~vitcls_utils.analysis.context.change_difference`'s frame.
        seed: the bootstrap's seed.

    Returns:
        DataFrame indexed by ``block``: ``difference`` (logits), "95% CI", "CI excludes zero",
        ``p_value``, ``significant``, ``class_tokens`` and ``context_tokens``.
    """
    intervals = [bootstrap_ratio_difference(r.class_sum_images, r.class_tokens_images,
                                            r.context_sum_images, r.context_tokens_images,
                                            seed=seed) for r in diff.itertuples()]
    return diff.assign(**{"95% CI": [interval_text(i, 4) for i in intervals],
                          "CI excludes zero": [i.excludes_zero for i in intervals]}).set_index(
        "block")[["difference", "95% CI", "CI excludes zero", "p_value", "significant",
                  "class_tokens", "context_tokens"]]


def misclassified_table(diff: pd.DataFrame, correct: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """A8's table: per block and layer, [CLS]'s agreement over correctly classified images
    minus over misclassified ones with its 95% interval (whole images resampled, so both
    groups' sizes vary as a new draw of images would) beside the permutation test.

    Args:
        diff: :func:`~vitcls_utils.analysis.memories.correct_vs_misclassified`'s frame.
        correct: [I] bool, whether the model classifies each image right (the same order).
        seed: the bootstrap's seed.

    Returns:
        DataFrame: ``block``, ``layer``, ``difference`` (points), "95% CI", ``p_value`` and
        ``significant``.
    """
    right = np.asarray(correct, dtype=np.float64)
    intervals = [bootstrap_ratio_difference(100 * v * right, right, 100 * v * (1 - right),
                                            1 - right, seed=seed)
                 for v in diff.agreement_images]
    return diff.assign(**{"95% CI": [interval_text(i) for i in intervals]})[
        ["block", "layer", "difference", "95% CI", "p_value", "significant"]]


def value_vector_table(memories: "Memories", variant: str, class_names: Sequence[str],
                       labels: Sequence[int], block: Optional[int] = None,
                       columns: Optional[Sequence[int]] = None):
    """A6b as the notebook shows it: the top classes of the value vectors the paper describes
    (or ``columns``, or the strongest ones) of ``block`` (1-based; default the paper's block,
    else the penultimate), with the paper's reading beside them. Returns (table, block).

    Args:
        memories: the model's value projections
            (:class:`~vitcls_utils.analysis.memories.Memories`).
        variant: registry key, for the paper's descriptions.
        class_names: a name per class.
        labels: the stimuli's labels; only the classes among them are ranked.
        block: 1-based block; None: the paper's block, else ``memories.n_blocks - 1``.
        columns: MLP value vectors (columns of ``fc2.weight``); None: the paper's, else the
            8 strongest.
    Returns:
        (table, block): a DataFrame with columns "value vector", "top classes" (the top 5) and,
        where the paper describes the variant, ``paper``; and the 1-based block read.
    """
    described = value_vector_descriptions(variant)
    read_block = block or (int(described.block.iloc[0]) if len(described)
                           else memories.n_blocks - 1)
    if columns is None:
        chosen = described.column.tolist() or strongest_values(memories, read_block - 1)
    else:
        chosen = list(columns)
    table = value_vector_classes(memories, read_block - 1, chosen, class_names,
                                 allowed=sorted(set(np.asarray(labels).tolist())))
    if len(described):
        table = table.merge(described[described.block == read_block][["column", "classes"]]
                            .rename(columns={"column": "value vector", "classes": "paper"}),
                            on="value vector", how="left")
    return table, read_block


def composition_table(fixed: pd.DataFrame, buggy: pd.DataFrame, variant: str) -> pd.DataFrame:
    """Fig 3c's table: the corrected composition per block and source (percent of tokens),
    this run under the authors' rule beside it (B1), and the reported values where the paper
    has them (``fixed`` and ``buggy`` from :func:`residual_composition`).

    Args:
        fixed: the corrected composition, columns ``block``, ``source`` and ``percent``.
        buggy: the same with ``paper=True`` (the authors' rule).
        variant: registry key of this run's model, for the reported values.
    Returns:
        DataFrame indexed by ``block``: a column per source of ``fixed`` ("previous", "attn",
        "mlp", "composition"), "composition, authors' rule", "total, authors' rule" and,
        where the paper reports them, "previous, <reported label>" and "total, <reported
        label>" (% of tokens); given the per-image values (``percent_images``), "<source>,
        95% CI" after them (bootstrap over images).
    """
    table = fixed.pivot(index="block", columns="source", values="percent")
    if "percent_images" in fixed:
        cis = interval_cells(fixed, "block", "source", "percent_images", 1, bounds_only=True)
        table = table.join(cis[list(table.columns)].rename(columns=lambda c: f"{c}, 95% CI"))
    table["composition, authors' rule"] = (buggy.query("source == 'composition'")
                                           .set_index("block").percent)
    table["total, authors' rule"] = buggy.groupby("block").percent.sum()
    label = reported_label(variant, "composition_previous")
    previous = paper_series("composition_previous", variant).set_index("block").value
    if not previous.empty:
        table[f"previous, {label}"] = previous
        table[f"total, {label}"] = (paper_series("composition_total", variant)
                                    .set_index("block").value)
    return table


def last_block_with_paper(table: pd.DataFrame, variant: str) -> pd.DataFrame:
    """A12 right: the last block's probe and projection accuracy per site kind, this run's
    beside the reported ones (NaN where the paper reports none).

    Args:
        table: :func:`vitcls_utils.analysis.probing.probe_table`: columns ``block``, ``site``,
            "linear probe" and "class projection".
        variant: registry key of this run's model, for the reported values.
    Returns:
        DataFrame, a row per site kind: ``site``, "probe (this run)", "probe (reported)",
        "projection (this run)", "projection (reported)" and "reported for".
    """
    block = int(table.block.max())
    last = table[table.block == block].set_index("site")
    model = compared_with(variant, "probe_accuracy_resid_post")
    return pd.DataFrame([{
        "site": site, "probe (this run)": last.loc[site, "linear probe"],
        "probe (reported)": reported_value(f"probe_accuracy_{site}", variant, block=block),
        "projection (this run)": last.loc[site, "class projection"],
        "projection (reported)": reported_value(f"projection_accuracy_{site}", variant,
                                                block=block),
        "reported for": "" if model is None else get_variant(model).label}
        for site in last.index])


def with_paper_areas(areas: pd.DataFrame, variant: str) -> pd.DataFrame:
    """``areas`` of :func:`~vitcls_utils.analysis.faithfulness.faithfulness_test` with the
    reported AUC of the same order and test beside each row (NaN where none is reported).

    Args:
        areas: a row per (method, test) with columns ``method`` (a key of
            ``PAPER_ORDER_NAMES``) and ``test`` ("negative", "positive") among others.
        variant: registry key of this run's model, for the reported values.
    Returns:
        DataFrame: ``areas`` with a ``reported`` column added (the AUC the paper prints for
        the model :func:`~vitcls_utils.report.reported.compared_with` names).
    """
    return areas.assign(reported=[
        reported_value(f"perturbation_auc_{row.test}_{PAPER_ORDER_NAMES[row.method]}", variant)
        for row in areas.itertuples()])
