"""The stimulus loader: decoding and preprocessing images (with their token labels) in
DataLoader workers, shared by extraction, evaluation, maps, probes and perturbation curves."""
from __future__ import annotations

import os
import sys
from typing import Dict, Optional, Tuple

from .. import _compat
from ..base.errors import DamagedStoreError
from ..datasets.kinds import ImageDataset
from ..datasets.masks import token_labels, token_labels_paper
from ..datasets.preprocess import Preprocess
from ..base.progress import with_progress
from .stimulus_cache import lookup

_compat.ensure_torchvision_ops()

import torch  # noqa: E402

from ..model.layout import TokenLayout  # noqa: E402


class StimulusDataset(torch.utils.data.Dataset):
    """Stimuli ``start:stop`` decoded and preprocessed in the loader workers: a dict with the image
    tensor, label, status and, for datasets with masks and a token ``layout``, both token
    labelings (a ``layout`` of None: a CNN, or a pass that reads no tokens)."""

    def __init__(self, dataset: ImageDataset, preprocess: Preprocess,
                 layout: Optional[TokenLayout], start: int, stop: Optional[int] = None) -> None:
        self.dataset, self.preprocess, self.layout, self.start = dataset, preprocess, layout, start
        self.labels = dataset.labels
        self.stop = len(self.labels) if stop is None else min(stop, len(self.labels))
        self.cached = lookup(dataset, preprocess)
        self.masks = dataset.has_masks and layout is not None

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __getitem__(self, i: int) -> Dict[str, object]:
        index = self.start + i
        ids = category = None
        tensor, status = self._cached(index) if self.cached is not None else (None, None)
        if status is not None:  # decoded once (:mod:`vitcls_utils.stores.stimulus_cache`)
            if self.masks:
                ids, category = self.dataset.load_mask(index)
        else:
            if self.masks:
                image, status, ids, category = self.dataset.load_with_mask(index)
            else:
                image, status = self.dataset.load(index)
            tensor = None if image is None else self.preprocess(image)
        if tensor is None:
            tensor = torch.zeros((3,) + tuple(self.preprocess.output_size))
        out = {"image": tensor, "label": self.labels[index], "status": status}
        if self.masks:
            n = self.layout.n_tokens
            if ids is None or category is None:
                unknown = torch.full((n,), -1, dtype=torch.int8)
                out["token_class"] = out["token_class_paper"] = unknown
            else:
                grid, prefix = self.layout.grid, self.layout.num_prefix
                out["token_class"] = torch.from_numpy(
                    token_labels(ids, category, self.preprocess, grid, prefix))
                out["token_class_paper"] = torch.from_numpy(
                    token_labels_paper(ids, category, grid, prefix))
        return out

    def _cached(self, index: int) -> Tuple[Optional[torch.Tensor], Optional[int]]:
        """(tensor or None, status) of a cached stimulus; (None, None) when its row does not
        match its checksum, which is said, and the image is decoded instead."""
        try:
            pixels = self.cached.pixels(index)
        except DamagedStoreError as damage:
            print(f"vitcls: {damage}; decoding the image instead (`vitcls cache` rebuilds "
                  "the entry)", file=sys.stderr)
            return None, None
        return (None if pixels is None else self.preprocess.normalise(pixels),
                self.cached.status[index])


def stimulus_loader(dataset: ImageDataset, preprocess: Preprocess,
                    layout: Optional[TokenLayout],
                    batch_size: int, start: int = 0, num_workers: Optional[int] = None,
                    device: Optional[torch.device] = None,
                    stop: Optional[int] = None) -> torch.utils.data.DataLoader:
    """The one stimulus DataLoader: in dataset order from ``start`` (to ``stop``), decoding
    workers chosen for the device, pinned memory on CUDA."""
    device = device or torch.device("cpu")
    return torch.utils.data.DataLoader(
        StimulusDataset(dataset, preprocess, layout, start, stop), batch_size=batch_size,
        shuffle=False, num_workers=workers(num_workers, device),
        pin_memory=device.type == "cuda")


def labelled_batches(model, dataset: ImageDataset, batch_size: int, desc: str,
                     progress: bool = True, preprocess: Optional[Preprocess] = None):
    """(images, labels) of the readable stimuli on the model's device, preprocessed the
    variant's way (or by ``preprocess``), with a progress bar."""
    from ..datasets.kinds import UNREADABLE

    device = next(model.parameters()).device
    preprocess = preprocess or model.vitcls_info.variant.preprocess
    loader = stimulus_loader(dataset, preprocess, None, batch_size, device=device)
    for batch in with_progress(loader, len(dataset), desc, progress):
        ok = batch["status"] != UNREADABLE
        if ok.any():
            yield batch["image"][ok].to(device), batch["label"][ok].to(device)


def workers(num_workers: Optional[int], device: torch.device) -> int:
    """Image-decoding workers: as given, else 0 on CPU (the cores compute) and up to 8 on GPU."""
    if num_workers is not None:
        return num_workers
    return 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)


