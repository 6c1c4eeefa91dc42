"""Chapter 4: explanation maps from the class embedding space (catalogue E14), over chosen
images, over a dataset, and on the paper's own cases.

Maps score each image token (the prefix tokens are never scored):

- :func:`class_space_maps` (the paper's method): in each block b, the loss of the [CLS] token's
  class-space projection for the class of interest, and the gradient of that loss with respect
  to the attention [CLS] pays to each token, negated: g_b[h, j] = -dl_b/dA_b[h, 0, j]. The
  global map sums over blocks and heads. ``paper=True`` reproduces the authors' code: the loss
  is cross-entropy applied to a softmax (a double softmax, B12) of the projection of the
  *attention sub-layer* output; the default is the plain cross-entropy of the projection of the
  block's residual output, as the paper's text describes. Each block's gradient is one
  backward pass through that block's tail only, for the whole batch at once.
- :func:`rollout_maps` (Abnar & Zuidema 2020), :func:`gradient_rollout_maps` (Chefer et al.
  2021, the rule the authors compared against, B16), :func:`attention_maps` (raw last-block
  attention of [CLS]), and :func:`random_orders`.

Models without [CLS] read the mean attention row of all tokens instead of the [CLS] row.

How faithful a map's token order is, the perturbation test, is
:mod:`vitcls_utils.analysis.faithfulness`.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from .anatomy import rollout  # noqa: E402
from ..model.families import require  # noqa: E402
from ..model.hooks import hooks  # noqa: E402
from ..model.projection import ClassProjector  # noqa: E402
from ..model.layout import TokenLayout  # noqa: E402

METHODS = ("class_space", "gradient_rollout", "rollout", "attention")


def _query_row(pattern: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Attention paid by [CLS] (or, without [CLS], by the mean token): [..., N]."""
    return pattern[..., 0, :] if layout.has_cls else pattern.mean(-2)


def _forward_with_patterns(model: nn.Module, images: torch.Tensor, extra: Sequence[str] = ()):
    """Forward with every attention pattern replaced by a leaf that requires grad, so gradients
    with respect to each block's pattern can be taken. Returns (logits, patterns, captured)."""
    TokenLayout.of(model).require_prefix_throughout("an explanation map")
    patterns: List[torch.Tensor] = []
    captured: Dict[str, torch.Tensor] = {}

    def as_leaf(value: torch.Tensor, name: str) -> torch.Tensor:
        leaf = value.detach().requires_grad_(True)
        patterns.append(leaf)
        return leaf

    def keep(value: torch.Tensor, name: str) -> None:
        captured[name] = value

    names = [f"blocks.{b}.attn.hook_pattern" for b in range(len(model.blocks))]
    with torch.enable_grad(), hooks(model, [(names, as_leaf), (list(extra), keep)]):
        logits = model(images)
    return logits, patterns, captured


def class_space_maps(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                     paper: bool = False) -> torch.Tensor:
    """The paper's maps per block and head: [B, L, H, T] over the T image tokens.

    Args:
        classes: class of interest per image [B] (the true class for the perturbation test).
        paper: the authors' loss (double softmax on the attention sub-layer's projection).
    """
    require(model, "image_attention", "class-space explanation maps")  # not Swin's windows
    layout = TokenLayout.of(model)
    if not layout.has_cls and getattr(model, "attn_pool", None) is not None:
        raise VitclsError("explanation maps follow the gradient of the readout of the model's "
                          "own representation per block; an attention-pooled model (SigLIP's "
                          "'map' head) pools all tokens through its latent query, and the mean "
                          "token stands for no such representation")
    projector = ClassProjector(model).to(images.device)
    site = "hook_attn_out" if paper else "hook_resid_post"
    extra = [f"blocks.{b}.{site}" for b in range(len(model.blocks))]
    _, patterns, captured = _forward_with_patterns(model, images, extra)
    classes = classes.to(images.device)
    maps = []
    with torch.enable_grad():
        for block, pattern in enumerate(patterns):
            token = captured[extra[block]][:, 0] if layout.has_cls else \
                captured[extra[block]][:, layout.num_prefix:].mean(1)
            logits = projector(token)
            if paper:  # CrossEntropyLoss on probabilities: a second softmax (B12)
                logits = logits.softmax(-1)
            loss = F.cross_entropy(logits, classes, reduction="sum")  # images independent
            (grad,) = torch.autograd.grad(loss, pattern, retain_graph=True)
            maps.append(-_query_row(grad, layout)[..., layout.num_prefix:])
    return torch.stack(maps, dim=1).detach()


def attention_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Raw attention of [CLS] to the image tokens in the last block, mean over heads: [B, T]."""
    layout = TokenLayout.of(model)
    captured: List[torch.Tensor] = []
    name = f"blocks.{len(model.blocks) - 1}.attn.hook_pattern"
    with torch.no_grad(), hooks(model, [(name, lambda v, n: captured.append(v))]):
        model(images)
    return _query_row(captured[0].mean(1), layout)[:, layout.num_prefix:]


def rollout_maps(model: nn.Module, images: torch.Tensor, residual: Optional[float] = 0.5
                 ) -> torch.Tensor:
    """Attention rollout (:func:`vitcls_utils.analysis.anatomy.rollout`; Abnar & Zuidema's 0.5 A
    + 0.5 I by default) read at the [CLS] row: [B, T]."""
    layout = TokenLayout.of(model)
    patterns: List[torch.Tensor] = []
    names = [f"blocks.{b}.attn.hook_pattern" for b in range(len(model.blocks))]
    with torch.no_grad(), hooks(model, [(names, lambda v, n: patterns.append(v))]):
        model(images)
    return _query_row(rollout(patterns, residual), layout)[:, layout.num_prefix:]


def gradient_rollout_maps(model: nn.Module, images: torch.Tensor,
                          classes: torch.Tensor) -> torch.Tensor:
    """Chefer et al. 2021 (Transformer-MM-Explainability): R = I, then for every block
    R <- R + mean_h(clamp(dy_c/dA * A, min=0)) R, with y_c the model's logit of the class of
    interest; read at the [CLS] row: [B, T]."""
    layout = TokenLayout.of(model)
    logits, patterns, _ = _forward_with_patterns(model, images)
    target = logits.gather(1, classes.to(logits.device)[:, None]).sum()
    with torch.enable_grad():
        grads = torch.autograd.grad(target, patterns)
    n = patterns[0].shape[-1]
    relevance = torch.eye(n, device=images.device).expand(images.shape[0], n, n)
    for pattern, grad in zip(patterns, grads, strict=True):
        weighted = (grad * pattern.detach()).clamp(min=0).mean(1)
        relevance = relevance + weighted @ relevance
    return _query_row(relevance, layout)[:, layout.num_prefix:].detach()


def maps_for(method: str, model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
             paper: bool = False) -> torch.Tensor:
    """Global map [B, T] of one method; class_space sums over blocks and heads."""
    TokenLayout.of(model).require_prefix_throughout("an explanation map")
    if method == "class_space":
        return class_space_maps(model, images, classes, paper=paper).sum(dim=(1, 2))
    if method == "gradient_rollout":
        return gradient_rollout_maps(model, images, classes)
    if method == "rollout":
        return rollout_maps(model, images)
    if method == "attention":
        return attention_maps(model, images)
    raise VitclsError(f"unknown explanation method {method!r}; use one of {METHODS}")


def random_orders(n_tokens: int, seeds: Sequence[int]) -> List[np.ndarray]:
    """The paper's random baseline: one permutation of the image tokens per seed, the same for
    every image: ``torch.randperm`` after seeding with the seed, as the authors' code draws it."""
    return [torch.randperm(n_tokens, generator=torch.Generator().manual_seed(int(seed))).numpy()
            for seed in seeds]


def upsample(token_map: torch.Tensor, grid, size) -> torch.Tensor:
    """Token scores [B, T] -> [B, H, W] on the image, bilinear, through the variant's grid."""
    return F.interpolate(token_map.reshape(-1, 1, *grid).float(), size=tuple(size),
                         mode="bilinear", align_corners=False)[:, 0]


# ----------------------------------------------------------------------------------------------
# Over a dataset
# ----------------------------------------------------------------------------------------------
def stimulus_batches(model: nn.Module, dataset, batch_size: int = 64):
    """A loader for :func:`faithfulness_curve`: (images, labels, positions) batches of the
    readable stimuli, preprocessed the variant's way."""
    from ..datasets.kinds import UNREADABLE
    from ..stores.stimulus_loader import stimulus_loader

    preprocess = model.vitcls_info.variant.preprocess
    layout = TokenLayout.of(model)

    def batches():
        loader = stimulus_loader(dataset, preprocess, layout, batch_size, num_workers=0)
        start = 0
        for batch in loader:
            positions = np.arange(start, start + len(batch["label"]))
            start += len(batch["label"])
            ok = (batch["status"] != UNREADABLE).numpy()
            yield batch["image"][ok], batch["label"][ok], positions[ok]

    return batches


def dataset_maps(method: str, model: nn.Module, dataset, batch_size: int = 64,
                 paper: bool = True) -> np.ndarray:
    """Global maps of every stimulus for its true class: [I, T] (unreadable images: zeros)."""
    device = next(model.parameters()).device
    out = np.zeros((len(dataset), TokenLayout.of(model).n_tokens
                    - TokenLayout.of(model).num_prefix), dtype=np.float32)
    for images, labels, positions in stimulus_batches(model, dataset, batch_size)():
        if len(labels):
            out[positions] = maps_for(method, model, images.to(device), labels.to(device),
                                      paper=paper).cpu().numpy()
    return out


def orders_from_maps(maps: np.ndarray) -> np.ndarray:
    """Image tokens by score, highest first: [I, T]."""
    return np.argsort(-maps, axis=1, kind="stable")


def mass_on_object(maps: np.ndarray, token_class: np.ndarray, num_prefix: int) -> Dict:
    """How much of each map's positive mass falls on class-labeled tokens, beside the share of
    tokens that are class-labeled (what a map with no information would give); images without
    a mask are left out. The means (fractions) come with each image's values,
    ``mass_images`` and ``share_images`` ([images with a mask] arrays), for intervals."""
    labels = token_class[:, num_prefix:]
    has_mask = labels.max(axis=1) >= 0
    positive = np.clip(maps[has_mask], 0, None)
    on_object = labels[has_mask] == 1
    share = (positive * on_object).sum(1) / np.maximum(positive.sum(1), 1e-12)
    tokens = on_object.mean(1)
    return {"map mass on the object": float(share.mean()),
            "object share of tokens": float(tokens.mean()),
            "mass_images": share.astype(np.float64), "share_images": tokens}

def explain_images(model: nn.Module, images: Sequence, classes: Sequence[int],
                   methods: Sequence[str] = ("class_space", "gradient_rollout", "rollout"),
                   paper: bool = True):
    """Maps of chosen PIL images for chosen classes (one class per image).

    Args:
        model: a loaded timm ViT (with ``vitcls_info``) with its prefix tokens in every block.
        images: K PIL images.
        classes: the class of interest of each image, K ints.
        methods: map methods, among :data:`METHODS`.
        paper: the authors' class-space loss (double softmax on the attention sub-layer, B12).

    Returns:
        (views, maps): the images as the model sees them (resize and crop, uint8 arrays), and
        method -> upsampled maps [K, H, W] on those views; ``maps["class_space_blocks"]`` holds
        the per-block maps (summed over heads) of the class-space method, [K, L, H, W].
    """
    preprocess = model.vitcls_info.variant.preprocess
    layout = TokenLayout.of(model)
    device = next(model.parameters()).device
    batch = torch.stack([preprocess(image) for image in images]).to(device)
    targets = torch.as_tensor(list(classes), device=device)
    size = batch.shape[-2:]
    views = [np.asarray(preprocess.geometry(image.convert("RGB"))) for image in images]
    maps = {method: upsample(maps_for(method, model, batch, targets, paper=paper).cpu(),
                             layout.grid, size).numpy() for method in methods}
    if "class_space" in methods:
        per_block = class_space_maps(model, batch, targets, paper=paper).sum(2).cpu()  # [K,L,T]
        k, blocks = per_block.shape[:2]
        maps["class_space_blocks"] = upsample(per_block.reshape(k * blocks, -1), layout.grid,
                                              size).reshape(k, blocks, *size).numpy()
    return views, maps


def head_maps(model: nn.Module, images: Sequence, classes: Sequence[int], block: int, head: int,
              paper: bool = True) -> np.ndarray:
    """Fig 5a: the class-space map of one block and head (not summed over heads) for chosen PIL
    images and classes, upsampled onto the views of :func:`explain_images`: [K, H, W]."""
    preprocess = model.vitcls_info.variant.preprocess
    layout = TokenLayout.of(model)
    device = next(model.parameters()).device
    batch = torch.stack([preprocess(image) for image in images]).to(device)
    targets = torch.as_tensor(list(classes), device=device)
    chosen = class_space_maps(model, batch, targets, paper=paper)[:, block, head].cpu()
    return upsample(chosen, layout.grid, batch.shape[-2:]).numpy()


# ----------------------------------------------------------------------------------------------
# Attention rollout with and without the residual step (ViT Fig. 6 and 14)
# ----------------------------------------------------------------------------------------------
def rollout_label(residual: Optional[float]) -> str:
    """How a rollout is named in figures and tables."""
    if not residual:
        return "rollout, heads' mean only (ViT text)"
    return f"rollout, {residual:g}·I + {1 - residual:g}·A (Abnar & Zuidema)"


def rollout_views(model: nn.Module, images: Sequence,
                  residuals: Sequence[Optional[float]] = (0.5, None)):
    """Rollout maps of chosen PIL images, one per residual weight, upsampled onto the images as
    the model sees them.

    Args:
        model: a loaded timm ViT (with ``vitcls_info``).
        images: K PIL images.
        residuals: identity weights of the rollout step (None: the heads' mean only).

    Returns:
        (views, maps): the K images as the model sees them (uint8 arrays [H, W, 3]), and
        {:func:`rollout_label` of each residual: rollout maps [K, H, W] float32}.
    """
    preprocess = model.vitcls_info.variant.preprocess
    layout = TokenLayout.of(model)
    device = next(model.parameters()).device
    batch = torch.stack([preprocess(image) for image in images]).to(device)
    views = [np.asarray(preprocess.geometry(image.convert("RGB"))) for image in images]
    maps = {rollout_label(r): upsample(rollout_maps(model, batch, r).cpu(), layout.grid,
                                       batch.shape[-2:]).numpy() for r in residuals}
    return views, maps


def rollout_object_mass(model: nn.Module, dataset,
                        residuals: Sequence[Optional[float]] = (0.5, None),
                        batch_size: int = 32) -> Optional["pd.DataFrame"]:
    """How much of each rollout's mass falls on the object (:func:`mass_on_object`) over the
    stimuli, from the dataset's masks (no store, so models without a head too).

    Args:
        model: a loaded timm ViT (with ``vitcls_info``).
        dataset: the stimuli; unreadable ones are skipped, and so are images without a mask.
        residuals: identity weights of the rollout step (None: the heads' mean only).
        batch_size: images per forward pass.

    Returns:
        DataFrame, a row per residual: ``rollout`` (:func:`rollout_label`), ``map mass on
        the object`` and ``object share of tokens`` (fractions), each image's in
        ``mass_images`` and ``share_images``; None for a dataset without masks.
    """
    import pandas as pd

    from ..datasets.kinds import UNREADABLE
    from ..stores.stimulus_loader import stimulus_loader

    if not dataset.has_masks:
        return None
    layout = TokenLayout.of(model)
    device = next(model.parameters()).device
    maps: Dict[Optional[float], List[np.ndarray]] = {r: [] for r in residuals}
    labels = []
    loader = stimulus_loader(dataset, model.vitcls_info.variant.preprocess, layout, batch_size,
                             device=device)
    for batch in loader:
        ok = batch["status"] != UNREADABLE
        if not ok.any():
            continue
        images = batch["image"][ok].to(device)
        for r in residuals:
            maps[r].append(rollout_maps(model, images, r).cpu().numpy())
        labels.append(batch["token_class"][ok].numpy())
    token_class = np.concatenate(labels)
    rows = [{"rollout": rollout_label(r), **mass_on_object(np.concatenate(maps[r]), token_class,
                                                            layout.num_prefix)}
            for r in residuals]
    return pd.DataFrame(rows)
