"""Chapter 1 metrics, read off an extraction store (catalogue §4 E2-E5a).

- E2 :func:`identifiability_rate`: % of image tokens whose true class is top-1 at the last block.
- E3 :func:`images_with_identifiable_token`: % of images with at least one such token.
- E4 :func:`evolution`: mean identifiability per block, [CLS] and image tokens, and
  :func:`wilcoxon_vs_random`, the paired test against the same architecture at random init.
- E5a :func:`block_change_rate`: % of image tokens whose true-class logit grows in a block.

"Image tokens" are the patch tokens. The authors' code always drops token column 0, which for
the GAP model (no [CLS]) drops a real image token (bug B4); ``paper=True`` reproduces that.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import numpy as np
import pandas as pd

from ..base.errors import VitclsError
from ..stores.reader import Store
from ..base.stats import box_summary, wilcoxon_greater
from ..base.uncertainty import Interval, bootstrap


def image_columns(results: Store, paper: bool = False) -> slice:
    """Token columns of the image (patch) tokens; ``paper=True`` always drops column 0 (B4)."""
    return slice(max(results.num_prefix, 1 if paper else 0), None)


def last_block_ranks(results: Store, kind: str = "resid_post") -> np.ndarray:
    """Ranks at the last block: [I, N]."""
    return results.by_block("rank", kind)[:, -1]


def identifiability_rate(results: Store, paper: bool = False) -> float:
    """E2 (Table 1): mean over images of the % of image tokens identifiable at the last block."""
    ranks = last_block_ranks(results)[:, image_columns(results, paper)]
    return float(100 * (ranks == 0).mean(axis=1).mean())


def images_with_identifiable_token(results: Store, paper: bool = False) -> float:
    """E3 (A1): % of images with at least one identifiable image token at the last block."""
    ranks = last_block_ranks(results)[:, image_columns(results, paper)]
    return float(100 * (ranks == 0).any(axis=1).mean())


def identifiable_per_image(results: Store, paper: bool = False) -> Dict[str, np.ndarray]:
    """Per image, what :func:`identifiability_rate` and :func:`images_with_identifiable_token`
    average: the % of its image tokens identifiable at the last block, and 100 if it has one.

    Args:
        results: an extraction store; paper: drop column 0 always (B4), as those functions.

    Returns:
        {``rate``: [I] %, ``any``: [I] 0 or 100}, float64.
    """
    hits = last_block_ranks(results)[:, image_columns(results, paper)] == 0
    return {"rate": 100 * hits.mean(axis=1), "any": 100.0 * hits.any(axis=1)}


def top1_accuracy(results: Store) -> float:
    """% of images the model's own output classifies correctly."""
    return 100 * results.accuracy


def headline(results: Store) -> Dict[str, float]:
    """Table 1 + A1 numbers of one run, the paper's way (B4) and over image tokens only.

    Args:
        results: the extraction store of one run.

    Returns:
        dict of floats: ``identifiability_rate`` (%, B4), ``identifiability_rate_image_tokens``
        (%), ``images_with_identifiable_token`` (%, B4), ``top1_accuracy`` (%), ``n_images``.
    """
    return {
        "identifiability_rate": identifiability_rate(results, paper=True),
        "identifiability_rate_image_tokens": identifiability_rate(results, paper=False),
        "images_with_identifiable_token": images_with_identifiable_token(results, paper=True),
        "top1_accuracy": top1_accuracy(results),
        "n_images": float(len(results.labels)),
    }


def headline_per_image(results: Store) -> Dict[str, np.ndarray]:
    """:func:`headline`'s rates per image, each a mean over images of these: the image's % of
    identifiable image tokens (B4 and over image tokens), 100 if it has one, 100 if the model
    is right (NaN for an image that was not run).

    Args:
        results: the extraction store of one run.

    Returns:
        {metric: [I] float64, in %} for ``identifiability_rate``,
        ``identifiability_rate_image_tokens``, ``images_with_identifiable_token`` and
        ``top1_accuracy``.
    """
    ranks = last_block_ranks(results)
    paper, image = ranks[:, image_columns(results, True)], ranks[:, image_columns(results, False)]
    ran = results.pred >= 0
    return {"identifiability_rate": 100 * (paper == 0).mean(1),
            "identifiability_rate_image_tokens": 100 * (image == 0).mean(1),
            "images_with_identifiable_token": 100.0 * (paper == 0).any(1),
            "top1_accuracy": np.where(ran, 100.0 * (results.pred == results.labels), np.nan)}


def headline_intervals(results: Store, seed: int = 0) -> Dict[str, Interval]:
    """:func:`headline`'s rates with their 95% bootstrap intervals over images
    (:func:`headline_per_image` resampled).

    Args:
        results: the extraction store of one run.
        seed: the bootstrap's seed.

    Returns:
        {metric: :class:`~vitcls_utils.base.uncertainty.Interval`}, in %.
    """
    return {metric: bootstrap(values, seed=seed)
            for metric, values in headline_per_image(results).items()}


def evolution(results: Store) -> pd.DataFrame:
    """E4: mean identifiability per block, [CLS] and image tokens, with each image's value.

    Args:
        results: the extraction store of one run.

    Returns:
        DataFrame with columns ``block`` (the block's own 1-based number,
        ``Store.block_numbers``), ``token`` ("[CLS]" or "image"), ``identifiability`` (mean of
        1 - rank/C at the block's output) and ``identifiability_images`` (an [I] array: each
        image's [CLS], or the mean over its image tokens; their mean is ``identifiability``,
        every image having the same number of tokens); no "[CLS]" rows for a model without
        one, nor for a ConViT's blocks before its [CLS] joins.
    """
    ident = results.identifiability("resid_post")  # [I, L, N]
    rows, numbers = [], results.block_numbers
    for block in range(ident.shape[1]):
        groups = {}
        if results.has_cls and block >= results.prefix_from:  # a ConViT's [CLS] joins late
            groups["[CLS]"] = np.asarray(ident[:, block, 0], dtype=np.float64)
        groups["image"] = np.asarray(ident[:, block, image_columns(results)],
                                     dtype=np.float64).mean(axis=1)
        rows += [(numbers[block], token, float(per_image.mean()), per_image)
                 for token, per_image in groups.items()]
    return pd.DataFrame(rows, columns=["block", "token", "identifiability",
                                       "identifiability_images"])


def block_boxes(results: Store) -> pd.DataFrame:
    """A2 boxplot statistics per block and token type
    (:func:`~vitcls_utils.base.stats.box_summary`).

    Args:
        results: the extraction store of one run.

    Returns:
        DataFrame, a row per (block, token): ``block`` (the block's own 1-based number,
        ``Store.block_numbers``), ``token`` ("[CLS]" or
        "image"), and identifiability's ``q1``, ``median``, ``q3``, ``whislo``, ``whishi``,
        ``mean``.
    """
    ident = results.identifiability("resid_post")
    rows, numbers = [], results.block_numbers
    for block in range(ident.shape[1]):
        present = results.has_cls and block >= results.prefix_from  # a ConViT's [CLS] is late
        groups = {"[CLS]": ident[:, block, 0]} if present else {}
        groups["image"] = ident[:, block, image_columns(results)].ravel()
        for token, values in groups.items():
            rows.append({"block": numbers[block], "token": token, **box_summary(values)})
    return pd.DataFrame(rows)


def wilcoxon_vs_random(results: Store, random: Store, paper: bool = False) -> pd.DataFrame:
    """E4 significance: per block, paired one-sided Wilcoxon signed-rank of identifiability,
    pretrained > random, over all images x all tokens ([CLS] included), as the paper does.

    By default the test runs on the integer ranks (r is an affine function of the rank, so the
    statistic is the same, and tied pairs are tied exactly). ``paper=True`` runs it on r in
    float32, as the authors' code does, where rounding can split ties.
    Both stores must hold the same stimuli in the same order.

    Args:
        results: the pretrained model's extraction store.
        random: the same architecture's store at random initialisation, same stimuli.
        paper: test float32 identifiability as the authors do, not integer ranks.

    Returns:
        DataFrame with columns ``block`` (the block's own 1-based number,
        ``Store.block_numbers``), ``p_value`` and ``significant``
        (p < 0.05).

    Raises:
        VitclsError: when the stores hold different stimuli or have different shapes.
    """
    if (results.manifest["config"]["dataset"]["fingerprint"]
            != random.manifest["config"]["dataset"]["fingerprint"]):
        raise VitclsError("the model and its random control were run on different stimuli; "
                          "extract both on the same dataset")
    if paper:
        a, b = results.identifiability("resid_post"), random.identifiability("resid_post")
    else:  # higher identifiability = lower rank
        a = -results.by_block("rank", "resid_post").astype(np.int64)
        b = -random.by_block("rank", "resid_post").astype(np.int64)
    if a.shape != b.shape:
        raise VitclsError(f"shapes differ: {a.shape} vs {b.shape} (same architecture needed)")
    rows = []
    for block, number in enumerate(results.block_numbers):
        p = wilcoxon_greater(a[:, block].ravel(), b[:, block].ravel())
        rows.append((number, p, p < 0.05))
    return pd.DataFrame(rows, columns=["block", "p_value", "significant"])


def block_change_rate(results: Store) -> pd.DataFrame:
    """E5a: for blocks 2..L, the fraction of (image, image token) pairs whose true-class logit
    increases from the previous block's output to this one's (token column 0 dropped, B4).

    Args:
        results: the extraction store of one run.

    Returns:
        DataFrame with columns ``block`` (2..L, the blocks' own numbers), ``change_rate``
        (fraction in [0, 1]) and ``change_rate_images`` (an [I] array: each image's
        fraction; their mean is the rate).
    """
    logits = results.by_block("true_logit", "resid_post")[:, :, image_columns(results, True)]
    grows = np.diff(logits, axis=1) > 0                                      # [I, L-1, N]
    rate, per_image = grows.mean(axis=(0, 2)), grows.mean(axis=2)
    return pd.DataFrame({"block": results.block_numbers[1:], "change_rate": rate,
                         "change_rate_images": list(per_image.T)})


def normalized_blocks(frame: pd.DataFrame, n_blocks: int, value: str,
                      by: List[str] = ()) -> pd.DataFrame:
    """Fig 2's normalized block axis: a 24-block model's blocks 2k-1 and 2k averaged into k.

    Args:
        frame: a per-block frame with a 1-based ``block`` column.
        n_blocks: the model's number of blocks, 12 (frame returned as is) or 24.
        value: the column to average.
        by: further columns to keep apart when averaging (e.g. ``["token"]``).

    Returns:
        DataFrame with ``block`` (1..12), the ``by`` columns and ``value``; for 24 blocks only
        those columns are kept.
    """
    if n_blocks == 12:
        return frame
    if n_blocks != 24:
        raise VitclsError(f"normalized blocks are defined for 12 and 24 blocks, not {n_blocks}")
    paired = frame.assign(block=(frame["block"] + 1) // 2)
    return paired.groupby(["block", *by], as_index=False)[value].mean()


def normalized_evolutions(stores: Mapping[str, Store]) -> Dict[str, pd.DataFrame]:
    """Fig 2's comparison across variants: each store's :func:`evolution` on the normalized
    12-block axis (:func:`normalized_blocks`). A store that does not hold 12 or 24 blocks from
    block 1 (a Swin's last stage, another depth) has no place on that axis: it is left out,
    and one printed line names it and the blocks it holds (its own pages show them).

    Args:
        stores: {label: that variant's unperturbed store}.

    Returns:
        {label: the normalized frame (``block`` 1..12, ``token``, ``identifiability``)}.

    Raises:
        VitclsError: no store is on the axis.
    """
    frames, left_out = {}, []
    for label, results in stores.items():
        if results.n_blocks in (12, 24) and results.block_numbers[0] == 1:
            frames[label] = normalized_blocks(evolution(results), results.n_blocks,
                                              "identifiability", ["token"])
        else:
            names = results.block_names
            left_out.append(f"{label} ({names[0]}" + (f" to {names[-1]})" if len(names) > 1
                                                     else ")"))
    if left_out:
        print("not on the 12-block axis, left out: " + "; ".join(left_out))
    if not frames:
        raise VitclsError("no store holds 12 or 24 blocks from block 1 to compare on the "
                          "normalized axis")
    return frames


def first_block_reaching(frame: pd.DataFrame, level: float,
                         column: str = "image_identifiability", **match) -> Optional[int]:
    """The first block (as numbered in ``frame.block``) at which ``column`` reaches ``level``,
    among the rows whose columns equal ``match`` (e.g. ``model="ConViT"``, ``edit="full"``).

    Args:
        frame: a per-block frame with a ``block`` column.
        level: the threshold ``column`` must reach (>=).
        column: the column compared with ``level``.
        **match: column=value filters applied first.

    Returns:
        The smallest such block number, or None where no matching row reaches ``level``.
    """
    rows = frame
    for name, value in match.items():
        rows = rows[rows[name] == value]
    rows = rows[rows[column] >= level]
    return None if rows.empty else int(rows.block.min())
