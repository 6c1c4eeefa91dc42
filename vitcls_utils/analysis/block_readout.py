"""Per-block class readout of a stream of batches: identifiability and top-1 rate of [CLS] and
of the image tokens, accumulated over images (chapter 6's bridges read it under interventions
and edits)."""
from __future__ import annotations

from typing import Dict, Hashable, Optional

import numpy as np
import pandas as pd

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402

from ..model.projection import ClassProjector, identifiability, rank_of_true_class  # noqa: E402

COLUMNS = ("cls_identifiability", "cls_top1", "image_identifiability", "image_top1")


class BlockReadout:
    """Sums per (condition, block) of: [CLS] identifiability, [CLS] rank-0 rate, the mean over
    image tokens of identifiability and of the rank-0 rate; :meth:`frame` averages them.

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
        self.sums: Dict[tuple, np.ndarray] = {}
        self.counts: Dict[tuple, int] = {}

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
        nan = float("nan")
        values = np.array([
            float(ident[:, 0].sum()) if cls else nan,
            float(top[:, 0].sum()) if cls else nan,
            float(ident[:, image].mean(1).sum()), float(top[:, image].mean(1).sum())])
        key = (condition, block)
        self.sums[key] = self.sums.get(key, 0) + values
        self.counts[key] = self.counts.get(key, 0) + len(labels)

    def frame(self, condition: str = "condition") -> pd.DataFrame:
        """One row per (condition, 1-based block); rates in %, identifiability in [0, 1]."""
        if not self.sums:
            raise VitclsError("no readable image was read")
        rows = []
        for (cond, block), values in self.sums.items():
            mean = values / self.counts[(cond, block)]
            rows.append({condition: cond, "block": block + 1,
                         "cls_identifiability": mean[0], "cls_top1": 100 * mean[1],
                         "image_identifiability": mean[2], "image_top1": 100 * mean[3]})
        return pd.DataFrame(rows)  # conditions in the order first read, blocks in order


def readout_for(model, projector: Optional[ClassProjector] = None) -> BlockReadout:
    """A :class:`BlockReadout` for ``model``'s token layout."""
    device = next(model.parameters()).device
    projector = projector or ClassProjector(model).to(device)
    grid = model.patch_embed.grid_size
    return BlockReadout(projector, int(model.num_prefix_tokens),
                        getattr(model, "cls_token", None) is not None, int(grid[0] * grid[1]))
