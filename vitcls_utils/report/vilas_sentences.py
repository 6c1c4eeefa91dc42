"""Chapters 1-4's sentences (Vilas et al. 2023): what each page says in words, generated from
this run's numbers and the reported ones, so that no number on a page is typed in, and a toy
result that departs from the paper's shape says so."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from ..base.uncertainty import bootstrap
from ..model.registry import get_variant
from .reported import compared_with, paper_series, paper_value


# ----------------------------------------------------------------------------------------------
# Sentences that set a shape of this run beside the paper's, generated from the numbers
# ----------------------------------------------------------------------------------------------
def _peak(series: pd.DataFrame) -> tuple:
    row = series.loc[series.value.idxmax()]
    return float(row.value), int(row.block)


def mlp_change_rate_sentence(rates: pd.DataFrame, variant: str) -> str:
    """Fig 3b: whether this run's MLP shows the late peak of the paper's (the share of image
    tokens whose true-class logit the MLP raises).

    Args:
        rates: :func:`~vitcls_utils.analysis.memories.sublayer_change_rate`'s frame, columns
            ``block``, ``layer``, ``token`` ("image" rows are read) and ``rate``.
        variant: registry key of this run's model, for the reported series.

    Returns:
        A sentence: like or unlike the reported model's MLP peak, with both numbers.
    """
    theirs = paper_series("sublayer_change_rate_mlp_image", variant)
    ours = rates[(rates.layer == "mlp") & (rates.token == "image")]
    if theirs.empty or ours.empty:
        return "The paper reports no MLP change rate for a model like this one."
    (peak, at), mine = _peak(theirs), float(ours.rate.max())
    model = get_variant(compared_with(variant, "sublayer_change_rate_mlp_image")).label
    if mine >= peak / 2:
        return (f"Like the paper's {model} (MLP peak {peak:.2f} at block {at}), this run's MLP "
                f"raises the true class of up to {mine:.2f} of the image tokens.")
    return (f"Unlike the paper's {model}, whose MLP raises the true class of {peak:.2f} of the "
            f"image tokens at block {at}, this run's MLP never exceeds {mine:.2f}: it does not "
            "show the paper's late MLP peak.")


def compositionality_sentence(table: pd.DataFrame, variant: str) -> str:
    """A9: the attention's compositional share at the last block beside the paper's: its text
    puts it above 70% in the last blocks of every model but the CIFAR-100 one, whose plot
    shows 73% matching (27% compositional).

    Args:
        table: block x layer matches (%), indexed by block, with an "attn compositional"
            column (100 minus the attention's match).
        variant: registry key of this run's model, for the reported values.

    Returns:
        A sentence: like or unlike the reported share, with both numbers.
    """
    mine = float(table["attn compositional"].iloc[-1])
    bound = compared_with(variant, "attention_compositional_min")
    if bound is not None and not paper_series("memory_match_attn", variant).empty \
            and compared_with(variant, "memory_match_attn") == get_variant(variant).key:
        bound = None  # the CIFAR-100 model: its own plotted value, not the text's bound
    if bound is not None and paper_value("attention_compositional_min", bound) is not None:
        least = paper_value("attention_compositional_min", bound)
        side = "Like" if mine > least else "Unlike"
        return (f"{side} the paper's {get_variant(bound).label} (more than {least:.0f}% of "
                f"tokens compositional in the attention of the last blocks), {mine:.0f}% are "
                "here.")
    theirs = paper_series("memory_match_attn", variant)
    if theirs.empty:
        return "The paper reports no attention match for a model like this one."
    model = get_variant(compared_with(variant, "memory_match_attn")).label
    reported_share = 100 - float(theirs.value.iloc[-1])
    side = "Like" if (mine > 50) == (reported_share > 50) else "Unlike"
    return (f"{side} the paper's {model} ({reported_share:.0f}% of tokens compositional in the "
            f"attention at the last block), {mine:.0f}% are here.")


def order_sentence(areas: pd.DataFrame, method: str, name: str,
                   tests: Optional[pd.DataFrame] = None) -> str:
    """A11/A12: whether a token order beats a random one in both perturbation tests (higher
    AUC in the negative test, lower in the positive one), as the paper finds for its orders,
    and, given the paired tests, whether the 95% interval of each difference excludes zero.

    Args:
        areas: a row per (method, test) with the area in its fourth column.
        method: the order read ("class_space", "probe").
        name: how the sentence names it.
        tests: :func:`~vitcls_utils.analysis.faithfulness.auc_tests`'s frame, or None.

    Returns:
        A sentence (two with ``tests``).
    """
    said = _order_verdict(areas, method, name)
    if tests is None:
        return said
    rows = tests[tests.method == method]
    column = next(c for c in tests.columns if c.startswith("difference from"))
    parts = [f"{r.test} test {r[column]} ("
             + ("its 95% CI excludes zero" if r["CI excludes zero"] else "its 95% CI holds zero:"
                " not resolved") + ")" for _, r in rows.iterrows()]
    return said + (" Per image, the difference from random is: " + "; ".join(parts) + "."
                   if parts else "")


def _order_verdict(areas: pd.DataFrame, method: str, name: str) -> str:
    auc = {(r.method, r.test): r[3] for r in areas.itertuples()}
    negative = auc[(method, "negative")] > auc[("random", "negative")]
    positive = auc[(method, "positive")] < auc[("random", "positive")]
    if negative and positive:
        return f"The {name} order beats a random one in both tests, as in the paper."
    failed = " and ".join(t for t, ok in (("negative", negative), ("positive", positive))
                          if not ok)
    return (f"The {name} order does no better than a random one in the {failed} test here; "
            "the paper finds it better in both, so this run does not reproduce that.")


def evolution_sentence(image_last: float, first_significant: Optional[int],
                       is_control: bool, image_values=None, seed: int = 0) -> str:
    """Fig 2 in words: where image tokens end (with its 95% interval over the images, set
    against chance, where each image's value is given) and the first block above random init,
    or, for the random-init control itself, why there is no such test.

    Args:
        image_last: the image tokens' mean identifiability at the last block.
        first_significant: the first block above random init (p < 0.05), or None.
        is_control: this run is the random-init control itself.
        image_values: each image's mean identifiability of its image tokens at the last block
            (:func:`~vitcls_utils.analysis.identifiability.evolution`'s
            ``identifiability_images``), or None: no interval.
        seed: the bootstrap's seed.

    Returns:
        One or two sentences.
    """
    start = (f"After the last block, the mean identifiability of image tokens is "
             f"{image_last:.3f} (chance: 0.5).")
    if image_values is not None:
        interval = bootstrap(image_values, seed=seed)
        side = ("lies above chance" if interval.low > 0.5 else "lies below chance"
                if interval.high < 0.5 else "holds chance: not resolved")
        start = (f"After the last block, the mean identifiability of image tokens is "
                 f"{interval.format(3)} (95% CI over the images; chance 0.5: the interval "
                 f"{side}).")
    if is_control:
        return (f"{start} This is the random-init control itself: the test against random "
                "init applies to the trained models.")
    if first_significant is None:
        return f"{start} No block is significantly more identifiable than at random init."
    return (f"{start} The first block where the tokens are significantly more identifiable "
            f"than at random init (p < 0.05) is block {first_significant}.")


def ci_verdict(interval) -> str:
    """Whether an interval resolves its difference, in the book's words: "its 95% CI excludes
    zero" or "its 95% CI holds zero: not resolved".

    Args:
        interval: a :class:`~vitcls_utils.base.uncertainty.Interval` of a difference.

    Returns:
        The words.
    """
    return ("its 95% CI excludes zero" if interval.excludes_zero
            else "its 95% CI holds zero: not resolved")


def drop_sentence(table: pd.DataFrame, name: str) -> str:
    """E7/E9: each perturbation's drop of identifiability in words, with whether its 95%
    interval (paired over images) excludes zero.

    Args:
        table: :func:`~vitcls_utils.report.vilas_tables.attention_table` or
            :func:`~vitcls_utils.report.vilas_tables.context_table`, with its
            "drop, 95% CI (paired)" column ("d [lo, hi]" or "–").
        name: the column naming each row ("run" or "tokens").

    Returns:
        A sentence; empty when no row has a drop.
    """
    parts = []
    for label, text in zip(table[name], table["drop, 95% CI (paired)"], strict=True):
        if text in ("–", None):
            continue
        low, high = (float(v) for v in text.split("[", 1)[1].rstrip("]").split(","))
        resolved = "excludes zero" if low > 0 or high < 0 else "holds zero: not resolved"
        parts.append(f"{label} {text} points (its 95% CI {resolved})")
    if not parts:
        return ""
    return ("The drop of each image's rate, paired over images: " + "; ".join(parts) + ".")
