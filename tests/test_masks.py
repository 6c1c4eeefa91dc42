"""Mask decoding and token labels: hand-computed grids, and the paper's rule against OpenCV."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from vitcls_utils.datasets.masks import (decode_mask, nearest_indices, token_labels,
                                         token_labels_paper)
from vitcls_utils.datasets.preprocess import HF_VIT, MIIL


def encode(ids: np.ndarray) -> Image.Image:
    """Category ids -> an ImageNet-S PNG-style RGB image (R = id % 256, G = id // 256)."""
    rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], -1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def test_decode_uses_both_channels_without_overflow():
    ids = np.array([[0, 1, 255], [256, 919, 1000]], dtype=np.int64)
    decoded = decode_mask(encode(ids))
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, ids)


def test_resize_only_grid_by_hand():
    """Object in the top-left quarter of a 112x112 image -> the top-left 7x7 of 14x14 tokens."""
    ids = np.zeros((112, 112), dtype=np.int32)
    ids[:56, :56] = 5
    labels = token_labels(ids, 5, HF_VIT, (14, 14), num_prefix=1)
    expected = np.zeros((14, 14), dtype=np.int8)
    expected[:7, :7] = 1
    assert labels[0] == -1
    np.testing.assert_array_equal(labels[1:].reshape(14, 14), expected)
    other_class = token_labels(ids, 6, HF_VIT, (14, 14), num_prefix=0)
    assert (other_class == 0).all()


def test_resize_and_crop_grid_by_hand():
    """MIIL on a 320x256 image: no resize (short side is 256), center crop 224 at left 48,
    top 16. An object in columns 48..63 becomes the first token column after the crop; the
    paper's full-image sampling misses it entirely (bug B15c)."""
    ids = np.zeros((256, 320), dtype=np.int32)
    ids[:, 48:64] = 3
    aligned = token_labels(ids, 3, MIIL, (14, 14), num_prefix=1)[1:].reshape(14, 14)
    expected = np.zeros((14, 14), dtype=np.int8)
    expected[:, 0] = 1
    np.testing.assert_array_equal(aligned, expected)
    paper = token_labels_paper(ids, 3, (14, 14), num_prefix=1)
    assert (paper[1:] == 0).all()


def test_threshold_is_half_coverage():
    ids = np.zeros((224, 224), dtype=np.int32)
    ids[:8, :16] = 1      # token (0, 0): half covered -> class
    ids[16:23, 16:32] = 1  # token (1, 1): 7/16 covered -> context
    grid = token_labels(ids, 1, HF_VIT, (14, 14), num_prefix=0).reshape(14, 14)
    assert grid[0, 0] == 1 and grid[1, 1] == 0 and grid.sum() == 1
    strict = token_labels(ids, 1, HF_VIT, (14, 14), num_prefix=0, threshold=0.6)
    assert strict.sum() == 0


@pytest.mark.parametrize("height, width, grid", [(375, 500, 7), (500, 333, 14), (224, 224, 14),
                                                  (61, 37, 7), (1000, 999, 14), (300, 7, 7)])
def test_paper_rule_equals_opencv_inter_nearest(height, width, grid):
    rng = np.random.default_rng(height * width)
    ids = rng.integers(0, 3, (height, width)).astype(np.int32)
    ours = token_labels_paper(ids, 1, (grid, grid), num_prefix=1)
    binary = (ids == 1).astype(np.uint8)
    reference = cv2.resize(binary, (grid, grid), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(ours[1:], reference.reshape(-1))
    assert ours[0] == -1


def test_nearest_indices_are_top_left_corners():
    np.testing.assert_array_equal(nearest_indices(224, 7), np.arange(7) * 32)
    np.testing.assert_array_equal(nearest_indices(500, 14), (np.arange(14) * 500) // 14)
