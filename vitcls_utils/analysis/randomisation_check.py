"""The model-parameter randomisation sanity check of explanation maps (MPRT, Adebayo et al.
2018; smooth MPRT, Hedström et al. 2023), for token-level maps (catalogue E17).

A map that explains *the model* must change when the model's parameters are replaced by random
ones; a map that does not (an edge detector, a fixed prior) explains the image, not the model.
Layers are randomised on a **copy** of the model (the original is never touched), either
cascading from the top (head, last block, ..., first block, patch embedding) or one at a time
(independent); after each step the map is recomputed and compared with the original by
Spearman's rank correlation and by SSIM on the token grid. Smooth MPRT averages each map over
noisy copies of the input first. Quantus was not used (it does not install cleanly beside the
project's pins: see :mod:`.faithfulness_suite`); the definitions are implemented here and
tested against hand computations.
"""
from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterator, List, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from .. import _compat
from ..base.errors import VitclsError
from ..base.uncertainty import bootstrap

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..model.layout import TokenLayout  # noqa: E402

MapFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
MODES = ("cascading", "independent")


def randomisable_layers(model: nn.Module) -> List[str]:
    """The layers MPRT randomises, top first.

    Args:
        model: a timm ViT.

    Returns:
        Module names: ``head`` (where it has parameters), ``blocks.L-1`` .. ``blocks.0``,
        ``patch_embed``.
    """
    names = [name for name in ("head",) if isinstance(getattr(model, name, None), nn.Module)
             and any(True for _ in getattr(model, name).parameters())]
    names += [f"blocks.{b}" for b in reversed(range(len(model.blocks)))]
    return names + ["patch_embed"]


def randomised_copy(model: nn.Module, layers: Sequence[str], seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` whose ``layers`` hold random parameters: each tensor drawn from
    N(0, s^2), s its own standard deviation (0.02 where that is 0, e.g. a LayerNorm's ones).
    The original model is not modified."""
    clone = copy.deepcopy(model)
    _randomise(clone, layers, seed)
    return clone


def _randomise(clone: nn.Module, layers: Sequence[str], seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in layers:
            for parameter in clone.get_submodule(name).parameters():
                spread = float(parameter.float().std()) if parameter.numel() > 1 else 0.0
                spread = spread if spread > 0 else 0.02
                draw = torch.randn(parameter.shape, generator=generator) * spread
                parameter.copy_(draw.to(parameter.dtype))


@contextmanager
def _randomised(clone: nn.Module, layers: Sequence[str], seed: int) -> Iterator[nn.Module]:
    """``clone`` with ``layers`` randomised as by :func:`randomised_copy`, put back as it was
    afterwards: one copy of the model serves every step (a deep copy per step cost more than
    the maps on a small model)."""
    saved = [(p, p.detach().clone()) for name in layers
             for p in clone.get_submodule(name).parameters()]
    _randomise(clone, layers, seed)
    try:
        yield clone
    finally:
        with torch.no_grad():
            for parameter, value in saved:
                parameter.copy_(value)


def gradient_map(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The plain gradient map: |d logit_target / d pixel| summed over channels and over each
    token's patch: [B, T]."""
    grid = TokenLayout.of(model).grid
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        target = logits.gather(1, labels.to(logits.device)[:, None]).sum()
        (grad,) = torch.autograd.grad(target, x)
    saliency = grad.abs().sum(1, keepdim=True)
    return torch.nn.functional.adaptive_avg_pool2d(saliency, grid).flatten(1).detach()


def smoothed(map_fn: MapFn, samples: int, noise_level: float = 0.1, seed: int = 0) -> MapFn:
    """Smooth MPRT's map: the mean of ``map_fn`` over ``samples`` noisy copies of the input
    (Gaussian, standard deviation ``noise_level`` x the batch's value range)."""
    def averaged(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        scale = noise_level * float(images.max() - images.min())
        total = 0
        for _ in range(samples):
            noise = torch.randn(images.shape, generator=generator).to(images)
            total = total + map_fn(model, images + scale * noise, labels)
        return total / samples
    return averaged


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per row, Spearman's rank correlation of two maps [I, T] (NaN where a map is constant:
    it has no ranking)."""
    ra = stats.rankdata(a, axis=1)
    rb = stats.rankdata(b, axis=1)
    ra, rb = ra - ra.mean(1, keepdims=True), rb - rb.mean(1, keepdims=True)
    denominator = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (ra * rb).sum(1) / denominator, np.nan)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) of two 2-d maps, each min-max scaled to [0, 1]
    first (data range 1): uniform window of ``window`` (or the largest odd size the grid
    allows), sample covariances, K1 = 0.01, K2 = 0.03, averaged over the windows inside."""
    a, b = (_unit(np.asarray(m, dtype=np.float64)) for m in (a, b))
    size = min(window, *(s if s % 2 else s - 1 for s in a.shape))
    if size < 1:
        raise VitclsError(f"SSIM needs a map of at least 1x1 tokens, got {a.shape}")
    n = size * size
    norm = n / (n - 1) if n > 1 else 1.0
    mean = [ndimage.uniform_filter(m, size) for m in (a, b, a * a, b * b, a * b)]
    ux, uy = mean[0], mean[1]
    vx, vy, vxy = (norm * (mean[2] - ux * ux), norm * (mean[3] - uy * uy),
                   norm * (mean[4] - ux * uy))
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    pad = (size - 1) // 2
    inside = s[pad:s.shape[0] - pad, pad:s.shape[1] - pad]
    return float(inside.mean())


def _unit(m: np.ndarray) -> np.ndarray:
    span = m.max() - m.min()
    return (m - m.min()) / span if span > 0 else np.zeros_like(m)


def mprt(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, map_fn: MapFn,
         mode: str = "cascading", seed: int = 0, layers: Sequence[str] | None = None
         ) -> pd.DataFrame:
    """The randomisation check of one map method.

    Args:
        model: a timm ViT (never modified: each step randomises a copy).
        images: [I, 3, H, W] preprocessed; labels: [I] classes the maps explain.
        map_fn: (model, images, labels) -> token maps [I, T] (e.g. :func:`gradient_map`, or
            :func:`smoothed` of one for smooth MPRT).
        mode: ``cascading`` (layers randomised cumulatively, top first) or ``independent``
            (one layer at a time).
        seed: the random parameters' seed; layers: default :func:`randomisable_layers`.

    Returns:
        DataFrame, a row per (step, image): ``step`` (1-based), ``layer`` (the layer this step
        randomised), ``image``, ``spearman`` and ``ssim`` (the map against the original's).
    """
    if mode not in MODES:
        raise VitclsError(f"MPRT mode must be one of {MODES}, not {mode!r}")
    layers = list(layers or randomisable_layers(model))
    grid = TokenLayout.of(model).grid
    original = map_fn(model, images, labels).detach().cpu().double().numpy()
    rows, clone = [], copy.deepcopy(model)
    for step, layer in enumerate(layers, start=1):
        chosen = layers[:step] if mode == "cascading" else [layer]
        with _randomised(clone, chosen, seed + step):
            after = map_fn(clone, images, labels).detach().cpu().double().numpy()
        similarity = spearman(original, after)
        structure = [ssim(o.reshape(grid), a.reshape(grid)) for o, a in zip(original, after,
                                                                            strict=True)]
        rows.append(pd.DataFrame({"step": step, "layer": layer, "image": np.arange(len(after)),
                                  "spearman": similarity, "ssim": structure}))
    return pd.concat(rows, ignore_index=True)


#: a map passes when, with every layer randomised, its mean similarity's CI lies below this
PASS_BELOW = 0.5


def mprt_verdict(results: pd.DataFrame, measure: str = "spearman", seed: int = 0,
                 threshold: float = PASS_BELOW) -> dict:
    """Whether a map passes the check: the 95% interval (bootstrap over images) of its mean
    similarity at the last step (every layer randomised, when cascading) lies wholly below
    ``threshold``.

    Args:
        results: :func:`mprt`'s frame; measure: ``spearman`` or ``ssim``.
        seed: the bootstrap's seed; threshold: the similarity a faithful map falls below.

    Returns:
        {"interval": :class:`~vitcls_utils.base.uncertainty.Interval`, "passes": bool}.
    """
    last = results[results.step == results.step.max()][measure].to_numpy()
    interval = bootstrap(last, seed=seed)
    return {"interval": interval, "passes": bool(interval.n and interval.high < threshold)}
