"""Per-block class readout of a stream of batches: identifiability and top-1 rate of [CLS] and
of the image tokens, kept per image (chapter 6's bridges read it under interventions and edits;
the tables bootstrap the per-image values for their 95% intervals)."""
from __future__ import annotations

from typing import Dict, Hashable, List, Optional

import numpy as np
import pandas as pd

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402

from ..model.projection import ClassProjector, identifiability, rank_of_true_class  # noqa: E402

COLUMNS = ("cls_identifiability", "cls_top1", "image_identifiability", "image_top1")


class BlockReadout:
    """Per (condition, block) and per image: [CLS] identifiability, [CLS] rank-0 rate, the mean
    over the image's tokens of identifiability and of the rank-0 rate; :meth:`frame` averages
    them over images and keeps each image's value beside the mean.

    Args:
        projector: the model's class projection.
        num_prefix: prefix tokens before the patch grid.
        has_cls: whether token 0 is [CLS] (else its columns are NaN, as they are at the
            blocks of a ConViT before its [CLS] joins).
        n_patches: the patch tokens; a block with no more tokens than these has no prefix.
    """

    def __init__(self, projector: ClassProjector, num_prefix: int, has_cls: bool,
                 n_patches: int) -> None:
        self.projector, self.num_prefix, self.has_cls = projector, num_prefix, has_cls
        self.n_patches = n_patches
        self.values: Dict[tuple, List[np.ndarray]] = {}

    def add(self, condition: Hashable, block: int, tokens: torch.Tensor,
            labels: torch.Tensor) -> None:
        """Tokens [B, N, D] of 0-based ``block`` for images of ``labels`` [B]."""
        rank = rank_of_true_class(self.projector(tokens), labels[:, None])  # [B, N]
        ident = identifiability(rank, self.projector.num_classes)
        top = (rank == 0).float()
        # a ConViT's blocks before its [CLS] joins hold the patch tokens alone
        prefix = self.num_prefix if tokens.shape[1] > self.n_patches else 0
        cls = self.has_cls and prefix > 0
        image = slice(prefix, None)
        nan = torch.full_like(ident[:, 0], float("nan"))
        values = torch.stack([ident[:, 0] if cls else nan, 100 * top[:, 0] if cls else nan,
                              ident[:, image].mean(1), 100 * top[:, image].mean(1)], 1)
        self.values.setdefault((condition, block), []).append(
            values.detach().cpu().double().numpy())

    def frame(self, condition: str = "condition") -> pd.DataFrame:
        """One row per (condition, 1-based block): the mean over images of each of
        :data:`COLUMNS` (rates in %, identifiability in [0, 1]) and, in ``<column>_images``,
        each image's value ([images] arrays, the images in the order read; a table's interval
        over images bootstraps them, and their mean is the column's value exactly)."""
        if not self.values:
            raise VitclsError("no readable image was read")
        rows = []
        for (cond, block), parts in self.values.items():
            per_image = np.concatenate(parts)  # [images, 4]
            row = {condition: cond, "block": block + 1}
            row.update({name: float(per_image[:, i].mean()) for i, name in enumerate(COLUMNS)})
            row.update({f"{name}_images": per_image[:, i] for i, name in enumerate(COLUMNS)})
            rows.append(row)
        return pd.DataFrame(rows)  # conditions in the order first read, blocks in order


def readout_for(model, projector: Optional[ClassProjector] = None) -> BlockReadout:
    """A :class:`BlockReadout` for ``model``'s token layout."""
    device = next(model.parameters()).device
    projector = projector or ClassProjector(model).to(device)
    grid = model.patch_embed.grid_size
    return BlockReadout(projector, int(model.num_prefix_tokens),
                        getattr(model, "cls_token", None) is not None, int(grid[0] * grid[1]))
