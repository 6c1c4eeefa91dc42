"""Chapter 6's sentences (Ghiasi et al. 2022): what each page says in words, and the headline
numbers it sets beside the paper's (for :func:`vitcls_utils.report.page.summarize`), generated
from this run's numbers and the paper's, so that no number on a page is typed in."""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import pandas as pd

from ..base.uncertainty import (bootstrap, bootstrap_ratio_difference, paired_difference,
                               unpaired_difference)
from ..model.registry import get_variant
from .ghiasi_tables import PAPER_MODEL
from .vilas_sentences import ci_verdict


def isolation_sentence(table: pd.DataFrame, sweep: pd.DataFrame, depth: int,
                       num_classes: int) -> str:
    """Table 1 in words: what isolating [CLS] up to the second-to-last block keeps of the
    natural top-1 (the paper's share beside it), where dropping the patches first holds half
    of it, and [CLS] isolated up to the last block against chance (``table``: :func:`table1`;
    ``sweep``: :func:`vitcls_utils.analysis.cls_isolation.sweep`).

    Args:
        table: :func:`table1`'s frame (its second row the isolation at L = depth - 1).
        sweep: both modes, "isolate" up to L = depth and "drop".
        depth: the model's number of blocks.
        num_classes: the number of classes, for chance.
    Returns:
        A str of sentences for the chapter's page.
    """
    top1, paper_top1 = (table.set_index("quantity")[c] for c in ("top-1, this run",
                                                                 "top-1, paper"))
    chance = 100 / num_classes
    if top1["natural"] < 2 * chance:  # a random-init control: nothing to keep
        return (f"The natural top-1 is {top1['natural']:.1f}%, about chance "
                f"({chance:.1f}%): a model that has learned nothing, so what isolating [CLS] "
                "or dropping the patches keeps says nothing about where a class is gathered; "
                f"the paper's ViT keeps {paper_top1.iloc[1]:.2f} of {paper_top1['natural']:.2f} "
                "with [CLS] isolated up to the second-to-last block.")
    kept = 100 * top1.iloc[1] / top1["natural"]
    paper_kept = 100 * paper_top1.iloc[1] / paper_top1["natural"]
    drop = sweep[sweep["mode"] == "drop"].set_index("L").top1
    isolated = sweep[sweep["mode"] == "isolate"].set_index("L").top1
    half = next((int(L) for L, v in drop.items() if v >= top1["natural"] / 2), depth)
    loss, above = _isolation_intervals(sweep, depth, chance)
    return (f"Isolating [CLS] up to block {depth - 1} keeps {top1.iloc[1]:.1f}% top-1 of the "
            f"natural {top1['natural']:.1f}% ({kept:.0f}% of it; the paper: "
            f"{paper_top1.iloc[1]:.2f} of {paper_top1['natural']:.2f}, {paper_kept:.0f}%)"
            + ("" if loss is None else f"; paired over the same {loss.n} images, isolation "
               f"changes top-1 by {loss.format(1)} points and {ci_verdict(loss)}") + ". "
            f"Dropping the patches after block L, [CLS] first holds half the natural accuracy "
            f"at L = {half} of {depth}; isolated up to the last block it is at "
            f"{isolated[depth]:.1f}% (chance {100 / num_classes:.1f}%"
            + ("" if above is None else f"; its difference from chance is "
               f"{above.format(1)} points and {ci_verdict(above)}") + ").")


def _isolation_intervals(sweep: pd.DataFrame, depth: int, chance: float):
    """Paired intervals, where the sweep has per-image outcomes: [CLS] isolated up to
    depth - 1 minus the natural model (isolated up to 0), and isolated up to depth minus
    chance; None for each that the sweep cannot give."""
    if "top1_images" not in sweep:
        return None, None
    per = sweep[sweep["mode"] == "isolate"].set_index("L").top1_images
    loss = (paired_difference(per[depth - 1], per[0])
            if {0, depth - 1} <= set(per.index) else None)
    above = (paired_difference(per[depth], np.full(len(per[depth]), chance))
             if depth in per.index else None)
    return loss, above


def _number(value) -> Optional[float]:
    return None if value is None or pd.isna(value) else float(value)


def table1_summary(table: pd.DataFrame) -> Dict[str, tuple]:
    """Table 1's top-1 of each quantity beside the paper's ViT-B/16-384.

    Args:
        table: :func:`~vitcls_utils.report.ghiasi_tables.table1`'s frame.

    Returns:
        {"top-1 (%), <quantity>": (this run, reported or None, the paper model)}.
    """
    model = get_variant(PAPER_MODEL).label
    return {f"top-1 (%), {row['quantity']}": (float(row["top-1, this run"]),
                                             _number(row["top-1, paper"]), model)
            for _, row in table.iterrows()}


def table2_summary(table: pd.DataFrame) -> Dict[str, tuple]:
    """Table 2: each model's foreground and background share of its full top-5, beside the
    paper's ViT-B16 and ResNet-50 rows (a ViT beside the paper's ViT, a CNN beside its CNN).

    Args:
        table: :func:`~vitcls_utils.report.ghiasi_tables.table2`'s frame.

    Returns:
        {"<part> (% of full top-5), <model>": (this run, reported or None, the paper model)}.
    """
    ours, theirs = table[table.source == "this run"], table[table.source != "this run"]
    paper = {"ViT": theirs[theirs.model.str.contains("ViT-B16")],
             "CNN": theirs[theirs.model.str.contains("ResNet-50|ResNet50", regex=True)]}
    values = {}
    for _, row in ours.iterrows():
        kind = "CNN" if "CNN" in row["model"] or "ResNet" in row["model"] else "ViT"
        match = paper[kind]
        for part in ("foreground", "background"):
            reported = None if match.empty else float(match[part].iloc[0])
            values[f"{part} (% of full top-5), {row['model']}"] = (
                float(row[part]), reported, None if match.empty else match.model.iloc[0])
    return values


def fgbg_sentence(table: pd.DataFrame, results: Optional[Dict[str, pd.DataFrame]] = None
                  ) -> str:
    """Table 2 in words: which of this run's models keeps more of its accuracy from the
    background alone, in top-5 and in top-1, beside the paper's finding that every ViT keeps
    more background accuracy than every CNN.

    Args:
        table: :func:`~vitcls_utils.report.ghiasi_tables.table2`'s frame (the ViT first).
        results: {model label: :func:`~vitcls_utils.analysis.stimulus_edits.evaluate_edits`'s
            accuracy frame, with ``top5_images``}, or None: given, the two models' background
            shares of top-5 are compared with a 95% interval that resamples whole images.

    Returns:
        A sentence.
    """
    ours, theirs = table[table.source == "this run"], table[table.source != "this run"]
    if len(ours) < 2:
        return "Only one model ran, so there is no ViT-against-CNN comparison."
    vit, cnn = ours.iloc[0], ours.iloc[1]
    top1 = (100 * vit["top-1 background"] / max(vit["top-1 full"], 1e-9),
            100 * cnn["top-1 background"] / max(cnn["top-1 full"], 1e-9))
    ahead = vit["background"] > cnn["background"] and top1[0] > top1[1]
    side = "as in the paper" if ahead else "unlike the paper"
    vits = theirs[theirs.model.str.contains("ViT")]
    return (f"With the background alone, {vit['model']} keeps {vit['background']:.1f}% of its "
            f"full-image top-5 and {cnn['model']} {cnn['background']:.1f}% ({top1[0]:.1f}% and "
            f"{top1[1]:.1f}% of their top-1): {side}, where every ViT keeps more background "
            f"accuracy than every CNN ({vits.background.min():.1f}% to "
            f"{vits.background.max():.1f}% of top-5 over its ViTs)."
            + _share_gap(results, vit["model"], cnn["model"]))


def _share_gap(results, vit: str, cnn: str) -> str:
    """The ViT's minus the CNN's background share of top-5 (points of the full image's
    top-5), both pooled over the same images, in words; empty without per-image outcomes."""
    if not results or any("top5_images" not in results.get(m, {}) for m in (vit, cnn)):
        return ""
    per = {m: results[m].set_index("edit").top5_images for m in (vit, cnn)}
    gap = bootstrap_ratio_difference(*(100 * per[m]["background"] if part == 0
                                       else per[m]["full"]
                                       for m in (vit, cnn) for part in (0, 1)))
    return (f" Over the same {gap.n} images, the ViT's background share minus the CNN's is "
            f"{gap.format(1)} points and {ci_verdict(gap)}.")


def patch_summary(summary: Dict[str, float]) -> Dict[str, tuple]:
    """Fig 7: Patch Average and Patch Maximum top-1 beside the paper's ViT-B/16-384.

    Args:
        summary: :meth:`~vitcls_utils.analysis.patch_readout.PatchReadout.summary`.

    Returns:
        {"top-1 (%), Patch Average/Maximum": (this run, reported, the paper model)}.
    """
    from .reported import ghiasi_value

    model = get_variant(PAPER_MODEL).label
    return {f"top-1 (%), Patch {name.title()}": (
        float(summary[f"patch_{name}_top1"]), ghiasi_value(f"patch_{name}", PAPER_MODEL), model)
        for name in ("average", "maximum")}


def edits_bridge_sentence(result: Dict[str, pd.DataFrame], seed: int = 0) -> str:
    """The edited-stimuli bridge in words: where the image tokens pass an identifiability of
    0.9 on the full, foreground-only and background-only stimuli, and what the background
    and the smallest low-pass cutoff leave of it at the last block, each set against the full
    stimuli paired over the same images, saying whether the 95% interval excludes zero.

    Args:
        result: :func:`~vitcls_utils.analysis.stimulus_edits.evaluate_edits` with ``by_block``
            and the edits "full", "foreground", "background" and at least one low-pass one
            (the last is the smallest cutoff shown); ``image_identifiability_images`` per row.
        seed: the bootstrap's seed.

    Returns:
        A sentence.
    """
    from ..analysis.identifiability import first_block_reaching

    blocks = result["blocks"]

    def first_above(edit: str) -> str:
        block = first_block_reaching(blocks, 0.9, edit=edit)
        return "never" if block is None else f"at block {block}"

    last = blocks[blocks.block == blocks.block.max()].set_index("edit").image_identifiability_images
    full = last["full"]

    def against_full(edit: str) -> str:
        gap = paired_difference(last[edit], full, seed=seed)
        return (f"{bootstrap(last[edit], seed=seed).format(3)}, {gap.format(3)} against the "
                f"full stimuli, paired over the same images: {ci_verdict(gap)}")

    return (f"The image tokens pass an identifiability of 0.9 {first_above('full')} on the full "
            f"stimuli, {first_above('foreground')} on the foreground alone and "
            f"{first_above('background')} on the background alone. At the last block the "
            f"background's tokens stand at {against_full('background')}; those of the "
            f"smallest low-pass cutoff shown ({last.index[-1]}) at {against_full(last.index[-1])}.")


def memories_bridge_sentence(scored: pd.DataFrame, control: pd.DataFrame, seed: int = 0) -> str:
    """The FFN-memories bridge in words: the last block's agreement of strong units' top
    stimuli with their value vectors, with its 95% interval over the units, against chance
    and against the random-init control's units (an unpaired difference, whether its interval
    excludes zero), block 1's, and the block where it is highest.

    Args:
        scored, control: :func:`~vitcls_utils.report.ghiasi_bridges.strong_unit_agreement` of
            the model and of its random-init control (columns ``block``, ``agreement``,
            ``chance``).
        seed: the bootstrap's seed.

    Returns:
        A sentence.
    """
    means = scored.groupby("block").agreement.mean()
    first, last, chance = means.index[0], means.index[-1], float(scored.chance.iloc[0])
    ours = scored[scored.block == last].agreement.to_numpy()
    theirs = control[control.block == last].agreement.to_numpy()
    interval, gap = bootstrap(ours, seed=seed), unpaired_difference(ours, theirs, seed=seed)
    against_chance = ("lies above chance" if interval.low > chance else "lies below chance"
                      if interval.high < chance else "holds chance: not resolved")
    return (f"In the last block, {interval.format(0, percent=True)} of a strong unit's top "
            f"stimuli belong to a class its value vector promotes most (95% CI over its "
            f"{interval.n} units; chance {chance:.0%}: the interval {against_chance}); the "
            f"random-init control's units {theirs.mean():.0%}, a difference of "
            f"{gap.format(0, percent=True)} (percentage points), {ci_verdict(gap)} (its units are not the same "
            f"units: each sample resampled on its own). In block {first}, "
            f"{means.iloc[0]:.0%}. The highest agreement is at block {int(means.idxmax())}.")


def patch_sentence(readout, per_block: pd.DataFrame, seed: int = 0) -> str:
    """Fig 7 in words: Patch Average and Patch Maximum with their 95% intervals over images
    beside the paper's ViT-B/16-384, the model's own output, and the last block's rate of
    identifiable image tokens against the block before, paired over the same images.

    Args:
        readout: :func:`~vitcls_utils.analysis.patch_readout.patch_readout`'s.
        per_block: :func:`~vitcls_utils.analysis.cls_isolation.identifiability_by_block` at
            L = 0: columns ``block``, ``image_top1`` (%) and ``image_top1_images``.
        seed: the bootstrap's seed.

    Returns:
        A sentence.
    """
    from .ghiasi_tables import readout_intervals
    from .reported import ghiasi_value

    intervals = readout_intervals(readout, seed)
    rows = per_block.sort_values("block")
    last, before = rows.iloc[-1], rows.iloc[-2]
    step = paired_difference(last.image_top1_images, before.image_top1_images, seed=seed)
    return (f"Read by the head, the average patch of the last block gives "
            f"{intervals['patch_average'].format(1)}% top-1 and the best position "
            f"{intervals['patch_maximum'].format(1)}% (95% CIs over the images; the paper's "
            f"ViT-B/16-384: {ghiasi_value('patch_average'):.2f} and "
            f"{ghiasi_value('patch_maximum'):.2f}); the model's own output gives "
            f"{intervals['natural'].format(1)}%. The same number is the last block's rate of "
            f"identifiable image tokens ({last.image_top1:.1f}%), {step.format(1)} points "
            f"against the block before (paired over the same images; {ci_verdict(step)}).")


def cls_bridge_sentence(curves: pd.DataFrame, agree: float, seed: int = 0) -> str:
    """The isolation bridge in words: the last block's identifiability of [CLS] and of the
    image tokens with [CLS] isolated up to the largest L, each against the natural model,
    paired over the same images with its 95% interval (whether it excludes zero), and the
    rank correlation over L of the drop-patches top-1 with [CLS]'s rank-0 rate.

    Args:
        curves: :func:`~vitcls_utils.analysis.cls_isolation.identifiability_by_block` with
            L = 0 and the largest L: columns ``L``, ``block``, ``cls_identifiability``,
            ``image_identifiability`` and their ``_images`` arrays.
        agree: that rank correlation (over L; a number without an interval).
        seed: the bootstrap's seed.

    Returns:
        A sentence.
    """
    last = curves[curves.block == curves.block.max()].set_index("L")
    top = int(last.index.max())

    def against_natural(column: str) -> str:
        gap = paired_difference(last[f"{column}_images"][top], last[f"{column}_images"][0],
                                seed=seed)
        return (f"{last[column][top]:.3f} (natural {last[column][0]:.3f}; isolated minus natural "
                f"{gap.format(3)}, paired over the same images: {ci_verdict(gap)})")

    return (f"Isolated up to L = {top}, [CLS] reaches a last-block identifiability of "
            f"{against_natural('cls_identifiability')}, while the image tokens, which never see "
            f"[CLS] then, end at {against_natural('image_identifiability')}. Over L, how much "
            "top-1 [CLS] keeps when the patches are dropped after block L and how often its "
            "class projection at block L already ranks the true class first have a rank "
            f"correlation of {agree:.2f} (over the L values; no interval).")
