"""Projection of any token onto the class embedding space, and the metrics read off it.

The projection is the model's own readout applied per token (catalogue §1): the final LayerNorm (or
``fc_norm`` for average-pooled models), then the classifier with its bias. Because
``hook_attn_out``/``hook_mlp_out`` already carry the post-norm of residual post-norm blocks,
the same projector serves every site of every variant.

Metrics never sort: the rank of the true class is the count of classes with a larger logit.
"""
from __future__ import annotations

import copy
from typing import Dict

from .. import _compat
from ..base.errors import NoClassHeadError, VitclsError
from .registry import get_variant

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402


class ClassProjector(nn.Module):
    """Frozen float32 copies of a ViT's final norm(s) and head(s); maps [..., d] to [..., C].

    Args:
        model: a timm VisionTransformer (token or average pooling; distilled models too).
        heads: for distilled models, "mean" (the model's eval output, the default), "head" or
            "head_dist". Other models have one head.
        require_head: raise :class:`NoClassHeadError` for a model without a classifier; with
            False such a model gets a projector that only normalizes (``normalize``).
    """

    def __init__(self, model: nn.Module, heads: str = "mean", require_head: bool = True) -> None:
        super().__init__()
        self.has_head = has_class_head(model)
        if require_head and not self.has_head:
            raise NoClassHeadError(no_head_message(model))

        def frozen(module: nn.Module) -> nn.Module:
            return copy.deepcopy(module).float().eval().requires_grad_(False)

        # An attention-pooled ('map') model (SigLIP) reads a token through its pooling head
        # applied to that token alone: with one key the latent query's softmax is 1, so the
        # pool is the value path, out-projection and MLP of that token (our choice; the model
        # itself pools all tokens at once).
        pool = getattr(model, "attn_pool", None)
        self.attn_pool = frozen(pool) if pool is not None else None
        self.norm = frozen(getattr(model, "norm", nn.Identity()))
        self.fc_norm = frozen(getattr(model, "fc_norm", nn.Identity()))
        self.head = frozen(_linear_head(model)) if self.has_head else None
        head_dist = getattr(model, "head_dist", None)
        if head_dist is None or heads == "head":
            self.head_dist = None
        elif heads == "head_dist":
            self.head, self.head_dist = frozen(head_dist), None
        elif heads == "mean":
            self.head_dist = frozen(head_dist)
        else:
            raise VitclsError(f"heads must be 'mean', 'head' or 'head_dist', not {heads!r}")
        self.num_classes = int(self.head.out_features) if self.head is not None else 0

    def normalize(self, tokens: torch.Tensor) -> torch.Tensor:
        """The head's input for every token: fc_norm(norm(x)) in float32 (the final CLS gives
        timm's ``pre_logits``); defined with or without a head."""
        self._check_width(tokens)
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            normed = self.norm(tokens.float())
            if self.attn_pool is not None:
                flat = normed.reshape(-1, 1, normed.shape[-1])
                normed = self.attn_pool(flat).reshape(normed.shape)
            return self.fc_norm(normed)

    def _check_width(self, tokens: torch.Tensor) -> None:
        width = self.head.in_features if self.head is not None else tokens.shape[-1]
        if tokens.shape[-1] != width:
            raise VitclsError(f"tokens of width {tokens.shape[-1]} cannot be read by a head "
                              f"of width {width}: in a hierarchical model (Swin) only the last "
                              "stage's tokens live in the head's space")

    def pool(self, tokens: torch.Tensor, num_prefix: int, pooling: str) -> torch.Tensor:
        """The head's input of the model's own pooled representation of a final residual stream:
        what the model's logits are read from (readout of this equals the logits).

        Args:
            tokens: the last block's residual stream [B, N, D].
            num_prefix: prefix tokens before the patches.
            pooling: "token" (token 0), "avg" (mean of the patches) or "map" (the attention
                pool over every token).

        Returns:
            [B, D'] in float32, ready for :meth:`classify`.
        """
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            normed = self.norm(tokens.float())
            if pooling == "map":
                if self.attn_pool is None:
                    raise VitclsError("pooling 'map' needs a model with an attention pool")
                pooled = self.attn_pool(normed)
            elif pooling == "avg":
                pooled = normed[:, num_prefix:].mean(1)
            elif pooling == "token":
                pooled = normed[:, 0]
            else:
                raise VitclsError(f"pooling must be 'token', 'avg' or 'map', not {pooling!r}")
            return self.fc_norm(pooled)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits of every token: head(fc_norm(norm(x))), computed in float32.

        Gradients flow to ``tokens`` (for explanation maps); the copied parameters are frozen.
        """
        return self.classify(self.normalize(tokens))

    def classify(self, normalized: torch.Tensor) -> torch.Tensor:
        """The head(s) alone, on tokens that :meth:`normalize` already put through the norms."""
        if self.head is None:
            raise NoClassHeadError("this projector was built without a class head: "
                                   "only normalize() is defined")
        self._check_width(normalized)
        with torch.autocast(device_type=normalized.device.type, enabled=False):
            z = normalized.float()
            logits = self.head(z)
            if self.head_dist is not None:
                logits = (logits + self.head_dist(z)) / 2
        return logits


def has_class_head(model: nn.Module) -> bool:
    """True when the model maps tokens to classes (timm's ``num_classes=0`` models do not)."""
    return int(getattr(model, "num_classes", 0) or 0) > 0 and hasattr(
        _linear_head(model), "out_features")


def _linear_head(model: nn.Module):
    """The linear classifier: ``model.head``, or the ``fc`` of timm's ``ClassifierHead``
    (Swin: mean over the token grid, then ``fc``; the pooling is :meth:`ClassProjector.pool`'s)."""
    head = getattr(model, "head", None)
    return head.fc if hasattr(head, "fc") and not hasattr(head, "out_features") else head


def no_head_message(model) -> str:
    """What to do with a model (or a registry key) that has no class head: the few-shot probe
    is its decoder. Says why it has none: an ImageNet-21k checkpoint timm ships without its
    classifier, or a CLIP image tower, whose projection maps into CLIP's text space."""
    info = getattr(model, "vitcls_info", None)
    name = model if isinstance(model, str) else (
        info.variant.key if info is not None else type(model).__name__)
    try:
        family = get_variant(name).family
    except VitclsError:  # a model built outside the registry
        family = None
    if family == "clip":
        why = ("a CLIP image tower: its projection maps into CLIP's text-embedding space, not "
               "onto classes")
    elif family == "timm":
        why = ("its timm pretrained config declares no class head: self-supervised or "
               "contrastive pretraining (DINOv2, SigLIP, MIM), or a projection into another space")
    else:
        why = "an ImageNet-21k checkpoint that timm ships without its classifier"
    return (f"{name} has no class head ({why}), so there is no class embedding space to "
            "project onto. Decode it with the few-shot probe instead "
            "(vitcls_utils.analysis.fewshot; notebook vit_fewshot_lsr), "
            "or pick a fine-tuned variant (`vitcls variants`).")


def no_tokens_message(key: str) -> str:
    """Why a CNN (a registry key) has nothing to extract, and what it does support."""
    return (f"{key} is a CNN: it has no tokens to project onto class space, so there is "
            f"nothing to extract; `vitcls evaluate --variant {key}` gives its top-1, and "
            "chapter 6's notebooks read it beside a ViT")


def true_class_logit(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Logit of the true class. logits [B, ..., C], labels [B] -> [B, ...]."""
    index = labels.reshape(labels.shape + (1,) * (logits.dim() - labels.dim()))
    index = index.expand(logits.shape[:-1] + (1,))
    return logits.gather(-1, index).squeeze(-1)


def rank_of_true_class(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0-based rank of the true class: the number of classes with a strictly larger logit.

    Equals the position in a descending sort when there are no ties, in O(C) per token.
    """
    return _rank(logits, true_class_logit(logits, labels))


def topk_hits(logits: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """1 where the true class is among the ``k`` largest logits (fewer than k classes score
    strictly higher), per row."""
    return (rank_of_true_class(logits, labels) < k).float()


def top1_top5(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[..., 2]: top-1 and top-5 hits of each row (the accuracies chapter 6 reports)."""
    rank = rank_of_true_class(logits, labels)
    return torch.stack([(rank < 1).float(), (rank < 5).float()], -1)


def _rank(logits: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """The one definition of the rank: classes whose logit is strictly above the true one."""
    return (logits > true.unsqueeze(-1)).sum(-1)


def identifiability(rank: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class identifiability r = 1 - rank / C (paper eq. 1); 1 means top-1."""
    return 1.0 - rank.float() / num_classes


def reduce_logits(logits: torch.Tensor, labels: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The compact per-token summary kept by extraction: rank, top-1 class, true-class logit."""
    true = true_class_logit(logits, labels)
    return {
        "rank": _rank(logits, true).to(torch.int16),
        "top1": logits.argmax(-1).to(torch.int16),
        "true_logit": true.float(),
    }
