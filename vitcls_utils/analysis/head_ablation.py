"""Causal checks of the class-writing heads (chapter 8): mean- and resample-ablation of
attention heads, by forward hooks on ``attn.hook_z`` (the per-head A·V before the output
projection), never by editing weights.

- **mean**: a head's output at every position is replaced by its mean over a reference set of
  images (position by position), :func:`reference_means`.
- **resample**: a head's output is replaced by the same head's output on another image of the
  reference set (a seeded donor per image, read in a clean forward).

Because the output projection is linear, mean-ablating every head of a block is the block with
its attention output replaced by the reference mean of that output (the tests check this by
hand). Effects are per image: the drop in the true-class logit and in top-1 (1 when the model
was right and is no longer), with bootstrap intervals over images (``base/uncertainty``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from .. import _compat
from ..base.errors import VitclsError
from ..base.uncertainty import bootstrap
from ..model.hooks import capture, hooks

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

Head = Tuple[int, int]
MODES = ("mean", "resample")


def _z_sites(model: nn.Module) -> List[str]:
    return [f"blocks.{i}.attn.hook_z" for i in range(len(model.blocks))]


@torch.no_grad()
def reference_means(model: nn.Module, reference: torch.Tensor,
                    batch_size: int = 64) -> Dict[int, torch.Tensor]:
    """Mean per-head output of every block over the reference images.

    Args:
        model: an unmodified timm ViT (explicit attention).
        reference: preprocessed images [R, 3, H, W] on the model's device.
        batch_size: images per forward pass.

    Returns:
        {block: [N, H, d_head]} the mean of ``attn.hook_z`` over the reference images.
    """
    sums: Dict[int, torch.Tensor] = {}
    for start in range(0, len(reference), batch_size):
        with capture(model, _z_sites(model)) as cache:
            model(reference[start:start + batch_size])
        for i in range(len(model.blocks)):
            part = cache[f"blocks.{i}.attn.hook_z"].double().sum(0)
            sums[i] = part if i not in sums else sums[i] + part
    return {i: (s / len(reference)).float() for i, s in sums.items()}


@torch.no_grad()
def donor_outputs(model: nn.Module, donors: torch.Tensor) -> Dict[int, torch.Tensor]:
    """{block: [B, N, H, d_head]} the per-head outputs of ``donors`` in a clean forward."""
    with capture(model, _z_sites(model)) as cache:
        model(donors)
    return {i: cache[f"blocks.{i}.attn.hook_z"] for i in range(len(model.blocks))}


@contextmanager
def ablated(model: nn.Module, heads: Sequence[Head],
            replacement: Dict[int, torch.Tensor]) -> Iterator[nn.Module]:
    """Inside the ``with`` block, the given heads' outputs are replaced.

    Args:
        model: an unmodified timm ViT.
        heads: (block, head) pairs.
        replacement: {block: [N, H, d_head] (a mean) or [B, N, H, d_head] (donors)}, e.g. from
            :func:`reference_means` or :func:`donor_outputs`.

    Yields:
        The model, hooked; the hooks are removed on exit.
    """
    by_block: Dict[int, List[int]] = {}
    for block, head in heads:
        if not 0 <= block < len(model.blocks) or not 0 <= head < model.blocks[block].attn.num_heads:
            raise VitclsError(f"no head ({block}, {head}) in this model: blocks 0.."
                              f"{len(model.blocks) - 1}, heads 0.."
                              f"{model.blocks[0].attn.num_heads - 1}")
        by_block.setdefault(block, []).append(head)

    def make(block: int, chosen: List[int]):
        def replace(z: torch.Tensor, name: str) -> torch.Tensor:
            new = replacement[block].to(z.dtype).expand_as(z)
            z = z.clone()
            z[:, :, chosen] = new[:, :, chosen]
            return z
        return replace

    with hooks(model, [(f"blocks.{b}.attn.hook_z", make(b, hs))
                       for b, hs in by_block.items()]):
        yield model


@torch.no_grad()
def effects(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
            heads: Sequence[Head], mode: str, means: Optional[Dict[int, torch.Tensor]] = None,
            reference: Optional[torch.Tensor] = None, seed: int = 0) -> Dict[str, np.ndarray]:
    """Per-image effect of ablating ``heads``.

    Args:
        model: an unmodified timm ViT; images: [B, 3, H, W]; labels: [B].
        heads: (block, head) pairs ablated together.
        mode: ``mean`` (needs ``means``) or ``resample`` (needs ``reference`` images: a seeded
            donor per image, drawn from them with replacement).
        seed: the donors' seed.

    Returns:
        {"logit_drop": [B] clean minus ablated true-class logit, "top1_drop": [B] clean
        top-1 hit minus ablated top-1 hit (1, 0 or -1)}.
    """
    if mode not in MODES:
        raise VitclsError(f"ablation mode must be one of {MODES}, not {mode!r}")
    labels = labels.to(images.device).long()
    clean = model(images).float()
    if mode == "mean":
        if means is None:
            raise VitclsError("mean-ablation needs the reference means (reference_means)")
        replacement = means
    else:
        if reference is None:
            raise VitclsError("resample-ablation needs reference images to draw donors from")
        generator = torch.Generator().manual_seed(seed)
        pick = torch.randint(len(reference), (len(images),), generator=generator)
        replacement = donor_outputs(model, reference[pick.to(reference.device)])
    with ablated(model, heads, replacement):
        hurt = model(images).float()
    rows = torch.arange(len(labels), device=images.device)
    return {"logit_drop": (clean[rows, labels] - hurt[rows, labels]).cpu().numpy(),
            "top1_drop": ((clean.argmax(-1) == labels).float()
                          - (hurt.argmax(-1) == labels).float()).cpu().numpy()}


def random_heads(model: nn.Module, k: int, seed: int = 0,
                 exclude: Sequence[Head] = ()) -> List[Head]:
    """``k`` heads drawn without replacement (seeded), none of ``exclude``."""
    pool = [(b, h) for b, block in enumerate(model.blocks) for h in range(block.attn.num_heads)
            if (b, h) not in set(exclude)]
    if k > len(pool):
        raise VitclsError(f"{k} random heads asked, only {len(pool)} to draw from")
    order = np.random.default_rng(seed).permutation(len(pool))[:k]
    return [pool[i] for i in sorted(order)]


def ablation_table(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   top: Sequence[Head], reference: torch.Tensor, n_random: int = 3,
                   seed: int = 0) -> pd.DataFrame:
    """The top contributing heads against random heads of the same count, both modes.

    Args:
        model: an unmodified timm ViT; images, labels: the evaluated images [B, 3, H, W], [B].
        top: the heads under test (e.g. :func:`~.logit_decomposition.top_heads`).
        reference: images the means and donors come from (other than ``images``).
        n_random: how many random sets of ``len(top)`` heads (each a row).
        seed: seeds the random sets, the donors and the bootstrap.

    Returns:
        DataFrame, a row per (heads, mode): ``heads`` ("top k" or "random k #j"), ``mode``,
        ``members``, and the intervals ``logit_drop`` and ``top1_drop`` (:class:`Interval`).
    """
    means = reference_means(model, reference)
    sets = [(f"top {len(top)}", list(top))]
    sets += [(f"random {len(top)} #{j + 1}", random_heads(model, len(top), seed + j, top))
             for j in range(n_random)]
    rows = []
    for name, members in sets:
        for mode in MODES:
            found = effects(model, images, labels, members, mode, means, reference, seed)
            rows.append({"heads": name, "mode": mode, "members": members,
                         "logit_drop": bootstrap(found["logit_drop"], seed=seed),
                         "top1_drop": bootstrap(found["top1_drop"], seed=seed)})
    return pd.DataFrame(rows)


def block_curve(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                reference: torch.Tensor, seed: int = 0) -> pd.DataFrame:
    """Mean-ablation of every head of one block at a time.

    Args:
        model: an unmodified timm ViT; images, labels: [B, 3, H, W], [B].
        reference: the images the means come from.
        seed: the bootstrap's seed.

    Returns:
        DataFrame, a row per block (1-based ``block``): ``logit_drop`` and ``top1_drop``
        (:class:`Interval` over images).
    """
    means = reference_means(model, reference)
    rows = []
    for b, block in enumerate(model.blocks):
        heads = [(b, h) for h in range(block.attn.num_heads)]
        found = effects(model, images, labels, heads, "mean", means)
        rows.append({"block": b + 1, "logit_drop": bootstrap(found["logit_drop"], seed=seed),
                     "top1_drop": bootstrap(found["top1_drop"], seed=seed)})
    return pd.DataFrame(rows)


def last_hurting_block(curve: pd.DataFrame, column: str = "top1_drop") -> Optional[int]:
    """The last block whose ablation lowers ``column``'s measure, its interval above zero
    (after it, attention no longer carries what the class needs); None if none does.

    Args:
        curve: :func:`block_curve`'s table.
        column: ``top1_drop`` or ``logit_drop``.

    Returns:
        The 1-based block, or None.
    """
    hurt = [int(row.block) for row in curve.itertuples() if getattr(row, column).low > 0]
    return max(hurt) if hurt else None
