"""Chapter 7's tables (ConViT, d'Ascoli et al. 2021): this run beside the paper's numbers
(``data/paper/convit_*.csv``), and the per-block frame of the identifiability bridge.

The toy pair (``toy_convit``, ``toy_deit``) is Ti-sized, so its rows are set beside the paper's
ConViT-Ti and DeiT-Ti: another model and dataset, shown for scale, never as a target.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np
import pandas as pd

from ..base.errors import VitclsError
from ..base.uncertainty import Interval, bootstrap, bootstrap_proportion, paired_difference
from .intervals import interval_text
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
        rows: {variant key: {"top1": %, "top5": %, "params": parameter count, and optionally
            "images": how many the accuracies are over}}, in table order.
    Returns:
        DataFrame, a row per model: ``model`` (its label), "top-1, this run", "top-5, this run",
        "params (M), this run", "paper model", "top-1, paper", "top-5, paper",
        "params (M), paper" (NaN / None where the paper has no such model) and "top-1, 95% CI"
        (bootstrap over the images; "–" without an image count).
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
                    "params (M), paper": np.nan if theirs is None else theirs.params_m,
                    "top-1, 95% CI": top1_interval(ours["top1"], int(ours.get("images", 0)))})
    return pd.DataFrame(out)


def top1_gap(first: np.ndarray, second: np.ndarray, seed: int = 0) -> Interval:
    """Two models' top-1 on the same images: the first's minus the second's, paired over the
    images, with its 95% interval (percentage points).

    Args:
        first, second: each model's per-image outcomes (100 right, 0 wrong), same images in
            the same order (``top1_images`` of :func:`vitcls_utils.analysis.convit.evaluate_masks`).
        seed: the bootstrap's seed.

    Returns:
        An :class:`~vitcls_utils.base.uncertainty.Interval`.
    """
    return paired_difference(first, second, seed=seed)


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


def top1_interval(percent: float, n: int) -> str:
    """An accuracy's 95% interval over its ``n`` images as a table shows it, ``[lo, hi]``.

    Args:
        percent: the accuracy (%); n: its images (0: unknown, shown "–").

    Returns:
        The text.
    """
    return bootstrap_proportion(percent, n).bounds(1)


def masking(accuracy: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Tables 5 and 6 as one: per model ({key: :func:`convit.evaluate_masks` accuracy}) and mask,
    this run's top-1 and top-5 beside the paper's top-1 for the same mask where it has one.

    Args:
        accuracy: {variant key: a row per mask with columns ``mask``, ``top1`` and ``top5`` (%)},
            the first frame :func:`vitcls_utils.analysis.convit.evaluate_masks` returns.
    Returns:
        DataFrame, a row per (model, mask): ``model`` (label), ``mask``, "top-1, this run",
        "top-1, 95% CI" (bootstrap over the images; "–" without an ``images`` count),
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
            n = int(getattr(row, "images", 0) or 0)
            out.append({"model": get_variant(key).label, "mask": row.mask,
                        "top-1, this run": row.top1,
                        "top-1, 95% CI": top1_interval(row.top1, n),
                        "top-5, this run": row.top5, "top-1, paper": paper})
    return pd.DataFrame(out)


def zeroing_costs(accuracy: Mapping[str, pd.DataFrame], seed: int = 0) -> Dict[str, Interval]:
    """What zeroing the position embedding costs each model: top-1 unmasked minus zeroed,
    paired over the same images, with its 95% interval (percentage points).

    Args:
        accuracy: as :func:`masking`, each frame with its per-image ``top1_images``.
        seed: the bootstrap's seed.

    Returns:
        {model label: :class:`~vitcls_utils.base.uncertainty.Interval`}; a model without
        per-image outcomes or without both masks is left out.
    """
    costs = {}
    for key, frame in accuracy.items():
        per = frame.set_index("mask")
        if "top1_images" in per and {"unmasked", "position embedding zeroed"} <= set(per.index):
            costs[get_variant(key).label] = paired_difference(
                per.top1_images["unmasked"], per.top1_images["position embedding zeroed"],
                seed=seed)
    return costs


def bridge(evolutions: Mapping[str, pd.DataFrame], nonlocality: Mapping[str, pd.DataFrame],
           gates: Mapping[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Per model and block: image-token and [CLS] identifiability (chapter 1's evolution
    frame; [CLS] empty where it does not exist yet) with their 95% intervals over images, the
    heads' mean nonlocality, and the mean gate of the block for the models in ``gates``
    ({label: :func:`convit.gates`}; empty for MHSA blocks and models without gates).

    Args:
        evolutions: {model label: columns ``block``, ``token`` ("[CLS]" or "image"),
            ``identifiability`` and ``identifiability_images``}
            (:func:`vitcls_utils.analysis.identifiability.evolution`).
        nonlocality: {model label: columns ``block``, ``head`` and ``distance`` (patches)}
            (:func:`vitcls_utils.analysis.anatomy.attention_distances`), for every model of
            ``evolutions``.
        gates: {model label: columns ``layer``, ``head`` and ``gate``}, for the ConViTs only.
        seed: the bootstrap's seed.
    Returns:
        DataFrame, a row per (model, block): ``model``, ``block`` (1-based),
        ``image_identifiability``, ``cls_identifiability``, their "..., 95% CI" (images
        resampled; "–" where absent) and ``..._images`` arrays, ``nonlocality`` (patches) and
        ``gate`` (NaN where absent; neither has an interval: a distance averaged over a fixed
        set of images, and a parameter of the trained model).
    """
    out = []
    for label, curves in evolutions.items():
        mean_gate = (gates[label].groupby("layer").gate.mean() if label in gates
                     else pd.Series(dtype=float))
        wide = curves.pivot(index="block", columns="token", values="identifiability")
        per_image = curves.set_index(["block", "token"]).identifiability_images
        distance = nonlocality[label].groupby("block").distance.mean()
        for block in wide.index:
            row = {"model": label, "block": int(block)}
            for token, name in (("image", "image_identifiability"),
                                ("[CLS]", "cls_identifiability")):
                values = per_image.get((block, token), np.array([]))
                row.update({name: wide.loc[block].get(token, np.nan),
                            f"{name}_images": values,
                            f"{name}, 95% CI": interval_text(bootstrap(values, seed=seed), 3)})
            out.append({**row, "nonlocality": float(distance.get(block, np.nan)),
                        "gate": float(mean_gate.get(block, np.nan))})
    return pd.DataFrame(out)


def bridge_wide(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`bridge` with one row per block and a column per (quantity, model), empty
    columns (the DeiT's gate) left out: the page's table.

    Args:
        frame: :func:`bridge`'s frame.
    Returns:
        DataFrame indexed by ``block``, with two-level columns (quantity: "image tokens",
        "image tokens, 95% CI", "[CLS]", "[CLS], 95% CI", "nonlocality", "mean gate"; model
        label), models in ``frame``'s order.
    """
    names = {"image_identifiability": "image tokens",
             "image_identifiability, 95% CI": "image tokens, 95% CI",
             "cls_identifiability": "[CLS]", "cls_identifiability, 95% CI": "[CLS], 95% CI",
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
        "gap (%), paper" (NaN where Table 2 has no such fraction), then each top-1's "..., 95%
        CI" and "ConViT − DeiT (points) [95% CI]" (:func:`efficiency_intervals`).
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
        out.append({**row, **efficiency_intervals(runs[runs.fraction == fraction])})
    return pd.DataFrame(out)


def efficiency_intervals(runs: pd.DataFrame, seed: int = 0) -> Dict[str, str]:
    """The 95% intervals of one fraction's top-1s and of the ConViT-minus-DeiT difference
    (:func:`efficiency_estimates`), as the table writes them.

    Args:
        runs: one fraction's rows, columns ``key``, ``seed``, ``val_top1`` (in [0, 1]) and
            ``val_images`` (without the last two: "–").
        seed: the bootstrap's seed.
    Returns:
        {"DeiT top-1, 95% CI", "ConViT top-1, 95% CI", "ConViT − DeiT (points) [95% CI]":
        text}.
    """
    if not {"seed", "val_images"} <= set(runs):
        return dict.fromkeys(("DeiT top-1, 95% CI", "ConViT top-1, 95% CI",
                              "ConViT − DeiT (points) [95% CI]"), "–")
    shown = efficiency_estimates(runs, seed)
    return {"DeiT top-1, 95% CI": shown["toy_deit"].bounds(1),
            "ConViT top-1, 95% CI": shown["toy_convit"].bounds(1),
            "ConViT − DeiT (points) [95% CI]": shown["gap"].format(1)}


def efficiency_estimates(runs: pd.DataFrame, seed: int = 0) -> Dict[str, Interval]:
    """One fraction's top-1s and ConViT-minus-DeiT difference (points) with their intervals.
    With one training seed per model: over the validation images (a top-1's outcomes are
    fixed by its count); the sweep keeps no per-image outcomes, so the difference resamples
    the two models' images apart (:func:`~vitcls_utils.base.uncertainty.unpaired_difference`,
    wider than a paired interval would be). With several seeds: Student's t across the seeds
    (:func:`~vitcls_utils.base.uncertainty.across_seeds`), the difference per seed.

    Args:
        runs: one fraction's rows, columns ``key``, ``seed``, ``val_top1`` (in [0, 1]) and
            ``val_images``.
        seed: the bootstrap's seed.
    Returns:
        {"toy_deit", "toy_convit", "gap": Interval in %}.
    """
    from ..base.uncertainty import across_seeds, unpaired_difference

    by = {k: runs[runs.key == k].sort_values("seed") for k in ("toy_deit", "toy_convit")}
    if min(len(rows) for rows in by.values()) > 1:
        top1 = {k: 100 * rows.set_index("seed").val_top1 for k, rows in by.items()}
        shown = {k: across_seeds(v) for k, v in top1.items()}
        return {**shown, "gap": across_seeds((top1["toy_convit"] - top1["toy_deit"]).dropna())}
    hits = {k: _outcomes(rows.val_top1.iloc[0], int(rows.val_images.iloc[0]))
            for k, rows in by.items()}
    return {**{k: bootstrap(v, seed=seed) for k, v in hits.items()},
            "gap": unpaired_difference(hits["toy_convit"], hits["toy_deit"], seed=seed)}


def _outcomes(top1: float, n: int) -> np.ndarray:
    """The n images' right (100) or wrong (0) outcomes of a top-1 in [0, 1]: fixed by its
    count, which is all an interval of an accuracy over images needs."""
    right = int(round(top1 * n))
    return np.r_[np.full(right, 100.0), np.zeros(n - right)]


def nonlocality_inputs(profile: Optional[str], inputs: Optional[str] = None) -> str:
    """What nonlocality is measured on: ``inputs`` when the notebook sets it, else the
    profile's: "authors" (ConViT's ``main.py``, the patch embedding alone fed to every layer)
    under the authors' settings, "real" (each layer's input in the forward, the paper's
    definition) under the corrected ones.

    Args:
        profile: the run's profile name ("corrected", "authors"; None: the default).
        inputs: "real" or "authors"; None: the profile's.
    Returns:
        "real" or "authors".
    Raises:
        VitclsError: for another ``inputs``.
    """
    from ..analysis.anatomy import INPUTS
    from .profiles import authors_or

    return authors_or(profile, inputs, "real", INPUTS, "inputs")


def nonlocality_table(frames: Mapping[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Fig 5's numbers: per layer and model, the nonlocality (mean over heads, in patches)
    with its 95% interval over the images (each image's mean over the heads, resampled).

    Args:
        frames: {model label: :func:`vitcls_utils.analysis.anatomy.attention_distances`'s
            frame, columns ``block``, ``distance`` and ``distance_images``}.
        seed: the bootstrap's seed.
    Returns:
        DataFrame indexed by ``block``: per model, its mean nonlocality and "<model>, 95% CI".
    """
    from ..analysis.anatomy import distance_per_image

    out = {}
    for label, frame in frames.items():
        per_image = distance_per_image(frame)
        out[label] = pd.Series({b: float(v.mean()) for b, v in per_image.items()})
        out[f"{label}, 95% CI"] = pd.Series({b: interval_text(bootstrap(v, seed=seed))
                                             for b, v in per_image.items()})
    return pd.DataFrame(out).rename_axis("block")
