"""The registry of the paper's ViT variants (catalogue §2): one row per variant.

Every variant pins its timm architecture and pretrained tag, the paper's preprocessing, its
token layout, pooling and number of classes. ``<key>_random`` controls are the same
architectures with timm's default initialization under a fixed seed. Loading them is
:mod:`vitcls_utils.model.loading`'s job.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from ..base.errors import UnknownVariantError, VitclsError
from ..base.paths import data_dir  # noqa: F401  (the data folder, read with the registry)
from ..datasets.preprocess import (BIG_VISION_FEWSHOT, CIFAR, CLIP_OPENAI, DEIT_EVAL,
                                   DEIT_REFINEMENT, GHIASI_CNN_224, GHIASI_VIT_384, HF_VIT, MIIL,
                                   TIMM_ORIG_224, TIMM_ORIG_384, Preprocess)
from ..datasets.toy import IMAGE_SIZE as TOY_IMAGE_SIZE
from ..datasets.toy import NUM_CLASSES as TOY_CLASSES
from ..datasets.toy import PATCH_SIZE as TOY_PATCH
from ..datasets.toy import TOY_PREPROCESS
from .timm_variants import is_timm_key, parse_key, timm_variant
from .variant import Variant


_PAPER_VARIANTS: List[Variant] = [
    Variant(
        key="vit_b32", label="ViT-B/32", arch="vit_base_patch32_224", tag="augreg_in21k_ft_in1k",
        preprocess=HF_VIT, num_classes=1000, pooling="token", n_tokens=50,
        dataset="imagenet-s", paper_key="vit_b_32", weights="timm",
        weights_hint="timm hub: timm/vit_base_patch32_224.augreg_in21k_ft_in1k",
    ),
    Variant(
        key="vit_b16", label="ViT-B/16", arch="vit_base_patch16_224", tag="augreg_in21k_ft_in1k",
        preprocess=HF_VIT, num_classes=1000, pooling="token", n_tokens=197,
        dataset="imagenet-s", paper_key="vit_b_16", weights="timm",
        weights_hint="timm hub: timm/vit_base_patch16_224.augreg_in21k_ft_in1k "
        "(not the default augreg2 tag)",
    ),
    Variant(
        key="vit_l16", label="ViT-L/16", arch="vit_large_patch16_224", tag="augreg_in21k_ft_in1k",
        preprocess=HF_VIT, num_classes=1000, pooling="token", n_tokens=197,
        dataset="imagenet-s", paper_key="vit_large_16", weights="timm",
        weights_hint="timm hub: timm/vit_large_patch16_224.augreg_in21k_ft_in1k",
    ),
    Variant(
        key="vit_b16_miil", label="ViT-B/16-MIIL", arch="vit_base_patch16_224_miil",
        tag="in21k_ft_in1k", preprocess=MIIL, num_classes=1000, pooling="token", n_tokens=197,
        dataset="imagenet-s", paper_key="vit_miil_16", weights="timm",
        weights_hint="timm hub: timm/vit_base_patch16_224_miil.in21k_ft_in1k",
    ),
    Variant(
        key="vit_b16_cifar100", label="ViT-B/16-CIFAR100", arch="vit_base_patch16_224", tag=None,
        preprocess=CIFAR, num_classes=100, pooling="token", n_tokens=197,
        dataset="cifar100", paper_key="vit_cifar_16", weights="user",
        weights_hint=(
            "the authors' own fine-tune, vit_base_patch16_224-CIFAR100.pt, from the Google Drive "
            "'model checkpoint folder' linked in step 2.3 of the README of "
            "github.com/martinagvilas/vit-cls_emb; no public equivalent exists"
        ),
        model_kwargs=(("num_classes", 100),),
    ),
    Variant(
        key="vit_b16_refinement", label="ViT-B/16-Refinement", arch="vit_base_patch16_224",
        tag=None, preprocess=DEIT_REFINEMENT, num_classes=1000, pooling="token", n_tokens=197,
        dataset="imagenet-s", paper_key="deit_ensemble_16", weights="url",
        weights_url=(
            "https://github.com/Muzammal-Naseer/Improving-Adversarial-Transferability-of-"
            "Vision-Transformers/releases/download/v0/deit_base_trm.pth"
        ),
        weights_hint="Naseer et al. (ICLR 2022) release v0: deit_base_trm.pth",
        drop_prefixes=("transformerheads.",),
    ),
    Variant(
        key="vit_b16_gap", label="ViT-B/16-GAP", arch="vit_base_patch16_rpn_224", tag="sw_in1k",
        preprocess=HF_VIT, num_classes=1000, pooling="avg", n_tokens=196,
        dataset="imagenet-s", paper_key="vit_gap_16", weights="timm",
        weights_hint="timm hub: timm/vit_base_patch16_rpn_224.sw_in1k",
    ),
]


def _original(key: str, label: str, arch: str, tag: str, n_tokens: int) -> Variant:
    """An original ViT checkpoint (Dosovitskiy et al.): the ImageNet-21k ones have no head."""
    headless = tag == "orig_in21k"
    if headless:
        preprocess = BIG_VISION_FEWSHOT
    else:
        preprocess = TIMM_ORIG_384 if arch.endswith("_384") else TIMM_ORIG_224
    return Variant(
        key=key, label=label, arch=arch, tag=tag, preprocess=preprocess,
        num_classes=0 if headless else 1000, pooling="token", n_tokens=n_tokens,
        dataset="imagenet-s", paper_key="-", weights="timm",
        weights_hint=f"timm hub: timm/{arch}.{tag}" + (
            " (ImageNet-21k pretraining; timm ships it without a head)" if headless else ""),
        label_classes=1000 if headless else None, family="vit",
    )


#: the original ViT checkpoints timm has (catalogue §7): pinned tags, never the bare names
_ORIGINAL_VARIANTS: List[Variant] = [
    _original("vit_orig_b16_in21k", "ViT-B/16 (i21k)", "vit_base_patch16_224", "orig_in21k", 197),
    _original("vit_orig_b32_in21k", "ViT-B/32 (i21k)", "vit_base_patch32_224", "orig_in21k", 50),
    _original("vit_orig_l16_in21k", "ViT-L/16 (i21k)", "vit_large_patch16_224", "orig_in21k",
              197),
    _original("vit_orig_l32_in21k", "ViT-L/32 (i21k)", "vit_large_patch32_224", "orig_in21k",
              50),
    _original("vit_orig_h14_in21k", "ViT-H/14 (i21k)", "vit_huge_patch14_224", "orig_in21k",
              257),
    _original("vit_orig_b16", "ViT-B/16 (i21k, in1k)", "vit_base_patch16_224",
              "orig_in21k_ft_in1k", 197),
    _original("vit_orig_b16_384", "ViT-B/16-384 (i21k, in1k)", "vit_base_patch16_384",
              "orig_in21k_ft_in1k", 577),
    _original("vit_orig_l32_384", "ViT-L/32-384 (i21k, in1k)", "vit_large_patch32_384",
              "orig_in21k_ft_in1k", 145),
]


def _ghiasi(key: str, label: str, arch: str, tag: str, n_tokens: int, note: str = "") -> Variant:
    """A 384-px ViT of Ghiasi et al. with their loader's preprocessing."""
    return Variant(
        key=key, label=label, arch=arch, tag=tag, preprocess=GHIASI_VIT_384, num_classes=1000,
        pooling="token", n_tokens=n_tokens, dataset="imagenet-s", paper_key="-", weights="timm",
        weights_hint=f"timm hub: timm/{arch}.{tag}", family="ghiasi", note=note)


def _cnn(key: str, label: str, arch: str) -> Variant:
    """A torchvision-V1 CNN baseline of Ghiasi et al., as timm ships the same weights."""
    return Variant(
        key=key, label=label, arch=arch, tag="tv_in1k", preprocess=GHIASI_CNN_224,
        num_classes=1000, pooling="avg", n_tokens=0, dataset="imagenet-s", paper_key="-",
        weights="timm", weights_hint=f"timm hub: timm/{arch}.tv_in1k (torchvision V1 weights)",
        family="cnn")


def _clip(key: str, label: str, arch: str, n_tokens: int) -> Variant:
    """An OpenAI CLIP image tower (QuickGELU, as its weights were trained); its projection to
    the text space is not a class head, so it is dropped on load."""
    return Variant(
        key=key, label=label, arch=arch, tag="openai", preprocess=CLIP_OPENAI, num_classes=0,
        pooling="token", n_tokens=n_tokens, dataset="imagenet-s", paper_key="-", weights="timm",
        weights_hint=f"timm hub: timm/{arch}.openai", drop_prefixes=("head.",),
        label_classes=1000, family="clip")


_STAND_IN = ("stand-in: timm has no original Google weights of this model; these augreg weights "
             "of the same architecture are other weights, so their numbers differ from Ghiasi "
             "et al.'s")
#: chapter 6 (Ghiasi et al.): their 384-px ViTs, CNN baselines and CLIP towers
_GHIASI_VARIANTS: List[Variant] = [
    _ghiasi("ghiasi_b16_384", "ViT-B/16-384 (Ghiasi)", "vit_base_patch16_384",
            "orig_in21k_ft_in1k", 577),
    _ghiasi("ghiasi_l32_384", "ViT-L/32-384 (Ghiasi)", "vit_large_patch32_384",
            "orig_in21k_ft_in1k", 145),
    _ghiasi("ghiasi_b32_384", "ViT-B/32-384 (augreg stand-in)", "vit_base_patch32_384",
            "augreg_in21k_ft_in1k", 145, note=_STAND_IN),
    _ghiasi("ghiasi_l16_384", "ViT-L/16-384 (augreg stand-in)", "vit_large_patch16_384",
            "augreg_in21k_ft_in1k", 577, note=_STAND_IN),
    _cnn("resnet50_tv", "ResNet-50", "resnet50"),
    _cnn("resnet152_tv", "ResNet-152", "resnet152"),
    _cnn("densenet121_tv", "DenseNet-121", "densenet121"),
    _clip("clip_b32", "CLIP ViT-B/32 (image tower)", "vit_base_patch32_clip_quickgelu_224", 50),
    _clip("clip_b16", "CLIP ViT-B/16 (image tower)", "vit_base_patch16_clip_quickgelu_224", 197),
]


def _convit_pair(size: str, label: str) -> List[Variant]:
    """ConViT-<size> and the DeiT-<size> it was trained beside (same recipe and data)."""
    hint = "timm hub: timm/{}.fb_in1k"
    return [
        Variant(key=f"convit_{size}", label=f"ConViT-{label}", arch=f"convit_{size}",
                tag="fb_in1k", preprocess=DEIT_EVAL, num_classes=1000, pooling="token",
                n_tokens=197, dataset="imagenet-s", paper_key="-", weights="timm",
                weights_hint=hint.format(f"convit_{size}"), family="convit"),
        Variant(key=f"deit_{size}", label=f"DeiT-{label}", arch=f"deit_{size}_patch16_224",
                tag="fb_in1k", preprocess=DEIT_EVAL, num_classes=1000, pooling="token",
                n_tokens=197, dataset="imagenet-s", paper_key="-", weights="timm",
                weights_hint=hint.format(f"deit_{size}_patch16_224"), family="deit"),
    ]


#: chapter 7 (d'Ascoli et al.): ConViT-Ti/S/B and their DeiT baselines
_CONVIT_VARIANTS: List[Variant] = (_convit_pair("tiny", "Ti") + _convit_pair("small", "S")
                                   + _convit_pair("base", "B"))


_TOY_ARCH = (("img_size", TOY_IMAGE_SIZE), ("patch_size", TOY_PATCH), ("embed_dim", 64),
              ("depth", 12), ("num_heads", 4))
_TOY_HINT = "shipped in data/toy/ (rebuild with `make toy-model`)"
_TOY_VARIANTS: List[Variant] = [
    Variant(
        key="toy", label="Toy ViT (CLS)", arch="vit_tiny_patch16_224", tag=None,
        preprocess=TOY_PREPROCESS, num_classes=TOY_CLASSES, pooling="token", n_tokens=50,
        dataset="toy", paper_key="-", weights="shipped", weights_url="toy/toy.safetensors",
        weights_hint=_TOY_HINT, model_kwargs=_TOY_ARCH, family="toy",
    ),
    Variant(
        key="toy_gap", label="Toy ViT (GAP, residual post-norm)",
        arch="vit_base_patch16_rpn_224", tag=None, preprocess=TOY_PREPROCESS,
        num_classes=TOY_CLASSES, pooling="avg", n_tokens=49, dataset="toy", paper_key="-",
        weights="shipped", weights_url="toy/toy_gap.safetensors", weights_hint=_TOY_HINT,
        model_kwargs=_TOY_ARCH, family="toy",
    ),
    Variant(
        key="toy_cnn", label="Toy CNN (ResNet)", arch="resnet18", tag=None,
        preprocess=TOY_PREPROCESS, num_classes=TOY_CLASSES, pooling="avg", n_tokens=0,
        dataset="toy", paper_key="-", weights="shipped", weights_url="toy/toy_cnn.safetensors",
        weights_hint=_TOY_HINT, model_kwargs=(("channels", (16, 32, 64, 128)),
                                              ("stem_width", 16)), family="cnn",
    ),
    # Chapter 7's pair: a ConViT (width given per head, as timm's ConViT takes it; GPSA in
    # blocks 1-10, [CLS] joining before block 11) and a DeiT of the same size.
    Variant(
        key="toy_convit", label="Toy ConViT", arch="convit_tiny", tag=None,
        preprocess=TOY_PREPROCESS, num_classes=TOY_CLASSES, pooling="token", n_tokens=50,
        dataset="toy", paper_key="-", weights="shipped", weights_url="toy/toy_convit.safetensors",
        weights_hint=_TOY_HINT, model_kwargs=(("img_size", TOY_IMAGE_SIZE),
                                              ("patch_size", TOY_PATCH), ("embed_dim", 16),
                                              ("depth", 12), ("num_heads", 4)),
        family="convit",
    ),
    Variant(
        key="toy_deit", label="Toy DeiT", arch="deit_tiny_patch16_224", tag=None,
        preprocess=TOY_PREPROCESS, num_classes=TOY_CLASSES, pooling="token", n_tokens=50,
        dataset="toy", paper_key="-", weights="shipped", weights_url="toy/toy_deit.safetensors",
        weights_hint=_TOY_HINT, model_kwargs=_TOY_ARCH, family="deit",
    ),
]


def _random_control(v: Variant) -> Variant:
    return replace(
        v, key=f"{v.key}_random", label=f"{v.label} (random init)", tag=None,
        paper_key=f"{v.paper_key}_random", weights="random", weights_url=None,
        weights_hint="timm default initialization under a fixed seed", drop_prefixes=(),
        random=True, base=v.key,
    )


VARIANTS: Dict[str, Variant] = {}
for _v in _PAPER_VARIANTS:
    VARIANTS[_v.key] = _v
for _v in _PAPER_VARIANTS:
    VARIANTS[_v.key + "_random"] = _random_control(_v)
for _group in (_ORIGINAL_VARIANTS, _GHIASI_VARIANTS, _CONVIT_VARIANTS, _TOY_VARIANTS):
    for _v in _group:
        VARIANTS[_v.key] = _v
    for _v in _group:
        VARIANTS[_v.key + "_random"] = _random_control(_v)

PAPER_KEYS: Tuple[str, ...] = tuple(v.key for v in _PAPER_VARIANTS)
#: the original ViT checkpoints of chapter 5
ORIGINAL_KEYS: Tuple[str, ...] = tuple(v.key for v in _ORIGINAL_VARIANTS)
#: chapter 6's models (Ghiasi et al.): 384-px ViTs, CNN baselines, CLIP towers
GHIASI_KEYS: Tuple[str, ...] = tuple(v.key for v in _GHIASI_VARIANTS)
#: chapter 7's models (d'Ascoli et al.): ConViT-Ti/S/B beside DeiT-Ti/S/B
CONVIT_KEYS: Tuple[str, ...] = tuple(v.key for v in _CONVIT_VARIANTS)


#: ``timm:`` variants made so far (not listed among the registry's rows)
_TIMM_MADE: Dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    """Add a variant (the toy models, a user's own fine-tune) to the registry."""
    VARIANTS[variant.key] = variant
    return variant


#: a registry key or the resolved row: functions that take a variant accept either, so that
#: a caller resolves the key once and hands the row down
VariantLike = Union[str, Variant]


def get_variant(key: VariantLike) -> Variant:
    """The registry row for ``key`` (a row is returned as it is), or an error listing the
    known keys.

    Args:
        key: a variant's key (e.g. "vit_b32"), a ``timm:<name>[.<tag>][:random]`` key
            (:mod:`vitcls_utils.model.timm_variants`), or a :class:`Variant`.

    Returns:
        The :class:`Variant`.

    Raises:
        UnknownVariantError: for a key the registry does not hold and timm does not know.
    """
    if isinstance(key, Variant):
        return key
    try:
        return VARIANTS[key]
    except KeyError:
        if is_timm_key(key):  # made once from timm's configs, kept apart from the table
            if key not in _TIMM_MADE:  # (a register()ed row of the same key wins)
                _TIMM_MADE[key] = timm_variant(key)
            return _TIMM_MADE[key]
        known = ", ".join(VARIANTS)
        raise UnknownVariantError(f"unknown variant {key!r}; known variants: {known}, or any "
                                  "timm model as timm:<name>[.<tag>][:random]") from None


def variant_for_data(key: VariantLike, kind: str,
                     say: Optional[Callable[[str], None]] = None) -> Variant:
    """The variant that reads a dataset kind: the row itself, or for a random-init ``timm:``
    key without ``:classes=N``, the same key with the dataset's class count
    (``timm:<name>:random:classes=24`` on the toy set): a random head has no label space of
    its own, so it takes the stimuli's, and the store's configuration records the longer key.

    A published head of another label space is refused: its logits would be scored against
    labels they do not name.

    Args:
        key: a registry key, ``timm:`` key or row.
        kind: the dataset kind (``toy``, ``imagenet-s``, ``cifar100``, ``folder``); a folder's
            classes follow the head, so it changes nothing.
        say: called with one line when the key changes (the CLI's log, a notebook's output).

    Returns:
        The :class:`Variant` to load and store under.

    Raises:
        VitclsError: a ``timm:`` key with a published class head of another size than the
            dataset's, naming ``:classes=N`` (a fine-tune with ``--weights``), ``:random`` and
            the data the head was made for.
    """
    spec = get_variant(key)
    if not is_timm_key(spec.key):  # the registry's rows name their dataset themselves
        return spec
    from ..datasets.kinds import KIND_CLASSES

    classes = KIND_CLASSES.get(kind)
    if classes is None or spec.num_classes == classes:
        return spec
    try:
        options = parse_key(spec.key)[3]
    except UnknownVariantError:  # a register()ed row under a key of its own: taken as it is
        return spec
    if "classes" in options:  # asked for explicitly: the dataset's check names the mismatch
        return spec
    if spec.random:
        derived = f"{spec.key}:classes={classes}"
        if derived not in VARIANTS and spec.key in VARIANTS:  # an override: keep its settings
            register(replace(spec, key=derived, num_classes=classes, label_classes=None,
                             drop_prefixes=(),
                             base=f"{spec.base}:classes={classes}" if spec.base else None))
        if say is not None:
            say(f"{spec.key} on {kind}: a random-init head of {classes} classes, the dataset's "
                f"(variant {derived}; give :classes=N to choose)")
        return get_variant(derived)
    if not spec.has_head:  # no head to mismatch: the class-space commands say why not
        return spec
    raise VitclsError(
        f"{spec.key} has a published head of {spec.num_classes} classes and {kind} has "
        f"{classes}: read it on data of its label space (imagenet-s, or a folder of ImageNet "
        f"wnids, for ImageNet-1k), give a fine-tune of {classes} classes as "
        f"{spec.key}:classes={classes} with --weights FILE, or use the random control "
        f"{spec.random_key} (its head takes the dataset's classes)")


def list_variants(include_random: bool = True) -> List[Variant]:
    """All registry rows, paper variants first."""
    return [v for v in VARIANTS.values() if include_random or not v.random]
