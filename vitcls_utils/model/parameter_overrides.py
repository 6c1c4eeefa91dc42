"""Parameter overrides for the length of a ``with`` block: the model runs with other values in
some of its parameters (ConViT's test-time masks: a zeroed position embedding, gates forced
open or shut), and gets its own parameter objects back on exit, untouched.

The original tensors are never written: each overridden parameter is swapped for a new one
and the original object is put back afterwards, also when the block raises, so the model's
weights are bit-identical after the analysis.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Dict, Iterator, Mapping

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402


def _owner(model: nn.Module, name: str):
    """(module, attribute) of the parameter ``name`` ("blocks.0.attn.gating_param")."""
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name) if module_name else model
    except AttributeError:
        module = None
    if module is None or not isinstance(module._parameters.get(attr), nn.Parameter):
        raise VitclsError(f"the model has no parameter {name!r}")
    return module, attr


@contextmanager
def overridden(model: nn.Module, values: Mapping[str, torch.Tensor]) -> Iterator[nn.Module]:
    """``model`` with ``values`` ({parameter name: tensor of its exact shape}) in place of those
    parameters inside the block; the original parameters are restored on exit."""
    saved: Dict[str, tuple] = {}
    try:
        for name, value in values.items():
            module, attr = _owner(model, name)
            original = module._parameters[attr]
            if tuple(value.shape) != tuple(original.shape):
                raise VitclsError(f"override of {name}: shape {tuple(value.shape)}, the "
                                  f"parameter's is {tuple(original.shape)}")
            saved[name] = (module, attr, original)
            module._parameters[attr] = nn.Parameter(
                value.detach().to(original.device, original.dtype).clone(), requires_grad=False)
        yield model
    finally:
        for module, attr, original in saved.values():
            module._parameters[attr] = original
