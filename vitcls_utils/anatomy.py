"""A ViT's anatomy as the original ViT paper reads it (Dosovitskiy et al. 2021, Fig. 6, 7, 11):
where attention looks (mean attention distance, one function shared with ConViT's
nonlocality), what the patch and position embeddings hold, and attention rollout with its
residual-identity step as a parameter. Functions of tensors: the hooks layer reads them from
the unmodified model.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

PREFIX_POLICIES = ("drop", "renormalize")


def patch_distances(grid: Sequence[int]) -> torch.Tensor:
    """Euclidean distances between patch centres, in patches: [T, T] for a row-major grid."""
    rows, cols = torch.meshgrid(torch.arange(grid[0]), torch.arange(grid[1]), indexing="ij")
    centres = torch.stack([rows.flatten(), cols.flatten()], dim=1).double()
    return torch.cdist(centres, centres)


def mean_attention_distance(attn: torch.Tensor, grid: Sequence[int], num_prefix: int = 1,
                            patch_size: Optional[int] = None,
                            prefix: str = "drop") -> torch.Tensor:
    """Mean distance attention spans, per head: (1/T) sum_ij A_ij |c_i - c_j| over the T patch
    queries i and keys j (ViT's "attention distance"; in patches, ConViT's nonlocality, Eq. 8).

    Args:
        attn: attention probabilities [..., H, N, N], N = num_prefix + T.
        grid: the patch grid (rows, columns).
        num_prefix: prefix tokens ([CLS], registers) first in the sequence.
        patch_size: give it to get pixels (ViT's Fig. 7 and 11); None: patches.
        prefix: "drop" the prefix rows and columns (attention on them counts as distance 0,
            as both papers' code does) or "renormalize" each query's patch weights to sum 1.

    Returns:
        [..., H], float64.
    """
    if prefix not in PREFIX_POLICIES:
        raise ValueError(f"prefix must be one of {PREFIX_POLICIES}, not {prefix!r}")
    n_patches = grid[0] * grid[1]
    if attn.shape[-1] != num_prefix + n_patches or attn.shape[-2] != attn.shape[-1]:
        raise ValueError(f"attention of shape {tuple(attn.shape)} does not fit {num_prefix} "
                         f"prefix tokens and a {grid[0]}x{grid[1]} grid")
    patches = attn[..., num_prefix:, num_prefix:].double()
    if prefix == "renormalize":
        patches = patches / patches.sum(-1, keepdim=True)
    distance = (patches * patch_distances(grid).to(patches.device)).sum(-1).mean(-1)
    return distance * patch_size if patch_size else distance


def patch_position_embeddings(model) -> torch.Tensor:
    """The position embeddings of the patches of a timm ViT, [T, D] (a prefix slot, where the
    model has one, left out)."""
    table = model.pos_embed.detach()[0]
    if getattr(model, "no_embed_class", False):
        return table
    return table[table.shape[0] - model.patch_embed.num_patches:]


def position_similarity(embeddings: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """Cosine similarity of each patch's position embedding to every other's (ViT Fig. 7
    centre): [rows, cols, rows, cols], tile (r, c) the similarities of patch (r, c)."""
    if embeddings.shape[0] != grid[0] * grid[1]:
        raise ValueError(f"{embeddings.shape[0]} embeddings for a {grid[0]}x{grid[1]} grid")
    unit = torch.nn.functional.normalize(embeddings.double(), dim=1)
    return (unit @ unit.T).reshape(grid[0], grid[1], grid[0], grid[1])


def patch_embedding_components(weight: torch.Tensor, k: int = 28
                               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Principal components of the patch-embedding filters (ViT Fig. 7 left): the D filters
    [D, C, P, P] as vectors, centred; returns (components [k, C, P, P], their share of the
    variance [k])."""
    rows = weight.detach().double().flatten(1)
    centred = rows - rows.mean(0, keepdim=True)
    _, singular, vectors = torch.linalg.svd(centred, full_matrices=False)
    k = min(k, vectors.shape[0])
    variance = singular ** 2
    return vectors[:k].reshape(k, *weight.shape[1:]), variance[:k] / variance.sum()


def rollout(attentions: Sequence[torch.Tensor], residual: Optional[float] = 0.5
            ) -> torch.Tensor:
    """Attention rollout (ViT Fig. 6, Abnar & Zuidema 2020): per block the head mean, with the
    identity mixed in at weight ``residual`` and rows renormalized (None or 0: the plain head
    mean, as the ViT text describes it), multiplied from the first block to the last: [B, N, N].
    Row 0 is the [CLS] token's; its patch columns are the map."""
    product = None
    for attention in attentions:  # [B, H, N, N]
        step = attention.mean(1)
        if residual:
            eye = torch.eye(step.shape[-1], device=step.device, dtype=step.dtype)
            step = residual * eye + (1 - residual) * step
            step = step / step.sum(-1, keepdim=True)
        product = step if product is None else step @ product
    if product is None:
        raise ValueError("rollout needs the attention of at least one block")
    return product
