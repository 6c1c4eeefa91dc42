"""On-device reduction: one batch forward with hooks that project every token of every site
onto class space and keep only rank, top-1 and true-class logit (and the top key indices), so
that nothing larger than these leaves the device. Under token removal, the images of a batch
are grouped by kept length and put back at full width."""
from __future__ import annotations

import contextlib
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ..base.errors import VitclsError
from ..model.families import blocks_of
from ..model.hooks import hooks
from ..model.layout import TokenLayout
from ..model.perturbations import (AttentionPerturbation, TokenRemoval, group_by_length,
                                   keeping_tokens)
from ..model.projection import ClassProjector, reduce_logits
from .format import IMAGE_ARRAYS, KEY_ARRAYS, REMOVED, TOKEN_ARRAYS

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise VitclsError(f"precision must be one of {PRECISIONS}, not {precision!r}")


class SiteReducer:
    """Forward a batch with hooks that project every site and keep only the reductions.

    Calling it returns, on the model's device, ``rank``/``top1`` int16 and ``true_logit``
    float32 of shape [B, S, N] in ``sites`` order, and ``pred`` int16 [B], the model's own
    top-1. A site without the prefix tokens (a ConViT before its [CLS] joins) has its prefix
    columns filled as removed (rank and top-1 -1, logit NaN). The hooks exist only during the
    call, so the model stays clean in between.
    """

    def __init__(self, model: nn.Module, sites: Sequence[str], precision: str = "fp32",
                 perturbation: Optional[AttentionPerturbation] = None,
                 key_topk: int = 0) -> None:
        check_precision(precision)
        self.model = model
        self.key_topk = key_topk
        self.n_blocks = len(blocks_of(model))  # key arrays: every block (not on a Swin)
        self.perturbation_hooks = [] if perturbation is None else perturbation.fwd_hooks(model)
        self.sites = list(sites)
        self.device = next(model.parameters()).device
        self.projector = ClassProjector(model).to(self.device)
        self.layout = TokenLayout.of(model)
        self._width = self.layout.n_tokens
        self.index = {name: i for i, name in enumerate(self.sites)}
        self.precision = precision
        self._buffers: Dict[str, torch.Tensor] = {}
        self._labels: Optional[torch.Tensor] = None

    def _offset(self, value: torch.Tensor, name: str) -> int:
        """Columns before ``value``'s first token: the prefix a site lacks (a ConViT before
        its [CLS] joins), else 0."""
        offset = self._width - value.shape[1]
        if offset not in (0, self.layout.num_prefix):
            raise VitclsError(f"{name} has {value.shape[1]} tokens; the store holds "
                              f"{self._width}")
        return offset

    def _put(self, key: str, row, value: torch.Tensor, tensor: torch.Tensor, name: str,
             depth: int) -> None:
        """``tensor`` [B, T, ...] into ``key``'s buffer at ``row``, absent prefix filled."""
        buffer = self._buffers.get(key)
        if buffer is None:
            shape = (value.shape[0], depth, self._width) + tuple(tensor.shape[2:])
            buffer = self._buffers[key] = torch.empty(shape, dtype=tensor.dtype,
                                                      device=self.device)
        offset = self._offset(value, name)
        if offset:
            buffer[:, row, :offset] = REMOVED[key]
        buffer[:, row, offset:] = tensor

    def _reduce(self, value: torch.Tensor, name: str) -> None:
        reduced = reduce_logits(self.projector(value), self._labels)
        for key, tensor in reduced.items():
            self._put(key, self.index[name], value, tensor, name, len(self.sites))
        return None

    def _top_keys(self, value: torch.Tensor, name: str) -> None:
        """Indices of the ``key_topk`` largest (signed) coefficients of every token."""
        array = "key_mlp" if name.endswith("mlp.hook_pre") else "key_attn"
        coefficients = value.flatten(2)  # hook_z [B, N, H, dh] -> [B, N, d], head-major
        top = coefficients.topk(self.key_topk, dim=-1).indices.to(torch.int16)
        self._put(array, int(name.split(".")[1]), value, top, name, self.n_blocks)
        return None

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, labels: torch.Tensor,
                 kept: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        """Reductions of one batch; with ``kept`` [B, K] the model runs on those tokens only
        and the token arrays are [B, S, K]."""
        self._labels = labels.to(self.device)
        self._buffers = {}
        self._width = self.layout.n_tokens if kept is None else int(kept.shape[1])
        with contextlib.ExitStack() as stack:
            if kept is not None:
                stack.enter_context(keeping_tokens(self.model, kept))
            # perturbation hooks first: the reducing hooks then read the edited values
            reducing = [(self.sites, self._reduce)]
            if self.key_topk:
                reducing.append(([f"blocks.{b}.{kind}" for b in range(self.n_blocks)
                                  for kind in KEY_ARRAYS.values()], self._top_keys))
            stack.enter_context(hooks(self.model, self.perturbation_hooks + reducing))
            stack.enter_context(torch.autocast(device_type=self.device.type,
                                               dtype=torch.bfloat16,
                                               enabled=self.precision == "bf16"))
            logits = self.model(images.to(self.device, non_blocking=True))
        out = dict(self._buffers)
        out["pred"] = logits.float().argmax(-1).to(torch.int16)
        return out



def reduce_removed(reducer: SiteReducer, batch: dict, removal: TokenRemoval,
                    layout: TokenLayout, batch_size: int) -> Dict[str, np.ndarray]:
    """One loader batch under token removal: images grouped by kept length, each group run on
    its kept tokens, the results put back at full width (removed tokens filled)."""
    n_images, n_sites = len(batch["label"]), len(reducer.sites)
    out = {key: np.full((n_images, n_sites, layout.n_tokens), REMOVED[key], dtype=dtype)
           for key, dtype in TOKEN_ARRAYS.items()}
    if reducer.key_topk:
        shape = (n_images, reducer.n_blocks, layout.n_tokens, reducer.key_topk)
        out.update({key: np.full(shape, REMOVED[key], dtype=np.int16) for key in KEY_ARRAYS})
    out["pred"] = np.full(n_images, -1, dtype=IMAGE_ARRAYS["pred"])
    labels = batch[removal.label_array].numpy() if removal.needs_masks else None
    kept = [removal.kept(layout, None if labels is None else labels[i]) for i in range(n_images)]
    runnable = [i for i in range(n_images) if kept[i] is not None]
    for group in group_by_length([len(kept[i]) for i in runnable], batch_size):
        members = [runnable[g] for g in group]
        index = torch.from_numpy(np.stack([kept[i] for i in members]))
        reduced = reducer(batch["image"][members], batch["label"][members], kept=index)
        for key, tensor in reduced.items():
            values = tensor.cpu().numpy()
            for row, image in enumerate(members):
                if key == "pred":
                    out[key][image] = values[row]
                else:  # [S or L, K, ...] -> the kept positions of [S or L, N, ...]
                    out[key][image][:, kept[image]] = values[row]
    return out
