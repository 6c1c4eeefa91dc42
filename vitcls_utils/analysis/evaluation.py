"""Top-1 accuracy of a loaded model's own output on a dataset: what ``vitcls evaluate``
prints, and the check that a model and its weights read the stimuli as expected. Any model
with a class head, ViT or CNN; a model without one (an ImageNet-21k ViT, a CLIP tower) is
refused, as an argmax over its features would be a number without meaning."""
from __future__ import annotations

from typing import Dict, Optional, Union

from .. import _compat
from ..datasets.images import UNREADABLE
from ..datasets.interface import ImageDataset

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..base.errors import NoClassHeadError  # noqa: E402
from ..base.progress import with_progress  # noqa: E402
from ..model.loading import loaded_info  # noqa: E402
from ..model.projection import no_head_message  # noqa: E402
from ..stores.batch_size import resolve_batch_size  # noqa: E402
from ..stores.stimulus_loader import stimulus_loader  # noqa: E402


def evaluate(model: nn.Module, dataset: ImageDataset, batch_size: Union[int, str] = 64,
             num_workers: Optional[int] = None, progress: bool = True) -> Dict[str, float]:
    """Top-1 accuracy of the model's own output on the readable images of ``dataset``.

    Args:
        model: a model from :func:`vitcls_utils.model.loading.load_variant`.
        dataset: the stimuli.
        batch_size: images per forward, or "auto" (the largest that fits the GPU).
        num_workers: image-decoding workers (default: 0 on a CPU, up to 8 on a GPU).
        progress: show a progress bar.

    Returns:
        {"top1": fraction in [0, 1], "correct", "images" (readable), "unreadable"}.

    Raises:
        NoClassHeadError: the model has no class head.
    """
    info = loaded_info(model)
    if not info.variant.has_head:
        raise NoClassHeadError(no_head_message(info.variant.key))
    batch_size = resolve_batch_size(batch_size, model, [])
    device = next(model.parameters()).device
    loader = stimulus_loader(dataset, info.variant.preprocess, None, batch_size,
                             num_workers=num_workers, device=device)
    correct = readable = 0
    with torch.inference_mode():
        for batch in with_progress(loader, len(dataset), f"evaluate {info.variant.key}",
                                   progress):
            ok = batch["status"] != UNREADABLE
            pred = model(batch["image"].to(device)).argmax(-1).cpu()
            correct += int(((pred == batch["label"]) & ok).sum())
            readable += int(ok.sum())
    return {"top1": correct / max(readable, 1), "correct": correct, "images": readable,
            "unreadable": len(dataset) - readable}
