"""How faithful an explanation's token order is: the perturbation test (catalogue E15).

:func:`perturbation_test` keeps the prefix tokens and the n most (or least) important image
tokens after the position embedding, for n = 1 .. T-1 (or :func:`kept_counts`), and records per
image whether the model is still right; :func:`paper_auc` is the authors' area (B18),
:func:`normalized_auc` the trapezoid area on the fraction-removed axis. Read off it: the paired
test over images that a map beats random (:func:`auc_tests`), the baseline lines
(:func:`baselines`), and how many tokens can go before the accuracy falls
(:func:`accuracy_kept`).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from .. import _compat
from ..base.stats import wilcoxon_greater
from ..base.uncertainty import bootstrap, paired_difference

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from .explanation_maps import stimulus_batches  # noqa: E402
from ..model.layout import TokenLayout  # noqa: E402
from ..model.perturbations import keeping_tokens  # noqa: E402


def faithfulness_outcomes(model: nn.Module, loader: Callable[[], "Sequence"], orders: np.ndarray,
                          positive: bool = False, counts: Optional[Sequence[int]] = None
                          ) -> np.ndarray:
    """Per image, whether the model is right when only the prefix tokens and n image tokens are
    kept, for each n.

    Args:
        loader: returns an iterable of (images [B, 3, H, W], labels [B], positions [B]) batches,
            positions indexing rows of ``orders``.
        orders: image-token ranking per image [I, T], most important first (0-based image
            token indices, prefix excluded).
        positive: keep the least important tokens (removing the most important first);
            otherwise keep the most important (the negative test).
        counts: numbers of kept image tokens; default 1 .. T-1, as the paper.

    Returns:
        correct [images the loader yields, len(counts)], bool, in loader order.
    """
    layout = TokenLayout.of(model)
    n_image = orders.shape[1]
    counts = list(range(1, n_image)) if counts is None else list(counts)
    ranked = orders[:, ::-1] if positive else orders
    rows = []
    device = next(model.parameters()).device
    prefix = torch.arange(layout.num_prefix)
    with torch.no_grad():
        for images, labels, positions in loader():
            images = images.to(device)
            chosen = torch.from_numpy(np.ascontiguousarray(ranked[np.asarray(positions)]))
            correct = np.zeros((len(labels), len(counts)), dtype=bool)
            for k, n in enumerate(counts):
                image_tokens = chosen[:, :n].sort(dim=1).values + layout.num_prefix
                kept = torch.cat([prefix.expand(len(labels), -1), image_tokens], dim=1)
                with keeping_tokens(model, kept):
                    pred = model(images).argmax(-1).cpu()
                correct[:, k] = (pred == labels).numpy()
            rows.append(correct)
    return np.concatenate(rows) if rows else np.zeros((0, len(counts)), dtype=bool)


def faithfulness_curve(model: nn.Module, loader: Callable[[], "Sequence"], orders: np.ndarray,
                       positive: bool = False, counts: Optional[Sequence[int]] = None
                       ) -> np.ndarray:
    """Top-1 accuracy for each number of kept image tokens: :func:`faithfulness_outcomes`
    averaged over images. Returns accuracy [len(counts)]."""
    outcomes = faithfulness_outcomes(model, loader, orders, positive, counts)
    return outcomes.mean(axis=0) if len(outcomes) else np.zeros(outcomes.shape[1])


def kept_counts(n_image: int, n_points: Optional[int] = None) -> List[int]:
    """Numbers of kept image tokens of the perturbation test: 1 .. T-1 as the paper (None), or
    ``n_points`` of them spread evenly over that range (a quicker curve on a CPU).

    Args:
        n_image: T, the number of image tokens.
        n_points: how many counts to spread over 1 .. T-1 (>= 2); None: every count.

    Returns:
        The counts, ascending, without repeats (so possibly fewer than ``n_points``).
    """
    every = list(range(1, n_image))
    if n_points is None or n_points >= len(every):
        return every
    if n_points < 2:
        raise ValueError(f"n_points must be at least 2 (or None for every count), not {n_points}")
    return sorted({int(round(x)) for x in np.linspace(1, n_image - 1, n_points)})


def paper_auc(accuracy: np.ndarray) -> float:
    """The authors' area (B18): sum of the points / (max point x (points + 1))."""
    accuracy = np.asarray(accuracy, dtype=float)
    return float(accuracy.sum() / (accuracy.max() * (accuracy.size + 1)))


def normalized_auc(accuracy: np.ndarray, counts: Sequence[int], n_image: int) -> float:
    """Trapezoid area under accuracy vs fraction of image tokens removed, on [0, 1]."""
    removed = 1 - np.asarray(counts, dtype=float) / n_image
    order = np.argsort(removed)
    return float(np.trapezoid(np.asarray(accuracy)[order], removed[order])
                 / (removed.max() - removed.min()))


def image_areas(outcomes: np.ndarray, counts: Sequence[int], n_image: int) -> np.ndarray:
    """Each image's :func:`normalized_auc` of its own outcomes; their mean is the normalized
    AUC of the mean curve (the area is linear in the curve), so resampling them gives its
    interval.

    Args:
        outcomes: [I, len(counts)] per-image results (right or not, or a mean over orders).
        counts: kept image tokens of each point; n_image: T.

    Returns:
        [I] areas on [0, 1].
    """
    removed = 1 - np.asarray(counts, dtype=float) / n_image
    order = np.argsort(removed)
    values = np.asarray(outcomes, dtype=float)[:, order]
    return np.trapezoid(values, removed[order], axis=1) / (removed.max() - removed.min())


def _curve_key(model: nn.Module, dataset, order: np.ndarray, positive: bool,
               counts: Sequence[int]) -> str:
    """What a perturbation curve depends on, hashed: weights, preprocessing, stimuli, order."""
    import hashlib
    import json

    info = model.vitcls_info
    config = {"variant": info.variant.key, "weights_id": info.weights_id,
              "preprocess": repr(info.variant.preprocess), "stimuli": dataset.fingerprint(),
              "order": hashlib.sha256(np.ascontiguousarray(order, dtype=np.int64)).hexdigest(),
              "positive": bool(positive), "counts": [int(c) for c in counts],
              "per_image": True}
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:20]


def cached_outcomes(model: nn.Module, dataset, loader, order: np.ndarray, positive: bool,
                    counts: Sequence[int], cache_dir=None) -> np.ndarray:
    """:func:`faithfulness_outcomes`, read from ``<cache_dir>/<key>.npy`` when an identical
    test (same weights, stimuli, order, direction, counts) ran before; written there otherwise.
    Notebooks that test the same order (A11 and A12 both test the class-space and random
    orders) then pay for it once."""
    from pathlib import Path

    if cache_dir is None or not hasattr(model, "vitcls_info"):
        return faithfulness_outcomes(model, loader, order, positive, counts)
    path = Path(cache_dir) / f"{_curve_key(model, dataset, order, positive, counts)}.npy"
    if path.is_file():
        return np.load(path)
    outcomes = faithfulness_outcomes(model, loader, order, positive, counts)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
    np.save(partial, outcomes)
    partial.replace(path)  # atomic: an interrupted run never leaves a truncated file
    return outcomes


def faithfulness_test(model: nn.Module, dataset, orders: Dict[str, object],
                      batch_size: int = 64, counts: Optional[Sequence[int]] = None,
                      cache_dir=None):
    """Negative and positive perturbation curves of several orderings.

    Args:
        orders: method name -> [I, T] orders (per image), or a list of [T] orders applied to
            every image (the random baseline), whose curves are averaged.
        cache_dir: folder of computed outcomes (see :func:`cached_outcomes`); None computes all.

    Returns:
        (curves, areas, scores): DataFrames with columns (method, test, kept, removed,
        accuracy), (method, test, "AUC, authors' formula", normalized AUC, its 95% CI over
        images, :func:`image_areas` bootstrapped), and (method, test, image, score),
        an image's share of the curve's points it is classified right at (averaged over the
        random orders), what :func:`vitcls_utils.analysis.faithfulness.auc_tests` pairs over images.
    """
    import pandas as pd

    loader = stimulus_batches(model, dataset, batch_size)
    n_image = TokenLayout.of(model).n_tokens - TokenLayout.of(model).num_prefix
    counts = list(range(1, n_image)) if counts is None else list(counts)
    curves, areas, scores = [], [], []
    for method, order in orders.items():
        shared = isinstance(order, list)
        for test, positive in (("negative", False), ("positive", True)):
            per_image = ([np.broadcast_to(o, (len(dataset), n_image)) for o in order]
                         if shared else [order])
            outcomes = np.mean([cached_outcomes(model, dataset, loader, o, positive, counts,
                                                cache_dir) for o in per_image], axis=0)
            accuracy = outcomes.mean(axis=0)
            curves.append(pd.DataFrame({"method": method, "test": test, "kept": counts,
                                        "removed": 1 - np.asarray(counts) / n_image,
                                        "accuracy": accuracy}))
            areas.append({"method": method, "test": test, "AUC, authors' formula": paper_auc(accuracy),
                          "normalized AUC": normalized_auc(accuracy, counts, n_image),
                          "normalized AUC, 95% CI": bootstrap(
                              image_areas(outcomes, counts, n_image)).bounds(3)})
            scores.append(pd.DataFrame({"method": method, "test": test,
                                        "image": np.arange(len(outcomes)),
                                        "score": outcomes.mean(axis=1)}))
    return (pd.concat(curves, ignore_index=True), pd.DataFrame(areas),
            pd.concat(scores, ignore_index=True))


#: the paper's claim per test: above random for the negative test, below for the positive
ALTERNATIVES = {"negative": "greater", "positive": "less"}


def auc_tests(scores: pd.DataFrame, against: str = "random", seed: int = 0) -> pd.DataFrame:
    """Per method and test, a paired one-sided Wilcoxon signed-rank test over images of the
    image's score (its share of the curve's points classified right, the per-image area)
    against ``against``'s: greater in the negative test, less in the positive one, the claim
    the paper makes of its AUCs without a test.

    Args:
        scores: the per-image scores of :func:`faithfulness_test` (method, test, image, score).
        against: the method every other one is compared with.
        seed: the bootstrap's seed (the intervals).

    Returns:
        DataFrame, a row per (method, test) other than ``against``: ``method``, ``test``,
        ``alternative`` ("greater"/"less"), ``mean score``, ``mean score [95% CI]`` (bootstrap
        over images), ``mean score (<against>)``, ``difference from <against> [95% CI]`` (paired
        over images), ``CI excludes zero``, ``p_value`` and ``significant`` (p < 0.05).
    """
    rows = []
    for (method, test), group in scores.groupby(["method", "test"], sort=False):
        if method == against:
            continue
        base = scores[(scores.method == against) & (scores.test == test)]
        ours = group.sort_values("image").score.to_numpy()
        theirs = base.sort_values("image").score.to_numpy()
        if ours.shape != theirs.shape:
            raise ValueError(f"{method} and {against} were scored on different images")
        alternative = ALTERNATIVES[test]
        p = (wilcoxon_greater(ours, theirs) if alternative == "greater"
             else wilcoxon_greater(theirs, ours))
        difference = paired_difference(ours, theirs, seed=seed)
        rows.append({"method": method, "test": test, "alternative": alternative,
                     "mean score": float(ours.mean()),
                     "mean score [95% CI]": bootstrap(ours, seed=seed).format(3),
                     f"mean score ({against})": float(theirs.mean()),
                     f"difference from {against} [95% CI]": difference.format(3),
                     "CI excludes zero": difference.excludes_zero,
                     "p_value": p, "significant": p < 0.05})
    return pd.DataFrame(rows)


def baselines(curves: pd.DataFrame, unperturbed: float, method: str = "class_space"
              ) -> Dict[str, float]:
    """The A11 baseline lines: the unperturbed top-1 (every token kept), and the authors' line,
    the first point of the plotted curve, i.e. the negative curve with the most tokens kept
    (B17).

    Args:
        curves: the curves of :func:`faithfulness_test`.
        unperturbed: the model's top-1 with every token kept, a fraction in [0, 1].
        method: the method whose negative curve gives the authors' line.

    Returns:
        {"unperturbed": ..., "first point (the paper's line, B17)": ...}, accuracies in [0, 1].
    """
    negative = curves[(curves.method == method) & (curves.test == "negative")]
    first = float(negative.loc[negative.kept.idxmax(), "accuracy"])
    return {"unperturbed": float(unperturbed), "first point (the paper's line, B17)": first}


def accuracy_kept(curves: pd.DataFrame, baseline: float, method: str = "class_space",
                  test: str = "negative") -> float:
    """The largest % of image tokens that can be removed, least important first, with the
    accuracy at or above ``baseline`` at every step up to it (the paper: "maintained or
    improved when up to 60% of the tokens are removed").

    Args:
        curves: the curves of :func:`faithfulness_test`.
        baseline: the accuracy to keep, a fraction in [0, 1] (see :func:`baselines`).
        method: the method whose curve is read.
        test: "negative" (least important removed first) or "positive".

    Returns:
        The % of image tokens removed at the last point before the accuracy first falls below
        ``baseline``; 0 when the first point is already below.
    """
    curve = curves[(curves.method == method) & (curves.test == test)].sort_values("removed")
    removed = curve.removed.to_numpy()
    below = curve.accuracy.to_numpy() < baseline - 1e-12
    if not below.any():
        return float(100 * removed.max())
    first_drop = int(np.argmax(below))
    return float(100 * removed[first_drop - 1]) if first_drop else 0.0


#: the names ``data/paper/reported.csv`` gives the token orders of the perturbation test
PAPER_ORDER_NAMES = {"class_space": "ours", "gradient_rollout": "chefer", "probe": "probe",
                     "random": "random"}


def map_orders(model: nn.Module, stimuli, methods: Sequence[str], n_random: int,
               paper: bool = True, extra: Optional[Dict[str, object]] = None
               ) -> Dict[str, object]:
    """The token orders of the test: one per explanation method (its maps, highest first),
    then ``extra`` ones (e.g. the probe's), then ``n_random`` seeded random orders.

    Args:
        model: a loaded timm ViT (with ``vitcls_info``).
        stimuli: the dataset whose images are ordered.
        methods: explanation methods (see :data:`~.explanation_maps.METHODS`).
        n_random: how many random orders, seeded 0 .. n_random - 1.
        paper: the authors' class-space loss (B12).
        extra: further name -> order entries, as ``faithfulness_test`` takes them.

    Returns:
        dict name -> order: each method's [I, T] int array (0-based image tokens, highest score
        first), the ``extra`` entries, and "random": a list of ``n_random`` [T] arrays.
    """
    from .explanation_maps import dataset_maps, orders_from_maps, random_orders

    orders: Dict[str, object] = {
        method: orders_from_maps(dataset_maps(method, model, stimuli, paper=paper))
        for method in methods}
    orders.update(extra or {})
    orders["random"] = random_orders(model.patch_embed.num_patches, range(n_random))
    return orders
