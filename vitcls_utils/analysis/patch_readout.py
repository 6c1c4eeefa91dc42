"""Ghiasi et al.'s per-patch head readout (Table 1 "Patch Average/Maximum", the heatmap;
chapter 6, catalogue G5), which is the main paper's last-block image-token identifiability.

head(LN(z_L[q])) for patch q of the unmodified model's last block is the class projection of
that token; its top-1 rate is the rate at which token q is identifiable (rank 0). The pooled
token (the head applied to the mean of the normed patch tokens) is another number, which
Ghiasi et al.'s logs report separately; it is kept apart here as well.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..stores.stimulus_loader import labelled_batches  # noqa: E402
from ..model.layout import TokenLayout  # noqa: E402
from ..model.projection import ClassProjector, top1_top5  # noqa: E402


@dataclass
class PatchReadout:
    """Per-position accuracies (%) of the last block's tokens read by the head.

    Attributes:
        top1, top5: [N] accuracy of each patch position, row-major over ``grid``.
        grid: (rows, columns) of the patch grid.
        model_top1, model_top5: the model's own output.
        pooled_top1, pooled_top5: the head on the mean of the normed patch tokens.
        n_images: images read.
        patch_hits: [images, N] bool, whether each image's token at each position ranks its
            class first (``top1`` is its column mean in %); None where not kept.
        model_top1_images, pooled_top1_images: [images] per-image top-1 outcomes (100 right,
            0 wrong) of the model's output and of the pooled token; None where not kept.
    """

    top1: np.ndarray
    top5: np.ndarray
    grid: tuple
    model_top1: float
    model_top5: float
    pooled_top1: float
    pooled_top5: float
    n_images: int
    patch_hits: Optional[np.ndarray] = None
    model_top1_images: Optional[np.ndarray] = None
    pooled_top1_images: Optional[np.ndarray] = None

    def patch_average_images(self) -> Optional[np.ndarray]:
        """[images]: each image's share (%) of positions whose token ranks its class first;
        their mean over images is Patch Average (None where the hits were not kept)."""
        return None if self.patch_hits is None else 100 * self.patch_hits.mean(axis=1)

    def heatmap(self, k: int = 1) -> np.ndarray:
        """Top-k accuracy per position as the [rows, columns] grid (Ghiasi's heatmap)."""
        return (self.top1 if k == 1 else self.top5).reshape(self.grid)

    def summary(self) -> Dict[str, float]:
        """Table 1's Patch Average (mean over positions) and Patch Maximum (best position),
        beside the model's output and the pooled token."""
        return {"natural_top1": self.model_top1, "natural_top5": self.model_top5,
                "patch_average_top1": float(self.top1.mean()),
                "patch_average_top5": float(self.top5.mean()),
                "patch_maximum_top1": float(self.top1.max()),
                "patch_maximum_top5": float(self.top5.max()),
                "pooled_token_top1": self.pooled_top1, "pooled_token_top5": self.pooled_top5}


def patch_readout(model: nn.Module, dataset, batch_size: int = 64,
                  progress: bool = True) -> PatchReadout:
    """Read every patch of the last block through the final norm and head (one pass).

    Args:
        model: a loaded timm ViT with a class head.
        dataset: the labelled stimuli; unreadable ones are skipped.
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        A :class:`PatchReadout`: per-position top-1 and top-5 [rows * cols] (%), the model's
        and the pooled token's accuracies, the number of images read, and each image's
        outcomes (``patch_hits`` [images, N], ``model_top1_images``, ``pooled_top1_images``)
        for the tables' intervals over images.
    """
    from ..model.hooks import capture

    layout = TokenLayout.of(model)
    if layout.grid[0] * layout.grid[1] == 0:
        raise VitclsError("the model has no patch tokens")
    if getattr(model, "attn_pool", None) is not None:
        raise VitclsError("the pooled column is the head on the mean of the normed patches, "
                          "the model's own pooling only for average-pooled models; an "
                          "attention-pooled model (SigLIP's 'map' head) pools otherwise")
    device = next(model.parameters()).device
    projector = ClassProjector(model).to(device)
    last = f"blocks.{len(model.blocks) - 1}.hook_resid_post"
    sums = {name: 0.0 for name in ("patch1", "patch5", "model1", "model5", "pool1", "pool5")}
    count, kept = 0, {"patch": [], "model": [], "pool": []}
    with torch.no_grad():
        for images, labels in labelled_batches(model, dataset, batch_size, "patches", progress):
            with capture(model, last) as cache:
                logits = model(images)
            normed = projector.normalize(cache[last][:, layout.num_prefix:])  # [B, N, D]
            patch_logits = projector.classify(normed)
            pooled = projector.classify(normed.mean(1))
            per_token = labels[:, None]
            for name, out, target in (("patch", patch_logits, per_token), ("model", logits, labels),
                                      ("pool", pooled, labels)):
                per_image = top1_top5(out, target)  # [B, N, 2] or [B, 2]
                kept[name].append(per_image[..., 0].bool().cpu())
                hits = per_image.sum(0)  # [N, 2] per position, or [2]
                sums[name + "1"] = sums[name + "1"] + hits[..., 0]
                sums[name + "5"] = sums[name + "5"] + hits[..., 1]
            count += len(labels)
    if not count:
        raise VitclsError("no readable image in the dataset")
    pct = {k: 100 * (v.cpu().numpy() if torch.is_tensor(v) else v) / count
           for k, v in sums.items()}
    return PatchReadout(top1=pct["patch1"], top5=pct["patch5"], grid=tuple(layout.grid),
                        model_top1=float(pct["model1"]), model_top5=float(pct["model5"]),
                        pooled_top1=float(pct["pool1"]), pooled_top5=float(pct["pool5"]),
                        n_images=count, patch_hits=torch.cat(kept["patch"]).numpy(),
                        model_top1_images=100.0 * torch.cat(kept["model"]).double().numpy(),
                        pooled_top1_images=100.0 * torch.cat(kept["pool"]).double().numpy())
