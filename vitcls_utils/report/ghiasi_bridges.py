"""Chapter 6's bridge tables: Ghiasi et al.'s interventions read with the main paper's measures
(identifiability of edited stimuli per block, FFN units as key-value memories), each number
with its 95% interval over the units it is a mean of (images, or units)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import pandas as pd

from ..base.uncertainty import bootstrap, unpaired_difference
from .ghiasi_tables import pick_units
from .intervals import interval_column, interval_text


def last_block_table(result: Dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Per edit, the model's top-1 and the last block's identifiability of [CLS] and of the
    image tokens, each with its 95% interval over images (from
    :func:`vitcls_utils.analysis.stimulus_edits.evaluate_edits` with ``by_block``).

    Args:
        result: :func:`vitcls_utils.analysis.stimulus_edits.evaluate_edits` with ``by_block``:
            {"accuracy": columns ``edit``, ``top1`` and ``top1_images``, "blocks": columns
            ``edit``, ``block``, ``cls_identifiability`` and ``image_identifiability``, each
            with its ``_images`` array}.
        seed: the bootstrap's seed.
    Returns:
        DataFrame, a row per edit: ``edit``, "top-1" (%), "[CLS]" and "image tokens"
        (identifiability in [0, 1] at the last block), each followed by its "..., 95% CI"
        (images resampled; "–" where nothing was read, e.g. [CLS] of a model without one).
    """
    blocks = result["blocks"]
    last = blocks[blocks.block == blocks.block.max()].set_index("edit")
    accuracy = result["accuracy"].set_index("edit")
    out = {"edit": accuracy.index}
    for name, frame, column, digits in (("top-1", accuracy, "top1", 1),
                                        ("[CLS]", last, "cls_identifiability", 3),
                                        ("image tokens", last, "image_identifiability", 3)):
        out[name] = frame[column].reindex(accuracy.index).to_numpy()
        out[f"{name}, 95% CI"] = interval_column(
            frame[f"{column}_images"].reindex(accuracy.index), digits, seed)
    return pd.DataFrame(out)


def agreement_by_block(scored: pd.DataFrame, control: Optional[pd.DataFrame] = None,
                       seed: int = 0) -> pd.DataFrame:
    """Mean agreement of value vectors and top stimuli per block (from
    :func:`vitcls_utils.analysis.featureviz.memory_agreement`), the control's beside it, and
    chance, each mean with its 95% interval over the block's units (the unit is what is
    sampled here: a block's strongest units, each scored on its own top stimuli).

    Args:
        scored: a row per unit with columns ``block``, ``agreement`` and ``chance``
            (:func:`strong_unit_agreement`).
        control: the same for the random-init control; None: no control columns.
        seed: the bootstrap's seed.
    Returns:
        DataFrame, a row per block: ``block``, ``agreement`` (a share in [0, 1]), "95% CI"
        (units resampled), ``chance``, ``units`` (how many were scored) and, with a control,
        ``control``, "control, 95% CI" and "trained − control [95% CI]" (an unpaired
        difference: the two models' units are different units).
    """
    rows = []
    for block, units in scored.groupby("block"):
        values = units.agreement.to_numpy()
        row = {"block": block, "agreement": float(values.mean()),
               "95% CI": interval_text(bootstrap(values, seed=seed)),
               "chance": float(units.chance.iloc[0]), "units": len(values)}
        if control is not None:
            other = control[control.block == block].agreement.to_numpy()
            gap = unpaired_difference(values, other, seed=seed)
            row.update({"control": float(other.mean()) if len(other) else float("nan"),
                        "control, 95% CI": interval_text(bootstrap(other, seed=seed)),
                        "trained − control [95% CI]": gap.format(2)})
        rows.append(row)
    return pd.DataFrame(rows)


def strong_unit_agreement(model, dataset, class_names: Sequence[str], per_block: int, k: int,
                          top=None) -> pd.DataFrame:
    """G11 for the ``per_block`` strongest units of every block: the agreement of each unit's
    top-``k`` stimuli with its value vector's k classes (``top``: a pass already made).

    Args:
        model: a loaded ViT with a class head.
        dataset: the labelled stimuli.
        class_names: a name per class.
        per_block: units scored per block.
        k: top images per unit, and classes per value vector.
        top: :func:`vitcls_utils.analysis.featureviz.top_images` of this model and dataset
            with the same ``k``; None: made here (one pass over the data).
    Returns:
        DataFrame, a row per unit
        (:func:`vitcls_utils.analysis.featureviz.memory_agreement`): ``block`` (1-based),
        ``unit``, "value vector's classes", "top images' classes", ``agreement`` and ``chance``.
    """
    from ..analysis.featureviz import memory_agreement, top_images

    top = top if top is not None else top_images(model, dataset, k=k)
    units = pick_units(top, range(len(model.blocks)), per_block)
    return memory_agreement(model, dataset, top, units, class_names, k)
