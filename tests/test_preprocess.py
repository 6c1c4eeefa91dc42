"""Preprocessing equals torchvision's transforms, the independent reference the paper's code
used (timm eval / torchvision pipelines), and keeps masks aligned with images."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from vitcls_utils.preprocess import CIFAR, DEIT_REFINEMENT, HF_VIT, MIIL

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
