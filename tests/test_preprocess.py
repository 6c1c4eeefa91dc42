"""Preprocessing equals torchvision's transforms, the independent reference the paper's code
used (timm eval / torchvision pipelines), and keeps masks aligned with images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from vitcls_utils.datasets.preprocess import CIFAR, DEIT_REFINEMENT, HF_VIT, MIIL

InterpolationMode = T.InterpolationMode


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def reference(recipe, resize, crop, interpolation):
    steps = [T.Resize(resize, interpolation=interpolation)]
    if crop:
        steps.append(T.CenterCrop(crop))
    steps += [T.ToTensor(), T.Normalize(recipe.mean, recipe.std)]
    return T.Compose(steps)


@pytest.mark.parametrize("size", [(500, 375), (333, 500), (224, 224), (37, 61)])
def test_recipes_match_torchvision(size):
    image = photo(*size)
    cases = [
        (HF_VIT, reference(HF_VIT, (224, 224), None, InterpolationMode.BILINEAR)),
        (MIIL, reference(MIIL, 256, 224, InterpolationMode.BILINEAR)),
        (CIFAR, reference(CIFAR, (224, 224), 224, InterpolationMode.BILINEAR)),
        (DEIT_REFINEMENT, reference(DEIT_REFINEMENT, (256, 256), 224, InterpolationMode.BICUBIC)),
    ]
    for recipe, expected in cases:
        ours = recipe(image)
        assert ours.shape == (3, 224, 224) and ours.dtype == torch.float32
        torch.testing.assert_close(ours, expected(image), rtol=0, atol=2e-6)


def test_hf_vit_values_by_hand():
    image = Image.new("RGB", (10, 20), (255, 0, 128))
    out = HF_VIT(image)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]))


def test_miil_geometry_and_mask_alignment():
    assert MIIL.resized_size(500, 375) == (341, 256)
    assert MIIL.crop_box(341, 256) == (58, 16, 282, 240)
    image = photo(500, 375)
    mask = Image.fromarray((np.arange(500)[None, :].repeat(375, 0) >= 250).astype(np.uint8))
    warped = np.asarray(MIIL.geometry(mask, resample="nearest"))
    assert warped.shape == (224, 224) and set(np.unique(warped)) == {0, 1}
    assert MIIL.geometry(image).size == (224, 224)


def test_non_rgb_input_is_converted():
    assert HF_VIT(Image.new("L", (30, 30), 255)).shape == (3, 224, 224)


@pytest.mark.parametrize("size", [(500, 375), (333, 500)])
def test_original_vit_recipes_match_timms_own_eval_transforms(size):
    """The fine-tuned original ViTs are read exactly as timm's pretrained config says; the
    ImageNet-21k ones as big_vision's few-shot evaluation (resize 256 x 256, crop 224)."""
    import timm
    from timm.data import create_transform, resolve_data_config

    from vitcls_utils.datasets.preprocess import BIG_VISION_FEWSHOT, TIMM_ORIG_224, TIMM_ORIG_384

    image = photo(*size)
    for recipe, name in ((TIMM_ORIG_224, "vit_base_patch16_224.orig_in21k_ft_in1k"),
                         (TIMM_ORIG_384, "vit_base_patch16_384.orig_in21k_ft_in1k")):
        config = resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(name).to_dict())
        expected = create_transform(**config)(image)
        torch.testing.assert_close(recipe(image), expected, rtol=0, atol=2e-6)
    few_shot = reference(BIG_VISION_FEWSHOT, (256, 256), 224, InterpolationMode.BILINEAR)
    torch.testing.assert_close(BIG_VISION_FEWSHOT(image), few_shot(image), rtol=0, atol=2e-6)
