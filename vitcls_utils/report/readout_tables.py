"""Chapter 8's tables: the readouts per block, where each first reaches the model's answer
beside where ablation stops hurting, the ablations with their intervals, and chapter 1's
Table 1 under the plain readout and the tuned lens."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from ..analysis import identifiability

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


def table1_under_lenses(plain, tuned, probe_rate: Optional[float] = None) -> pd.DataFrame:
    """Chapter 1's Table 1 numbers under the plain readout and the tuned lens.

    Args:
        plain: the extraction store; tuned: the same re-read under the tuned lens
            (:func:`~vitcls_utils.analysis.readout_bridges.decoded_store`).
        probe_rate: the probes' share of identifiable image tokens at the last block (%), or
            None.

    Returns:
        DataFrame indexed by readout: identifiability rate (% of image tokens, last block) and
        % of images with an identifiable token.
    """
    rows = {}
    for name, store in (("plain readout", plain), ("tuned lens", tuned)):
        rows[name] = {
            "identifiable image tokens, last block (%)":
                identifiability.identifiability_rate(store),
            "images with an identifiable token (%)":
                identifiability.images_with_identifiable_token(store)}
    if probe_rate is not None:
        rows["linear probe"] = {"identifiable image tokens, last block (%)": probe_rate,
                                "images with an identifiable token (%)": np.nan}
    return pd.DataFrame(rows).T


def lens_sentence(held: dict, table1: pd.DataFrame) -> str:
    """This run's lens result in words: held-out KL of both readouts per token kind the model
    has, and Table 1 under each.

    Args:
        held: :func:`~vitcls_utils.analysis.tuned_lens.held_out_summary`'s dict.
        table1: :func:`table1_under_lenses`'s table.

    Returns:
        Markdown, one paragraph.
    """
    kinds = [f"from {v['plain']:.3f} to {v['tuned']:.3f} nats for {KIND_NAMES[k]}"
             for k, v in held.items()]
    column = "identifiable image tokens, last block (%)"
    return ("Averaged over blocks, the tuned lens changes the held-out KL to the model's final "
            f"distribution {' and '.join(kinds)}. Chapter 1's identifiability rate (image "
            "tokens identifiable at the last block) is "
            f"{table1.loc['plain readout', column]:.1f}% under the plain readout and "
            f"{table1.loc['tuned lens', column]:.1f}% under the tuned lens.")
