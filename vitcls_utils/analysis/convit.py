"""Chapter 7 (d'Ascoli et al. 2021, ConViT): the gates σ(λ) and learned locality of the GPSA
blocks, the attention map of a query patch, the test-time masks, and accuracy and per-block
class readout under them (catalogue §9).

GPSA head h mixes content and positional attention through its gate, A_h = normalize[(1 −
σ(λ_h))·softmax(Q Kᵀ/√d) + σ(λ_h)·softmax(v_h · r_ij)], with r_ij the offset (δx, δy, δx² + δy²)
of key j from query i in patches. The masks are parameter overrides
(:mod:`vitcls_utils.model.parameter_overrides`): the model's own weights are never written.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import pandas as pd

from .. import _compat, _moved
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from timm.models.convit import GPSA  # noqa: E402
from torch import nn  # noqa: E402

from ..model.parameter_overrides import overridden  # noqa: E402

#: the gating logit that forces σ(λ) to exactly 1 (content masked) or 0 (position masked) in
#: float32, as the paper's Table 6 sets it
GATE_FORCE = 1e4
MASK_KINDS = ("none", "position_embedding", "content", "position")


def gpsa_blocks(model: nn.Module) -> List[int]:
    """0-based indices of the GPSA blocks (ConViT's first ``local_up_to_layer``).

    Args:
        model: a timm ViT or ConViT.

    Returns:
        The GPSA blocks' 0-based indices, ascending; empty for a model without any.
    """
    return [i for i, block in enumerate(model.blocks) if isinstance(block.attn, GPSA)]


def _require_gpsa(model: nn.Module) -> List[int]:
    blocks = gpsa_blocks(model)
    if not blocks:
        raise VitclsError("this model has no GPSA block: gates, locality and the content and "
                          "position masks are ConViT's (convit_tiny, toy_convit, ...)")
    return blocks


def gates(model: nn.Module) -> pd.DataFrame:
    """σ(λ) of every head of every GPSA block (1: positional attention only, 0: content only);
    No data is needed.

    Args:
        model: a timm ConViT (one with GPSA blocks).

    Returns:
        DataFrame with columns ``layer`` (1-based), ``head`` (1-based) and ``gate`` (σ(λ)).
    """
    rows = []
    for b in _require_gpsa(model):
        values = torch.sigmoid(model.blocks[b].attn.gating_param.detach().float().cpu())
        rows += [(b + 1, h + 1, float(g)) for h, g in enumerate(values)]
    return pd.DataFrame(rows, columns=["layer", "head", "gate"])


def locality(model: nn.Module) -> pd.DataFrame:
    """The learned positional attention of every GPSA head, by completing the square in its
    logit v·r = w_x δx + w_y δy + w_d (δx² + δy²): strength α = −w_d and centre
    (w_x, w_y) / 2α (a key-minus-query offset in patches). A head with α ≤ 0 has no centre.

    Args:
        model: a timm ConViT (one with GPSA blocks).

    Returns:
        DataFrame with columns ``layer`` and ``head`` (1-based), ``strength`` (α),
        ``centre_x`` and ``centre_y`` (patches; NaN where α ≤ 0) and ``gate`` (σ(λ)).
    """
    rows = []
    for b in _require_gpsa(model):
        attn = model.blocks[b].attn
        weight = attn.pos_proj.weight.detach().double().cpu()  # [H, 3]: (w_x, w_y, w_d)
        gate = torch.sigmoid(attn.gating_param.detach().double().cpu())
        for h in range(weight.shape[0]):
            alpha = float(-weight[h, 2])
            centre = (weight[h, :2] / (2 * alpha)).tolist() if alpha > 0 else [float("nan")] * 2
            rows.append((b + 1, h + 1, alpha, centre[0], centre[1], float(gate[h])))
    return pd.DataFrame(rows, columns=["layer", "head", "strength", "centre_x", "centre_y",
                                       "gate"])


def heads_without_centre(local: pd.DataFrame) -> pd.DataFrame:
    """The heads of :func:`locality` whose strength α ≤ 0, which have no centre: their
    positional logit w_x δx + w_y δy − α (δx² + δy²) does not fall off around any offset (α = 0:
    a plane rising towards one side of the grid; α < 0: a bowl rising towards the grid's edges),
    so the positional attention is no Gaussian to centre and the centre map cannot draw them.

    Args:
        local: :func:`locality`'s frame.

    Returns:
        DataFrame with columns ``layer`` and ``head`` (1-based), ``strength`` (α ≤ 0) and
        ``gate`` (σ(λ): how much of the head's attention that positional part is), one row per
        such head, in layer and head order; empty where every head has a centre.
    """
    rows = local[~(local.strength > 0)].sort_values(["layer", "head"])
    return rows[["layer", "head", "strength", "gate"]].reset_index(drop=True)


def content_attention(attn: GPSA, x: torch.Tensor) -> torch.Tensor:
    """softmax(Q Kᵀ/√d) of a GPSA module on its input ``x`` [B, N, D]: [B, H, N, N]."""
    B, N, C = x.shape
    qk = attn.qk(x).reshape(B, N, 2, attn.num_heads, C // attn.num_heads).permute(2, 0, 3, 1, 4)
    return (qk[0] @ qk[1].transpose(-2, -1) * attn.scale).softmax(-1)


def positional_attention(attn: GPSA, n_patches: int) -> torch.Tensor:
    """softmax(v_h · r_ij) of a GPSA module on a square grid of ``n_patches``: [H, N, N]."""
    rel = attn.get_rel_indices(n_patches)  # [1, N, N, 3], offsets key minus query
    return attn.pos_proj(rel)[0].permute(2, 0, 1).softmax(-1)


@dataclass(frozen=True)
class Mask:
    """A test-time mask: ``none``; ``position_embedding`` (zeroed, the [CLS] slot of a DeiT
    included: Table 5); ``content`` or ``position`` in the first ``blocks`` GPSA blocks (their
    gates forced to σ = 1 or 0: Table 6).

    Args:
        kind: one of "none", "position_embedding", "content", "position".
        blocks: for "content" and "position": how many GPSA blocks, from the first, to mask
            (>= 1); unused by the other kinds.
    """

    kind: str = "none"
    blocks: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise VitclsError(f"mask kind must be one of {MASK_KINDS}, not {self.kind!r}")
        if self.kind in ("content", "position") and self.blocks < 1:
            raise VitclsError(f"a {self.kind} mask needs blocks >= 1 (the first k GPSA blocks)")

    @property
    def name(self) -> str:
        return {"none": "unmasked", "position_embedding": "position embedding zeroed",
                "content": f"content masked, first {self.blocks}",
                "position": f"position masked, first {self.blocks}"}[self.kind]

    def values(self, model: nn.Module) -> Dict[str, torch.Tensor]:
        """{parameter name: its value under the mask}, for
        :func:`parameter_overrides.overridden`."""
        if self.kind == "none":
            return {}
        if self.kind == "position_embedding":
            if getattr(model, "pos_embed", None) is None:
                raise VitclsError("this model has no position embedding to zero")
            return {"pos_embed": torch.zeros_like(model.pos_embed)}
        blocks = _require_gpsa(model)
        if self.blocks > len(blocks):
            raise VitclsError(f"the model has {len(blocks)} GPSA blocks; cannot mask the first "
                              f"{self.blocks}")
        force = GATE_FORCE if self.kind == "content" else -GATE_FORCE
        return {f"blocks.{b}.attn.gating_param":
                torch.full_like(model.blocks[b].attn.gating_param, force)
                for b in blocks[:self.blocks]}


def table_masks(model: nn.Module, ks: Sequence[int] = (3, 5, 10)) -> List[Mask]:
    """The masks of Tables 5 and 6 that apply to ``model``: unmasked, the position embedding
    zeroed and, for a ConViT, content and position masked in the first k GPSA blocks (the k
    it has).

    Args:
        model: a timm ViT or ConViT.
        ks: the numbers of first GPSA blocks to mask; those above the model's count are skipped.

    Returns:
        The :class:`Mask` list: unmasked, position embedding, then content and position per k.
    """
    masks = [Mask(), Mask("position_embedding")]
    n_gpsa = len(gpsa_blocks(model))
    for k in ks:
        if 0 < k <= n_gpsa:
            masks += [Mask("content", k), Mask("position", k)]
    return masks


@contextmanager
def masked(model: nn.Module, mask: Mask) -> Iterator[nn.Module]:
    """``model`` under ``mask`` inside the block; its own parameters are back on exit."""
    with overridden(model, mask.values(model)):
        yield model


def query_attention_maps(model: nn.Module, image: torch.Tensor, blocks: Sequence[int],
                   query: Optional[int] = None) -> Dict[int, torch.Tensor]:
    """{0-based block: [H, rows, cols]}: the attention of one query patch (default the
    centre one, row and column g // 2) on every patch, read at ``attn.hook_pattern`` for one
    preprocessed ``image`` [1, 3, S, S]. [CLS] rows and columns are left out (the paper's
    maps do not show them); the remaining weights are not renormalised.

    Args:
        model: a loaded timm ViT or ConViT.
        image: one preprocessed image, [1, 3, S, S], on the model's device.
        blocks: the 0-based blocks to read.
        query: the query patch's row-major index in the grid; None: the centre patch.

    Returns:
        dict {0-based block: attention of the query on the patches, [H, rows, cols] float32,
        on the CPU}.
    """
    from ..model.hooks import forward_to
    from ..model.layout import TokenLayout

    layout = TokenLayout.of(model)
    rows, cols = layout.grid
    query = (rows // 2) * cols + cols // 2 if query is None else int(query)
    if not 0 <= query < layout.n_patches:
        raise VitclsError(f"query patch {query} is not in the {rows}x{cols} grid")
    names = [f"blocks.{b}.attn.hook_pattern" for b in blocks]
    with torch.no_grad():
        patterns = forward_to(model, image, names)
    maps = {}
    for b, name in zip(blocks, names, strict=True):
        pattern = patterns[name][0].float().cpu()
        present = pattern.shape[-1] - layout.n_patches
        maps[b] = pattern[:, present + query, present:].reshape(-1, rows, cols)
    return maps


def local_mass(maps: torch.Tensor, query: Tuple[int, int], radius: int = 1) -> torch.Tensor:
    """Per head, the share of a query's attention map [H, rows, cols] within ``radius``
    patches of the query (Chebyshev distance: the (2r + 1)² square, cut at the edges).

    Args:
        maps: one query's attention maps, [H, rows, cols] (from :func:`query_attention_maps`).
        query: the query patch's (row, column).
        radius: the square's half-width, in patches.

    Returns:
        The attention mass within the square, per head: [H], in the maps' dtype.
    """
    r, c = query
    return maps[:, max(r - radius, 0):r + radius + 1,
                max(c - radius, 0):c + radius + 1].sum((1, 2))


def evaluate_masks(model: nn.Module, dataset, masks: Sequence[Mask], batch_size: int = 64,
             by_block: bool = False, progress: bool = True
             ) -> Tuple[pd.DataFrame, Optional[pd.DataFrame]]:
    """Top-1 and top-5 (%) of the model's output under each mask, and with ``by_block`` the
    per-block class readout (identifiability and top-1 rate of [CLS] and the image tokens)
    under it, in one pass over the data.

    Args:
        model: a loaded timm ViT or ConViT.
        dataset: the labelled stimuli; unreadable ones are skipped.
        masks: distinct :class:`Mask` objects that apply to ``model``.
        batch_size: images per forward pass.
        by_block: also read every block's output through the class projection.
        progress: show a progress bar.

    Returns:
        (accuracy, readout): ``accuracy`` has columns ``mask`` (the mask's name), ``top1``
        and ``top5`` (%), ``images`` (how many they are over) and ``top1_images`` (an [images]
        array: 100 where the image is classified right, else 0; the same images in the same
        order for every mask); ``readout`` (None unless ``by_block``) has ``mask``, ``block``
        (1-based), ``cls_identifiability``, ``cls_top1``, ``image_identifiability`` and
        ``image_top1`` (identifiability in [0, 1], top-1 in %).
    """
    from .block_readout import readout_for
    from ..model.hooks import hooks
    from ..stores.stimulus_loader import labelled_batches
    from ..model.projection import top1_top5

    names = [mask.name for mask in masks]
    if not masks or len(set(names)) != len(names):
        raise VitclsError(f"give one or more distinct masks, not {names}")
    for mask in masks:
        mask.values(model)  # refuses what cannot run, before any work
    depth = len(model.blocks)
    readout = readout_for(model) if by_block else None
    kept: Dict[int, torch.Tensor] = {}

    def keep(value: torch.Tensor, name: str) -> None:
        kept[int(name.split(".")[1])] = value

    sites = [f"blocks.{b}.hook_resid_post" for b in range(depth)] if by_block else []
    hits: Dict[str, List[torch.Tensor]] = {mask.name: [] for mask in masks}
    with torch.no_grad(), hooks(model, [(sites, keep)]):
        for images, labels in labelled_batches(model, dataset, batch_size, "masks", progress):
            for mask in masks:
                with masked(model, mask):
                    logits = model(images)
                hits[mask.name].append(top1_top5(logits, labels).cpu())
                if readout is not None:
                    for b in range(depth):
                        readout.add(mask.name, b, kept[b], labels)
    if not hits[masks[0].name]:
        raise VitclsError("no readable image in the dataset")
    rows = [{"mask": name, **dict(zip(("top1", "top5"),
                                      (100 * torch.cat(parts).mean(0)).tolist())),
             "images": len(torch.cat(parts)),
             "top1_images": 100 * torch.cat(parts)[:, 0].double().numpy()}
            for name, parts in hits.items()]
    return pd.DataFrame(rows), (readout.frame("mask") if readout is not None else None)


#: the old names, until user code has moved (FutureWarning)
__getattr__ = _moved.renamed(__name__, {"evaluate": "evaluate_masks",
                                         "attention_maps": "query_attention_maps"})
