"""What chapter 4's faithfulness suite compares (catalogue E17): a sized sample of the
stimuli, and every map method's token maps on it (the class-space gradients, Chefer's
gradient rollout, attention rollout, the linear probes' maps, a random map), with the map
functions the randomisation check recomputes on randomised copies of the model."""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from .explanation_maps import maps_for, stimulus_batches  # noqa: E402
from .faithfulness_suite import random_maps  # noqa: E402
from .randomisation_check import MapFn, gradient_map  # noqa: E402
from ..model.layout import TokenLayout  # noqa: E402

#: the map methods the suite compares, in the order tables show them
SUITE_METHODS = ("class_space", "gradient_rollout", "rollout")


def sample_images(model: nn.Module, dataset, n_images: int, batch_size: int = 64
                  ) -> Tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """``n_images`` readable stimuli spread evenly over the dataset (so over its classes),
    preprocessed the variant's way.

    Args:
        model: a loaded timm ViT (with ``vitcls_info``); dataset: the stimuli.
        n_images: how many images (at least 2; all of them when the dataset has fewer).
        batch_size: images per loading batch.

    Returns:
        (images [n, 3, H, W], labels [n], positions [n]: their indices in the dataset).
    """
    if n_images < 2:
        raise VitclsError(f"the suite needs at least 2 images for an interval, not {n_images}")
    wanted = set(np.unique(np.linspace(0, len(dataset) - 1, n_images).round().astype(int)))
    images, labels, positions = [], [], []
    for batch, batch_labels, batch_positions in stimulus_batches(model, dataset, batch_size)():
        keep = np.isin(batch_positions, list(wanted))
        if keep.any():
            chosen = torch.from_numpy(keep)
            images.append(batch[chosen]), labels.append(batch_labels[chosen])
            positions.append(batch_positions[keep])
    if not images:
        raise VitclsError("no readable stimulus to run the faithfulness suite on")
    return torch.cat(images), torch.cat(labels), np.concatenate(positions)


def map_function(method: str, paper: bool = True, seed: int = 0) -> MapFn:
    """The map of ``method`` as a function of (model, images, labels) -> [B, T], for the
    randomisation check.

    Args:
        method: an explanation method (:data:`~.explanation_maps.METHODS`), ``gradient`` (the
            plain gradient of the target logit, the check's reference) or ``random`` (the
            random map, which ignores the model).
        paper: the authors' class-space loss (B12); seed: the random map's seed.

    Returns:
        A function (model, images [B, 3, H, W], labels [B]) -> token maps [B, T] on the CPU.
    """
    if method == "gradient":
        return gradient_map
    if method == "random":
        def draw(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(random_maps(len(images), TokenLayout.of(model).n_patches,
                                                seed))
        return draw

    def explain(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        device = next(model.parameters()).device
        return maps_for(method, model, images.to(device), labels.to(device), paper=paper).cpu()
    return explain


def method_maps(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                methods: Sequence[str] = SUITE_METHODS, paper: bool = True,
                extra: Optional[Dict[str, np.ndarray]] = None, seed: int = 0,
                batch_size: int = 32) -> Dict[str, np.ndarray]:
    """Every method's maps of the sampled images for their true class, then ``extra`` ones
    (the probe's), then the random map.

    Args:
        model: a loaded timm ViT; images [I, 3, H, W] and labels [I] from :func:`sample_images`.
        methods: explanation methods (:data:`~.explanation_maps.METHODS`).
        paper: the authors' class-space loss (B12); seed: the random map's seed.
        extra: further name -> [I, T] maps; batch_size: images per backward pass.

    Returns:
        dict name -> token maps [I, T] float64, ending with ``random``.
    """
    maps: Dict[str, np.ndarray] = {}
    for method in methods:
        function = map_function(method, paper)
        parts = [function(model, images[s:s + batch_size], labels[s:s + batch_size])
                 for s in range(0, len(images), batch_size)]
        maps[method] = torch.cat(parts).double().numpy()
    maps.update(extra or {})
    maps["random"] = random_maps(len(images), TokenLayout.of(model).n_patches, seed)
    return maps


def probe_maps(probe, positions: np.ndarray) -> np.ndarray:
    """The linear probes' maps of the sampled images: minus the sum over blocks of the
    residual probes' rank of the true class (the order E15's probe test uses, as scores).

    Args:
        probe: :func:`~vitcls_utils.analysis.probing.probe_results` on the stimuli, holding the
            ``resid_post`` sites; positions: the sampled images' dataset indices.

    Returns:
        [I, T] float64, higher = more important.
    """
    total = probe.by_block("rank", "resid_post")[:, :, probe.num_prefix:].astype(np.int64).sum(1)
    return -total[np.asarray(positions)].astype(np.float64)
