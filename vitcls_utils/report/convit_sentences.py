"""Chapter 7's sentences (ConViT, d'Ascoli et al. 2021): what each page says in words, and the
headline numbers it sets beside the paper's (for :func:`vitcls_utils.report.page.summarize`),
generated from this run's numbers and the paper's, so that no number on a page is typed in."""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..base.uncertainty import paired_difference, unpaired_difference
from ..model.registry import get_variant
from .convit_tables import paper_gates, paper_key
from .reported import convit_table
from .vilas_sentences import ci_verdict


# ----------------------------------------------------------------------------------------------
# Sentences: generated from this run's numbers and the paper's, for the chapter's pages
# ----------------------------------------------------------------------------------------------
def gating_sentence(gates: pd.DataFrame, key: str, level: float = 0.1) -> str:
    """Fig 6: how the mean gate per GPSA layer moves, the last layer still positional (mean
    gate above ``level``), and the paper's printed gates of the nearest model beside it.

    Args:
        gates: this run's gates, columns ``layer``, ``head`` and ``gate``
            (:func:`vitcls_utils.analysis.convit.gates`).
        key: the registry variant key the gates are of.
        level: the mean gate above which a layer counts as still positional.
    Returns:
        A str of sentences for the chapter's page.
    """
    per_layer = gates.groupby("layer").gate.mean()
    positional = [int(layer) for layer, g in per_layer.items() if g > level]
    theirs = paper_gates(key)
    if theirs.empty:  # the paper prints no gates for ConViT-B: show ConViT-S's
        theirs = paper_gates("convit_small")
    printed = theirs.groupby("layer").gate.mean()
    printed_model = "ConViT-Ti" if paper_key(key) == "convit_tiny" else "ConViT-S"
    first, last = per_layer.iloc[0], per_layer.iloc[-1]
    trend = "falls" if last < first - 0.005 else "rises" if last > first + 0.005 else "stays"
    return (f"The mean gate {trend} from {first:.2f} in layer {per_layer.index[0]} to "
            f"{last:.2f} in layer {per_layer.index[-1]}; "
            + (f"positional attention (mean gate above {level}) is still used up to layer "
               f"{max(positional)}. " if positional
               else f"no layer keeps a mean gate above {level}. ")
            + f"On the paper's maps, {printed_model}'s printed gates average "
            + ", ".join(f"{g:.2f} in layer {int(layer)}" for layer, g in printed.items())
            + " (its text also puts the mean gate near zero in the late GPSA layers; chapter "
            "7's page lists where the figures and the text disagree).")


def locality_sentence(local: pd.DataFrame) -> str:
    """Fig 14's centres: which GPSA heads have no centre (locality strength α ≤ 0) and why, so
    that a head missing from the centre map is named rather than silently left out.

    Args:
        local: this run's locality, columns ``layer``, ``head``, ``strength`` (α) and ``gate``
            (:func:`vitcls_utils.analysis.convit.locality`).
    Returns:
        A str of sentences for the chapter's page.
    """
    from ..analysis.convit import heads_without_centre

    missing = heads_without_centre(local)
    if missing.empty:
        return (f"All {len(local)} GPSA heads have a positive locality strength α (from "
                f"{local.strength.min():.2f} to {local.strength.max():.2f}), so every head has a "
                "centre and the centre map draws them all.")
    listed = "; ".join(
        f"layer {int(layer)}: " + ", ".join(f"head {int(r.head)} (α = {r.strength:.2f}, gate "
                                            f"{r.gate:.2f})" for r in rows.itertuples())
        for layer, rows in missing.groupby("layer", sort=True))
    return (f"{len(missing)} of the {len(local)} GPSA heads have a locality strength α ≤ 0 and "
            f"so no centre; the centre map leaves them out ({listed}). Their positional logit "
            "does not fall off around any offset: α = 0 leaves a plane rising towards one side "
            "of the grid, α < 0 a bowl rising towards its edges, so their positional attention "
            "goes to far patches rather than to a centre (how much of the head that part is: "
            "its gate).")


def masking_sentence(top1: pd.Series, convit_label: str, deit_label: str,
                     deepest: Optional[int], costs: Optional[Mapping] = None) -> str:
    """Tables 5 and 6: what zeroing the position embedding costs each model, what the ConViT
    keeps with content or position masked in its first ``deepest`` GPSA blocks, and the
    paper's Ti numbers beside them (``top1``: indexed by (model, mask)).

    Args:
        top1: top-1 (%) indexed by (model label, mask name), e.g. :func:`masking`'s
            "top-1, this run" with index (``model``, ``mask``); needs the "unmasked" and
            "position embedding zeroed" rows of both models.
        convit_label: the ConViT's label in ``top1``.
        deit_label: the DeiT's label in ``top1``.
        deepest: the largest k whose "... masked, first k" masks were run; None: none.
        costs: {model label: the cost's paired interval}
            (:func:`~vitcls_utils.report.convit_tables.zeroing_costs`), or None; each given
            is written out with whether its 95% CI excludes zero.
    Returns:
        A str of sentences for the chapter's page.
    """
    drop = {m: top1[(m, "unmasked")] - top1[(m, "position embedding zeroed")]
            for m in (convit_label, deit_label)}
    masked_all = [m for m in top1[convit_label].index
                  if deepest and m.endswith(f"first {deepest}")]
    ti = convit_table("table5").set_index("variant").loc[["convit_tiny", "deit_tiny"]]
    t6 = convit_table("table6")
    paired = [f"{m} {costs[m].format(1)} ({ci_verdict(costs[m])})"
              for m in (convit_label, deit_label) if costs and m in costs]
    return (f"Zeroing the position embedding costs {convit_label} {drop[convit_label]:.1f} "
            f"points and {deit_label} {drop[deit_label]:.1f}"
            + (f"; paired over the same {next(iter(costs.values())).n} images: "
               + "; ".join(paired) if paired else "")
            + " (the paper, the only sizes it "
            f"reports: {ti.unmasked.convit_tiny - ti.pos_embed_zeroed.convit_tiny:.1f} for "
            f"ConViT-Ti, {ti.unmasked.deit_tiny - ti.pos_embed_zeroed.deit_tiny:.1f} for "
            "DeiT-Ti). "
            + " ".join(f"With {m}, {convit_label} keeps {top1[(convit_label, m)]:.1f}% top-1."
                       for m in masked_all)
            + f" The paper's ConViT-Ti, all {int(t6.k.max())} GPSA blocks masked: "
            f"{t6.content_masked.iloc[-1]:.1f}% with content masked, "
            f"{t6.position_masked.iloc[-1]:.1f}% with position masked.")


def maps_sentence(layer: int, convit_local: np.ndarray, deit_local: np.ndarray) -> str:
    """Fig 7: the spread of the heads' local attention mass in ``layer``, ConViT vs DeiT.

    Args:
        layer: the 1-based layer the masses are of.
        convit_local: [heads] the ConViT's local attention mass per head
            (:func:`vitcls_utils.analysis.convit.local_mass`).
        deit_local: [heads] the same for the DeiT.
    Returns:
        A str sentence for the chapter's page.
    """
    return (f"In layer {layer} the ConViT's heads put between {convit_local.min():.2f} and "
            f"{convit_local.max():.2f} of the query's attention within one patch of it, the "
            f"DeiT's between {deit_local.min():.2f} and {deit_local.max():.2f}: a spread of "
            f"{np.ptp(convit_local):.2f} against {np.ptp(deit_local):.2f} (the paper: "
            "ConViT's early heads split into local and content heads, DeiT's look alike).")


def bridge_sentence(frame: pd.DataFrame, masked: pd.DataFrame, convit_label: str,
                    deit_label: str, n_gpsa: int, masks: Sequence[str]) -> str:
    """The identifiability bridge: where each model's image tokens reach 0.75, where they end
    (their difference with its 95% interval, saying whether it excludes zero), how a GPSA
    block's gate relates to its identifiability gain, and the last block under
    the masks (``masks``: the names of the position-embedding, content and position masks).

    Args:
        frame: :func:`bridge`'s frame for the ConViT and the DeiT.
        masked: the ConViT's per-block readout under the masks, columns ``mask``, ``block``,
            ``image_identifiability`` and ``image_identifiability_images``
            (:func:`vitcls_utils.analysis.convit.evaluate_masks` with ``by_block``), including
            the "unmasked" mask; each mask's change is paired over the same images.
        convit_label: the ConViT's ``model`` label in ``frame``.
        deit_label: the DeiT's ``model`` label in ``frame``.
        n_gpsa: the ConViT's number of GPSA blocks (its first blocks).
        masks: three mask names, in this order.
    Returns:
        A str of sentences for the chapter's page.
    """
    from ..analysis.anatomy import rank_correlation
    from ..analysis.identifiability import first_block_reaching

    conv = frame[frame.model == convit_label].set_index("block")
    deit = frame[frame.model == deit_label].set_index("block")
    gpsa = conv.index[:n_gpsa]
    gain = conv.image_identifiability.diff()
    corr = rank_correlation(conv.gate[gpsa], gain[gpsa])
    final = masked[masked.block == masked.block.max()].set_index("mask")
    zeroed, content, position = masks
    ends = _difference(conv.image_identifiability_images.iloc[-1],
                       deit.image_identifiability_images.iloc[-1])

    def under(mask: str) -> str:
        change = paired_difference(final.image_identifiability_images[mask],
                                   final.image_identifiability_images["unmasked"])
        return (f"{final.image_identifiability[mask]:.2f} ({change.format(2)} against "
                f"unmasked; {ci_verdict(change)})")

    return (f"The image tokens of {convit_label} reach an identifiability of 0.75 at block "
            f"{first_block_reaching(frame, 0.75, model=convit_label)}, those of {deit_label} "
            f"at block {first_block_reaching(frame, 0.75, model=deit_label)}; at the last "
            f"block they stand at {conv.image_identifiability.iloc[-1]:.2f} and "
            f"{deit.image_identifiability.iloc[-1]:.2f}, a difference of {ends[0].format(2)} "
            f"({ends[1]}; {ci_verdict(ends[0])}). Across the GPSA blocks the rank correlation "
            f"of a block's mean gate with its identifiability gain is {corr:.2f}. At the last "
            f"block (unmasked {final.image_identifiability['unmasked']:.2f}; each change paired "
            f"over the same images), masking content in all {n_gpsa} GPSA blocks leaves the "
            f"image tokens' identifiability at {under(content)}, masking position at "
            f"{under(position)}, and zeroing the position embedding at {under(zeroed)}.")


def _difference(a: np.ndarray, b: np.ndarray):
    """a - b with its 95% interval: paired over images where both read the same number of
    them (the same stimuli in the same order), else two samples; and the words for which."""
    if len(a) == len(b):
        return paired_difference(a, b), "paired over the same images"
    return unpaired_difference(a, b), "the two models' images resampled apart"


# ----------------------------------------------------------------------------------------------
# Headline numbers beside the paper's, for the figure pages (report.page.summarize)
# ----------------------------------------------------------------------------------------------
def _number(value) -> Optional[float]:
    return None if value is None or pd.isna(value) else float(value)


def zoo_summary(table: pd.DataFrame) -> Dict[str, tuple]:
    """Table 1's top-1 of each model beside the paper's (``table``: :func:`zoo`).

    Args:
        table: :func:`zoo`'s frame.

    Returns:
        {"top-1 (%), <model>": (this run, reported or None, the paper model)}.
    """
    return {f"top-1 (%), {row['model']}": (float(row["top-1, this run"]),
                                          _number(row["top-1, paper"]), row["paper model"])
            for _, row in table.iterrows()}


def masking_summary(table: pd.DataFrame, convit_key: str) -> Dict[str, tuple]:
    """Tables 5/6: each model's top-1 under each mask beside the paper's, where it has one.

    Args:
        table: :func:`masking`'s frame (model, mask, "top-1, this run", "top-1, paper").
        convit_key: the ConViT's registry key, to name the paper model beside it.

    Returns:
        {"top-1 (%), <model>, <mask>": (this run, reported or None, the paper model)}.
    """
    model = get_variant(paper_key(convit_key)).label
    return {f"top-1 (%), {row['model']}, {row['mask']}": (
        float(row["top-1, this run"]), _number(row["top-1, paper"]), model)
        for _, row in table.iterrows()}


def efficiency_summary(table: pd.DataFrame) -> Dict[str, tuple]:
    """Table 2 scaled: the ConViT's relative gap over DeiT at each fraction beside the paper's.

    Args:
        table: :func:`sample_efficiency`'s frame.

    Returns:
        {"ConViT over DeiT (%), f = <fraction>": (this run, reported or None, "ConViT-S")}.
    """
    return {f"ConViT over DeiT (%), f = {row['fraction']:g}": (
        float(row["gap (%), this run"]), _number(row.get("gap (%), paper")), "ConViT-S")
        for _, row in table.iterrows()}


def gates_summary(gates: pd.DataFrame, key: str) -> Dict[str, tuple]:
    """Fig 6: the mean gate of the first and the last GPSA layer beside the paper's printed
    gates of the nearest model (none printed for a layer: None).

    Args:
        gates: :func:`vitcls_utils.analysis.convit.gates`' frame (layer, head, gate).
        key: registry key of this run's ConViT.

    Returns:
        {"mean gate, layer <l>": (this run, reported or None, the paper model)}.
    """
    theirs = paper_gates(key)
    printed = theirs.groupby("layer").gate.mean() if not theirs.empty else pd.Series(dtype=float)
    mine = gates.groupby("layer").gate.mean()
    model = get_variant(paper_key(key)).label
    return {f"mean gate, layer {int(layer)}": (float(mine[layer]),
                                                _number(printed.get(layer)), model)
            for layer in (mine.index[0], mine.index[-1])}


def efficiency_sentence(table: pd.DataFrame, runs: pd.DataFrame, seed: int = 0) -> str:
    """Table 2 scaled, in words: at the smallest fraction and with all of the training set,
    each model's top-1, the relative gap beside the paper's, and the ConViT-minus-DeiT
    difference with its 95% interval, saying whether it excludes zero.

    Args:
        table: :func:`~vitcls_utils.report.convit_tables.sample_efficiency`'s frame.
        runs: its runs (columns ``fraction``, ``key``, ``seed``, ``val_top1``, ``val_images``).
        seed: the bootstrap's seed.

    Returns:
        A sentence.
    """
    from .convit_tables import efficiency_estimates

    def at(row) -> str:
        gap = efficiency_estimates(runs[runs.fraction == row.fraction], seed)["gap"]
        return (f"the toy ConViT reaches {row['ConViT top-1, this run']:.1f}% and the toy DeiT "
                f"{row['DeiT top-1, this run']:.1f}% (a relative gap of "
                f"{row['gap (%), this run']:+.1f}%; ConViT − DeiT {gap.format(1)} points, "
                f"{ci_verdict(gap)})")

    low, full = table.iloc[0], table.iloc[-1]
    return (f"With {low.fraction:g} of the toy training set {at(low)}; with all of it "
            f"{at(full)}. The paper's gap at f = {low.fraction:g} is "
            f"{low['gap (%), paper']:.0f}% and at f = 1 {full['gap (%), paper']:.0f}%.")


def nonlocality_sentence(frames: Mapping[str, pd.DataFrame], n_gpsa: int, seed: int = 0) -> str:
    """Fig 5 in words: in how many GPSA layers the ConViT is less nonlocal than its DeiT, and in
    how many that difference's 95% interval (paired over the same images) lies below zero; its
    most local layer; the DeiT's nonlocality from the first layer to the last; the paper's.

    Args:
        frames: {ConViT label: its frame, DeiT label: its frame}, in that order
            (:func:`vitcls_utils.analysis.anatomy.attention_distances`, with
            ``distance_images``).
        n_gpsa: the ConViT's number of GPSA layers (its first layers).
        seed: the bootstrap's seed.
    Returns:
        The sentences.
    """
    from ..analysis.anatomy import distance_per_image

    (conv, ours), (base, theirs) = ((label, distance_per_image(f))
                                    for label, f in frames.items())
    means = {label: pd.Series({b: v.mean() for b, v in per.items()})
             for label, per in ((conv, ours), (base, theirs))}
    gaps = [_difference(ours[b], theirs[b])[0] for b in sorted(ours)[:n_gpsa]]
    below = sum(g.estimate < 0 for g in gaps)
    resolved = sum(g.high < 0 for g in gaps)
    return (f"In {below} of its {len(gaps)} GPSA layers {conv} is less nonlocal than {base}, "
            f"and in {resolved} of them the difference's 95% CI (paired over the same images) "
            f"lies below zero; its most local layer is layer {int(means[conv].idxmin())} "
            f"({means[conv].min():.2f} patches) and {base}'s nonlocality goes from "
            f"{means[base].iloc[0]:.2f} in layer 1 to {means[base].iloc[-1]:.2f}. The paper: "
            "DeiT is local in its lower layers and more nonlocal with depth; every GPSA layer of "
            "ConViT ends more nonlocal than at init but below DeiT, layer 2 the most local.")
