"""Chapter 2 metrics, read off extraction stores (catalogue E7-E9): how attention and context make
image tokens class-identifiable.

- E7 :func:`perturbed_rate` of an attention-perturbed store beside :func:`unperturbed_rate`.
- E8 :func:`group_identifiability` / :func:`group_boxes` / :func:`group_test`: identifiability
  of class-labeled vs context-labeled image tokens per block, with a one-sided permutation test.
- A5b :func:`change_difference`: the attention's logit increment, class- minus context-labeled.
- E9 :func:`perturbed_rate` of a token-removal store beside :func:`unperturbed_rate` of the
  same group of tokens.

Token labels come from the store: ``labels="aligned"`` (through the variant's preprocessing) or
``"paper"`` (the authors' top-left nearest pixel, bug B15). All rates are % of tokens whose true
class is top-1 at the last block.

The paper's aggregation differs between its perturbed and unperturbed numbers (B5, B6): the
unperturbed rate is pooled over image tokens, the perturbed one is the mean over images of the
fraction over every token that was run, [CLS] included. ``paper=True`` reproduces that;
the default counts image tokens only, pooled, on both sides.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import pandas as pd

from ..base.errors import VitclsError
from ..stores.reader import Store
from ..model.perturbations import AttentionPerturbation
from ..base.stats import box_summary, permutation_greater
from ..base.uncertainty import Interval, bootstrap_ratio, paired_difference

GROUPS = {"class": 1, "context": 0}
GROUP_NAMES = {"class": "class-labeled", "context": "context-labeled"}


def token_groups(results: Store, labels: str = "aligned") -> np.ndarray:
    """Token labels [I, N]: 1 class-labeled, 0 context-labeled, -1 prefix token or no mask."""
    name = {"aligned": "token_class", "paper": "token_class_paper"}.get(labels)
    if name is None:
        raise VitclsError(f"labels must be 'aligned' or 'paper', not {labels!r}")
    array = getattr(results, name)
    if array is None:
        raise VitclsError(f"{results.path} has no token labels: the dataset "
                          f"{results.manifest['config']['dataset']['name']!r} has no "
                          "segmentation masks (use toy or imagenet-s)")
    return np.asarray(array)


def _last_ranks(results: Store) -> np.ndarray:
    return results.by_block("rank", "resid_post")[:, -1]


def unperturbed_rate(results: Store, group: Optional[str] = None,
                     labels: str = "aligned") -> float:
    """% of image tokens (or of the ``group``'s tokens, "class"/"context") identifiable at the
    last block, pooled over images: the unperturbed side of E7 and E9."""
    if results.perturbation is not None:
        raise VitclsError(f"{results.path} is a perturbed run; pass the unperturbed store")
    ranks = _last_ranks(results)[:, results.num_prefix:]
    if group is None:
        return float(100 * (ranks == 0).mean())
    selected = token_groups(results, labels)[:, results.num_prefix:] == GROUPS[group]
    return float(100 * (ranks[selected] == 0).mean()) if selected.any() else float("nan")


def perturbed_rate(results: Store, paper: bool = False) -> float:
    """% identifiable at the last block of a perturbed run, over the tokens that were run.

    Default: pooled over the image tokens that were kept. ``paper=True``: the mean over images
    of the per-image fraction over every kept token, [CLS] included (B5, B6); with no removal
    every image has the same tokens, and this is the paper's pooled rate over all tokens.
    Images that could not be perturbed (no mask) are left out.
    """
    if results.perturbation is None:
        raise VitclsError(f"{results.path} is not a perturbed run")
    ranks = _last_ranks(results)
    ran = results.pred >= 0
    ranks = ranks[ran]
    kept = ranks >= 0
    hit = (ranks == 0) & kept
    if paper:
        return float(100 * (hit.sum(1) / kept.sum(1)).mean())
    image = slice(results.num_prefix, None)
    return float(100 * hit[:, image].sum() / max(kept[:, image].sum(), 1))


def rate_interval(results: Store, group: Optional[str] = None, labels: str = "aligned",
                  seed: int = 0) -> "Interval":
    """:func:`unperturbed_rate` (an unperturbed store) or :func:`perturbed_rate` (a perturbed
    one, corrected aggregation) with its 95% interval: the rate is pooled over tokens, so each
    image's identifiable and counted tokens are resampled together
    (:func:`~vitcls_utils.base.uncertainty.bootstrap_ratio`).

    Args:
        results: a store; group: for an unperturbed store, "class"/"context" or None (every
            image token); labels: the token-label rule; seed: the bootstrap's seed.

    Returns:
        :class:`~vitcls_utils.base.uncertainty.Interval` in %; images without a token to count
        (no mask, not run) are excluded and counted.
    """
    hits, counted = token_counts(results, group, labels)
    return bootstrap_ratio(100.0 * hits, counted, seed=seed)


def token_counts(results: Store, group: Optional[str] = None, labels: str = "aligned"):
    """Per image, its identifiable image tokens at the last block and the tokens counted (as
    :func:`rate_interval` pools them): (hits [I], counted [I]); ``100 * hits / counted`` is
    the image's own rate (NaN where nothing was counted)."""
    ranks = _last_ranks(results)
    image = slice(results.num_prefix, None)
    if results.perturbation is None:
        counted = np.ones(ranks.shape, dtype=bool)
        if group is not None:
            counted = token_groups(results, labels) == GROUPS[group]
    else:
        counted = (ranks >= 0) & (results.pred >= 0)[:, None]
    counted = counted[:, image]
    return ((ranks[:, image] == 0) & counted).sum(1), counted.sum(1)


def drop_interval(clean: Store, perturbed: Store, group: Optional[str] = None,
                  labels: str = "aligned", seed: int = 0) -> "Interval":
    """The drop of identifiability a perturbation causes, paired over images: the mean over
    images of (the image's unperturbed rate - its perturbed rate), in points, with its 95%
    interval and Wilcoxon p (images with nothing counted on either side excluded).

    Args:
        clean: the unperturbed store; perturbed: the perturbed one, same images.
        group: the token group both rates read (None: every image token); labels: its rule.
        seed: the bootstrap's seed.

    Returns:
        :class:`~vitcls_utils.base.uncertainty.Interval` of the drop (positive: fewer
        identifiable tokens under the perturbation).
    """
    def rates(hits, counted):
        return np.where(counted > 0, 100.0 * hits / np.maximum(counted, 1), np.nan)

    before = rates(*token_counts(clean, group, labels))
    after = rates(*token_counts(perturbed))
    return paired_difference(before, after, seed=seed)


def _group_values(results: Store, labels: str) -> Dict[str, np.ndarray]:
    """Identifiability [I, L, N] and a mask [I, N] per group, image tokens only."""
    if (results.perturbation or {}).get("kind") == "remove_tokens":
        raise VitclsError("class vs context identifiability is defined on runs that keep every "
                          "token; pass an unperturbed (or attention-perturbed) store")
    ident = results.identifiability("resid_post")[:, :, results.num_prefix:]
    groups = token_groups(results, labels)[:, results.num_prefix:]
    return {"ident": ident, **{g: groups == code for g, code in GROUPS.items()}}


def group_identifiability(results: Store, labels: str = "aligned") -> pd.DataFrame:
    """E8: mean identifiability per block of class- and context-labeled image tokens.

    Args:
        results: an unperturbed or attention-perturbed store of a dataset with masks.
        labels: token labels, "aligned" (through the preprocessing) or "paper" (B15).

    Returns:
        DataFrame, a row per (block, group): ``block`` (the block's own 1-based number), ``group``
        ("class-labeled"/"context-labeled"), ``identifiability`` (mean 1 - rank/C; NaN for no
        token), ``tokens`` (how many were pooled), and per image ([I] arrays, for a ratio
        interval over images) ``sum_images`` (the group's identifiability summed) and
        ``tokens_images`` (its tokens).
    """
    values = _group_values(results, labels)
    rows, numbers = [], results.block_numbers
    for block in range(values["ident"].shape[1]):
        for group in GROUPS:
            sample = values["ident"][:, block][values[group]]
            summed = np.where(values[group], values["ident"][:, block], 0.0).sum(1)
            rows.append((numbers[block], GROUP_NAMES[group],
                         float(sample.mean()) if sample.size else np.nan, int(sample.size),
                         summed, values[group].sum(1)))
    return pd.DataFrame(rows, columns=["block", "group", "identifiability", "tokens",
                                       "sum_images", "tokens_images"])


def group_boxes(results: Store, labels: str = "aligned") -> pd.DataFrame:
    """Fig 3a / A3 boxplot statistics per block and group (column ``token`` names the group,
    as :func:`vitcls_utils.report.vilas_figures.block_boxes_figure` expects).

    Args:
        results: an unperturbed or attention-perturbed store of a dataset with masks.
        labels: token labels, "aligned" (through the preprocessing) or "paper" (B15).

    Returns:
        DataFrame, a row per (block, group) with tokens: ``block`` (the block's own 1-based
        number), ``token`` (the group's name), and identifiability's ``q1``, ``median``,
        ``q3``, ``whislo``, ``whishi``, ``mean``.
    """
    values = _group_values(results, labels)
    rows, numbers = [], results.block_numbers
    for block in range(values["ident"].shape[1]):
        for group in GROUPS:
            sample = values["ident"][:, block][values[group]]
            if sample.size:
                rows.append({"block": numbers[block], "token": GROUP_NAMES[group],
                             **box_summary(sample)})
    return pd.DataFrame(rows)


def group_test(results: Store, labels: str = "aligned", n_permutations: int = 300,
               seed: int = 0, paper: bool = False) -> pd.DataFrame:
    """E8 significance per block: one-sided permutation test that class-labeled tokens are
    more identifiable than context-labeled ones, on the pooled values of all images
    (seeded; ``paper=True`` gives the authors' uncorrected count/n, B19).

    Args:
        results: an unperturbed or attention-perturbed store of a dataset with masks.
        labels: token labels, "aligned" (through the preprocessing) or "paper" (B15).
        n_permutations: label shuffles per block.
        seed: the first block's seed; block b (0-based) uses ``seed + b``.
        paper: the authors' p-value, count/n (B19).

    Returns:
        DataFrame with columns ``block`` (the block's own 1-based number), ``p_value`` and
        ``significant`` (p < 0.05).
    """
    values = _group_values(results, labels)
    rows = []
    for block in range(values["ident"].shape[1]):
        ident = values["ident"][:, block]
        p = permutation_greater(ident[values["class"]], ident[values["context"]],
                                n_permutations=n_permutations, seed=seed + block, paper=paper)
        rows.append((results.block_numbers[block], p, p < 0.05))
    return pd.DataFrame(rows, columns=["block", "p_value", "significant"])


#: the blocks of Fig 3a (1-based), a subset of A3's
PAPER_BLOCKS = (1, 6, 10, 12)


def paper_blocks(blocks: Union[int, Sequence[int]]) -> List[int]:
    """Fig 3a's blocks (1, 6, 10, 12 of 12), at the same depth for another number of blocks.

    Args:
        blocks: the model's number of blocks (numbered 1..L), or the stored blocks' own
            numbers (``Store.block_numbers``: a Swin's last stage, e.g. [11, 12]).

    Returns:
        The 1-based block numbers, sorted, without repeats.
    """
    numbers = list(range(1, blocks + 1)) if isinstance(blocks, int) else list(blocks)
    return sorted({numbers[max(1, round(b * len(numbers) / 12)) - 1] for b in PAPER_BLOCKS})


def change_difference(results: Store, layer: str = "attn", labels: str = "aligned",
                      n_permutations: int = 300, seed: int = 0,
                      paper: bool = False) -> pd.DataFrame:
    """A5b: per block b = 2..L, the mean increment of the true-class logit from the block input
    to the sub-layer's output (E5b's comparison, in logit units) over class-labeled image tokens
    minus over context-labeled ones, with a seeded one-sided permutation test that class > context
    (``paper=True``: the authors' uncorrected count/n, B19).

    Args:
        results: an unperturbed store holding ``{layer}_out`` sites and token labels.
        layer: the sub-layer, "attn" or "mlp".
        labels: token labels, "aligned" (through the preprocessing) or "paper" (B15).
        n_permutations: label shuffles per block.
        seed: the first block's seed; the test of block b + 2 uses ``seed + b``.
        paper: the authors' p-value, count/n (B19).

    Returns:
        DataFrame with columns ``block`` (2..L, the blocks' own numbers), ``difference``
        (logits, class minus context; NaN where a group is empty), ``p_value``,
        ``significant`` (p < 0.05), ``class_tokens`` and ``context_tokens`` (token counts),
        and per image ([I] arrays, for an interval that resamples images)
        ``class_sum_images``, ``class_tokens_images``, ``context_sum_images`` and
        ``context_tokens_images`` (each group's increments summed, and its tokens).
    """
    if f"hook_{layer}_out" not in " ".join(results.sites):
        raise VitclsError(f"{results.path} has no {layer}_out sites; extract with the default "
                          "kinds (resid_post, attn_out, mlp_out)")
    values = _group_values(results, labels)
    image = slice(results.num_prefix, None)
    before = results.by_block("true_logit", "resid_post")[:, :-1, image]
    after = results.by_block("true_logit", f"{layer}_out")[:, 1:, image]
    increment = (after.astype(np.float64) - before)  # [I, L-1, T]
    rows, numbers = [], results.block_numbers[1:]
    for b in range(increment.shape[1]):
        on, off = increment[:, b][values["class"]], increment[:, b][values["context"]]
        per_image = tuple(x for g in ("class", "context") for x in (
            np.where(values[g], increment[:, b], 0.0).sum(1), values[g].sum(1)))
        if not on.size or not off.size:
            rows.append((numbers[b], np.nan, np.nan, False, on.size, off.size) + per_image)
            continue
        p = permutation_greater(on, off, n_permutations=n_permutations, seed=seed + b,
                                paper=paper)
        rows.append((numbers[b], float(on.mean() - off.mean()), p, p < 0.05, on.size, off.size)
                    + per_image)
    return pd.DataFrame(rows, columns=["block", "difference", "p_value", "significant",
                                       "class_tokens", "context_tokens", "class_sum_images",
                                       "class_tokens_images", "context_sum_images",
                                       "context_tokens_images"])


# ----------------------------------------------------------------------------------------------
# The chapter's tables
# ----------------------------------------------------------------------------------------------
def attention_perturbations(has_cls: bool, blocks: Optional[Sequence[int]] = None
                            ) -> List[AttentionPerturbation]:
    """E7's runs: the paper's self-only and no-CLS, then the alternatives (self-only that keeps
    the prefix tokens, renormalized no-CLS). The no-CLS runs need a [CLS] token.

    Args:
        has_cls: whether the model has a [CLS] token (else only self-only is run).
        blocks: 0-based blocks to perturb; None: every block (the paper's choice).

    Returns:
        The :class:`~vitcls_utils.model.perturbations.AttentionPerturbation` runs, in order.
    """
    runs = [AttentionPerturbation("self_only", blocks)]
    if has_cls:
        runs += [AttentionPerturbation("no_cls", blocks),
                 AttentionPerturbation("self_only", blocks, keep_prefix=True),
                 AttentionPerturbation("no_cls", blocks, renormalize=True)]
    return runs
