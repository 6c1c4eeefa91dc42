"""Block families: one anatomy adapter per kind of transformer block timm builds, chosen from
the module types found in the model, never from its name.

An adapter says, for one block, which module's input or output *is* each site of
:mod:`vitcls_utils.base.sites` on the unmodified model: ``hook_attn_out`` and ``hook_mlp_out``
are exactly the tensors added to the residual stream (after layer scale, and after drop path
where the block has a drop-path module on that branch), so that resid_post = resid_pre +
attn_out + mlp_out holds in every family. A family also names what it cannot support and why;
those analyses are refused, never computed on a model they do not fit.

Families:

- ``vit``: timm's ``VisionTransformer`` ``Block`` (ViT, DeiT, DeiT III and DINOv2 with layer
  scale ``ls1``/``ls2``, FlexiViT, CLIP and SigLIP towers; register tokens are prefix tokens of
  the token layout).
- ``vit_respost``: ``ResPostBlock`` (residual post-norm: the norms sit on the branches).
- ``convit``: ConViT's block (GPSA or MHSA attention, no layer scale).
- ``beit``: ``timm.models.beit`` (layer scale as parameters ``gamma_1``/``gamma_2``, relative
  position bias added to the logits before the softmax, mean-pooled ``fc_norm``).
- ``eva``: ``timm.models.eva`` (EVA, EVA-02: rotary embeddings applied to q and k of the patch
  tokens, SwiGLU MLPs, an optional norm before the out-projection).
- ``swin``: ``timm.models.swin_transformer`` (stages of blocks joined by patch merging,
  attention within shifted windows, no [CLS]). Its blocks are numbered across stages
  (:func:`blocks_of`), its residual sites hold the stage's grid row-major, its pattern is per
  window. Only the last stage has the head's width: the stores read that stage alone
  (:mod:`vitcls_utils.model.stages`, which also maps a merged token to its image region), and
  what needs every block in class space or an image-wide attention pattern is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Tuple

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

from timm.models.beit import Block as BeitBlock  # noqa: E402
from timm.models.convit import Block as ConVitBlock  # noqa: E402
from timm.models.eva import EvaBlock, EvaBlockPostNorm  # noqa: E402
from timm.models.swin_transformer import SwinTransformerBlock  # noqa: E402
from timm.models.vision_transformer import Block, ResPostBlock  # noqa: E402
from torch import nn  # noqa: E402

#: (module, True for its first input / False for its output) per site kind
SiteTable = Dict[str, Tuple[nn.Module, bool]]

#: what an analysis may need of a family, and the capability names refusals use
CAPABILITIES = ("attention_edit", "token_removal", "image_attention", "every_block")


@dataclass(frozen=True)
class Family:
    """A block family: its name, what it is, and what it cannot support.

    Attributes:
        name: ``vit``, ``vit_respost``, ``convit``, ``beit``, ``eva`` or ``swin``.
        description: one line for the book's table.
        refused: {capability: why it is refused} for the capabilities of :data:`CAPABILITIES`
            it cannot support.
    """

    name: str
    description: str
    refused: Dict[str, str] = field(default_factory=dict)

    def supports(self, capability: str) -> bool:
        """Whether ``capability`` (one of :data:`CAPABILITIES`) is supported."""
        if capability not in CAPABILITIES:
            raise VitclsError(f"unknown capability {capability!r}; known: {CAPABILITIES}")
        return capability not in self.refused


_ROPE = ("the rotary embedding is computed for the full patch grid and applied inside every "
         "attention, so a shortened sequence has no defined positions")
_RELPOS = ("the relative position bias is a table over pairs of grid positions of the full "
           "sequence, so a shortened sequence has no defined bias")

_WINDOWS = ("attention is computed within (shifted) windows of a fixed grid: there is no "
            "prefix token and no image-wide pattern to edit, and a shortened sequence does not "
            "tile into windows")
_STAGES = ("the token grid and width change from stage to stage, and only the last stage has "
           "the head's width: the stores read that stage alone, so what reads every block in "
           "class space (chapter 3's key-value memories, key indices per block) is not defined")
_WINDOW_PATTERN = ("attention is computed within (shifted) windows: a pattern over the whole "
                   "image, which rollout, gradient-weighted maps and attention distances read, "
                   "does not exist")

FAMILIES: Dict[str, Family] = {
    "vit": Family("vit", "timm VisionTransformer Block: pre-norm, optional layer scale "
                  "(ls1/ls2); ViT, DeiT, DeiT III, DINOv2 (registers), FlexiViT, CLIP, SigLIP"),
    "vit_respost": Family("vit_respost", "timm ResPostBlock: residual post-norm (norms on the "
                          "branches)"),
    "convit": Family("convit", "ConViT Block: GPSA or MHSA attention, a [CLS] that joins late"),
    "beit": Family("beit", "BEiT Block: layer scale gamma_1/gamma_2, relative position bias, "
                   "mean-pooled fc_norm", refused={"token_removal": _RELPOS}),
    "eva": Family("eva", "EVA / EVA-02 block: rotary embeddings, SwiGLU MLP, layer scale "
                  "gamma_1/gamma_2", refused={"token_removal": _ROPE}),
    "swin": Family("swin", "Swin block: attention within (shifted) windows, relative position "
                   "bias, stages joined by patch merging, no [CLS], mean-pooled head",
                   refused={"attention_edit": _WINDOWS, "token_removal": _WINDOWS,
                            "image_attention": _WINDOW_PATTERN, "every_block": _STAGES}),
}

#: timm models of each family that the identity tests build (cut down) and check: the book's
#: table of families is generated from this, and tests/test_families.py asserts it covers them
VERIFIED_ON: Dict[str, Tuple[str, ...]] = {
    "vit": ("deit3_small_patch16_224", "vit_small_patch14_reg4_dinov2", "flexivit_small",
            "vit_base_patch16_siglip_224"),
    "beit": ("beit_base_patch16_224",),
    "eva": ("eva02_tiny_patch14_224",),
    "swin": ("swin_tiny_patch4_window7_224",),
}
#: timm models of each family whose random-init instance (cut down) runs every chapter 1-4
#: notebook the runner's rules admit, and runs each refused one into its family's reason
#: (tests/test_family_notebooks.py asserts it covers them; the book's table lists them)
NOTEBOOKS_VERIFIED_ON: Dict[str, Tuple[str, ...]] = {
    "vit": ("deit3_small_patch16_224", "vit_small_patch14_reg4_dinov2"),
    "beit": ("beit_base_patch16_224",),
    "eva": ("eva02_tiny_patch14_224",),
    "swin": ("swin_tiny_patch4_window7_224",),
}
#: model kinds refused as a whole, and why (the book's table lists them too)
NOT_SUPPORTED: Dict[str, str] = {
    "CNNs (ResNet, ConvNeXt, ...)": "no tokens: `vitcls evaluate` on a registry CNN only",
}

#: block classes this module knows, for messages
KNOWN_BLOCKS = ("vision_transformer.Block", "vision_transformer.ResPostBlock", "convit.Block",
                "beit.Block", "eva.EvaBlock", "eva.EvaBlockPostNorm",
                "swin_transformer.SwinTransformerBlock")


def block_family(block: nn.Module) -> Family:
    """The family of one block, from its module type.

    Args:
        block: one transformer block of a timm model.

    Returns:
        The :class:`Family`.

    Raises:
        VitclsError: a block type no adapter knows, named with its module.
    """
    if isinstance(block, ResPostBlock):
        return FAMILIES["vit_respost"]
    if isinstance(block, Block):
        return FAMILIES["vit"]
    if isinstance(block, ConVitBlock):
        return FAMILIES["convit"]
    if isinstance(block, BeitBlock):
        return FAMILIES["beit"]
    if isinstance(block, (EvaBlock, EvaBlockPostNorm)):
        return FAMILIES["eva"]
    if isinstance(block, SwinTransformerBlock):
        return FAMILIES["swin"]
    raise VitclsError(
        f"unsupported block type {type(block).__module__}.{type(block).__name__}: the anatomy "
        f"adapters know timm's {', '.join(KNOWN_BLOCKS)}; a model built of other blocks has "
        "no site table here (add an adapter in vitcls_utils/model/families.py)")


def model_family(model: nn.Module) -> Family:
    """The one family of every block of ``model`` (a mix is refused): read off module types.

    Args:
        model: a timm model.

    Returns:
        The :class:`Family`.

    Raises:
        VitclsError: the model has no ``blocks`` sequence (a CNN; a hierarchical model such as
            Swin, whose stages hold the blocks), a block no adapter knows, or mixed families.
    """
    blocks = blocks_of(model)
    if not blocks:
        inner = _first_block_like(model)
        met = f"; its first block is {type(inner).__module__}.{type(inner).__name__}" \
            if inner is not None else ""
        raise VitclsError(
            f"{type(model).__name__} has no sequence of transformer blocks (model.blocks, or "
            f"the blocks of Swin's stages){met}. The anatomy adapters read "
            f"{', '.join(KNOWN_BLOCKS)}; a CNN has no tokens to read")
    found = {block_family(b).name for b in blocks}
    if len(found) > 1:
        raise VitclsError(f"{type(model).__name__} mixes block families {sorted(found)}")
    return FAMILIES[found.pop()]


def blocks_of(model: nn.Module) -> List[nn.Module]:
    """The model's transformer blocks in forward order: ``model.blocks``, or the blocks of
    each stage in turn for a hierarchical model (Swin's ``layers[s].blocks``); [] for none.

    Args:
        model: a timm model.

    Returns:
        The blocks; ``blocks.{i}`` site names count them from 0 across stages.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is not None:
        return list(blocks)
    stages = getattr(model, "layers", None)
    if stages is None or not all(hasattr(stage, "blocks") for stage in stages):
        return []
    return [block for stage in stages for block in stage.blocks]


def require(model: nn.Module, capability: str, what: str) -> None:
    """Refuse ``what`` on a model whose family cannot support ``capability``, saying why.

    Args:
        model: a timm model.
        capability: one of :data:`CAPABILITIES`.
        what: the analysis asked for, for the message.

    Raises:
        VitclsError: the family refuses the capability.
    """
    family = model_family(model)
    if not family.supports(capability):
        raise VitclsError(f"{what} is not defined for {family.name} blocks "
                          f"({type(model).__name__}): {family.refused[capability]}")


def _first_block_like(model: nn.Module):
    for module in model.modules():
        if type(module).__name__.endswith("Block") or type(module).__name__ == "Bottleneck":
            return module
    return None


def _mlp_sites(mlp: nn.Module) -> SiteTable:
    """``mlp.hook_pre``: the first linear map's output (GluMlp: value and gate halves packed;
    SwiGLU: the gate's); ``mlp.hook_post``: the input of ``fc2``, the coefficients of the
    value vectors (after any gate, dropout and inner norm)."""
    first = getattr(mlp, "fc1", None) or getattr(mlp, "fc1_g", None)
    if first is None or not hasattr(mlp, "fc2"):
        raise VitclsError(f"unsupported MLP {type(mlp).__name__}: needs fc1 (or fc1_g) and fc2")
    return {"mlp.hook_pre": (first, False), "mlp.hook_post": (mlp.fc2, True)}


def site_table(block: nn.Module) -> SiteTable:
    """{site kind: (module, use its input)} of one block, for the block's family.

    Args:
        block: one block of a timm model.

    Returns:
        The table over every kind of :data:`vitcls_utils.base.sites.BLOCK_SITES`.

    Raises:
        VitclsError: an unknown block type (:func:`block_family`).
    """
    family = block_family(block).name
    attn = block.attn
    table: SiteTable = {"hook_resid_pre": (block, True), "hook_resid_post": (block, False),
                        "attn.hook_pattern": (attn.attn_drop, False),
                        "attn.hook_z": (attn.proj, True)}
    if family == "vit_respost":
        table.update({"hook_attn_out": (block.norm1, False), "hook_mlp_out": (block.norm2, False),
                      "hook_resid_mid": (block.mlp, True),
                      "mlp.hook_pre": (block.mlp.fc1, False),
                      "mlp.hook_post": (block.mlp.act, False)})
    elif family in ("vit", "convit"):
        outs = (block.ls1, block.ls2) if family == "vit" else (block.attn, block.mlp)
        table.update({"hook_attn_out": (outs[0], False), "hook_mlp_out": (outs[1], False),
                      "hook_resid_mid": (block.norm2, True),
                      "mlp.hook_pre": (block.mlp.fc1, False),
                      "mlp.hook_post": (block.mlp.act, False)})
    else:  # beit, eva, swin: layer scale (if any) is a parameter: drop path carries the branch
        post_norm = isinstance(block, EvaBlockPostNorm)
        table.update({"hook_attn_out": (block.drop_path1, False),
                      "hook_mlp_out": (block.drop_path2, False),
                      "hook_resid_mid": (block.mlp if post_norm else block.norm2, True)})
        table.update(_mlp_sites(block.mlp))
        if family == "eva":  # EVA may normalise the heads' concatenation before proj
            table["attn.hook_z"] = (attn.norm, True)
    if family == "swin":  # its pattern and z are per window: [B * windows, H, w*w, w*w]
        table["hook_resid_mid"] = (block.norm2, True)
    return table


def gated_mlp(block: nn.Module) -> bool:
    """Whether a block's MLP is gated (SwiGLU, GluMlp): fc1's outputs are then not one key per
    value vector of fc2."""
    first = getattr(block.mlp, "fc1", None)
    return first is None or first.out_features != block.mlp.fc2.in_features


def require_key_value_memories(model: nn.Module) -> None:
    """Refuse chapter 3's key-value reading of a model it does not fit, saying why.

    Args:
        model: a timm model.

    Raises:
        VitclsError: a stage-wise model (Swin: only its last stage has the head's width),
            an attention-pooled model (its pooling MLP sits between the residual
            stream and the head, so E · value is not its readout) or a gated MLP (a memory's
            coefficient is a gate times a unit: fc1 has no one key per memory).
    """
    require(model, "every_block", "key-value memories")
    if getattr(model, "attn_pool", None) is not None:
        raise VitclsError("key-value memories project value vectors with the head's class "
                          "embeddings; an attention-pooled model (SigLIP's 'map' head) puts its "
                          "pooling MLP between the residual stream and the head, so that "
                          "projection is not its readout")
    if any(gated_mlp(block) for block in blocks_of(model)):
        raise VitclsError("key-value memories read fc1's outputs as one key per value vector; "
                          "a gated MLP (SwiGLU, as in EVA-02) multiplies a gate and a unit, so "
                          "it has no such key")


def head_shape(block: nn.Module) -> Tuple[int, int]:
    """(heads, width per head) of a block's ``attn.hook_z``."""
    attn = block.attn
    return attn.num_heads, attn.proj.in_features // attn.num_heads


@lru_cache(maxsize=None)
def variant_gated_mlp(variant) -> bool:
    """Whether a variant's architecture has gated MLPs (built on the meta device).

    Args:
        variant: a :class:`~vitcls_utils.model.variant.Variant`.

    Returns:
        True when some block's MLP is gated (:func:`gated_mlp`).
    """
    return any(gated_mlp(block) for block in blocks_of(meta_model(variant)))


@lru_cache(maxsize=None)
def variant_family(variant) -> Family:
    """The family of a variant's architecture, read off it built on the meta device (no
    weights, no download): what the runner's notebook rules ask before loading anything.

    Args:
        variant: a :class:`~vitcls_utils.model.variant.Variant`.

    Returns:
        The :class:`Family`.
    """
    return model_family(meta_model(variant))


def meta_model(variant) -> nn.Module:
    """A variant's architecture built on the meta device (no weights, no download)."""
    import timm
    import torch

    with torch.device("meta"):
        return timm.create_model(variant.timm_name, pretrained=False,
                                 **{"num_classes": variant.num_classes,
                                    **dict(variant.model_kwargs)})


def family_names() -> List[str]:
    """The names of the known families, in table order."""
    return list(FAMILIES)
