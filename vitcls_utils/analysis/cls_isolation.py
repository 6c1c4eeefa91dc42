"""Ghiasi et al.'s "isolating CLS" and "drop patches after block L" (chapter 6, catalogue G4),
as attention-pattern interventions on the unmodified model.

Running blocks 1..L separately on [CLS] and on the patches is the same as letting [CLS] attend
only to itself and the patches only to each other in those blocks: a softmax over a subset of
keys is the full softmax with the other keys set to zero and the rest renormalised, and the
norms and the MLP act on each token alone. So isolation is one hook at ``attn.hook_pattern`` of
blocks 1..L; "drop patches after L" is [CLS] attending only to itself in blocks L+1..depth (the
patches it no longer sees still run, but nothing reads them). Weights and code are untouched.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence

import pandas as pd

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..stores.stimulus_loader import labelled_batches  # noqa: E402
from ..model.projection import top1_top5  # noqa: E402
from ..model.layout import TokenLayout  # noqa: E402

#: the two interventions: [CLS] kept apart up to block L, or left alone after block L
MODES = ("isolate", "drop")


def isolate_pattern(pattern: torch.Tensor) -> torch.Tensor:
    """[B, H, N, N] attention with token 0 ([CLS]) attending only to itself and every other
    token attending only to tokens 1.. (renormalised): blocks run on [CLS] and patches apart."""
    out = torch.zeros_like(pattern)
    out[..., 0, 0] = 1.0
    rest = pattern[..., 1:, 1:]
    out[..., 1:, 1:] = rest / rest.sum(-1, keepdim=True)
    return out


def cls_alone_pattern(pattern: torch.Tensor) -> torch.Tensor:
    """[CLS] attends only to itself; the other rows as they were (their values are not read)."""
    out = pattern.clone()
    out[..., 0, :] = 0.0
    out[..., 0, 0] = 1.0
    return out


def _check(model: nn.Module, L: int, changes_blocks: bool = True) -> int:
    """The model's depth, after checking that L is a block count and, when the intervention
    changes any block, that the model has [CLS] and nothing else before its patches."""
    depth = len(model.blocks)
    if isinstance(L, bool) or not 0 <= int(L) <= depth:
        raise VitclsError(f"L must be a block count in 0..{depth}, not {L!r}")
    if not changes_blocks:
        return depth
    layout = TokenLayout.of(model)
    if not layout.has_cls:
        raise VitclsError("CLS isolation needs a [CLS] token; this model pools its image tokens "
                          "(a GAP model) and has none")
    if layout.num_prefix != 1:
        raise VitclsError(f"CLS isolation is defined for [CLS] + patches; this model has "
                          f"{layout.num_prefix} prefix tokens")
    return depth


def intervention_hooks(model: nn.Module, L: int, mode: str = "isolate") -> list:
    """The (sites, hook) pairs of :func:`vitcls_utils.model.hooks.hooks` for ``mode`` at ``L``:
    "isolate" changes blocks 1..L, "drop" blocks L+1..depth; none (the natural model, which
    any layout has) for isolate at L = 0 and drop at L = depth."""
    depth = _check(model, L, changes_blocks=False)
    if mode == "isolate":
        blocks, edit = range(L), isolate_pattern
    elif mode == "drop":
        blocks, edit = range(L, depth), cls_alone_pattern
    else:
        raise VitclsError(f"mode must be one of {MODES}, not {mode!r}")
    if not blocks:
        return []
    _check(model, L)
    sites = [f"blocks.{b}.attn.hook_pattern" for b in blocks]
    return [(sites, lambda value, name: edit(value))]


@contextmanager
def intervened(model: nn.Module, L: int, mode: str = "isolate") -> Iterator[nn.Module]:
    """The model with [CLS] isolated up to block ``L`` (or alone after it) inside the block."""
    from ..model.hooks import hooks

    with hooks(model, intervention_hooks(model, L, mode)):
        yield model


def split_forward(model: nn.Module, images: torch.Tensor, L: int) -> torch.Tensor:
    """Ghiasi et al.'s code path written out: blocks 1..L on [CLS] and on the patches as two
    separate sequences, then together; the logits of token 0. The reference for tests."""
    x = model.norm_pre(model._pos_embed(model.patch_embed(images)))
    cls, patches = x[:, :1], x[:, 1:]
    for block in model.blocks[:L]:
        cls, patches = block(cls), block(patches)
    x = torch.cat([cls, patches], 1)
    for block in model.blocks[L:]:
        x = block(x)
    return model.forward_head(model.norm(x))


def sweep(model: nn.Module, dataset, Ls: Optional[Sequence[int]] = None,
          modes: Sequence[str] = MODES, batch_size: int = 64,
          progress: bool = True) -> pd.DataFrame:
    """Top-1 and top-5 (%) of the model's output with [CLS] isolated up to L and with the
    patches dropped after L, for every L (default 0..depth); one pass over the data per batch,
    every (mode, L) forwarded on it. L = 0 isolated is the natural model; so is L = depth
    dropped.

    Args:
        model: a loaded timm ViT with [CLS] and no other prefix token (for the L that change
            blocks).
        dataset: the labelled stimuli; unreadable ones are skipped.
        Ls: the block counts L to test, each in 0..depth; None: all of them.
        modes: which interventions, among "isolate" and "drop".
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        DataFrame, a row per (mode, L): ``mode``, ``L``, ``top1`` and ``top5`` (accuracy, %),
        ``images`` (how many they are over) and ``top1_images`` (an [images] array, 100 where
        the image is classified right, else 0: the same images in the same order every row).

    Raises:
        VitclsError: for an L or mode that cannot run, or when no image is readable.
    """
    depth = len(model.blocks)
    Ls = list(range(depth + 1)) if Ls is None else [int(v) for v in Ls]
    for mode in modes:
        for L in Ls:
            intervention_hooks(model, L, mode)  # refuses what cannot run, before any work
    hits: Dict[tuple, List[torch.Tensor]] = {(m, L): [] for m in modes for L in Ls}
    with torch.no_grad():
        for images, labels in labelled_batches(model, dataset, batch_size, "isolation",
                                                progress):
            for mode in modes:
                for L in Ls:
                    with intervened(model, L, mode):
                        logits = model(images)
                    hits[(mode, L)].append(top1_top5(logits, labels).cpu())
    rows = []
    for (mode, L), parts in hits.items():
        if not parts:
            raise VitclsError("no readable image in the dataset")
        hit = torch.cat(parts)
        mean = 100 * hit.mean(0)
        rows.append({"mode": mode, "L": L, "top1": float(mean[0]), "top5": float(mean[1]),
                     "images": len(hit), "top1_images": 100 * hit[:, 0].double().numpy()})
    return pd.DataFrame(rows)


def identifiability_by_block(model: nn.Module, dataset, Ls: Sequence[int],
                             mode: str = "isolate", batch_size: int = 32,
                             progress: bool = True) -> pd.DataFrame:
    """For each L: per block, the class identifiability (1 - rank / C) and top-1 rate of [CLS]
    and of the image tokens, read through the class projection under the intervention (L = 0,
    "isolate": the natural model, the main paper's curves).

    Args:
        model: a loaded timm ViT (with [CLS] for the L that change blocks).
        dataset: the labelled stimuli; unreadable ones are skipped.
        Ls: the block counts L to run, each in 0..depth.
        mode: "isolate" ([CLS] apart in blocks 1..L) or "drop" (alone after L).
        batch_size: images per forward pass.
        progress: show a progress bar.

    Returns:
        DataFrame, a row per (L, block): ``L``, ``block`` (1-based), ``cls_identifiability``
        and ``image_identifiability`` (mean 1 - rank/C, in [0, 1]), ``cls_top1`` and
        ``image_top1`` (%), each with its ``..._images`` array (every L reads the same images
        in the same order, so two L's values pair over images).
    """
    from .block_readout import readout_for
    from ..model.hooks import hooks

    for L in Ls:
        intervention_hooks(model, L, mode)  # refuses what cannot run, before any work
    depth = len(model.blocks)
    readout = readout_for(model)
    sites = [f"blocks.{b}.hook_resid_post" for b in range(depth)]
    rows: Dict[int, torch.Tensor] = {}

    def keep(value: torch.Tensor, name: str) -> None:
        rows[int(name.split(".")[1])] = value

    with torch.no_grad(), hooks(model, [(sites, keep)]):
        for images, labels in labelled_batches(model, dataset, batch_size, "identifiability",
                                               progress):
            for L in Ls:
                with intervened(model, L, mode):
                    model(images)
                for b in range(depth):
                    readout.add(int(L), b, rows[b], labels)
    return readout.frame("L")
