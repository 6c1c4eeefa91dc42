"""The final class logit as an exact sum of direct contributions (chapter 8).

A pre-norm ViT's final residual at the readout (the last [CLS], or the mean of the image
tokens for average pooling) is a sum: the embeddings (patch, position, [CLS]), every block's
attention output and every block's MLP output. The attention output of block ``l`` is itself a
sum over heads ``h`` and source positions ``s``: ``ls1 * (A[h, t, s] v[h, s] W_O[h] + b_O)``.
The final LayerNorm is linear in its input once its scale ``1/std`` is fixed; we freeze it at
the value it takes on the actual final residual of each image, so that

    logit_c = sum over parts of  U_c (part) / std  +  (W_c beta + b_c)

holds exactly, with ``U = (W * gamma)`` minus its row mean (the norm's centring folded in).
The direct contribution of a part therefore ignores what it changes downstream (it is direct,
not total). Assignments stated: the value bias goes with each head (spread over positions by
its attention weights, which sum to one); the output-projection bias ``b_O`` and ``fc2``'s bias
are parts of their own (``attn_bias``, ``mlp_bias``), each times its LayerScale; the norm's
shift and the head's bias form ``head_bias``. ``residual`` is the model's logit minus the
sum: floating error only.

Defined for timm's pre-norm blocks (with or without LayerScale) with token or average
pooling; residual post-norm blocks (their norm sits after each sub-layer) and distilled
heads are refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np
import pandas as pd

from .. import _compat
from ..base.errors import VitclsError
from ..model.hooks import capture
from ..model.layout import TokenLayout
from ..stores.stimulus_loader import labelled_batches

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from timm.models.vision_transformer import Block  # noqa: E402
from torch import nn  # noqa: E402


@dataclass
class Decomposition:
    """Direct contributions to one class logit per image (the class in ``classes``).

    Attributes:
        classes: [B] the decomposed class of each image; logit: [B] the model's logit of it.
        heads: [B, L, H, N] each head's contribution per source position (sum over N: the head).
        mlp: [B, L] each MLP (without its fc2 bias); mlp_bias, attn_bias: [B, L].
        embed: {"cls_token", "pos_embed", "patch_embed"} -> [B] (the embeddings at the readout).
        head_bias: [B] the final norm's shift and the head's bias; scale: [B] the frozen std.
        residual: [B] logit minus the sum of the parts.
        head_logits: [B, L, H, C] each head's direct contribution to every class (None unless
            asked for).
        num_prefix: prefix tokens before the image tokens (positions 0..num_prefix-1).
    """

    classes: np.ndarray
    logit: np.ndarray
    heads: np.ndarray
    mlp: np.ndarray
    mlp_bias: np.ndarray
    attn_bias: np.ndarray
    embed: Dict[str, np.ndarray]
    head_bias: np.ndarray
    scale: np.ndarray
    residual: np.ndarray
    head_logits: Optional[np.ndarray]
    num_prefix: int

    def total(self) -> np.ndarray:
        """[B] the sum of every part (equals ``logit - residual``)."""
        return (self.heads.sum((1, 2, 3)) + self.mlp.sum(1) + self.mlp_bias.sum(1)
                + self.attn_bias.sum(1) + sum(self.embed.values()) + self.head_bias)

    def head_totals(self) -> np.ndarray:
        """[B, L, H] each head's direct contribution (its positions summed)."""
        return self.heads.sum(-1)


def _readout_norm(model: nn.Module) -> nn.LayerNorm:
    if getattr(model, "head_dist", None) is not None:
        raise VitclsError("distilled models read two tokens through two heads; decompose "
                          "one of them with a non-distilled variant")
    if getattr(model, "attn_pool", None) is not None:
        raise VitclsError("attention-pooled ('map') models are not decomposed: their pooling "
                          "is itself attention")
    norms = [m for m in (model.norm, getattr(model, "fc_norm", nn.Identity()))
             if not isinstance(m, nn.Identity)]
    if len(norms) != 1 or not isinstance(norms[0], nn.LayerNorm):
        raise VitclsError("the decomposition needs exactly one final LayerNorm before the head")
    if not isinstance(getattr(model, "norm_pre", nn.Identity()), nn.Identity):
        raise VitclsError("a norm before the first block (CLIP's norm_pre) makes the embeddings "
                          "enter the residual stream nonlinearly; the decomposition is defined "
                          "without one")
    for block in model.blocks:
        if type(block) is not Block or not isinstance(block.attn.norm, nn.Identity) or \
                getattr(block.attn, "gate", None) is not None:
            raise VitclsError(
                f"{type(block).__name__}: the decomposition is defined for timm's pre-norm "
                "Block (with or without LayerScale); residual post-norm blocks put a norm "
                "after each sub-layer, so heads do not add up linearly (use a token-pooled "
                "or pre-norm average-pooled variant)")
    return norms[0]


def readout_weights(model: nn.Module, n_tokens: int) -> torch.Tensor:
    """[N] how the pooled readout weighs each token: one-hot on [CLS] for token pooling,
    uniform over the image tokens for average pooling."""
    layout = TokenLayout.of(model)
    weights = torch.zeros(n_tokens)
    if getattr(model, "global_pool", "token") == "avg":
        weights[layout.num_prefix:] = 1.0 / (n_tokens - layout.num_prefix)
    elif layout.has_cls:
        weights[0] = 1.0
    else:
        raise VitclsError("token pooling without a [CLS] token has no readout to decompose")
    return weights


def unembed(model: nn.Module, norm: nn.LayerNorm) -> torch.Tensor:
    """[C, D] the head with the norm's gain and centring folded in: U x = W (gamma * (x -
    mean x)); dividing by the frozen std gives each part's logit."""
    w = model.head.weight.float() * norm.weight.float()[None, :]
    return w - w.mean(1, keepdim=True)


@torch.no_grad()
def decompose(model: nn.Module, images: torch.Tensor,
              classes: Optional[torch.Tensor] = None,
              all_classes: bool = False) -> Decomposition:
    """Decompose each image's logit of ``classes`` (default: the model's top-1) into direct
    contributions of heads (per source position), MLPs, embeddings and biases.

    Args:
        model: an unmodified timm pre-norm ViT with explicit attention (``load_variant``).
        images: preprocessed images [B, 3, H, W] on the model's device.
        classes: [B] class per image (e.g. the true labels); None: the predicted class.
        all_classes: also give each head's contribution to every class (``head_logits``
            [B, L, H, C]; large for 1000 classes, so off by default).

    Returns:
        A :class:`Decomposition` (numpy, float64 sums of float32 parts).
    """
    norm = _readout_norm(model)
    depth = len(model.blocks)
    sites = ["hook_embed"] + [f"blocks.{i}.{k}" for i in range(depth) for k in
                              ("hook_resid_pre", "attn.hook_pattern", "attn.hook_z",
                               "hook_mlp_out")]
    with capture(model, sites) as cache:
        logits = model(images).float()
        final = model.blocks[-1](cache[f"blocks.{depth - 1}.hook_resid_pre"])
    classes = logits.argmax(-1) if classes is None else classes.to(logits.device).long()
    n_tokens = final.shape[1]
    q = readout_weights(model, n_tokens).to(final.device)
    pooled = torch.einsum("n,bnd->bd", q, final.float())
    std = torch.sqrt(pooled.var(-1, unbiased=False) + norm.eps)                 # [B]
    u_all = unembed(model, norm)                                                # [C, D]
    u = u_all[classes] / std[:, None]                                           # [B, D]

    def direct(vec: torch.Tensor) -> torch.Tensor:  # [B, D] residual part -> [B] logit
        return (vec.float() * u).sum(-1)

    def pool(tokens: torch.Tensor) -> torch.Tensor:
        return torch.einsum("n,bnd->bd", q, tokens.float())

    heads, head_logits, mlp, mlp_bias, attn_bias = [], [], [], [], []
    for i, block in enumerate(model.blocks):
        attn = block.attn
        n_heads, d_head = attn.num_heads, attn.head_dim
        ls1 = _layer_scale(block.ls1, final.shape[-1], final.device)
        ls2 = _layer_scale(block.ls2, final.shape[-1], final.device)
        x = block.norm1(cache[f"blocks.{i}.hook_resid_pre"]).float()
        qkv_w = attn.qkv.weight.float()
        qkv_b = attn.qkv.bias.float() if attn.qkv.bias is not None else None
        dim = attn.attn_dim if hasattr(attn, "attn_dim") else n_heads * d_head
        v = F.linear(x, qkv_w[2 * dim:], None if qkv_b is None else qkv_b[2 * dim:])
        v = v.unflatten(-1, (n_heads, d_head))                                  # [B, N, H, dh]
        pattern = torch.einsum("n,bhns->bhs", q, cache[f"blocks.{i}.attn.hook_pattern"].float())
        w_o = attn.proj.weight.float().T.reshape(n_heads, d_head, -1)           # [H, dh, D]
        head_dir = torch.einsum("hkd,d,bd->bhk", w_o, ls1, u)                   # [B, H, dh]
        heads.append(torch.einsum("bhs,bshk,bhk->bhs", pattern, v, head_dir))
        z = pool(cache[f"blocks.{i}.attn.hook_z"].flatten(-2)).unflatten(-1, (n_heads, d_head))
        head_out = torch.einsum("bhk,hkd,d->bhd", z, w_o, ls1)
        if all_classes:
            head_logits.append(torch.einsum("bhd,cd->bhc", head_out, u_all)
                               / std[:, None, None])
        b_o = attn.proj.bias.float() * ls1 if attn.proj.bias is not None else 0 * ls1
        attn_bias.append(direct(b_o.expand_as(u)))
        fc2 = block.mlp.fc2.bias
        b_m = fc2.float() * ls2 if fc2 is not None else 0 * ls2
        mlp_bias.append(direct(b_m.expand_as(u)))
        mlp.append(direct(pool(cache[f"blocks.{i}.hook_mlp_out"]) - b_m))
    embed = _embed_parts(model, pool(cache["hook_embed"]), q)
    head_bias = (model.head.weight.float()[classes] * norm.bias.float()).sum(-1) \
        + model.head.bias.float()[classes]
    parts = _stack(heads=heads, mlp=mlp, mlp_bias=mlp_bias, attn_bias=attn_bias)
    parts["head_logits"] = _stack(h=head_logits)["h"] if all_classes else None
    logit = logits.gather(1, classes[:, None])[:, 0]
    out = Decomposition(
        classes=classes.cpu().numpy(), logit=logit.double().cpu().numpy(),
        embed={k: direct(v).double().cpu().numpy() for k, v in embed.items()},
        head_bias=head_bias.double().cpu().numpy(), scale=std.double().cpu().numpy(),
        residual=np.zeros(len(classes)), num_prefix=TokenLayout.of(model).num_prefix, **parts)
    out.residual = out.logit - out.total()
    return out


def decompose_dataset(model: nn.Module, dataset, batch_size: int = 32,
                      limit: Optional[int] = None) -> Decomposition:
    """:func:`decompose` of a dataset's images for their true classes, batch by batch.

    Args:
        model: as :func:`decompose`; dataset: the stimuli (an image dataset).
        batch_size: images per forward pass.
        limit: at most this many images, evenly spaced over the dataset (None: all).

    Returns:
        One :class:`Decomposition` of every image kept (``head_logits`` None).
    """
    images, labels = images_of(model, dataset, batch_size, limit)
    found = [decompose(model, images[i:i + batch_size], labels[i:i + batch_size])
             for i in range(0, len(images), batch_size)]
    first = found[0]
    merged = {k: np.concatenate([getattr(f, k) for f in found])
              for k in ("classes", "logit", "heads", "mlp", "mlp_bias", "attn_bias",
                        "head_bias", "scale", "residual")}
    embed = {k: np.concatenate([f.embed[k] for f in found]) for k in first.embed}
    return Decomposition(embed=embed, head_logits=None, num_prefix=first.num_prefix, **merged)


def images_of(model: nn.Module, dataset, batch_size: int = 32, limit: Optional[int] = None):
    """(images [B, 3, H, W], labels [B]) of ``dataset`` preprocessed for ``model``: all, or
    ``limit`` of them evenly spaced (every class kept when the dataset is class-ordered).

    Args:
        model: a loaded variant; dataset: an image dataset; batch_size: decoding batch.
        limit: how many images at most (None: all).

    Returns:
        The two tensors, on the model's device.
    """
    n = len(dataset)
    keep = set(range(n)) if limit is None or limit >= n else \
        set(np.linspace(0, n - 1, limit).round().astype(int).tolist())
    images, labels, seen = [], [], 0
    for x, y in labelled_batches(model, dataset, batch_size, "images", False):
        index = [i for i in range(len(x)) if seen + i in keep]
        images.append(x[index])
        labels.append(y[index])
        seen += len(x)
    return torch.cat(images), torch.cat(labels)


def _layer_scale(module: nn.Module, dim: int, device) -> torch.Tensor:
    """[D] LayerScale's gains (ones when the block has none)."""
    gamma = getattr(module, "gamma", None)
    return torch.ones(dim, device=device) if gamma is None else gamma.float()


def _embed_parts(model: nn.Module, pooled_embed: torch.Tensor,
                 q: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Split the pooled embedding into position embedding, [CLS] token and patch embedding."""
    batch, dim = pooled_embed.shape
    zero = torch.zeros(batch, dim, device=pooled_embed.device)
    pos = zero.clone()
    num_prefix = TokenLayout.of(model).num_prefix
    if getattr(model, "pos_embed", None) is not None:
        table = model.pos_embed[0].float()
        if getattr(model, "no_embed_class", False):
            table = torch.cat([torch.zeros(num_prefix, dim, device=table.device), table])
        pos = (q[:, None] * table).sum(0).expand(batch, dim)
    cls = zero.clone()
    if getattr(model, "cls_token", None) is not None:
        cls = (q[0] * model.cls_token[0, 0].float()).expand(batch, dim)
    reg = getattr(model, "reg_token", None)
    if reg is not None:
        start = 1 if getattr(model, "cls_token", None) is not None else 0
        cls = cls + torch.einsum("r,rd->d", q[start:start + reg.shape[1]],
                                 reg[0].float()).expand(batch, dim)
    return {"cls_token": cls, "pos_embed": pos, "patch_embed": pooled_embed - pos - cls}


def _stack(**parts) -> Dict[str, np.ndarray]:
    return {k: torch.stack(v, 1).double().cpu().numpy() for k, v in parts.items()}


def top_heads(decomposition: Decomposition, k: int = 5) -> "list[tuple[int, int, float]]":
    """The ``k`` heads with the largest mean direct contribution to the decomposed class.

    Args:
        decomposition: a :class:`Decomposition` of some images.
        k: how many heads.

    Returns:
        [(block, head, mean contribution over images)], largest first.
    """
    mean = decomposition.head_totals().mean(0)                                 # [L, H]
    order = np.argsort(-mean, axis=None)[:k]
    return [(int(i // mean.shape[1]), int(i % mean.shape[1]), float(mean.flat[i]))
            for i in order]


def block_writers(decomposition: Decomposition) -> pd.DataFrame:
    """Per block, the head writing most to the decomposed class and its share of the block.

    Args:
        decomposition: a :class:`Decomposition`.

    Returns:
        DataFrame, a row per block: ``block`` (0-based), ``head`` (index of the top head), ``head_logit`` (its
        mean contribution), ``attention`` (the block's heads summed), ``mlp`` (the block's MLP).
    """
    mean = decomposition.head_totals().mean(0)
    mlp = (decomposition.mlp + decomposition.mlp_bias).mean(0)
    return pd.DataFrame([{"block": i, "head": int(mean[i].argmax()),
                          "head_logit": float(mean[i].max()),
                          "attention": float(mean[i].sum() + decomposition.attn_bias[:, i].mean()),
                          "mlp": float(mlp[i])} for i in range(mean.shape[0])])
