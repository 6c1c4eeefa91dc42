"""The field's faithfulness suite for token-level explanation maps (catalogue E17): the
perturbation criteria, per image, so that every area comes with its interval over images.

A map scores the T image tokens of an image; removing a token removes the pixels of its patch.
Each criterion follows its published definition (Quantus was not used: with the project's pins
it installs opencv-python beside the pinned opencv-python-headless, two builds of one cv2, and
its metrics take pixel maps; these take token maps directly):

- **MoRF / LeRF** (Samek et al. 2017): remove the most (MoRF) or least (LeRF) relevant tokens
  first, replacing their pixels with uniform noise over the images' value range, and follow the
  target class's probability; the area under each curve (fraction removed on [0, 1]). A
  faithful map has a low MoRF area and a high LeRF area.
- **Deletion / insertion** (Petsiuk et al. 2018, RISE): deletion replaces the most relevant
  tokens first with the mean colour (0 after normalisation); insertion starts from a blurred
  image and puts the most relevant tokens back first. Low deletion area, high insertion area.
- **ROAD** (Rong et al. 2022): remove 10-90% of the tokens (most relevant first, MoRF, and
  least relevant first, LeRF) and fill their pixels by *noisy linear imputation* (each removed
  pixel the weighted mean of its eight neighbours, 1/6 direct and 1/12 diagonal, solved as one
  sparse linear system, plus Gaussian noise), which removes the shortcut of masks a model has
  never seen; the score is the mean probability over the levels.

Ties in a map (a constant map) are broken by a seeded random permutation: a map without a
ranking is a random order, never the raster order. The randomisation sanity check is
:mod:`vitcls_utils.analysis.randomisation_check`; tables with intervals are
:func:`vitcls_utils.report.vilas_tables.suite_table`.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.sparse.linalg import spsolve

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from ..model.layout import TokenLayout  # noqa: E402

#: ROAD's removal levels (fractions of the image tokens)
ROAD_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: the criteria, and which direction is the faithful one
BETTER = {"MoRF AUC": "lower", "LeRF AUC": "higher", "deletion AUC": "lower",
          "insertion AUC": "higher", "ROAD MoRF": "lower", "ROAD LeRF": "higher"}
#: ROAD's imputation: neighbour offsets and weights (direct 1/6, diagonal 1/12)
NEIGHBOURS = tuple((dy, dx, (1 / 6 if dy == 0 or dx == 0 else 1 / 12))
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0))


def road_levels(n_levels: int = 9) -> Tuple[float, ...]:
    """ROAD's removal fractions: ``n_levels`` spread evenly over 10% .. 90% (9: every tenth).

    Args:
        n_levels: how many levels (at least 1; 1 gives 50%).

    Returns:
        The fractions, ascending.
    """
    if n_levels < 1:
        raise VitclsError(f"ROAD needs at least one removal level, not {n_levels}")
    if n_levels == 1:
        return (0.5,)
    return tuple(float(round(f, 6)) for f in np.linspace(0.1, 0.9, n_levels))


def token_orders(maps: np.ndarray, seed: int = 0) -> np.ndarray:
    """Image tokens by score, highest first, ties broken by a seeded random permutation.

    Args:
        maps: token scores [I, T].
        seed: seed of the tie-breaking permutations (one per image).

    Returns:
        [I, T] int64 token indices.
    """
    maps = np.asarray(maps, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return np.stack([np.lexsort((rng.permutation(row.size), -row)) for row in maps])


def removal_counts(n_tokens: int, fractions: Sequence[float]) -> List[int]:
    """How many tokens each fraction removes: round(fraction x T)."""
    return [int(round(float(f) * n_tokens)) for f in fractions]


def token_masks(orders: np.ndarray, count: int, most_first: bool = True) -> np.ndarray:
    """Which tokens are removed when ``count`` go, most (or least) relevant first: [I, T]."""
    ranked = orders if most_first else orders[:, ::-1]
    mask = np.zeros(orders.shape, dtype=bool)
    np.put_along_axis(mask, ranked[:, :count], True, axis=1)
    return mask


def pixel_masks(mask: np.ndarray, grid: Tuple[int, int], size: Tuple[int, int]) -> torch.Tensor:
    """Token masks [I, T] as pixel masks [I, 1, H, W]: a token covers its patch."""
    (gh, gw), (h, w) = grid, size
    if h % gh or w % gw:
        raise VitclsError(f"an image of {h}x{w} pixels does not split into the {gh}x{gw} patch "
                          "grid; use the variant's own preprocessing")
    blocks = torch.from_numpy(np.ascontiguousarray(mask)).reshape(-1, 1, gh, gw)
    return blocks.repeat_interleave(h // gh, dim=2).repeat_interleave(w // gw, dim=3)


def target_probability(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       batch_size: int = 64) -> np.ndarray:
    """The softmax probability of each image's target class: [I]."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(images[start:start + batch_size].to(device)).float()
            target = labels[start:start + batch_size].to(device)[:, None]
            out.append(logits.softmax(-1).gather(1, target)[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def replacement_curve(model: nn.Module, base: torch.Tensor, other: torch.Tensor,
                      labels: torch.Tensor, orders: np.ndarray, counts: Sequence[int],
                      most_first: bool = True, batch_size: int = 64,
                      ends: Optional[Dict[str, np.ndarray]] = None,
                      names: Tuple[str, str] = ("", "")) -> np.ndarray:
    """Target probability as tokens switch from ``base`` to ``other`` in a map's order.

    Args:
        base, other: images [I, 3, H, W]; a switched token shows ``other``'s pixels.
        orders: [I, T] token orders (:func:`token_orders`); counts: tokens switched per point.
        most_first: switch the most relevant tokens first (else the least relevant).
        ends: a dict shared between curves of the same images: the two ends of a curve
            (nothing switched: ``base``; everything: ``other``) do not depend on the map, so
            each is computed once under its name in ``names`` (base's, other's).

    Returns:
        [I, len(counts)] probabilities.
    """
    layout = TokenLayout.of(model)
    grid, size = layout.grid, tuple(base.shape[-2:])
    points = []
    for count in counts:
        end = names[0] if count == 0 else names[1] if count == layout.n_patches else ""
        if ends is not None and end and end in ends:
            points.append(ends[end])
            continue
        mask = pixel_masks(token_masks(orders, count, most_first), grid, size)
        points.append(target_probability(model, torch.where(mask, other, base), labels,
                                         batch_size))
        if ends is not None and end:
            ends[end] = points[-1]
    return np.stack(points, axis=1)


def curve_area(curves: np.ndarray, fractions: Sequence[float]) -> np.ndarray:
    """Per image, the trapezoid area under a curve on the fraction axis, over its span: [I]."""
    x = np.asarray(fractions, dtype=np.float64)
    return np.trapezoid(np.asarray(curves, dtype=np.float64), x, axis=1) / (x.max() - x.min())


def uniform_noise(images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Samek's replacement: per-channel uniform noise over the images' value range."""
    low = images.amin(dim=(0, 2, 3), keepdim=True)
    high = images.amax(dim=(0, 2, 3), keepdim=True)
    noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed))
    return low + (high - low) * noise.to(images.dtype)


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur per channel (RISE's insertion start), reflect-padded, radius ceil(2 sigma)."""
    radius = max(1, math.ceil(2 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype)
    kernel = torch.exp(-x ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def noisy_linear_impute(image: np.ndarray, removed: np.ndarray, noise: float = 0.01,
                        rng: np.random.Generator | None = None) -> np.ndarray:
    """ROAD's noisy linear imputation of the removed pixels of one image.

    Each removed pixel equals the weighted mean of its in-image neighbours (:data:`NEIGHBOURS`,
    weights renormalised at the border), removed neighbours being unknowns too: one sparse
    linear system for all removed pixels and channels; then Gaussian noise of standard
    deviation ``noise`` is added to the imputed pixels only.

    Args:
        image: [C, H, W] float; removed: [H, W] bool.
        noise: the noise's standard deviation (ROAD's 0.01); rng: its generator.

    Returns:
        [C, H, W] float64, known pixels unchanged.
    """
    image = np.asarray(image, dtype=np.float64)
    out = image.copy()
    h, w = removed.shape
    ys, xs = np.nonzero(removed)
    n = ys.size
    if n == 0:
        return out
    if n == h * w:
        raise VitclsError("ROAD cannot impute an image with every pixel removed; keep a level "
                          "below 100%")
    index = np.full((h, w), -1, dtype=np.int64)
    index[ys, xs] = np.arange(n)
    diagonal, rhs = np.zeros(n), np.zeros((n, image.shape[0]))
    rows, cols, values = [], [], []
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        i, ny, nx = np.nonzero(inside)[0], ny[inside], nx[inside]
        diagonal[i] += weight
        j = index[ny, nx]
        unknown = j >= 0
        rows.append(i[unknown]), cols.append(j[unknown])
        values.append(np.full(int(unknown.sum()), -weight))
        rhs[i[~unknown]] += weight * image[:, ny[~unknown], nx[~unknown]].T
    rows.append(np.arange(n)), cols.append(np.arange(n)), values.append(diagonal)
    matrix = sparse.csc_matrix((np.concatenate(values), (np.concatenate(rows),
                                                         np.concatenate(cols))), shape=(n, n))
    solved = np.asarray(spsolve(matrix, rhs)).reshape(n, image.shape[0])
    rng = rng or np.random.default_rng(0)
    out[:, ys, xs] = solved.T + noise * rng.standard_normal((image.shape[0], n))
    return out


def road_curve(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
               orders: np.ndarray, levels: Sequence[float] = ROAD_LEVELS,
               most_first: bool = True, noise: float = 0.01, seed: int = 0,
               batch_size: int = 64) -> np.ndarray:
    """ROAD: target probability with ``levels`` of the tokens removed (most or least relevant
    first) and imputed (:func:`noisy_linear_impute`). Returns [I, len(levels)]."""
    layout = TokenLayout.of(model)
    size = tuple(images.shape[-2:])
    rng = np.random.default_rng(seed)
    source = images.detach().cpu().numpy()
    points = []
    for count in removal_counts(layout.n_patches, levels):
        masks = pixel_masks(token_masks(orders, count, most_first), layout.grid, size)
        imputed = np.stack([noisy_linear_impute(image, mask[0].numpy(), noise, rng)
                            for image, mask in zip(source, masks, strict=True)])
        points.append(target_probability(model, torch.from_numpy(imputed).to(images.dtype),
                                         labels, batch_size))
    return np.stack(points, axis=1)


def suite_curves(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 maps: np.ndarray, n_steps: int = 10, levels: Sequence[float] = ROAD_LEVELS,
                 seed: int = 0, batch_size: int = 64,
                 ends: Optional[Dict[str, np.ndarray]] = None
                 ) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Every curve of the suite for one map method.

    Args:
        model: a timm ViT (eval mode); images [I, 3, H, W] preprocessed; labels [I].
        maps: that method's token scores [I, T].
        n_steps: points of the MoRF/LeRF/deletion/insertion curves past 0 (fractions k/n_steps).
        levels: ROAD's removal fractions; seed: tie-breaking, noise and imputation seed.
        ends: the curves' ends already computed on these images (see
            :func:`replacement_curve`), filled in; None: a fresh dict.

    Returns:
        curve name -> (fractions [K], probabilities [I, K]), for ``MoRF``, ``LeRF``,
        ``deletion``, ``insertion``, ``ROAD MoRF`` and ``ROAD LeRF``.
    """
    if n_steps < 1:
        raise VitclsError(f"n_steps must be at least 1, not {n_steps}")
    layout = TokenLayout.of(model)
    if maps.shape != (len(images), layout.n_patches):
        raise VitclsError(f"maps must score the {layout.n_patches} image tokens of each of the "
                          f"{len(images)} images, got shape {maps.shape}")
    orders = token_orders(maps, seed)
    fractions = np.linspace(0, 1, n_steps + 1)
    counts = removal_counts(layout.n_patches, fractions)
    noise = uniform_noise(images, seed)
    mean_colour = torch.zeros_like(images)
    blur = blurred(images, sigma=5 * images.shape[-1] / 224)
    run = dict(labels=labels, orders=orders, counts=counts, batch_size=batch_size,
               ends={} if ends is None else ends)
    noisy, deleted, inserted = (("image", "noise"), ("image", "mean colour"),
                                ("blurred", "image"))
    return {"MoRF": (fractions, replacement_curve(model, images, noise, most_first=True,
                                                  names=noisy, **run)),
            "LeRF": (fractions, replacement_curve(model, images, noise, most_first=False,
                                                  names=noisy, **run)),
            "deletion": (fractions, replacement_curve(model, images, mean_colour,
                                                      names=deleted, **run)),
            "insertion": (fractions, replacement_curve(model, blur, images, names=inserted,
                                                       **run)),
            **{name: (np.asarray(levels, dtype=float),
                      road_curve(model, images, labels, orders, levels, most_first, seed=seed,
                                 batch_size=batch_size))
               for name, most_first in (("ROAD MoRF", True), ("ROAD LeRF", False))}}


def curve_scores(curves: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> Dict[str, np.ndarray]:
    """Per image, each criterion of :data:`BETTER` from the curves: trapezoid areas of the
    MoRF/LeRF/deletion/insertion curves, the mean over the levels for ROAD."""
    scores = {f"{name} AUC": curve_area(curves[name][1], curves[name][0])
              for name in ("MoRF", "LeRF", "deletion", "insertion")}
    scores.update({name: curves[name][1].mean(axis=1) for name in ("ROAD MoRF", "ROAD LeRF")})
    return scores


def faithfulness_suite(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                       maps: Dict[str, np.ndarray], n_steps: int = 10,
                       levels: Sequence[float] = ROAD_LEVELS, seed: int = 0,
                       batch_size: int = 64) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """The suite's curves and per-image scores for several map methods on the same images.

    Args:
        model, images, labels, n_steps, levels, seed, batch_size: as :func:`suite_curves`.
        maps: method name -> token scores [I, T].

    Returns:
        (curves, scores): ``curves`` long, columns (method, curve, fraction, image,
        probability); ``scores`` long, columns (method, criterion, image, value).
    """
    curve_rows, score_rows = [], []
    ends: Dict[str, np.ndarray] = {}  # the curves' ends, the same for every map
    for method, method_maps in maps.items():
        curves = suite_curves(model, images, labels, np.asarray(method_maps), n_steps, levels,
                              seed, batch_size, ends)
        for name, (fractions, values) in curves.items():
            n_images, n_points = values.shape
            curve_rows.append(pd.DataFrame({
                "method": method, "curve": name, "fraction": np.tile(fractions, n_images),
                "image": np.repeat(np.arange(n_images), n_points),
                "probability": values.ravel()}))
        for criterion, values in curve_scores(curves).items():
            score_rows.append(pd.DataFrame({"method": method, "criterion": criterion,
                                            "image": np.arange(len(values)), "value": values}))
    return pd.concat(curve_rows, ignore_index=True), pd.concat(score_rows, ignore_index=True)


def random_maps(n_images: int, n_tokens: int, seed: int = 0) -> np.ndarray:
    """The random map: i.i.d. uniform token scores per image, seeded: [I, T]."""
    return np.random.default_rng(seed).random((n_images, n_tokens))
