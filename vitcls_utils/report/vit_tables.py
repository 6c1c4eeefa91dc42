"""The ViT paper's tables (Dosovitskiy et al. 2021, chapter 5): this run's architectures and
numbers beside the values the paper reports (:mod:`vitcls_utils.report.reported`)."""
from __future__ import annotations

from typing import Mapping, Optional

import pandas as pd

from ..base.uncertainty import bootstrap_proportion
from .reported import vit_table1


def vit_table1_side_by_side(own: Optional[Mapping[str, int]] = None,
                            own_label: str = "") -> pd.DataFrame:
    """The ViT paper's Table 1 beside timm's architectures, counted offline on the meta device
    (no weights): paper and timm parameters in millions; ``own`` (an
    :func:`~vitcls_utils.analysis.anatomy.architecture_row`) adds this run's variant as a last
    row.

    Args:
        own: :func:`~vitcls_utils.analysis.anatomy.architecture_row` of this run's variant
            (``layers``, ``width``, ``mlp``, ``heads``, ``parameters``); None: no extra row.
        own_label: the model name of that row.
    Returns:
        DataFrame, a row per model: ``model``, ``layers``, ``width``, ``MLP``, ``heads``,
        "params, paper (M)", "params, timm (M)" and "same shape as the paper" (bool; None for
        ``own``'s row).
    """
    from ..analysis.anatomy import TABLE1_ARCHS, architecture_row

    rows = []
    for paper_row in vit_table1().itertuples():
        counted = architecture_row(TABLE1_ARCHS[paper_row.model])
        rows.append({"model": paper_row.model, "layers": counted["layers"],
                     "width": counted["width"], "MLP": counted["mlp"], "heads": counted["heads"],
                     "params, paper (M)": float(paper_row.parameters_millions),
                     "params, timm (M)": counted["parameters"] / 1e6,
                     "same shape as the paper": (counted["layers"], counted["width"],
                                                 counted["mlp"], counted["heads"])
                     == (paper_row.layers, paper_row.width, paper_row.mlp, paper_row.heads)})
    if own is not None:
        rows.append({"model": own_label, "layers": own["layers"], "width": own["width"],
                     "MLP": own["mlp"], "heads": own["heads"], "params, paper (M)": float("nan"),
                     "params, timm (M)": own["parameters"] / 1e6,
                     "same shape as the paper": None})
    return pd.DataFrame(rows)



def fewshot_table(last: pd.DataFrame, n_images: int) -> pd.DataFrame:
    """The k-shot top-1 of one block per token choice and shot count, each with its 95%
    interval over the test images (:func:`~vitcls_utils.base.uncertainty.bootstrap_proportion`
    of the accuracy's count; the spread over the training draws, ``accuracy_std``, is apart).

    Args:
        last: rows of :func:`~vitcls_utils.analysis.fewshot.fewshot_by_block` (one block):
            ``token``, ``shots`` and ``accuracy`` (fraction).
        n_images: the test images the accuracies are over.

    Returns:
        DataFrame indexed by token, a column per shot count: ``0.912 [0.875, 0.950]``.
    """
    shown = last.accuracy.map(lambda accuracy: accuracy_cell(accuracy, n_images))
    return last.assign(shown=shown).pivot(index="token", columns="shots", values="shown")


def decoders_with_intervals(wide: pd.DataFrame, n_images: int) -> pd.DataFrame:
    """The projection-vs-probes table with each top-1 written with its 95% interval over the
    test images, as :func:`fewshot_table` writes them (the probes' spread over their
    training draws is not in it).

    Args:
        wide: :func:`~vitcls_utils.analysis.fewshot.decoders_table`'s frame (fractions).
        n_images: the test images the accuracies are over.

    Returns:
        DataFrame of text, the same index and columns: ``0.912 [0.875, 0.950]``.
    """
    return wide.apply(lambda column: column.map(lambda a: accuracy_cell(a, n_images)))


def accuracy_cell(accuracy: float, n_images: int) -> str:
    """A top-1 (a fraction) over ``n_images`` with its 95% interval over them,
    ``0.912 [0.875, 0.950]`` (:func:`~vitcls_utils.base.uncertainty.bootstrap_proportion` of
    its count); "–" where nothing was measured.

    Args:
        accuracy: the top-1 in [0, 1] (NaN: none); n_images: the images it is over.

    Returns:
        The text.
    """
    interval = bootstrap_proportion(100 * accuracy, n_images)
    if interval.n == 0:
        return "–"
    return f"{accuracy:.3f} [{interval.low / 100:.3f}, {interval.high / 100:.3f}]"


def distance_table(distances: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Fig 11's numbers per block: the heads' smallest, mean and largest mean attention
    distance, and the mean's 95% interval over the images (each image's mean over the heads,
    resampled; the spread over heads is the min and max).

    Args:
        distances: :func:`~vitcls_utils.analysis.anatomy.attention_distances`'s frame, with
            ``distance_images``.
        seed: the bootstrap's seed.

    Returns:
        DataFrame indexed by ``block``: ``min``, ``mean``, ``max`` and "mean, 95% CI".
    """
    from ..analysis.anatomy import distance_per_image
    from .intervals import interval_column

    table = distances.groupby("block").distance.agg(["min", "mean", "max"])
    per_image = distance_per_image(distances)
    table["mean, 95% CI"] = interval_column([per_image[b] for b in table.index], 2, seed)
    return table
