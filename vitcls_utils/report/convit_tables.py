"""Chapter 7's tables (ConViT, d'Ascoli et al. 2021): this run beside the paper's numbers
(``data/paper/convit_*.csv``), and the per-block frame of the identifiability bridge.

The toy pair (``toy_convit``, ``toy_deit``) is Ti-sized, so its rows are set beside the paper's
ConViT-Ti and DeiT-Ti: another model and dataset, shown for scale, never as a target.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from ..base.errors import VitclsError
from .reported import convit_table
from ..model.registry import get_variant

#: the paper model each offline or random model is set beside
_PAPER_OF = {"toy_convit": "convit_tiny", "toy_deit": "deit_tiny"}


def paper_key(key: str) -> str:
    """The paper's variant a key is compared with: itself, its base for a random control,
    the Ti model for the toy pair."""
    spec = get_variant(key)
    base = spec.base or spec.key
    return _PAPER_OF.get(base, base)


def paper_label(key: str) -> str:
    """"paper: ConViT-Ti, ImageNet val" for the paper model of :func:`paper_key`.

    Args:
        key: a registry variant key (``vitcls variants``).
    Returns:
        The legend label, a str.
    """
    return f"paper: {get_variant(paper_key(key)).label}, ImageNet val"


def zoo(rows: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Table 1: per model ({key: {top1, top5, params}}) this run's top-1, top-5 and
    parameters (M) beside the paper's.

    Args:
        rows: {variant key: {"top1": %, "top5": %, "params": parameter count}}, in table order.
    Returns:
        DataFrame, a row per model: ``model`` (its label), "top-1, this run", "top-5, this run",
        "params (M), this run", "paper model", "top-1, paper", "top-5, paper" and
        "params (M), paper" (NaN / None where the paper has no such model).
    """
    table = convit_table("table1").set_index("variant")
    out = []
    for key, ours in rows.items():
        theirs = table.loc[paper_key(key)] if paper_key(key) in table.index else None
        out.append({"model": get_variant(key).label, "top-1, this run": ours["top1"],
                    "top-5, this run": ours["top5"], "params (M), this run": ours["params"] / 1e6,
                    "paper model": None if theirs is None else theirs.model,
                    "top-1, paper": np.nan if theirs is None else theirs.top1,
                    "top-5, paper": np.nan if theirs is None else theirs.top5,
                    "params (M), paper": np.nan if theirs is None else theirs.params_m})
    return pd.DataFrame(out)


def paper_gates(key: str) -> pd.DataFrame:
    """The gates printed on the paper's maps for the paper model of ``key`` (layer, head,
    gate); empty where the paper prints none (ConViT-B).

    Args:
        key: a registry variant key.
    Returns:
        DataFrame with columns ``layer`` and ``head`` (1-based) and ``gate`` (σ(λ)), one row per
        printed head.
    """
    table = convit_table("gates")
    return table[table.variant == paper_key(key)][["layer", "head", "gate"]].reset_index(drop=True)


def gates_check(gates: pd.DataFrame, key: str) -> pd.DataFrame:
    """The paper's printed gates beside this run's at the same layer and head.

    Args:
        gates: this run's gates, columns ``layer``, ``head`` and ``gate``
            (:func:`vitcls_utils.analysis.convit.gates`).
        key: the registry variant key the gates are of.
    Returns:
        DataFrame, a row per printed head: ``layer``, ``head``, "gate, paper" and
        "gate, this run" (NaN where this run has no such head); no rows where the paper prints
        none.
    """
    theirs = paper_gates(key)
    if theirs.empty:
        return theirs.assign(**{"gate, this run": []})
    merged = theirs.merge(gates, on=["layer", "head"], how="left", suffixes=(", paper", ""))
    return merged.rename(columns={"gate": "gate, this run"})


def masking(accuracy: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Tables 5 and 6 as one: per model ({key: :func:`convit.evaluate_masks` accuracy}) and mask,
    this run's top-1 and top-5 beside the paper's top-1 for the same mask where it has one.

    Args:
        accuracy: {variant key: a row per mask with columns ``mask``, ``top1`` and ``top5`` (%)},
            the first frame :func:`vitcls_utils.analysis.convit.evaluate_masks` returns.
    Returns:
        DataFrame, a row per (model, mask): ``model`` (label), ``mask``, "top-1, this run",
        "top-5, this run" and "top-1, paper" (NaN where the paper has no such mask or model).
    """
    t5 = convit_table("table5").set_index("variant")
    t6 = convit_table("table6")
    out = []
    for key, frame in accuracy.items():
        theirs = paper_key(key)
        for row in frame.itertuples():
            paper = np.nan
            if row.mask in ("unmasked", "position embedding zeroed"):
                column = "unmasked" if row.mask == "unmasked" else "pos_embed_zeroed"
                paper = t5.loc[theirs, column] if theirs in t5.index else np.nan
            else:  # "content masked, first k" or "position masked, first k"
                kind, k = row.mask.split(" masked, first ")
                match = t6[(t6.variant == theirs) & (t6.k == int(k))]
                if not match.empty:
                    paper = float(match[f"{kind}_masked"].iloc[0])
            out.append({"model": get_variant(key).label, "mask": row.mask,
                        "top-1, this run": row.top1, "top-5, this run": row.top5,
                        "top-1, paper": paper})
    return pd.DataFrame(out)


def bridge(evolutions: Mapping[str, pd.DataFrame], nonlocality: Mapping[str, pd.DataFrame],
           gates: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Per model and block: image-token and [CLS] identifiability (chapter 1's evolution
    frame; [CLS] empty where it does not exist yet), the heads' mean nonlocality, and the mean
    gate of the block for the models in ``gates`` ({label: :func:`convit.gates`}; empty for
    MHSA blocks and models without gates).

    Args:
        evolutions: {model label: columns ``block``, ``token`` ("[CLS]" or "image") and
            ``identifiability``} (:func:`vitcls_utils.analysis.identifiability.evolution`).
        nonlocality: {model label: columns ``block``, ``head`` and ``distance`` (patches)}
            (:func:`vitcls_utils.analysis.anatomy.attention_distances`), for every model of
            ``evolutions``.
        gates: {model label: columns ``layer``, ``head`` and ``gate``}, for the ConViTs only.
    Returns:
        DataFrame, a row per (model, block): ``model``, ``block`` (1-based),
        ``image_identifiability``, ``cls_identifiability``, ``nonlocality`` (patches) and
        ``gate`` (NaN where absent).
    """
    out = []
    for label, curves in evolutions.items():
        mean_gate = (gates[label].groupby("layer").gate.mean() if label in gates
                     else pd.Series(dtype=float))
        wide = curves.pivot(index="block", columns="token", values="identifiability")
        distance = nonlocality[label].groupby("block").distance.mean()
        for block in wide.index:
            out.append({"model": label, "block": int(block),
                        "image_identifiability": wide.loc[block, "image"],
                        "cls_identifiability": wide.loc[block].get("[CLS]", np.nan),
                        "nonlocality": float(distance.get(block, np.nan)),
                        "gate": float(mean_gate.get(block, np.nan))})
    return pd.DataFrame(out)


def bridge_wide(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`bridge` with one row per block and a column per (quantity, model), empty
    columns (the DeiT's gate) left out: the page's table.

    Args:
        frame: :func:`bridge`'s frame.
    Returns:
        DataFrame indexed by ``block``, with two-level columns (quantity: "image tokens",
        "[CLS]", "nonlocality", "mean gate"; model label), models in ``frame``'s order.
    """
    names = {"image_identifiability": "image tokens", "cls_identifiability": "[CLS]",
             "nonlocality": "nonlocality", "gate": "mean gate"}
    wide = frame.pivot(index="block", columns="model", values=list(names))
    wide = wide.dropna(axis=1, how="all").rename(columns=names, level=0)
    return wide.reindex(columns=frame.model.unique(), level=1)


def sample_efficiency(runs: pd.DataFrame) -> pd.DataFrame:
    """Per fraction: the toy DeiT's and toy ConViT's top-1 and top-5 (mean over seeds), the
    relative gap, and the paper's Table 2 at the same fraction.

    Args:
        runs: a row per (fraction, model, seed) with columns ``fraction``, ``key`` ("toy_deit"
            or "toy_convit") and ``val_top1`` and ``val_top5`` (fractions in [0, 1]).
    Returns:
        DataFrame, a row per fraction both models reached: ``fraction``, "DeiT top-1, this run",
        "ConViT top-1, this run", "gap (%), this run", "DeiT top-5, this run",
        "ConViT top-5, this run" (%), then "DeiT-S top-1, paper", "ConViT-S top-1, paper" and
        "gap (%), paper" (NaN where Table 2 has no such fraction).
    Raises:
        VitclsError: when no fraction has both models yet.
    """
    paper = convit_table("table2").set_index("fraction")
    mean = runs.groupby(["fraction", "key"])[["val_top1", "val_top5"]].mean().unstack("key")
    pair = [("val_top1", k) for k in ("toy_deit", "toy_convit")]
    mean = mean.dropna(subset=[c for c in pair if c in mean.columns]) if all(
        c in mean.columns for c in pair) else mean.iloc[0:0]
    if mean.empty:  # a sweep still running, or one of the two models never trained
        raise VitclsError("the sweep has no fraction with both the toy DeiT and the toy ConViT "
                          "yet: run (or finish) `make sample-efficiency`")
    out = []
    for fraction in mean.index:
        deit, conv = (100 * mean.loc[fraction, ("val_top1", k)] for k in ("toy_deit",
                                                                           "toy_convit"))
        row = {"fraction": fraction, "DeiT top-1, this run": deit,
               "ConViT top-1, this run": conv, "gap (%), this run": 100 * (conv - deit) / deit,
               "DeiT top-5, this run": 100 * mean.loc[fraction, ("val_top5", "toy_deit")],
               "ConViT top-5, this run": 100 * mean.loc[fraction, ("val_top5", "toy_convit")]}
        theirs = paper.loc[fraction] if fraction in paper.index else None
        for column, name in (("deit_top1", "DeiT-S top-1, paper"),
                             ("convit_top1", "ConViT-S top-1, paper"),
                             ("gap_pct", "gap (%), paper")):
            row[name] = np.nan if theirs is None else theirs[column]
        out.append(row)
    return pd.DataFrame(out)


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


def masking_sentence(top1: pd.Series, convit_label: str, deit_label: str,
                     deepest: Optional[int]) -> str:
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
    Returns:
        A str of sentences for the chapter's page.
    """
    drop = {m: top1[(m, "unmasked")] - top1[(m, "position embedding zeroed")]
            for m in (convit_label, deit_label)}
    masked_all = [m for m in top1[convit_label].index
                  if deepest and m.endswith(f"first {deepest}")]
    ti = convit_table("table5").set_index("variant").loc[["convit_tiny", "deit_tiny"]]
    t6 = convit_table("table6")
    return (f"Zeroing the position embedding costs {convit_label} {drop[convit_label]:.1f} "
            f"points and {deit_label} {drop[deit_label]:.1f} (the paper, the only sizes it "
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
    """The identifiability bridge: where each model's image tokens reach 0.75, where they end,
    how a GPSA block's gate relates to its identifiability gain, and the last block under
    the masks (``masks``: the names of the position-embedding, content and position masks).

    Args:
        frame: :func:`bridge`'s frame for the ConViT and the DeiT.
        masked: the ConViT's per-block readout under the masks, columns ``mask``, ``block`` and
            ``image_identifiability`` (:func:`vitcls_utils.analysis.convit.evaluate_masks` with
            ``by_block``), including the "unmasked" mask.
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
    gpsa = conv.index[:n_gpsa]
    gain = conv.image_identifiability.diff()
    corr = rank_correlation(conv.gate[gpsa], gain[gpsa])
    final = masked[masked.block == masked.block.max()].set_index("mask").image_identifiability
    zeroed, content, position = masks
    return (f"The image tokens of {convit_label} reach an identifiability of 0.75 at block "
            f"{first_block_reaching(frame, 0.75, model=convit_label)}, those of {deit_label} "
            f"at block {first_block_reaching(frame, 0.75, model=deit_label)}; at the last "
            f"block they stand at {conv.image_identifiability.iloc[-1]:.2f} and "
            f"{frame[frame.model == deit_label].image_identifiability.iloc[-1]:.2f}. Across the "
            "GPSA blocks the rank correlation of a block's mean gate with its identifiability "
            f"gain is {corr:.2f}. At the last block, masking content in all {n_gpsa} GPSA "
            f"blocks leaves the image tokens' identifiability at {final[content]:.2f}, masking "
            f"position at {final[position]:.2f}, and zeroing the position embedding at "
            f"{final[zeroed]:.2f} (unmasked {final['unmasked']:.2f}).")
