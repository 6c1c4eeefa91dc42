"""Named sites of an unmodified timm ViT, read or replaced through removable forward hooks.

Site names follow TransformerLens: ``hook_embed`` (tokens after the position embedding) and,
per block ``i``, ``blocks.{i}.hook_resid_pre``, ``.attn.hook_pattern`` [B, H, N, N] (post-softmax),
``.attn.hook_z`` [B, N, H, d_head] (per-head A·V, the input of the out-projection),
``.hook_attn_out``, ``.hook_resid_mid``, ``.mlp.hook_pre`` (fc1 output, before GELU),
``.mlp.hook_post``, ``.hook_mlp_out`` and ``.hook_resid_post``.

``hook_attn_out`` and ``hook_mlp_out`` are exactly the tensors added to the residual stream:
after LayerScale in pre-norm blocks, and after ``norm1``/``norm2`` in residual post-norm blocks
(``vit_b16_gap``), so that resid_post = resid_pre + attn_out + mlp_out always holds. ConViT's
blocks have the same sites; ``attn.hook_pattern`` of a GPSA block is ``get_attention``'s mix
of content and positional attention, and the sites before its [CLS] joins (block
``local_up_to_layer``) have the patch tokens alone.

Which module carries each site is the block family's business
(:mod:`vitcls_utils.model.families`: ViT, residual post-norm, ConViT, BEiT, EVA); a block no
adapter knows is refused with its type named.

Every site can be replaced by a hook that returns a tensor, except ``hook_resid_mid``, which is
read-only (see :func:`hooks`).
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from .. import _compat
from ..base.errors import VitclsError
from ..base.sites import BLOCK_SITES, GLOBAL_SITES, site_kind

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from .families import blocks_of, head_shape, site_table  # noqa: E402

HookFn = Callable[[torch.Tensor, str], Optional[torch.Tensor]]
NameFilter = Union[str, Sequence[str], Callable[[str], bool]]

_BLOCK_NAME = re.compile(r"^blocks\.(\d+)\.(.+)$")


@dataclass(frozen=True)
class _Target:
    module: nn.Module
    use_input: bool  # forward pre-hook on the module's first positional input
    kind: str


def _resolve(model: nn.Module, name: str) -> _Target:
    if name == "hook_embed":  # Swin has no position dropout: its patch embedding
        embed = getattr(model, "pos_drop", None)
        return _Target(embed if embed is not None else model.patch_embed, use_input=False,
                       kind=name)
    match = _BLOCK_NAME.match(name)
    if not match or match.group(2) not in BLOCK_SITES:
        raise VitclsError(f"unknown site {name!r}; sites are {GLOBAL_SITES} and "
                          f"'blocks.<i>.<kind>' with kind in {BLOCK_SITES}")
    index, kind = int(match.group(1)), match.group(2)
    blocks = blocks_of(model)
    if not 0 <= index < len(blocks):
        raise VitclsError(f"site {name!r}: the model has blocks 0..{len(blocks) - 1}")
    block = blocks[index]
    table = site_table(block)
    module, use_input = table[kind]
    if kind == "attn.hook_pattern" and getattr(block.attn, "fused_attn", False):
        raise VitclsError(
            f"{name}: this model uses fused attention, which never materialises the pattern. "
            "Load it with vitcls_utils.load_variant, or call "
            "vitcls_utils.model.layout.disable_fused_attn(model) first."
        )
    return _Target(module, use_input, kind)


def site_names(model: nn.Module, kinds: Optional[Sequence[str]] = None) -> List[str]:
    """All site names of ``model`` in forward order, optionally only the given kinds.

    Kinds may be written with or without the ``hook_`` prefix (``"resid_post"``).
    """
    wanted = None if kinds is None else {site_kind(k) for k in kinds}
    names = [n for n in GLOBAL_SITES if wanted is None or n in wanted]
    for i in range(len(blocks_of(model))):
        names += [f"blocks.{i}.{k}" for k in BLOCK_SITES if wanted is None or k in wanted]
    return names


def block_sites(model: nn.Module, kinds: Sequence[str]) -> List[str]:
    """``blocks.{i}.<kind>`` for every block read in class space (all of a ViT's, a Swin's
    last stage: :func:`vitcls_utils.model.stages.class_space_blocks`), kinds in the order
    given (block-major)."""
    from .stages import class_space_blocks

    full = [site_kind(k) for k in kinds]
    return [f"blocks.{i}.{k}" for i in class_space_blocks(model) for k in full]


def _matching(model: nn.Module, names: NameFilter) -> List[str]:
    if callable(names):
        return [n for n in site_names(model) if names(n)]
    if isinstance(names, str):
        return [names]
    return list(names)


def _attach(model: nn.Module, name: str, fn: HookFn) -> torch.utils.hooks.RemovableHandle:
    target = _resolve(model, name)
    heads = None
    if target.kind == "attn.hook_z":
        heads = head_shape(blocks_of(model)[int(name.split(".")[1])])
    grid = []  # a Swin residual is [B, H, W, C]: its sites are [B, H*W, C], tokens row-major

    def as_site(value: torch.Tensor) -> torch.Tensor:
        if heads:
            return value.unflatten(-1, heads)
        if value.dim() == 4 and target.kind != "attn.hook_pattern":
            grid[:] = [value.shape[1:3]]
            return value.flatten(1, 2)
        return value

    def as_module(value: torch.Tensor) -> torch.Tensor:
        if heads:
            return value.flatten(-2)
        return value.unflatten(1, grid[0]) if grid else value

    if target.use_input:
        def pre_hook(module, args):
            new = fn(as_site(args[0]), name)
            if new is None:
                return None
            if target.kind == "hook_resid_mid":
                raise VitclsError(
                    f"{name} can be read but not replaced: the block adds its MLP output to the "
                    "residual it already holds, so only the MLP input would change. Replace "
                    f"blocks.{name.split('.')[1]}.hook_attn_out instead.")
            return (as_module(new),) + tuple(args[1:])

        return target.module.register_forward_pre_hook(pre_hook)

    def hook(module, args, output):
        new = fn(as_site(output), name)
        return None if new is None else as_module(new)

    return target.module.register_forward_hook(hook)


@contextmanager
def hooks(model: nn.Module, fwd_hooks: Sequence[Tuple[NameFilter, HookFn]]) -> Iterator[nn.Module]:
    """Attach ``fn(value, site_name)`` hooks for the duration of a ``with`` block.

    A hook that returns a tensor replaces the site's value (an intervention); one that
    returns None only reads it. Hooks are removed on exit, also when the block raises.

    Args:
        model: a timm VisionTransformer (any prefix-token layout).
        fwd_hooks: pairs of (site name, list of names, or predicate on names) and hook.
    """
    handles = []
    try:
        for names, fn in fwd_hooks:
            for name in _matching(model, names):
                handles.append(_attach(model, name, fn))
        yield model
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture(
    model: nn.Module, names: NameFilter, detach: bool = True, device: Optional[str] = None
) -> Iterator[Dict[str, torch.Tensor]]:
    """Record site values into a dict during the ``with`` block.

    Args:
        model: a timm VisionTransformer (any prefix-token layout).
        names: sites to record (a name, names, or a predicate).
        detach: drop the autograd graph (set False to take gradients through the values).
        device: move recorded values there (e.g. "cpu" to spare GPU memory).

    Yields:
        The dict {site name: value}, filled as the sites fire (a later forward overwrites a
        site's value); values keep the site's shape, e.g. [B, N, D] for the residual stream.
    """
    cache: Dict[str, torch.Tensor] = {}

    def record(value: torch.Tensor, name: str) -> None:
        value = value.detach() if detach else value
        cache[name] = value.to(device) if device is not None else value

    with hooks(model, [(names, record)]):
        yield cache


def run_with_cache(
    model: nn.Module, images: torch.Tensor, names: Optional[NameFilter] = None, **kwargs
) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Forward ``images`` and return (logits, {site name: value}); all sites when names=None.

    Args:
        model: a timm VisionTransformer (any prefix-token layout).
        images: preprocessed images [B, 3, H, W] on the model's device.
        names: sites to record (a name, names, or a predicate); None: every site.
        **kwargs: ``detach`` and ``device``, as :func:`capture` takes them.

    Returns:
        (logits [B, C], {site name: value}), values in each site's shape (e.g.
        ``attn.hook_pattern`` [B, H, N, N], ``hook_resid_post`` [B, N, D]).
    """
    with capture(model, names if names is not None else site_names(model), **kwargs) as cache:
        logits = model(images)
    return logits, cache


class _SitesReached(Exception):
    """Raised by :func:`forward_to` once every site it waits for has been recorded."""


def forward_to(model: nn.Module, images: torch.Tensor, names: Sequence[str],
               detach: bool = True) -> Dict[str, torch.Tensor]:
    """{site: value} of ``images``, the forward stopped as soon as the last of ``names`` has
    fired: reading block 3 of twelve costs three blocks, not twelve."""
    wanted = set(_matching(model, list(names)))
    cache: Dict[str, torch.Tensor] = {}

    def record(value: torch.Tensor, name: str) -> None:
        cache[name] = value.detach() if detach else value
        if wanted <= cache.keys():
            raise _SitesReached

    try:
        with hooks(model, [(sorted(wanted), record)]):
            model(images)
    except _SitesReached:
        pass
    return cache
