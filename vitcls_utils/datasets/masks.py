"""Segmentation masks -> per-token labels: 1 = class-labeled token, 0 = context, -1 = not an
image token (prefix tokens) or no mask.

Masks use the ImageNet-S encoding: category id = R + 256·G per pixel (catalogue §3), decoded in
int32 (the authors' uint8 arithmetic overflows under NumPy 2, bug B15a). Two labelings:

- ``token_labels`` (default): the mask goes through the variant's own resize and crop
  (nearest-neighbour), so it stays aligned with the image the model sees, also for the
  cropping variants (MIIL, Refinement); a token is class-labeled when at least ``threshold``
  of its patch is object.
- ``token_labels_paper``: the authors' rule, OpenCV ``INTER_NEAREST`` from the full image to
  the token grid, i.e. one pixel per cell at its top-left corner, no crop, no threshold (B15b/c).
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
from PIL import Image

from .preprocess import Preprocess

MaskLike = Union[Image.Image, np.ndarray]


def decode_mask(mask: MaskLike) -> np.ndarray:
    """Category ids [H, W] int32 from an ImageNet-S mask (RGB PNG or its array)."""
    array = np.asarray(mask.convert("RGB") if isinstance(mask, Image.Image) else mask)
    if array.ndim != 3 or array.shape[2] < 2:
        raise ValueError(f"expected an RGB mask, got an array of shape {array.shape}")
    array = array.astype(np.int32)
    return array[..., 0] + 256 * array[..., 1]


def _with_prefix(cells: np.ndarray, num_prefix: int) -> np.ndarray:
    flat = cells.reshape(-1).astype(np.int8)
    return np.concatenate([np.full(num_prefix, -1, dtype=np.int8), flat])


def token_labels(ids: np.ndarray, category: int, preprocess: Preprocess, grid: Tuple[int, int],
                 num_prefix: int, threshold: float = 0.5) -> np.ndarray:
    """Labels [num_prefix + gh·gw] from the mask put through the variant's own geometry."""
    binary = Image.fromarray((ids == category).astype(np.uint8))
    warped = np.asarray(preprocess.geometry(binary, resample="nearest"), dtype=np.float32)
    gh, gw = grid
    height, width = warped.shape
    if height % gh or width % gw:
        raise ValueError(f"preprocessed size {height}x{width} is not a multiple of grid {grid}")
    coverage = warped.reshape(gh, height // gh, gw, width // gw).mean(axis=(1, 3))
    return _with_prefix(coverage >= threshold, num_prefix)


def nearest_indices(source: int, target: int) -> np.ndarray:
    """Source rows (or columns) that OpenCV's INTER_NEAREST samples: floor(i · (1 / (t/s)))."""
    inverse_scale = 1.0 / (target / source)  # OpenCV computes the scale, then inverts it
    return np.minimum(np.floor(np.arange(target) * inverse_scale).astype(np.int64), source - 1)


def token_labels_paper(ids: np.ndarray, category: int, grid: Tuple[int, int],
                       num_prefix: int) -> np.ndarray:
    """Labels the authors' way: full-image mask, INTER_NEAREST to the grid (top-left pixels)."""
    gh, gw = grid
    rows = nearest_indices(ids.shape[0], gh)
    cols = nearest_indices(ids.shape[1], gw)
    return _with_prefix(ids[np.ix_(rows, cols)] == category, num_prefix)
