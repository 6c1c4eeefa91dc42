"""Chapter 6's tables (Ghiasi et al. 2022): this run's numbers beside the paper's, one frame per
table or curve, for the notebooks to show. The measurements live in their own modules
(:mod:`vitcls_utils.analysis.cls_isolation`, :mod:`vitcls_utils.analysis.patch_readout`,
:mod:`vitcls_utils.analysis.stimulus_edits`, :mod:`vitcls_utils.analysis.featureviz`); this one
only arranges them."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from . import reported as paper
from ..analysis.stimulus_edits import BACKGROUND, FOREGROUND, FULL
from ..base.errors import VitclsError
from ..base.uncertainty import (Interval, bootstrap, bootstrap_column_statistic,
                               bootstrap_proportion)
from ..analysis.lowpass import IMAGENET_CUTOFFS
from ..analysis.patch_readout import PatchReadout

#: Table 2's three inputs
FGBG = (FULL, FOREGROUND, BACKGROUND)
#: the model of the paper's Table 1 and sweeps
PAPER_MODEL = "ghiasi_b16_384"
PAPER_LABEL = "paper: ViT-B/16-384, ImageNet val"


def paper_sweeps(variant: str = PAPER_MODEL) -> Dict[str, pd.DataFrame]:
    """The repository logs' top-1 against L, per intervention.

    Args:
        variant: the registry key of the logged model.
    Returns:
        {"isolate": frame, "drop": frame}, each with columns ``L`` and ``top1`` (%); empty
        where the logs have none.
    """
    return {mode: paper.ghiasi_sweep(mode, variant) for mode in ("isolate", "drop")}


def table1(sweep: pd.DataFrame, readout: PatchReadout, depth: int) -> pd.DataFrame:
    """Table 1 (natural, [CLS] isolated up to block depth - 1, Patch Average, Patch Maximum)
    and the pooled token, this run's top-1/top-5 beside the paper's.

    Args:
        sweep: :func:`vitcls_utils.analysis.cls_isolation.sweep`: columns ``mode``, ``L``,
            ``top1`` and ``top5`` (%), with an "isolate" row at L = depth - 1.
        readout: the last block's per-patch readout
            (:func:`vitcls_utils.analysis.patch_readout.patch_readout`).
        depth: the model's number of blocks.
    Returns:
        DataFrame, a row per quantity: ``quantity``, "top-1, this run", "top-1, 95% CI"
        (images resampled, :func:`readout_intervals`), "top-5, this run", "top-1, paper" and
        "top-5, paper" (%; empty where the paper reports none).
    Raises:
        VitclsError: when the sweep has no isolation at L = depth - 1.
    """
    isolated = sweep[(sweep["mode"] == "isolate") & (sweep.L == depth - 1)]
    if isolated.empty:
        raise VitclsError(f"the sweep has no isolation at L = {depth - 1} (depth - 1), the "
                          "paper's setting: sweep it (Ls=None sweeps every L)")
    summary = readout.summary()
    ours = {"natural": (readout.model_top1, readout.model_top5),
            "isolating_cls": (float(isolated.top1.iloc[0]), float(isolated.top5.iloc[0])),
            "patch_average": (summary["patch_average_top1"], summary["patch_average_top5"]),
            "patch_maximum": (summary["patch_maximum_top1"], summary["patch_maximum_top5"]),
            "pooled_token": (readout.pooled_top1, readout.pooled_top5)}
    names = {"natural": "natural", "isolating_cls": f"isolating [CLS] (L = {depth - 1})",
             "patch_average": "Patch Average", "patch_maximum": "Patch Maximum",
             "pooled_token": "pooled token (not in Table 1)"}
    intervals = {**readout_intervals(readout), "isolating_cls": bootstrap_proportion(
        ours["isolating_cls"][0], int(isolated["images"].iloc[0]) if "images" in isolated else 0)}
    rows = []
    for quantity, (top1, top5) in ours.items():
        ci = intervals[quantity].bounds(1)
        rows.append({"quantity": names[quantity], "top-1, this run": top1,
                     "top-1, 95% CI": ci, "top-5, this run": top5,
                     "top-1, paper": paper.ghiasi_value(quantity, PAPER_MODEL, "top1"),
                     "top-5, paper": paper.ghiasi_value(quantity, PAPER_MODEL, "top5")})
    return pd.DataFrame(rows)


def table2(results: Dict[str, pd.DataFrame], with_paper: bool = True) -> pd.DataFrame:
    """Table 2: per model the full images' top-5 and the foreground and background top-5 as % of
    it, and the raw top-1 of each input (from
    :func:`vitcls_utils.analysis.stimulus_edits.evaluate_edits` accuracies), then the paper's
    rows (top-1 from their log).

    Args:
        results: {model label: a row per edit with columns ``edit`` ("full", "foreground",
            "background"), ``top1`` and ``top5`` (%)}, the "accuracy" frame of
            :func:`vitcls_utils.analysis.stimulus_edits.evaluate_edits`.
        with_paper: append the paper's rows.
    Returns:
        DataFrame, a row per model: ``model``, ``source``, ``full`` (top-5, %), ``foreground``
        and ``background`` (top-5, % of ``full``'s), "top-1 full", "top-1 foreground" and
        "top-1 background" (%), and "top-1 <edit>, 95% CI" for each (bootstrap over the
        images; "–" for the paper's rows; the top-5 ratios have none: they pair images).
    """
    from ..analysis.foreground_background import table2_row

    rows = []
    for model, frame in results.items():
        top5, top1 = frame.set_index("edit").top5, frame.set_index("edit").top1
        images = (frame.set_index("edit")["images"] if "images" in frame
                  else pd.Series(0, index=top1.index))
        rows.append({"model": model, "source": "this run",
                     **table2_row(top5["full"], top5["foreground"], top5["background"]),
                     "top-1 full": top1["full"], "top-1 foreground": top1["foreground"],
                     "top-1 background": top1["background"],
                     **{f"top-1 {edit}, 95% CI": bootstrap_proportion(
                         top1[edit], int(images[edit])).bounds(1)
                        for edit in ("full", "foreground", "background")}})
    if with_paper:
        for row in paper.ghiasi_table2().itertuples():
            rows.append({"model": row.model, "source": "paper (ImageNet train, boxes)",
                         "full": row.full_top5, "foreground": row.foreground,
                         "background": row.background, "top-1 full": row.full_top1,
                         "top-1 foreground": row.foreground_top1,
                         "top-1 background": row.background_top1,
                         **{f"top-1 {edit}, 95% CI": "–"
                            for edit in ("full", "foreground", "background")}})
    return pd.DataFrame(rows)


def box_convention(profile: Optional[str], convention: Optional[str] = None) -> str:
    """How Table 2 reads box XMLs: ``convention`` when the notebook sets it, else the
    profile's: "authors" (the raw VOC corners sliced, as their code) under the authors'
    settings, "voc" (1-based, inclusive: correct) under the corrected ones.

    Args:
        profile: the run's profile name ("corrected", "authors"; None: the default).
        convention: "voc" or "authors"; None: the profile's.
    Returns:
        "voc" or "authors".
    Raises:
        VitclsError: for another ``convention``.
    """
    from ..analysis.foreground_background import BOX_CONVENTIONS
    from .profiles import authors_or

    return authors_or(profile, convention, "voc", BOX_CONVENTIONS, "box convention")


def fgbg_notes(boxes: Optional[str], convention: str) -> str:
    """Table 2's notes: where this run's objects come from and how its boxes were read, beside
    the authors' box slicing and their handling of XMLs with no object of the image's class.

    Args:
        boxes: the notebook's ``boxes`` (a val CSV, a folder of train XMLs, or None: masks).
        convention: the box convention used (:func:`box_convention`).
    Returns:
        A str of Markdown sentences for the page.
    """
    from pathlib import Path

    if boxes is None:
        source = "This run's objects are the dataset's segmentation masks (no boxes)."
    elif Path(boxes).is_dir():
        source = ("This run's boxes are the train XMLs, read " + (
            "as VOC (1-based, inclusive corners)." if convention == "voc" else
            "as the authors' code reads them (each box one row and one column short)."))
    else:
        source = "This run's boxes are the val CSV's, used as they are."
    return (source + " The authors' code slices the raw 1-based VOC corners "
            "(`[ymin:ymax, xmin:xmax]`), so each of their boxes loses its first row and column; "
            "the book reads the corners as VOC (`box_convention=\"voc\"`) and offers theirs "
            "(`\"authors\"`, the authors' profile). An image whose XML has several objects, none "
            "of its class, is kept by their code with no box (an all-black foreground); one with a "
            "single object of another class makes their code raise. The book leaves out every "
            "image with no box of its own class.")


def default_cutoffs(image_size: int) -> Tuple[float, ...]:
    """Low-pass cutoffs in cycles per image: the book's ImageNet sweep where the image is
    large enough, else a sweep from the image's Nyquist frequency halving down to 3.

    Args:
        image_size: the side of the model's input in pixels.
    Returns:
        The cutoffs (cycles per image), largest first, a tuple.
    """
    nyquist = image_size // 2
    if nyquist >= max(IMAGENET_CUTOFFS):
        return IMAGENET_CUTOFFS
    cutoffs, c = [], float(nyquist)
    while c >= 3:
        cutoffs.append(round(c))
        c /= 2 ** 0.5
    return tuple(dict.fromkeys(cutoffs))


def lowpass_frame(results: Dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Top-1 and top-5 against the cutoff, one block of rows per model (NaN cutoff: the full
    image).

    Args:
        results: {model label: the "accuracy" frame of
            :func:`vitcls_utils.analysis.stimulus_edits.evaluate_edits` over low-pass edits,
            columns ``edit``, ``cutoff``, ``top1`` and ``top5`` (%)}.
    Returns:
        DataFrame with columns ``model``, ``edit``, ``cutoff``, ``top1``, ``top5`` and "top-1,
        95% CI" (bootstrap over the frame's ``images``; "–" without that count).
    """
    frame = pd.concat([frame.assign(model=model, images=frame.get("images", 0))[
        ["model", "edit", "cutoff", "top1", "top5", "images"]]
        for model, frame in results.items()], ignore_index=True)
    ci = [bootstrap_proportion(r.top1, int(r.images)).bounds(1) for r in frame.itertuples()]
    return frame.drop(columns="images").assign(**{"top-1, 95% CI": ci})


def pick_units(top, blocks: Sequence[int], per_block: int = 1) -> List[Tuple[int, int]]:
    """(0-based block, unit) pairs: the units of each block whose best image excites them most
    above their mean (:func:`vitcls_utils.analysis.featureviz.strongest_units`).

    Args:
        top: the top images of every unit (:func:`vitcls_utils.analysis.featureviz.top_images`).
        blocks: 0-based blocks, each among ``top.blocks``.
        per_block: units picked per block.
    Returns:
        A list of (0-based block, unit) tuples, block by block.
    """
    from ..analysis.featureviz import strongest_units

    return [(b, u) for b in blocks for u in strongest_units(top, b, per_block)]


def spread_blocks(depth: int, n: int = 3) -> List[int]:
    """``n`` 0-based blocks spread from early to late (the paper: textures, parts, objects).

    Args:
        depth: the model's number of blocks.
        n: how many blocks to pick.
    Returns:
        The sorted 0-based blocks, a list (all blocks where ``n`` >= ``depth``; the last where
        ``n`` is 1).
    """
    if n >= depth:
        return list(range(depth))
    return sorted({round(i * (depth - 1) / (n - 1)) for i in range(n)}) if n > 1 else [depth - 1]


def units_parameter(units: Optional[Sequence[Sequence[int]]], depth: int
                    ) -> Optional[List[Tuple[int, int]]]:
    """A notebook's ``units`` ([(1-based block, unit), ...] or None) as 0-based pairs.

    Args:
        units: (1-based block, FFN unit) pairs; None: let the notebook pick.
        depth: the model's number of blocks.
    Returns:
        A list of (0-based block, unit) tuples, or None where ``units`` is None.
    Raises:
        VitclsError: for an item that is not a pair or a block outside 1..depth.
    """
    if units is None:
        return None
    pairs = []
    for item in units:
        if len(item) != 2:
            raise VitclsError(f"units are (block, unit) pairs with 1-based blocks, not {item!r}")
        block, unit = int(item[0]), int(item[1])
        if not 1 <= block <= depth:
            raise VitclsError(f"block {block} is not one of the model's blocks 1..{depth}")
        pairs.append((block - 1, unit))
    return pairs


def patch_table(readout: PatchReadout) -> pd.DataFrame:
    """The per-patch readout's Table 1 columns and the pooled token, beside the paper's.

    Args:
        readout: the last block's per-patch readout
            (:func:`vitcls_utils.analysis.patch_readout.patch_readout`).
    Returns:
        DataFrame, a row per quantity (the model's output, Patch Average, Patch Maximum, the
        pooled token): ``quantity``, "top-1, this run", "top-5, this run", "top-1, paper",
        "top-5, paper" (%; empty where the paper reports none) and "top-1, 95% CI" (images
        resampled, :func:`readout_intervals`).
    """
    summary, intervals = readout.summary(), readout_intervals(readout)
    rows = []
    for quantity, label in (("natural", "the model's output"), ("patch_average", "Patch Average"),
                            ("patch_maximum", "Patch Maximum"),
                            ("pooled_token", "pooled token (not in Table 1)")):
        key = {"natural": "natural", "pooled_token": "pooled_token"}.get(quantity, quantity)
        rows.append({"quantity": label, "top-1, this run": summary[f"{key}_top1"],
                     "top-5, this run": summary[f"{key}_top5"],
                     "top-1, paper": paper.ghiasi_value(quantity, PAPER_MODEL, "top1"),
                     "top-5, paper": paper.ghiasi_value(quantity, PAPER_MODEL, "top5"),
                     "top-1, 95% CI": intervals[quantity].bounds(1)})
    return pd.DataFrame(rows)


def readout_intervals(readout: PatchReadout, seed: int = 0) -> Dict[str, Interval]:
    """The 95% intervals over images of the per-patch readout's top-1 numbers: the model's
    output and the pooled token (their images' outcomes), Patch Average (each image's share
    of identifiable positions) and Patch Maximum (the best position chosen again in every
    resample of images, :func:`~vitcls_utils.base.uncertainty.bootstrap_column_statistic`;
    the maximum of noisy means sits above the best position's true accuracy, and the interval
    inherits that bias).

    Args:
        readout: :func:`vitcls_utils.analysis.patch_readout.patch_readout`'s; one made without
            per-image outcomes gets proportion intervals for its accuracies and empty ones for
            Patch Average and Maximum.
        seed: the bootstrap's seed.
    Returns:
        {"natural", "pooled_token", "patch_average", "patch_maximum": Interval in %}.
    """
    def accuracy(per_image, top1):
        return (bootstrap(per_image, seed=seed) if per_image is not None
                else bootstrap_proportion(top1, readout.n_images, seed=seed))

    hits = readout.patch_hits
    return {"natural": accuracy(readout.model_top1_images, readout.model_top1),
            "pooled_token": accuracy(readout.pooled_top1_images, readout.pooled_top1),
            "patch_average": bootstrap(
                readout.patch_average_images() if hits is not None else [], seed=seed),
            "patch_maximum": bootstrap(np.array([]), seed=seed) if hits is None else
            bootstrap_column_statistic(100.0 * hits, lambda m: m.max(-1), seed=seed)}


def drop_vs_identifiable(drop: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """Bridge 2: per L, the top-1 (%) of [CLS] run alone after block L, beside the rate (%) at
    which the natural model's [CLS] at block L ranks the true class first (L = 0: the
    embedding, not read).

    Args:
        drop: :func:`vitcls_utils.analysis.cls_isolation.sweep` with "drop" rows: columns
            ``mode``, ``L`` and ``top1`` (%).
        curves: :func:`vitcls_utils.analysis.cls_isolation.identifiability_by_block` including
            L = 0: columns ``L``, ``block`` and ``cls_top1`` (%).
    Returns:
        DataFrame, a row per L: ``L``, "drop patches after L: top-1", its "95% CI" (the
        sweep's per-image outcomes resampled), "[CLS] at block L: rank 0" (%; NaN where the
        block was not read) and its "95% CI, rank 0" (a share of the same images, by
        :func:`~vitcls_utils.base.uncertainty.bootstrap_proportion`).
    """
    natural = curves[curves.L == 0].set_index("block").cls_top1
    rows = drop[drop["mode"] == "drop"].sort_values("L")
    rank0 = [natural.get(int(L), float("nan")) for L in rows.L]
    n = int(rows["images"].iloc[0]) if "images" in rows and len(rows) else 0
    top1_ci = (rows.top1_images.map(lambda v: bootstrap(v).bounds(1)) if "top1_images" in rows
               else rows.top1.map(lambda v: bootstrap_proportion(v, n).bounds(1)))
    return pd.DataFrame({"L": rows.L.to_numpy(),
                         "drop patches after L: top-1": rows.top1.to_numpy(),
                         "95% CI": top1_ci.to_numpy(),
                         "[CLS] at block L: rank 0": rank0,
                         "95% CI, rank 0": [bootstrap_proportion(v, n).bounds(1)
                                            for v in rank0]})
