"""Causal perturbations of an unmodified timm ViT, made through the hooks of
:mod:`vitcls_utils.model.hooks`.

- :class:`AttentionPerturbation` (catalogue E7) edits the post-softmax pattern ``A[b, h, i, j]``
  (query i, key j) in all blocks or a chosen set:

  * ``self_only``: each image-token query attends only to itself. The paper's choice also takes
    away its attention to [CLS] (B10); ``keep_prefix=True`` keeps the prefix keys and removes
    only the *other image tokens*, as the paper's text words it.
  * ``no_cls``: image-token queries lose their attention to [CLS]. The paper does not
    renormalize, so those rows then sum to 1 - A[i, 0]; ``renormalize=True`` rescales them to 1.

  Prefix-token rows ([CLS], distillation, registers) are never edited.

- :class:`TokenRemoval` (catalogue E9) drops tokens right after the position embedding and runs the
  blocks on the shorter sequence: keep the prefix tokens plus the class-labeled tokens, or plus
  the context-labeled ones, or plus a fixed set of image tokens. Images keep different numbers of
  tokens, so they are batched by length (:func:`group_by_length`), never one at a time.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from .families import require  # noqa: E402
from .hooks import hooks  # noqa: E402
from .layout import TokenLayout  # noqa: E402

ATTENTION_MODES = ("self_only", "no_cls")
KEEP_GROUPS = ("class", "context", "indices")
LABEL_RULES = ("aligned", "paper")


# ----------------------------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AttentionPerturbation:
    """An edit of the attention pattern of image-token queries (catalogue E7).

    Args:
        mode: "self_only" or "no_cls".
        blocks: 0-based blocks to edit; None edits every block (the paper's choice).
        renormalize: rescale edited rows to sum to 1 (the paper does not; only changes no_cls
            and self_only with keep_prefix, since the paper's self-only row is one-hot).
        keep_prefix: self_only only: keep attention to the prefix tokens ([CLS]) and remove
            only the other image tokens.
    """

    mode: str
    blocks: Optional[Tuple[int, ...]] = None
    renormalize: bool = False
    keep_prefix: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ATTENTION_MODES:
            raise VitclsError(f"attention perturbation mode must be one of {ATTENTION_MODES}, "
                              f"not {self.mode!r}")
        if self.keep_prefix and self.mode != "self_only":
            raise VitclsError("keep_prefix applies to mode='self_only' only")
        if self.blocks is not None:
            object.__setattr__(self, "blocks", tuple(sorted({int(b) for b in self.blocks})))

    @property
    def name(self) -> str:
        """Short label, e.g. ``self_only``, ``self_only+prefix``, ``no_cls+renorm@0,1``."""
        text = self.mode + ("+prefix" if self.keep_prefix else "")
        text += "+renorm" if self.renormalize else ""
        if self.blocks is not None:
            text += "@" + ",".join(str(b) for b in self.blocks)
        return text

    def config(self) -> Dict[str, object]:
        return {"kind": "attention", **asdict(self),
                "blocks": None if self.blocks is None else list(self.blocks)}

    def edit(self, pattern: torch.Tensor, num_prefix: int) -> torch.Tensor:
        """The edited copy of a pattern [B, H, N, N]; rows of prefix queries are unchanged."""
        return edit_pattern(pattern, self.mode, num_prefix, self.renormalize, self.keep_prefix)

    def fwd_hooks(self, model: nn.Module) -> List[tuple]:
        """The (site names, hook) pairs that apply this perturbation to ``model``."""
        require(model, "attention_edit", f"the attention perturbation {self.name}")
        layout = TokenLayout.of(model)
        if self.mode == "no_cls" and not layout.has_cls:
            raise VitclsError(f"no_cls needs a [CLS] token; {type(model).__name__} with "
                              f"global_pool={getattr(model, 'global_pool', '?')!r} has none")
        n_blocks = len(model.blocks)
        blocks = range(n_blocks) if self.blocks is None else self.blocks
        if any(not 0 <= b < n_blocks for b in blocks):
            raise VitclsError(f"blocks {self.blocks} out of range: the model has 0..{n_blocks - 1}")
        names = [f"blocks.{b}.attn.hook_pattern" for b in blocks]
        return [(names, lambda pattern, name: self.edit(pattern, layout.num_prefix))]


def edit_pattern(pattern: torch.Tensor, mode: str, num_prefix: int, renormalize: bool = False,
                 keep_prefix: bool = False) -> torch.Tensor:
    """Apply an :class:`AttentionPerturbation` edit to ``pattern`` [..., N, N] (query, key)."""
    n = pattern.shape[-1]
    rows = torch.arange(n, device=pattern.device) >= num_prefix  # image-token queries
    if mode == "self_only":
        keep = torch.eye(n, dtype=torch.bool, device=pattern.device)
        if not keep_prefix:  # the paper's: a one-hot row, nothing to renormalize
            return torch.where(rows[:, None], keep.to(pattern.dtype), pattern)
        keep[:, :num_prefix] = True
        edited = pattern * keep
    elif mode == "no_cls":
        keep = torch.ones(n, dtype=torch.bool, device=pattern.device)
        keep[0] = False
        edited = pattern * keep
    else:
        raise VitclsError(f"unknown attention perturbation mode {mode!r}")
    if renormalize:
        edited = edited / edited.sum(-1, keepdim=True).clamp_min(torch.finfo(edited.dtype).tiny)
    return torch.where(rows[:, None], edited, pattern)


# ----------------------------------------------------------------------------------------------
# Token removal
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenRemoval:
    """Run the blocks on the prefix tokens plus a subset of the image tokens (catalogue E9).

    Args:
        keep: "class" (class-labeled image tokens: removes the context), "context"
            (context-labeled: removes the object), or "indices" (the image tokens in
            ``indices``, the same for every image).
        labels: which token labels decide class vs context: "aligned" (through the variant's
            preprocessing, coverage >= 1/2) or "paper" (the authors' top-left nearest pixel).
        indices: token positions (prefix tokens count: the first image token of a [CLS] model
            is 1) kept when ``keep="indices"``.
    """

    keep: str
    labels: str = "aligned"
    indices: Optional[Tuple[int, ...]] = None

    def __post_init__(self) -> None:
        if self.keep not in KEEP_GROUPS:
            raise VitclsError(f"keep must be one of {KEEP_GROUPS}, not {self.keep!r}")
        if self.labels not in LABEL_RULES:
            raise VitclsError(f"labels must be one of {LABEL_RULES}, not {self.labels!r}")
        if (self.keep == "indices") != (self.indices is not None):
            raise VitclsError("give indices exactly when keep='indices'")
        if self.indices is not None:
            object.__setattr__(self, "indices", tuple(sorted({int(i) for i in self.indices})))

    @property
    def name(self) -> str:
        """Short label: ``keep_class``, ``keep_context+paper``, ``keep_indices``."""
        return f"keep_{self.keep}" + ("+paper" if self.labels == "paper" else "")

    @property
    def needs_masks(self) -> bool:
        return self.keep != "indices"

    @property
    def label_array(self) -> str:
        """The store array holding the token labels this removal reads."""
        return "token_class" if self.labels == "aligned" else "token_class_paper"

    def config(self) -> Dict[str, object]:
        return {"kind": "remove_tokens", **asdict(self),
                "indices": None if self.indices is None else list(self.indices)}

    def kept(self, layout: TokenLayout, token_class: Optional[np.ndarray] = None
             ) -> Optional[np.ndarray]:
        """Sorted token positions kept for one image (prefix first), or None when nothing can
        be run: the image has no mask and the removal needs one, or no token is left.

        Args:
            token_class: the image's labels [N] (1 class, 0 context, -1 prefix / no mask).
        """
        prefix = np.arange(layout.num_prefix)
        if self.keep == "indices":
            image = np.asarray(self.indices, dtype=np.int64)
            if image.size and (image.min() < layout.num_prefix or image.max() >= layout.n_tokens):
                raise VitclsError(f"indices must be image-token positions "
                                  f"{layout.num_prefix}..{layout.n_tokens - 1}")
        else:
            labels = np.asarray(token_class)[layout.num_prefix:]
            if labels.max(initial=-1) < 0:
                return None
            wanted = 1 if self.keep == "class" else 0
            image = np.flatnonzero(labels == wanted) + layout.num_prefix
        if prefix.size + image.size == 0:
            return None  # a model without prefix tokens and nothing kept: nothing to run
        return np.concatenate([prefix, image]).astype(np.int64)


@contextmanager
def keeping_tokens(model: nn.Module, kept: torch.Tensor) -> Iterator[nn.Module]:
    """Within the block, the model runs on ``x[b, kept[b]]`` from the position embedding on.

    Args:
        kept: token positions [B, K], the same count K for every image of the batch, prefix
            tokens included (the model's pooling reads them where it expects them).
    """

    def select(value: torch.Tensor, name: str) -> torch.Tensor:
        index = kept.to(value.device)[..., None].expand(-1, -1, value.shape[-1])
        return value.gather(1, index)

    require(model, "token_removal", "token removal")  # BEiT's bias, EVA's rotary: full grid
    with hooks(model, [("hook_embed", select)]):
        yield model


def group_by_length(lengths: Sequence[int], batch_size: int) -> List[np.ndarray]:
    """Positions of ``lengths`` grouped into batches of equal length, each at most
    ``batch_size`` long; groups in order of length, positions in input order within a group."""
    lengths = np.asarray(lengths)
    batches = []
    for length in np.unique(lengths):
        positions = np.flatnonzero(lengths == length)
        batches += [positions[i:i + batch_size] for i in range(0, len(positions), batch_size)]
    return batches


Perturbation = Union[AttentionPerturbation, TokenRemoval]


def perturbation_config(perturbation: Optional[Perturbation]) -> Optional[Dict[str, object]]:
    """The JSON-able description of a perturbation that goes into a store's configuration."""
    if perturbation is None:
        return None
    if not isinstance(perturbation, (AttentionPerturbation, TokenRemoval)):
        raise VitclsError(f"perturbation must be an AttentionPerturbation or a TokenRemoval, "
                          f"not {type(perturbation).__name__}")
    return perturbation.config()


def perturbation_name(config: Optional[Dict[str, object]]) -> str:
    """Readable name of a stored perturbation configuration ("none" for an unperturbed run)."""
    if config is None:
        return "none"
    fields = {k: v for k, v in config.items() if k != "kind"}
    if config["kind"] == "attention":
        return AttentionPerturbation(**fields).name
    return TokenRemoval(**fields).name


def parse_perturbation(text: str) -> Perturbation:
    """The inverse of ``.name``, for the command line: ``self_only``, ``self_only+prefix``,
    ``no_cls``, ``no_cls+renorm``, each optionally ``@0,1,2`` (blocks), and ``keep_class`` /
    ``keep_context``, optionally ``+paper`` (the authors' token labels)."""
    base, _, blocks = text.partition("@")
    mode, *flags = base.split("+")
    try:
        if mode in ATTENTION_MODES and set(flags) <= {"prefix", "renorm"}:
            return AttentionPerturbation(
                mode, blocks=tuple(int(b) for b in blocks.split(",")) if blocks else None,
                renormalize="renorm" in flags, keep_prefix="prefix" in flags)
        if mode in ("keep_class", "keep_context") and not blocks and set(flags) <= {"paper"}:
            return TokenRemoval(mode[len("keep_"):], labels="paper" if flags else "aligned")
    except ValueError:
        pass
    raise VitclsError(f"unknown perturbation {text!r}; use self_only[+prefix], "
                      "no_cls[+renorm] (optionally @blocks, e.g. @0,1), or "
                      "keep_class / keep_context (optionally +paper)")
