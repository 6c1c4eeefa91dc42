"""Chapter 8's tables: the readouts per block, where each first reaches the model's answer
beside where ablation stops hurting, the ablations with their intervals, and chapter 1's
Table 1 under the plain readout and the tuned lens. Every rate, agreement and KL is shown with
its 95% bootstrap interval over images (:mod:`vitcls_utils.base.uncertainty`), and every
comparison in words says whether its paired interval excludes zero."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pandas as pd

from ..analysis import identifiability
from ..base.uncertainty import Interval, bootstrap, paired_difference
from .intervals import interval_text
from .vilas_sentences import ci_verdict
from .vilas_tables import interval_table

KIND_NAMES = {"cls": "[CLS]", "image": "image tokens"}
READOUT_NAMES = {"plain": "plain readout", "tuned": "tuned lens", "probe": "linear probe"}


def lens_wide(table: pd.DataFrame, value: str = "agreement") -> pd.DataFrame:
    """Blocks as rows, (token kind, readout) as columns, of one measure.

    Args:
        table: :func:`~vitcls_utils.analysis.readout_bridges.readout_table`'s table.
        value: ``agreement``, ``top1`` or ``kl``.

    Returns:
        A wide DataFrame indexed by block; probe columns dropped for ``kl``.
    """
    part = table if value != "kl" else table[table.readout != "probe"]
    wide = part.assign(kind=part.kind.map(KIND_NAMES), readout=part.readout.map(READOUT_NAMES)
                       ).pivot_table(index="block", columns=["kind", "readout"], values=value)
    return wide.sort_index(axis=1)


def lens_wide_intervals(table: pd.DataFrame, value: str = "agreement", digits: int = 3,
                        seed: int = 0) -> pd.DataFrame:
    """:func:`lens_wide` with each cell's 95% bootstrap interval over images: ``0.912 [0.881,
    0.940]``, with ``(k excluded)`` where an image had no finite value.

    Args:
        table: :func:`~vitcls_utils.analysis.readout_bridges.readout_table`'s table (with its
            per-image columns ``<value>_images``).
        value: ``agreement``, ``top1`` or ``kl``; digits: decimals; seed: the bootstrap's seed.

    Returns:
        A wide DataFrame of text, indexed by block; probe columns dropped for ``kl``.
    """
    part = table if value != "kl" else table[table.readout != "probe"]
    cells = part.assign(kind=part.kind.map(KIND_NAMES), readout=part.readout.map(READOUT_NAMES),
                        shown=part[f"{value}_images"].map(
                            lambda v: _cell(bootstrap(v, seed=seed), digits)))
    wide = cells.pivot(index="block", columns=["kind", "readout"], values="shown")
    return wide.sort_index(axis=1)


def _cell(interval: Interval, digits: int) -> str:
    text = interval.format(digits)
    return text + (f" ({interval.excluded} excluded)" if interval.excluded else "")


def kl_differences(table: pd.DataFrame, seed: int = 0) -> Dict[str, Interval]:
    """Per token kind, the tuned lens's KL minus the plain readout's, averaged over blocks,
    paired over images (each image's mean over blocks), with its 95% interval.

    Args:
        table: :func:`~vitcls_utils.analysis.readout_bridges.readout_table`'s table.
        seed: the bootstrap's seed.

    Returns:
        {kind: :class:`~vitcls_utils.base.uncertainty.Interval` in nats}.
    """
    out = {}
    for kind in table.kind.unique():
        per = {r: np.stack(list(table[(table.kind == kind) & (table.readout == r)]
                                .sort_values("block").kl_images)).mean(0)
               for r in ("tuned", "plain")}
        out[kind] = paired_difference(per["tuned"], per["plain"], seed=seed)
    return out


def where_it_happens(first: pd.DataFrame, last_hurting: dict,
                     level: float) -> pd.DataFrame:
    """The block at which each readout first agrees with the model's answer, and the last
    block whose heads' ablation still hurts.

    Args:
        first: :func:`~vitcls_utils.analysis.readout_bridges.first_blocks`'s table.
        last_hurting: {measure name: 1-based block or None}
            (:func:`~vitcls_utils.analysis.head_ablation.last_hurting_block`).
        level: the agreement level ``first`` was computed at.

    Returns:
        DataFrame: ``what`` and ``block`` ("–" where never).
    """
    rows = [{"what": f"{READOUT_NAMES[r.readout]}, {KIND_NAMES[r.kind]}: first block with "
                     f"≥ {level:.0%} agreement", "block": r.first_block}
            for r in first.itertuples()]
    rows += [{"what": f"last block whose heads' mean-ablation lowers {name} (interval > 0)",
              "block": np.nan if block is None else float(block)}
             for name, block in last_hurting.items()]
    frame = pd.DataFrame(rows)
    frame["block"] = frame.block.map(lambda b: "–" if b != b else str(int(b)))
    return frame


def ablation_display(table: pd.DataFrame) -> pd.DataFrame:
    """The ablation table with its intervals written out.

    Args:
        table: :func:`~vitcls_utils.analysis.head_ablation.ablation_table`'s table.

    Returns:
        DataFrame: heads, mode, which heads (block.head, 1-based blocks), the mean drop of
        the true-class logit and of top-1 (percentage points), each with its 95% interval.
    """
    return pd.DataFrame({
        "heads": table.heads, "ablation": table["mode"],
        "which (block.head)": table.members.map(
            lambda m: ", ".join(f"{b + 1}.{h}" for b, h in m)),
        "true-class logit drop [95% CI]": table.logit_drop.map(lambda i: i.format()),
        "top-1 drop [95% CI]": table.top1_drop.map(lambda i: i.format(1, percent=True))})


def curve_display(curve: pd.DataFrame) -> pd.DataFrame:
    """:func:`~vitcls_utils.analysis.head_ablation.block_curve`'s table, intervals written.

    Args:
        curve: the per-block ablation table.

    Returns:
        DataFrame: block and the two drops with their intervals.
    """
    return pd.DataFrame({
        "block": curve.block,
        "true-class logit drop [95% CI]": curve.logit_drop.map(lambda i: i.format()),
        "top-1 drop [95% CI]": curve.top1_drop.map(lambda i: i.format(1, percent=True))})


def table1_under_lenses(plain, tuned, probe_rate: Optional[float] = None,
                        seed: int = 0) -> pd.DataFrame:
    """Chapter 1's Table 1 numbers under the plain readout and the tuned lens, each with its
    95% bootstrap interval over images.

    Args:
        plain: the extraction store; tuned: the same re-read under the tuned lens
            (:func:`~vitcls_utils.analysis.readout_bridges.decoded_store`).
        probe_rate: the probes' share of identifiable image tokens at the last block (%), or
            None (shown without an interval).
        seed: the bootstrap's seed.

    Returns:
        DataFrame indexed by readout: identifiability rate (% of image tokens, last block), its
        "95% CI", % of images with an identifiable token and its "95% CI, images".
    """
    rows = {}
    for name, store in (("plain readout", plain), ("tuned lens", tuned)):
        per = identifiability.identifiable_per_image(store)
        rows[name] = {
            "identifiable image tokens, last block (%)":
                identifiability.identifiability_rate(store),
            "95% CI": interval_text(bootstrap(per["rate"], seed=seed), 1),
            "images with an identifiable token (%)":
                identifiability.images_with_identifiable_token(store),
            "95% CI, images": interval_text(bootstrap(per["any"], seed=seed), 1)}
    if probe_rate is not None:
        rows["linear probe"] = {"identifiable image tokens, last block (%)": probe_rate,
                                "95% CI": "–", "images with an identifiable token (%)": np.nan,
                                "95% CI, images": "–"}
    return pd.DataFrame(rows).T.infer_objects()


def table1_difference(plain, tuned, seed: int = 0) -> Interval:
    """The identifiability rate under the tuned lens minus under the plain readout, paired
    over the same images, with its 95% interval (percentage points).

    Args:
        plain, tuned: as :func:`table1_under_lenses`; seed: the bootstrap's seed.

    Returns:
        An :class:`~vitcls_utils.base.uncertainty.Interval`.
    """
    return paired_difference(identifiability.identifiable_per_image(tuned)["rate"],
                             identifiability.identifiable_per_image(plain)["rate"], seed=seed)


def lens_sentence(held: dict, table1: pd.DataFrame,
                  kl_difference: Optional[Dict[str, Interval]] = None,
                  rate_difference: Optional[Interval] = None) -> str:
    """This run's lens result in words: held-out KL of both readouts per token kind the model
    has, and Table 1 under each; given the paired differences, each with its 95% interval
    and whether that interval excludes zero.

    Args:
        held: :func:`~vitcls_utils.analysis.tuned_lens.held_out_summary`'s dict.
        table1: :func:`table1_under_lenses`'s table.
        kl_difference: :func:`kl_differences`'s dict, or None.
        rate_difference: :func:`table1_difference`'s interval, or None.

    Returns:
        Markdown, one paragraph.
    """
    kinds = [f"from {v['plain']:.3f} to {v['tuned']:.3f} nats for {KIND_NAMES[k]}"
             + (f" ({_resolved(kl_difference[k], 3, '')})" if kl_difference else "")
             for k, v in held.items()]
    column = "identifiable image tokens, last block (%)"
    rate = "" if rate_difference is None else f" ({_resolved(rate_difference, 1, ' points')})"
    return ("Averaged over blocks, the tuned lens changes the held-out KL to the model's final "
            f"distribution {' and '.join(kinds)}. Chapter 1's identifiability rate (image "
            "tokens identifiable at the last block) is "
            f"{table1.loc['plain readout', column]:.1f}% under the plain readout and "
            f"{table1.loc['tuned lens', column]:.1f}% under the tuned lens{rate}.")


def _resolved(interval: Interval, digits: int, unit: str) -> str:
    excluded = f", {interval.excluded} images excluded" if interval.excluded else ""
    return (f"tuned − plain {interval.format(digits)}{unit}, paired over {interval.n} images"
            f"{excluded}; {ci_verdict(interval)}")


def match_display(matches: np.ndarray, chance: float, seed: int = 0) -> pd.DataFrame:
    """The memory-head match per block with its 95% interval over images.

    Args:
        matches: :func:`~vitcls_utils.analysis.readout_bridges.memory_head_matches`'s [I, L].
        chance: 1/H; seed: the bootstrap's seed.

    Returns:
        DataFrame: ``block`` (1-based), ``mean`` (fraction of images), ``95% CI``, ``n`` and
        ``chance``.
    """
    images, blocks = np.indices(matches.shape)
    frame = pd.DataFrame({"block": blocks.ravel() + 1, "match": matches.ravel()})
    return interval_table(frame, ["block"], "match", seed).assign(chance=chance)


def match_sentence(matches: np.ndarray, chance: float, seed: int = 0) -> str:
    """The memory-head match averaged over blocks in words: its 95% interval over images and
    whether the interval of its difference from chance excludes zero.

    Args:
        matches: [I, L] as :func:`match_display`; chance: 1/H; seed: the bootstrap's seed.

    Returns:
        Markdown, one sentence.
    """
    per_image = np.asarray(matches, dtype=np.float64).mean(1)
    mean = bootstrap(per_image, seed=seed)
    above = paired_difference(per_image, np.full_like(per_image, chance), seed=seed)
    return (f"Averaged over blocks, the head writing most to the class owns its best attention "
            f"memory in {mean.format(3)} of the images (95% CI over {mean.n} images), against "
            f"chance {chance:.3f}; the difference from chance is {above.format(3)} and "
            f"{ci_verdict(above)}.")
