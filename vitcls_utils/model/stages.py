"""Which blocks are read in class space, what they are called, and which image region each
of their tokens stands for.

A ViT's blocks all have the head's width and one patch grid: every block is read, and the
tables number them 1..L. A hierarchical model (Swin) changes its grid and width from stage to
stage, merging 2x2 tokens between stages; only the last stage has the width the final norm and
the head take, so only its blocks are read in class space (the stores hold them, on the last
stage's grid, row-major). A token of those blocks is read as the head's pooling of that one
token alone: Swin's head averages the tokens, and the mean of one token is the token itself, so
the token's readout is ``head.fc(norm(token))`` (:class:`~vitcls_utils.model.projection.
ClassProjector`). The earlier stages are not read: their width has no class embedding.

Blocks keep the model's own numbering (``blocks.{i}`` counted across stages, 1-based in
tables), so a table of swin_tiny's store shows blocks 11 and 12 of 12, which
:func:`block_names` calls "stage 4, block 1" and "stage 4, block 2"; nothing is renumbered.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Tuple

from ..base.errors import VitclsError
from .families import blocks_of, meta_model
from torch import nn


def _stage_sizes(model: nn.Module) -> List[int]:
    """Blocks per stage: one stage of every block for a ViT."""
    if hasattr(model, "blocks"):
        return [len(model.blocks)]
    return [len(stage.blocks) for stage in model.layers]


def class_space_blocks(model: nn.Module) -> List[int]:
    """The 0-based indices (``blocks.{i}``) of the blocks read in class space: every block of
    a ViT, the last stage's blocks of a stage-wise model.

    Args:
        model: a timm model (or one built on the meta device).

    Returns:
        The block indices, in forward order.
    """
    sizes = _stage_sizes(model)
    total = sum(sizes)
    if not total:
        raise VitclsError(f"{type(model).__name__} has no transformer blocks")
    return list(range(total - sizes[-1], total))


def block_names(model: nn.Module) -> List[str]:
    """What each block of :func:`class_space_blocks` is called in tables and pages.

    Args:
        model: a timm model.

    Returns:
        "block i" (1-based) for a ViT, "stage s, block b" (1-based) for a stage-wise model.
    """
    sizes = _stage_sizes(model)
    if len(sizes) == 1:
        return [f"block {i + 1}" for i in range(sizes[0])]
    return [f"stage {len(sizes)}, block {b + 1}" for b in range(sizes[-1])]


@lru_cache(maxsize=None)
def variant_blocks(variant) -> Tuple[Tuple[int, str], ...]:
    """(1-based block number, name) of a variant's class-space blocks, from its architecture
    built on the meta device (no weights): what a page says before any store is read.

    Args:
        variant: a :class:`~vitcls_utils.model.variant.Variant`.

    Returns:
        One (number, name) pair per block read.
    """
    model = meta_model(variant)
    return tuple((i + 1, name) for i, name in zip(class_space_blocks(model), block_names(model),
                                                  strict=True))


def last_stage_grid(model: nn.Module) -> Tuple[int, int]:
    """The token grid (rows, columns) of the class-space blocks of a stage-wise model.

    Args:
        model: a timm Swin (``layers`` of stages).

    Returns:
        The last stage's grid: the input side over its reduction.
    """
    side = tuple(int(v) for v in model.patch_embed.img_size)
    step = int(model.feature_info[-1]["reduction"])
    return side[0] // step, side[1] // step


def token_boxes(model: nn.Module, block: int) -> "torch.Tensor":  # noqa: F821
    """The image region of every patch token of a block's residual stream, in input pixels.

    A ViT's tokens are its patches; a Swin token of stage s stands for the square of
    ``reduction`` pixels that its merged patches cover (4 px in stage 1, 8 in stage 2, ...),
    which is also the cell a segmentation mask is cut into for that token's label.

    Args:
        model: a timm model.
        block: 0-based block index (``blocks.{i}``, counted across stages).

    Returns:
        [N, 4] int64 boxes (top, left, bottom, right), row-major like the tokens (prefix
        tokens excluded).
    """
    import torch

    blocks = blocks_of(model)
    if not 0 <= block < len(blocks):
        raise VitclsError(f"block {block}: the model has blocks 0..{len(blocks) - 1}")
    side = tuple(int(v) for v in model.patch_embed.img_size)
    if hasattr(model, "blocks"):
        step = tuple(int(v) for v in model.patch_embed.patch_size)
    else:
        sizes = _stage_sizes(model)
        stage = next(s for s in range(len(sizes)) if block < sum(sizes[:s + 1]))
        step = (int(model.feature_info[stage]["reduction"]),) * 2
    rows = torch.arange(side[0] // step[0]) * step[0]
    cols = torch.arange(side[1] // step[1]) * step[1]
    top, left = torch.meshgrid(rows, cols, indexing="ij")
    top, left = top.reshape(-1), left.reshape(-1)
    return torch.stack([top, left, top + step[0], left + step[1]], -1)
