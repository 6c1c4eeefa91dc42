"""Few-shot linear evaluation of frozen features, as the ViT paper measures them (catalogue §7,
V6): k images per class drawn with a seeded permutation, the LSR recipe of
:mod:`vitcls_utils.analysis.least_squares` fitted on them, and accuracy averaged over seeds. It
is the decoder of the models that have no class head, and the trained-readout baseline beside
the class-space projection for those that do.

Features come from any block and token choice (the [CLS] token, the mean of the patch tokens,
one patch), each put through the model's own final norm: the vector the head would read.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from .. import _compat
from ..base.errors import VitclsError
from ..base.sites import site_kind

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..model.layout import TokenLayout  # noqa: E402
from .least_squares import L2, fit_lsr  # noqa: E402

SHOTS = (1, 5, 10, 25)
SEEDS = 3
TOKEN_CHOICES = ("cls", "mean", "patch")
TOKEN_LABELS = {"cls": "[CLS]", "mean": "mean of patches", "patch": "one patch"}


# ----------------------------------------------------------------------------------------------
# Sampling and the closed-form solve
# ----------------------------------------------------------------------------------------------
def class_orders(labels: np.ndarray, num_classes: int, seed: int) -> List[np.ndarray]:
    """Each class's pool indices in a seeded random order, classes drawn in index order from one
    generator (as big_vision does); the k-shot set of a seed is the first k of each."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    return [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]


def shot_indices(orders: Sequence[np.ndarray], shots: int) -> np.ndarray:
    """The training rows of a k-shot set: the first ``shots`` of every class's order (fewer
    where a class has fewer images)."""
    return np.concatenate([order[:shots] for order in orders]).astype(np.int64)


def fewshot_accuracy(train_x: torch.Tensor, train_y: np.ndarray, test_x: torch.Tensor,
                     test_y: np.ndarray, num_classes: int, shots: Sequence[int] = SHOTS,
                     seeds: int = SEEDS, l2: float = L2) -> pd.DataFrame:
    """k-shot accuracy of features [..., N, D] (leading dims, e.g. blocks, solved at once):
    rows (shots, seed, index of the leading dims, accuracy)."""
    train_y, test_y = np.asarray(train_y), torch.as_tensor(np.asarray(test_y))
    lead = train_x.shape[:-2]
    rows = []
    for seed in range(seeds):
        orders = class_orders(train_y, num_classes, seed)
        for k in shots:
            chosen = torch.as_tensor(shot_indices(orders, k))
            probe = fit_lsr(train_x[..., chosen, :], torch.as_tensor(train_y[chosen.numpy()]),
                            num_classes, l2)
            hits = (probe.predict(test_x).cpu() == test_y).double().mean(-1).reshape(-1)
            for index, value in enumerate(hits.tolist()):
                rows.append((k, seed, index, value))
    frame = pd.DataFrame(rows, columns=["shots", "seed", "index", "accuracy"])
    frame.attrs["lead"] = tuple(lead)
    return frame


def usable_shots(labels: np.ndarray, num_classes: int, shots: Sequence[int] = SHOTS
                 ) -> List[int]:
    """The shot counts that run, as big_vision's evaluator runs them: every one asked for, in
    the order given. A class with fewer than k images gives the k-shot set all it has, a class
    the pool lacks (ImageNet-S has 919 of ImageNet's 1000) gives none (:func:`shot_indices`);
    neither drops a shot count. :func:`short_classes` says which classes are short at a k.

    Args:
        labels: the pool's labels, [N] ints in 0 .. num_classes - 1.
        num_classes: the number of classes of the labels.
        shots: the k of the k-shot sets asked for (each >= 1).

    Returns:
        The shot counts, as ints in the order given; empty only for an empty pool.

    Raises:
        VitclsError: for a shot count below 1 or a label outside the classes.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
        raise VitclsError(f"labels must be in 0 .. {num_classes - 1}")
    if any(int(k) < 1 for k in shots):
        raise VitclsError(f"shot counts are images per class, at least 1, not {list(shots)}")
    return [int(k) for k in shots] if len(labels) else []


def short_classes(labels: np.ndarray, num_classes: int, shots: int) -> List[int]:
    """The classes of the pool with fewer than ``shots`` images (but at least one): each gives
    a ``shots``-shot set the rows it has, as in big_vision.

    Args:
        labels: the pool's labels, [N] ints in 0 .. num_classes - 1.
        num_classes: the number of classes of the labels.
        shots: the k of a k-shot set.

    Returns:
        The short classes' indices, ascending.
    """
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    return [int(c) for c in np.flatnonzero((counts > 0) & (counts < shots))]


def shots_note(labels: np.ndarray, num_classes: int, shots: Sequence[int]) -> str:
    """What the pool gives at each shot count, for the page: the counts at which some class is
    short, how many classes, and whether the set is then the whole pool.

    Args:
        labels: the pool's labels, [N] ints in 0 .. num_classes - 1.
        num_classes: the number of classes of the labels.
        shots: the shot counts that run (:func:`usable_shots`).

    Returns:
        A str, empty when every class present fills every shot count.
    """
    present = int((np.bincount(np.asarray(labels, dtype=np.int64),
                               minlength=num_classes) > 0).sum())
    notes = []
    for k in shots:
        short = len(short_classes(labels, num_classes, k))
        if short == present and short:
            notes.append(f"at {k} shots every class has fewer images: the set is the whole pool")
        elif short:
            notes.append(f"at {k} shots {short} of {present} classes have fewer images and "
                         "give all they have")
    return ("; ".join(notes) + " (as big_vision's evaluator does)") if notes else ""


# ----------------------------------------------------------------------------------------------
# Features
# ----------------------------------------------------------------------------------------------
@dataclass
class Features:
    """Frozen features of a dataset: per token choice [images, blocks, D] (float32), the
    images' labels, the projection's top-1 per token choice [images, blocks] (None without a
    head), and the readable images' positions in the dataset."""

    values: Dict[str, torch.Tensor]
    labels: np.ndarray
    top1: Optional[Dict[str, np.ndarray]]
    positions: np.ndarray
    blocks: List[int]


def token_choices(layout: TokenLayout, tokens: Optional[Sequence[str]] = None) -> List[str]:
    """The token choices a layout has ([CLS] only where there is one); None: all of them."""
    tokens = TOKEN_CHOICES if tokens is None else tokens
    unknown = set(tokens) - set(TOKEN_CHOICES)
    if unknown:
        raise VitclsError(f"token choices are {TOKEN_CHOICES}, not {sorted(unknown)}")
    return [t for t in tokens if t != "cls" or layout.has_cls]


def centre_patch(layout: TokenLayout) -> int:
    """Index among the patches of the patch at the grid's centre (rounded down and right)."""
    return (layout.grid[0] // 2) * layout.grid[1] + layout.grid[1] // 2


def token_features(model: nn.Module, dataset, blocks: Optional[Sequence[int]] = None,
                   tokens: Optional[Sequence[str]] = None, patch: Optional[int] = None,
                   batch_size: int = 32, progress: bool = True,
                   desc: str = "features", kind: str = "resid_post") -> Features:
    """Each image's residual stream after the chosen blocks (0-based; default all), or another
    site ``kind`` of a token width (``attn_out``, ``mlp_out``, ``resid_mid``, ...), reduced to
    the token choices and put through the model's final norm, in one streamed pass.

    "mean" averages the patch tokens and then normalises (for average-pooled models, at the last
    block, exactly the model's pre-logits); "patch" is one patch (default: the centre one).
    """
    from ..datasets.kinds import UNREADABLE
    from ..model.hooks import hooks
    from ..stores.stimulus_loader import stimulus_loader
    from ..base.progress import with_progress
    from ..model.projection import ClassProjector

    layout = TokenLayout.of(model)
    chosen = token_choices(layout, tokens)
    n_patches = layout.grid[0] * layout.grid[1]
    patch = centre_patch(layout) if patch is None else int(patch)
    if not 0 <= patch < n_patches:
        raise VitclsError(f"patch {patch} is not one of the {n_patches} patches")
    blocks = list(range(len(model.blocks))) if blocks is None else [int(b) for b in blocks]
    device = next(model.parameters()).device
    projector = ClassProjector(model, require_head=False).to(device)
    start = layout.num_prefix
    pick = {"cls": lambda h: h[:, 0], "mean": lambda h: h[:, start:].mean(1),
            "patch": lambda h: h[:, start + patch]}
    values: Dict[str, List[torch.Tensor]] = {t: [] for t in chosen}
    top1: Dict[str, List[torch.Tensor]] = {t: [] for t in chosen}
    labels, positions, batch_rows = [], [], {}

    def keep(value: torch.Tensor, name: str) -> None:
        batch_rows[int(name.split(".")[1])] = value

    loader = stimulus_loader(dataset, model.vitcls_info.variant.preprocess, layout, batch_size,
                             device=device)
    seen = 0
    full = site_kind(kind)
    if full in ("attn.hook_pattern", "attn.hook_z", "mlp.hook_pre", "mlp.hook_post"):
        raise VitclsError(f"features are tokens of the model's width; {full} is not")
    sites = [f"blocks.{b}.{full}" for b in blocks]
    with torch.no_grad(), hooks(model, [(sites, keep)]):
        for batch in with_progress(loader, len(dataset), desc, progress):
            ok = batch["status"] != UNREADABLE
            positions.append(np.arange(seen, seen + len(ok))[ok.numpy()])
            seen += len(ok)
            if not ok.any():
                continue
            model(batch["image"][ok].to(device))
            for token in chosen:
                z = torch.stack([projector.normalize(pick[token](batch_rows[b]))
                                 for b in blocks], 1)  # [B, L, D]
                values[token].append(z.cpu())
                if projector.has_head:
                    top1[token].append(projector.classify(z).argmax(-1).cpu())
            labels.append(batch["label"][ok])
    if not labels:
        raise VitclsError("no readable image in the dataset")
    return Features(
        values={t: torch.cat(v) for t, v in values.items()},
        labels=torch.cat(labels).numpy(),
        top1={t: torch.cat(v).numpy() for t, v in top1.items()} if projector.has_head else None,
        positions=np.concatenate(positions), blocks=[b + 1 for b in blocks])


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------
def fewshot_by_block(train: Features, test: Features, num_classes: int,
                     shots: Sequence[int] = SHOTS, seeds: int = SEEDS,
                     l2: float = L2) -> pd.DataFrame:
    """k-shot top-1 per token choice, block and shot count, averaged over seeds.

    Args:
        train: features of the pool the k-shot sets are drawn from (:func:`token_features`).
        test: features of the evaluation images, same blocks and token choices.
        num_classes: the number of classes of the labels.
        shots: the k of the k-shot sets (use :func:`usable_shots`).
        seeds: how many seeded draws (0 .. seeds - 1) to average over.
        l2: the LSR's ridge weight.

    Returns:
        DataFrame with columns ``token`` (its label, e.g. "[CLS]"), ``block`` (1-based),
        ``shots``, ``accuracy`` (fraction, mean over seeds) and ``accuracy_std`` (over seeds).
    """
    frames = []
    for token, train_x in train.values.items():
        per_seed = fewshot_accuracy(train_x.transpose(0, 1), train.labels,
                                    test.values[token].transpose(0, 1), test.labels,
                                    num_classes, shots, seeds, l2)
        per_seed["block"] = [train.blocks[i] for i in per_seed["index"]]
        frames.append(per_seed.assign(token=TOKEN_LABELS[token]))
    table = pd.concat(frames).groupby(["token", "block", "shots"], as_index=False).agg(
        accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"))
    return table


def projection_by_block(test: Features) -> pd.DataFrame:
    """The class-space projection's top-1 per token choice and block: rows (token, block,
    accuracy). Empty without a head."""
    if test.top1 is None:
        return pd.DataFrame(columns=["token", "block", "accuracy"])
    rows = [(TOKEN_LABELS[token], block, float((top1[:, i] == test.labels).mean()))
            for token, top1 in test.top1.items() for i, block in enumerate(test.blocks)]
    return pd.DataFrame(rows, columns=["token", "block", "accuracy"])


def decoders_by_block(train: Features, test: Features, num_classes: int,
                      shots: Sequence[int] = SHOTS, seeds: int = SEEDS,
                      l2: float = L2) -> pd.DataFrame:
    """The bridge: per token choice and block, the projection's top-1 beside each k-shot
    probe's.

    Args:
        train: features of the pool the k-shot sets are drawn from (:func:`token_features`).
        test: features of the evaluation images, same blocks and token choices.
        num_classes: the number of classes of the labels.
        shots: the k of the k-shot sets (use :func:`usable_shots`).
        seeds: how many seeded draws (0 .. seeds - 1) to average over.
        l2: the LSR's ridge weight.

    Returns:
        DataFrame with columns ``token``, ``block`` (1-based), ``decoder`` ("projection",
        with a head only, or "<k>-shot LSR") and ``accuracy`` (fraction; probes: seed mean).
    """
    fewshot = fewshot_by_block(train, test, num_classes, shots, seeds, l2)
    fewshot = fewshot.assign(decoder=fewshot.shots.map(lambda k: f"{k}-shot LSR"))
    projection = projection_by_block(test).assign(decoder="projection")
    columns = ["token", "block", "decoder", "accuracy"]
    return pd.concat([projection[columns], fewshot[columns]], ignore_index=True)


def decoders_table(frame: pd.DataFrame) -> pd.DataFrame:
    """:func:`decoders_by_block` as a table: one row per token choice and block, the projection
    first, then the probes by shot count.

    Args:
        frame: :func:`decoders_by_block`'s frame.

    Returns:
        DataFrame indexed by (token, block), a column of accuracies per decoder: "projection"
        (where there is one), then "<k>-shot LSR" by increasing k.
    """
    wide = frame.pivot_table(index=["token", "block"], columns="decoder", values="accuracy",
                             sort=False)
    probes = sorted((c for c in wide.columns if c != "projection"),
                    key=lambda c: int(c.split("-")[0]))
    return wide[[c for c in ["projection"] if c in wide.columns] + probes]
