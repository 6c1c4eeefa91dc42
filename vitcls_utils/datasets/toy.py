"""The embedded default's data: a synthetic segmented dataset, generated, never stored (the
tiny ViTs trained on it are made by :mod:`vitcls_utils.training.toy_models`).

Each image shows one object on a textured scene. The class is the combination of the object's
shape (4), colour (3) and texture (2): 24 classes. Every class has a preferred scene (one of 8)
on which it appears with probability 1/2, so the background carries partial class evidence, as
context does in ImageNet. The object covers 10-40% of the image and its mask is stored in the
ImageNet-S encoding (category id = R + 256·G, id = class + 1, background 0), so one code path
turns masks into token labels for both datasets.

Images are 56×56, so with 8-pixel patches the token grid is 7×7 and a CLS model has 50 tokens,
like the paper's ViT-B/32. Every image is a pure function of (split, index, seed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from .preprocess import Preprocess

IMAGE_SIZE = 56
PATCH_SIZE = 8
GENERATOR_VERSION = 1

SHAPES = ("disc", "square", "triangle", "cross")
COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 45, 40), "yellow": (235, 200, 40), "blue": (45, 85, 225)}
TEXTURES = ("solid", "striped")
CLASS_NAMES: List[str] = [f"{c} {t} {s}" for s in SHAPES for c in COLOURS for t in TEXTURES]
NUM_CLASSES = len(CLASS_NAMES)
SCENES = ("sand", "grass", "water", "brick", "sky", "forest", "snow", "night")
P_PREFERRED_SCENE = 0.5

SPLITS = {"train": 0, "val": 1, "probe-train": 2}
#: images per class of each split
SPLIT_SIZES = {"train": 800, "val": 20, "probe-train": 10}

TOY_PREPROCESS = Preprocess(
    resize=(IMAGE_SIZE, IMAGE_SIZE), crop=None, interpolation="bilinear",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), source="toy: no resize, scale to [-1, 1]")


def preferred_scene(label: int) -> int:
    """The scene a class appears on half of the time."""
    return label % len(SCENES)


@dataclass(frozen=True)
class ToySample:
    """One generated stimulus: RGB image, ImageNet-S-encoded mask, label and its scene."""

    image: Image.Image
    mask: Image.Image
    label: int
    scene: int


def _scene(kind: int, rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """A textured background [H, W, 3] float in 0..255."""
    s = IMAGE_SIZE
    noise = rng.normal(0, 1, (s, s, 1))
    phase = rng.uniform(0, 2 * np.pi)
    if kind == 0:    # sand: warm, fine grain
        base, tex = (200, 170, 120), 18 * noise
    elif kind == 1:  # grass: green vertical streaks
        streaks = rng.normal(0, 1, (1, s, 1)).repeat(s, 0)
        base, tex = (70, 150, 60), 25 * streaks + 8 * noise
    elif kind == 2:  # water: blue horizontal waves
        base, tex = (60, 110, 170), 22 * np.sin(yy[..., None] / 2.0 + phase) + 6 * noise
    elif kind == 3:  # brick: red-brown checks
        checks = ((yy // 7 + xx // 11) % 2)[..., None]
        base, tex = (150, 80, 60), 35 * checks + 8 * noise
    elif kind == 4:  # sky: light vertical gradient
        base, tex = (150, 190, 235), (yy[..., None] - s / 2) * 1.2 + 4 * noise
    elif kind == 5:  # forest: dark green blotches
        blobs = np.sin(xx[..., None] / 3 + phase) * np.cos(yy[..., None] / 4 - phase)
        base, tex = (35, 80, 40), 25 * blobs + 8 * noise
    elif kind == 6:  # snow: near white with grain
        base, tex = (230, 232, 240), 10 * noise
    else:            # night: dark violet with stars
        stars = (rng.uniform(0, 1, (s, s, 1)) > 0.97) * 150
        base, tex = (40, 30, 70), stars + 5 * noise
    return np.asarray(base, dtype=np.float64) + tex


def _object_mask(shape: str, rng: np.random.Generator, yy: np.ndarray,
                 xx: np.ndarray) -> np.ndarray:
    """Boolean mask of one object covering roughly 10-40% of the image."""
    s = IMAGE_SIZE
    area = rng.uniform(0.10, 0.40) * s * s
    if shape == "disc":
        half = np.sqrt(area / np.pi)
    elif shape == "square":
        half = np.sqrt(area) / 2
    elif shape == "triangle":
        half = np.sqrt(area / 2.0)  # height 2h, base 2h: area 2h²
    else:
        half = np.sqrt(area / 2.56)  # two 2h × 0.8h bars: 2·1.6h² − 0.64h² = 2.56h²
    half = min(half, s / 2 - 1)
    cy, cx = rng.uniform(half, s - half, size=2)
    dy, dx = yy - cy, xx - cx
    if shape == "disc":
        return dy ** 2 + dx ** 2 <= half ** 2
    if shape == "square":
        return (np.abs(dy) <= half) & (np.abs(dx) <= half)
    if shape == "triangle":  # apex up, base at the bottom
        return (dy <= half) & (np.abs(dx) <= (dy + half) / 2)
    bar = 0.4 * half
    horizontal = (np.abs(dy) <= bar) & (np.abs(dx) <= half)
    return horizontal | ((np.abs(dx) <= bar) & (np.abs(dy) <= half))


def generate(split: str, index: int, seed: int = 0) -> ToySample:
    """The ``index``-th stimulus of a split, in class-major order (label = index // per class)."""
    if split not in SPLITS:
        raise ValueError(f"unknown toy split {split!r}; splits are {list(SPLITS)}")
    label = index // SPLIT_SIZES[split]
    rng = np.random.default_rng([GENERATOR_VERSION, seed, SPLITS[split], index])
    s = IMAGE_SIZE
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
    if rng.uniform() < P_PREFERRED_SCENE:
        scene = preferred_scene(label)
    else:
        others = [k for k in range(len(SCENES)) if k != preferred_scene(label)]
        scene = int(rng.choice(others))
    canvas = _scene(scene, rng, yy, xx)
    shape = SHAPES[label // (len(COLOURS) * len(TEXTURES))]
    colour = list(COLOURS.values())[(label // len(TEXTURES)) % len(COLOURS)]
    texture = TEXTURES[label % len(TEXTURES)]
    inside = _object_mask(shape, rng, yy, xx)
    paint = np.asarray(colour, dtype=np.float64) * rng.uniform(0.85, 1.1)
    paint = np.broadcast_to(paint, canvas.shape).copy()
    if texture == "striped":
        angle = rng.uniform(0, np.pi)
        stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * np.pi / 2.5) > 0
        paint[stripes] *= 0.35
    paint += rng.normal(0, 6, paint.shape)
    canvas[inside] = paint[inside]
    image = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), "RGB")
    category = np.where(inside, label + 1, 0)
    encoded = np.stack([category % 256, category // 256, np.zeros_like(category)], -1)
    mask = Image.fromarray(encoded.astype(np.uint8), "RGB")
    return ToySample(image=image, mask=mask, label=label, scene=scene)


def two_objects(split: str, first: int, second: int, seed: int = 0
                ) -> Tuple[Image.Image, np.ndarray, Tuple[int, int]]:
    """Image ``first`` with the object of image ``second`` pasted over it (same position as in
    its own image): a two-object stimulus for explanation maps. Returns the image, the category
    ids per pixel (class + 1, background 0; the pasted object wins where they overlap) and the
    two labels."""
    base, other = generate(split, first, seed), generate(split, second, seed)
    ids_base = np.asarray(base.mask)[..., 0].astype(np.int32)
    ids_other = np.asarray(other.mask)[..., 0].astype(np.int32)
    pasted = ids_other > 0
    pixels = np.asarray(base.image).copy()
    pixels[pasted] = np.asarray(other.image)[pasted]
    ids = np.where(pasted, ids_other, ids_base)
    return Image.fromarray(pixels, "RGB"), ids, (base.label, other.label)


def split_indices(split: str, n_per_class: Optional[int] = None) -> List[int]:
    """Generator indices of a split, class-major; ``n_per_class`` keeps the first n per class."""
    per_class = SPLIT_SIZES[split]
    take = per_class if n_per_class is None else min(n_per_class, per_class)
    return [c * per_class + j for c in range(NUM_CLASSES) for j in range(take)]


def split_size(split: str, n_per_class: Optional[int] = None) -> int:
    """Number of images in a split (``n_per_class`` caps the per-class count)."""
    return len(split_indices(split, n_per_class))
