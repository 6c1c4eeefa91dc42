"""``batch_size="auto"``: the largest extraction batch that fits the device, found by trying.

On a GPU, a batch of random images is reduced at every site (the extraction's own step, so its
peak memory is the real one) at a starting size that halves on each out-of-memory error; the
size that passes, less a tenth for the loader's pinned buffers and fragmentation, is used.
On a CPU memory is not the limit: a fixed size serves.
"""
from __future__ import annotations

from typing import Sequence, Union

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

CPU_BATCH = 64
START = 1024


def resolve_batch_size(value: Union[int, str], model: nn.Module, sites: Sequence[str],
                       precision: str = "fp32", start: int = START) -> int:
    """``value`` when it is a positive integer; for "auto", :func:`largest_batch`."""
    if value == "auto":
        return largest_batch(model, sites, precision, start)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VitclsError(f"batch_size must be a positive integer or 'auto', not {value!r}")
    return value


def largest_batch(model: nn.Module, sites: Sequence[str], precision: str = "fp32",
                  start: int = START) -> int:
    """The largest batch (from ``start``, halving) whose full extraction step fits."""
    from .site_reducer import SiteReducer

    device = next(model.parameters()).device
    if device.type != "cuda":
        return CPU_BATCH
    size = model.vitcls_info.variant.preprocess.output_size
    reducer = SiteReducer(model, sites, precision=precision)
    batch = start
    while batch >= 1:
        try:
            images = torch.zeros(batch, 3, *size, device=device)
            labels = torch.zeros(batch, dtype=torch.long, device=device)
            reducer(images, labels)
            del images, labels
            torch.cuda.empty_cache()
            return max(1, int(batch * 0.9))
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            batch //= 2
    raise VitclsError("not even one image fits on the device for extraction")
