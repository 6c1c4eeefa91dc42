"""One variant of the model registry: the record every loader, store and notebook reads.

Kept apart from the registry's table so that variants made on the fly (``timm:<name>`` keys,
:mod:`vitcls_utils.model.timm_variants`) are the same record without importing the table.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Tuple

from ..datasets.preprocess import Preprocess


@dataclass(frozen=True)
class Variant:
    """One row of the registry.

    Attributes:
        key: registry key (``vit_b32``, ``vit_b16_random``, ...).
        label: the paper's name for it.
        arch: timm architecture name.
        tag: pinned timm pretrained tag, or None when timm has no weights for it.
        preprocess: the paper's preprocessing for this variant.
        num_classes: classes of the head; 0 for a model without one (the ImageNet-21k
            pretrained ViTs, whose head timm does not ship).
        pooling: "token" ([CLS] feeds the head) or "avg" (mean of tokens, then ``fc_norm``).
        n_tokens: tokens per image at 224 px, prefix tokens included.
        dataset: the dataset the paper analysed it on.
        paper_key: the key in the authors' code.
        weights: "timm" (timm's hub), "url" (a published checkpoint), "user" (supplied by the
            user), "shipped" (a file in this repository's ``data/``), or "random".
        weights_url: download address for "url" weights; for "shipped" weights, the file's
            path relative to ``data/``.
        weights_hint: where the weights come from, shown when they cannot be had.
        drop_prefixes: checkpoint keys to drop on load (parts of the training model the paper
            does not analyse); any other mismatch is an error.
        model_kwargs: extra ``timm.create_model`` arguments.
        random: True for the random-init controls.
        base: for a control, the key of the pretrained variant it mirrors.
        label_classes: classes of the stimuli's labels when they are not the head's (a model
            without a head is still shown ImageNet images labelled with 1000 classes).
        family: "vilas" (the main paper's variants), "vit" (the original ViT checkpoints of
            chapter 5), "ghiasi" (chapter 6's 384-px ViTs), "clip" (CLIP image towers), "cnn"
            (the convolutional baselines of chapter 6), "convit" (ConViT, chapter 7), "deit"
            (its DeiT baselines), "toy", or "timm" (a ``timm:<name>`` key: any timm model,
            its block family read off the model by :mod:`vitcls_utils.model.families`).
        note: what a reader must know about these weights (a stand-in's different numbers).
    """

    key: str
    label: str
    arch: str
    tag: Optional[str]
    preprocess: Preprocess
    num_classes: int
    pooling: str
    n_tokens: int
    dataset: str
    paper_key: str
    weights: str
    weights_url: Optional[str] = None
    weights_hint: str = ""
    drop_prefixes: Tuple[str, ...] = ()
    model_kwargs: Tuple[Tuple[str, Any], ...] = ()
    random: bool = False
    base: Optional[str] = None
    label_classes: Optional[int] = None
    family: str = "vilas"
    note: str = ""

    @property
    def is_vit(self) -> bool:
        """False for the convolutional baselines, which have no tokens to hook."""
        return self.family != "cnn"

    @property
    def timm_name(self) -> str:
        """``arch.tag`` as timm spells a pretrained model."""
        return f"{self.arch}.{self.tag}" if self.tag else self.arch

    @property
    def has_head(self) -> bool:
        """False for the models without a classifier: class-space analyses need one."""
        return self.num_classes > 0

    @property
    def classes(self) -> int:
        """Classes of the stimuli's labels: the head's, or ``label_classes`` without one."""
        return self.label_classes or self.num_classes

    @property
    def has_cls(self) -> bool:
        """True when token 0 is [CLS]."""
        return self.pooling == "token"

    @property
    def random_key(self) -> str:
        """Key of this variant's random-init control."""
        if self.random:
            return self.key
        if self.key.startswith("timm:"):  # timm keys take options after a colon
            return f"{self.key}:random"
        return f"{self.key}_random"
