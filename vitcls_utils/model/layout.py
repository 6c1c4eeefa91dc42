"""Where things sit in a timm ViT: the token layout (prefix tokens, then a row-major patch
grid; a [CLS] that may join late) and which attention path runs (explicit softmax or fused).

Everything that indexes tokens or reads attention probabilities asks here, so that the
layout is read off the model once, the same way, for every family.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Tuple

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

from torch import nn  # noqa: E402


@dataclass(frozen=True)
class TokenLayout:
    """Where the tokens of a timm ViT are: prefix tokens first, then a row-major patch grid.

    Usually built with :meth:`TokenLayout.of` (model) rather than by hand.

    Args:
        num_prefix: tokens before the patches ([CLS], registers, distillation token).
        grid: the patch grid (rows, columns); the patches are ``rows * cols`` tokens.
        has_cls: whether token 0 is a [CLS] token (False for a GAP model).
        prefix_from: the first block whose input holds the prefix (0; a ConViT's
            ``local_up_to_layer``). Earlier sites hold the patches alone; stores mark the rest
            absent.
    """

    num_prefix: int
    grid: Tuple[int, int]
    has_cls: bool
    prefix_from: int = 0

    @property
    def n_tokens(self) -> int:
        return self.num_prefix + self.grid[0] * self.grid[1]

    @property
    def n_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def has_prefix_at(self, block: int) -> bool:
        """Whether the sites of 0-based ``block`` (its input onwards) hold the prefix."""
        return block >= self.prefix_from

    def require_prefix_throughout(self, what: str) -> None:
        """Refuse ``what``, which reads the prefix at every block, on a late-[CLS] model."""
        if self.prefix_from:
            raise VitclsError(f"{what} needs the [CLS] at every block; this model's "
                              f"joins at block {self.prefix_from + 1} (a ConViT)")

    @property
    def image_tokens(self) -> slice:
        """Slice of the patch ("image") tokens."""
        return slice(self.num_prefix, self.n_tokens)

    @classmethod
    def of(cls, model: nn.Module) -> "TokenLayout":
        """The layout of the tokens the class-space blocks hold: a Swin's last stage (no
        prefix, its grid row-major; :mod:`vitcls_utils.model.stages`), else the patch grid."""
        if not hasattr(model, "num_prefix_tokens"):
            from .families import model_family
            from .stages import last_stage_grid

            if model_family(model).name != "swin":  # (names the block type it met)
                raise VitclsError(f"{type(model).__name__} has no token layout")
            return cls(num_prefix=0, grid=last_stage_grid(model), has_cls=False)
        grid = tuple(int(g) for g in model.patch_embed.grid_size)
        has_cls = getattr(model, "cls_token", None) is not None
        late = int(getattr(model, "local_up_to_layer", 0)) if has_cls else 0  # timm's ConVit
        return cls(num_prefix=int(model.num_prefix_tokens), grid=grid, has_cls=has_cls,
                   prefix_from=late)


def disable_fused_attn(model: nn.Module) -> nn.Module:
    """Switch every timm attention module to the explicit softmax path (no weights touched).

    Fused SDPA never materialises the attention probabilities, which the hooks, perturbations
    and gradient maps need. The two paths agree to float precision.
    """
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = False
    return model


@contextlib.contextmanager
def fused_attention(model: nn.Module, enabled: bool = True) -> Iterator[nn.Module]:
    """Attention modules set to the fused (SDPA) path, or to the explicit one with
    ``enabled=False``, inside the block, and restored to what each was afterwards: the one
    switch for training fast while analyses keep the explicit softmax."""
    modules = [m for m in model.modules() if hasattr(m, "fused_attn")]
    before = [m.fused_attn for m in modules]
    for module in modules:
        module.fused_attn = enabled
    try:
        yield model
    finally:
        for module, value in zip(modules, before, strict=True):
            module.fused_attn = value
