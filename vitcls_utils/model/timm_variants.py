"""Variants made on the fly from a timm model name:
``timm:<name>[.<tag>][:random][:img_size=N][:classes=N]``.

Any timm model can be read in class space without a registry row. The key names timm's
architecture and, optionally, its pretrained tag (timm's default tag otherwise); ``:random`` is
the random-init control of the same architecture; ``:img_size=N`` builds it for another input
size (a random-init model only: a checkpoint of another grid would need its position table
resampled, which loading refuses); ``:classes=N`` gives it a head of N classes (a fine-tune read
with ``--weights``, or a random control on a small label set such as the toy's). Nothing is downloaded to make the row: the preprocessing is
the model's own pretrained config (timm's ``resolve_data_config``), and the head is the one that
config declares (none for DINOv2, SigLIP and the MIM-pretrained EVA-02 towers: their decoder is
the few-shot probe). A row is made once per key and kept in the registry, so
``vu.register(dataclasses.replace(vu.get_variant(key), preprocess=...))`` overrides its
preprocessing everywhere afterwards.
"""
from __future__ import annotations

import math
import re
from typing import Dict, Optional, Tuple

from ..base.errors import UnknownVariantError
from ..datasets.preprocess import Preprocess
from .variant import Variant

PREFIX = "timm:"
#: head widths that are class spaces (ImageNet-1k, -11k, -12k, -21k in timm's label sets)
CLASS_SPACES = (1000, 11221, 11821, 21841, 21843)
_OPTION = re.compile(r"^(img_size|classes)=(\d+)$")
_FORM = "timm:<model name>[.<pretrained tag>][:random][:img_size=N][:classes=N]"


def is_timm_key(key: object) -> bool:
    """Whether ``key`` is a ``timm:`` key (no timm import)."""
    return isinstance(key, str) and key.startswith(PREFIX)


def parse_key(key: str) -> Tuple[str, Optional[str], bool, Dict[str, int]]:
    """``timm:<name>[.<tag>][:random][:img_size=N][:classes=N]`` -> its parts.

    Args:
        key: the variant key, e.g. ``timm:deit3_small_patch16_224.fb_in1k:random``.

    Returns:
        (timm architecture name, pretrained tag or None, whether random-init, options):
        options maps ``img_size`` (input side) and ``classes`` (a head of that many classes:
        a fine-tune's, or the random control's on a small dataset) to their values.

    Raises:
        UnknownVariantError: the key is not of that form.
    """
    parts = key[len(PREFIX):].split(":")
    name, tag = (parts[0].split(".", 1) + [None])[:2]
    random, options = False, {}
    for option in parts[1:]:
        match = _OPTION.match(option)
        if option == "random" and not random:
            random = True
        elif match and match.group(1) not in options and int(match.group(2)) > 0:
            options[match.group(1)] = int(match.group(2))
        else:
            raise UnknownVariantError(f"{key!r}: unknown or repeated option {option!r}; a timm "
                                      f"key is {_FORM}")
    if not name:
        raise UnknownVariantError(f"{key!r} names no model; e.g. timm:deit3_small_patch16_224")
    return name, tag or None, random, options


def preprocess_from_config(config: dict, img_size: Optional[int] = None,
                           source: str = "") -> Preprocess:
    """timm's eval transform as a :class:`Preprocess`: resize the short side to
    ``floor(size / crop_pct)`` and center-crop ``size`` ("center"), or resize both sides and
    center-crop ("squash"), as ``timm.data.create_transform`` does.

    Args:
        config: the output of ``timm.data.resolve_data_config`` (input_size, crop_pct,
            crop_mode, interpolation, mean, std).
        img_size: build for this side instead of the config's.
        source: where the recipe comes from, for the variants table.

    Returns:
        The :class:`Preprocess`.

    Raises:
        UnknownVariantError: a non-square input or a crop mode this package does not reproduce.
    """
    _, height, width = config["input_size"]
    if height != width:
        raise UnknownVariantError(f"{source}: non-square input {height}x{width} is not supported")
    size = int(img_size or height)
    crop_pct = float(config.get("crop_pct") or 1.0)
    scale = int(math.floor(size / crop_pct))
    mode = config.get("crop_mode") or "center"
    if mode == "center":
        resize: object = scale
    elif mode == "squash":
        resize = (scale, scale)
    else:
        raise UnknownVariantError(f"{source}: timm's crop mode {mode!r} is not reproduced here; "
                                  "override the preprocessing (see vitcls_utils.model."
                                  "timm_variants)")
    interpolation = config.get("interpolation", "bicubic")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bicubic"
    return Preprocess(resize=resize, crop=size, interpolation=interpolation,  # type: ignore
                      mean=tuple(config["mean"]), std=tuple(config["std"]), source=source)


def timm_variant(key: str) -> Variant:
    """The :class:`Variant` of a ``timm:`` key, made from timm's own configs (no download).

    Args:
        key: ``timm:<name>[.<tag>][:random][:img_size=N][:classes=N]``.

    Returns:
        The variant: ``weights="timm"`` (published weights, through the local cache or the hub)
        or ``"random"`` for ``:random``; ``family="timm"`` (the block family is read off the
        model when it is built, :mod:`vitcls_utils.model.families`).

    Raises:
        UnknownVariantError: the name is not a timm model, the tag not one of its tags, or
            ``img_size`` is asked of published weights.
        VitclsError: the model's blocks are of a type no anatomy adapter knows (named).
    """
    name, tag, random, options = parse_key(key)
    img_size = options.get("img_size")
    from .. import _compat

    _compat.ensure_torchvision_ops()
    import timm
    from timm.data import resolve_data_config

    if not timm.is_model(name):
        near = timm.list_models(f"*{name.split('_')[0]}*")[:8]
        raise UnknownVariantError(f"{key!r}: timm {timm.__version__} has no model {name!r}"
                                  + (f" (near: {', '.join(near)})" if near else ""))
    tags = [t.split(".", 1)[1] for t in timm.list_pretrained(f"{name}.*")]
    if tag is not None and tag not in tags:
        raise UnknownVariantError(f"{key!r}: {name} has no pretrained tag {tag!r}; its tags: "
                                  f"{', '.join(tags) or 'none'}")
    if img_size is not None and not random:
        raise UnknownVariantError(
            f"{key!r}: img_size changes the position table, so published weights would not "
            "fit; use it with :random, or pass a checkpoint of that size with --weights")
    full = f"{name}.{tag}" if tag else name
    config = timm.models.get_pretrained_cfg(full)
    resolved_tag = tag or (config.tag if config is not None else None)
    data = resolve_data_config(pretrained_cfg=config.to_dict() if config is not None else {})
    source = f"timm pretrained_cfg of {name}.{resolved_tag}" if resolved_tag else \
        f"timm defaults ({name} has no pretrained config)"
    preprocess = preprocess_from_config(data, img_size, source)
    declared = int(config.num_classes) if config is not None and config.num_classes else 0
    # a head counts as a class head only with a label space timm knows (ImageNet-1k, -11k,
    # -12k, -21k); any other width is a projection into another space (CLIP's text space),
    # dropped on load so that the tower is read without it
    num_classes = options.get("classes", declared if declared in CLASS_SPACES else 0)
    kwargs = (("img_size", img_size),) if img_size else ()
    pooling, n_tokens = _pooling_and_tokens(timm, full, num_classes, dict(kwargs))
    hub = config.hf_hub_id if config is not None and config.hf_hub_id else f"timm/{full}"
    label = name + (f".{resolved_tag}" if resolved_tag else "")
    return Variant(
        key=key, label=label + (" (random init)" if random else ""), arch=name,
        tag=resolved_tag, preprocess=preprocess, num_classes=num_classes, pooling=pooling,
        n_tokens=n_tokens, dataset="imagenet-s" if num_classes in (0, 1000) else "folder",
        paper_key="-", weights="random" if random else "timm",
        weights_hint="timm default initialization under a fixed seed" if random
        else f"timm hub: {hub}",
        drop_prefixes=("head.",) if declared and not num_classes and "classes" not in options
        else (),
        model_kwargs=kwargs, random=random, base=key.replace(":random", "") if random else None,
        label_classes=1000 if num_classes == 0 else None, family="timm",
        note=f"timm's {label} as timm builds it ({preprocess.crop} px input)")


def _pooling_and_tokens(timm, name: str, num_classes: int, kwargs: dict) -> Tuple[str, int]:
    """(pooling, tokens per image) read off the architecture built on the meta device."""
    import torch

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    from .families import model_family

    family = model_family(model)  # a block no adapter knows is refused now, before weights
    pool = str(getattr(model, "global_pool", "") or "")
    pooling = pool if pool in ("token", "avg", "map") else "avg"
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is None:
        return pooling, 0
    if family.name == "swin":  # the tokens read in class space: the last stage's
        from .stages import last_stage_grid

        rows, cols = last_stage_grid(model)
        return pooling, rows * cols
    patch = tuple(int(p) for p in model.patch_embed.patch_size)
    side = tuple(int(s) for s in model.patch_embed.img_size)
    if side != (grid[0] * patch[0], grid[1] * patch[1]):
        raise UnknownVariantError(f"timm:{name}: an input of {side[0]} px is not a whole number "
                                  f"of {patch[0]}-px patches; pick img_size = a multiple of "
                                  f"{patch[0]}")
    return pooling, int(getattr(model, "num_prefix_tokens", 0)) + int(grid[0]) * int(grid[1])
