"""Chapter 4: few-shot linear probes per (site, token), the trained baseline the class-space
projection is compared with (catalogue E16; the ViT paper's few-shot least squares, related C6).

One pass over the training images accumulates, for every site and token position, the sums a
closed-form ridge regression needs (count, sum of x, x xᵀ, and per-class sums of x); the raw
features are never stored and never re-extracted per token. Targets are +1 for the true class
and -1 elsewhere.

- ``method="ridge"`` (the paper: scikit-learn ``Ridge(alpha=1.0)``, intercept fitted by
  centering): W = (X̄ᵀX̄ + αI)⁻¹ X̄ᵀȲ on centered X and Y, b = ȳ - x̄ W.
- ``method="lsr"`` (ViT paper, big_vision's few-shot): the recipe of
  :mod:`vitcls_utils.analysis.least_squares`, here solved from the sums.

Features are the raw site tensors (no final norm), as in the authors' code. The sums take
S·N·(C + d + 1)·d float64 values (sites S, tokens N, classes C, width d): a few MB for the toy,
about 13 GB for ViT-B/32 with 1000 classes; pass fewer ``kinds`` per call on a small machine.

With fewer training images n than the width d, the same probes are solved in the dual instead
(W = Zᵀ(ZZᵀ + αI)⁻¹T on the centered or standardized features Z, the push-through identity):
the training features themselves (n·N·d per site) are then far smaller than the sums, every
site fits in one pass, and W is never formed: a test feature's scores are (z Zᵀ)(ZZᵀ + αI)⁻¹T.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ..model.hooks import block_sites, hooks  # noqa: E402
from ..model.projection import reduce_logits  # noqa: E402
from ..base.sites import positions_of_kind  # noqa: E402
from .least_squares import (BIAS, METHODS, STD_EPS, lsr_from_moments,  # noqa: E402
                            signed_targets, standardisation)

KINDS = ("resid_post", "attn_out", "mlp_out")


@dataclass
class Sums:
    """Sufficient statistics of the training features: per site S and token N."""

    count: int
    x: torch.Tensor  # [S, N, d]
    xx: torch.Tensor  # [S, N, d, d]
    class_x: torch.Tensor  # [S, N, C, d]
    class_count: torch.Tensor  # [C]


def solve(sums: Sums, method: str = "ridge", alpha: Optional[float] = None):
    """Closed-form probes from the sums: weight [S, N, d', C] and bias [S, N, C], plus the
    standardization (mean, scale) the features need first (identity for ridge)."""
    if method not in METHODS:
        raise VitclsError(f"probe method must be one of {list(METHODS)}, not {method!r}")
    alpha = METHODS[method] if alpha is None else alpha
    n = sums.count
    mean = sums.x / n  # [S, N, d]
    xy = 2 * sums.class_x.transpose(-1, -2) - sums.x[..., None]  # Xᵀ(2·onehot - 1): [S,N,d,C]
    y_sum = 2 * sums.class_count - n  # [C]
    centered_xx = sums.xx - n * mean[..., :, None] * mean[..., None, :]
    centered_xy = xy - mean[..., None] * y_sum
    eye = torch.eye(mean.shape[-1], dtype=mean.dtype, device=mean.device)
    if method == "ridge":
        weight = torch.linalg.solve(centered_xx + alpha * eye, centered_xy)
        bias = y_sum / n - (mean[..., None, :] @ weight)[..., 0, :]
        return weight, bias, mean * 0, torch.ones_like(mean)
    # lsr: standardized features and a constant feature, no centering of the targets
    var = (centered_xx.diagonal(dim1=-2, dim2=-1) / n).clamp_min(0)
    scale = var.sqrt() + STD_EPS
    inv = 1 / scale
    gram = centered_xx * inv[..., :, None] * inv[..., None, :]  # Σ x̃ x̃ᵀ (Σ x̃ = 0)
    cross = centered_xy * inv[..., :, None]  # Σ x̃ yᵀ
    weight, bias = lsr_from_moments(gram, cross, n, y_sum, alpha)
    return weight, bias, mean, scale


@dataclass
class Probes:
    """Fitted probes of every (site, token); call :meth:`logits` on features."""

    sites: List[str]
    weight: torch.Tensor  # [S, N, d, C]
    bias: torch.Tensor  # [S, N, C]
    mean: torch.Tensor  # [S, N, d]
    scale: torch.Tensor  # [S, N, d]
    method: str
    alpha: float

    @property
    def n_tokens(self) -> int:
        return int(self.weight.shape[1])

    def logits(self, site: int, features: torch.Tensor) -> torch.Tensor:
        """Features [B, N, d] of site index ``site`` -> class scores [B, N, C] (float32)."""
        x = (features.float() - self.mean[site]) / self.scale[site]
        return torch.einsum("bnd,ndc->bnc", x, self.weight[site]) + self.bias[site]


@dataclass
class DualProbes:
    """The same probes solved in the dual, for n training images < width d: the transformed
    training features Z [S, N, n, d], the dual coefficients (ZZᵀ + c + αI)⁻¹T [S, N, n, C],
    the kernel's constant c (100² for lsr's bias feature, 0 for ridge) and the score offset."""

    sites: List[str]
    train: torch.Tensor  # Z, float64 [S, N, n, d]
    coef: torch.Tensor  # [S, N, n, C]
    offset: torch.Tensor  # [S, N, C]: ȳ for ridge, 0 for lsr
    constant: float
    mean: torch.Tensor  # [S, N, d]
    scale: torch.Tensor  # [S, N, d]
    method: str
    alpha: float

    @property
    def n_tokens(self) -> int:
        return int(self.train.shape[1])

    def logits(self, site: int, features: torch.Tensor) -> torch.Tensor:
        """Features [B, N, d] of site index ``site`` -> class scores [B, N, C] (float32)."""
        z = (features.double() - self.mean[site]) / self.scale[site]
        kernel = torch.einsum("bnd,nkd->bnk", z, self.train[site]) + self.constant
        scores = torch.einsum("bnk,nkc->bnc", kernel, self.coef[site]) + self.offset[site]
        return scores.float()


def solve_dual(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
               method: str = "ridge", alpha: Optional[float] = None) -> DualProbes:
    """Dual probes of one site from its training features [n, N, d] (float64) and labels [n]:
    the same scores as :func:`solve` on the sums of these features."""
    if method not in METHODS:
        raise VitclsError(f"probe method must be one of {list(METHODS)}, not {method!r}")
    alpha = METHODS[method] if alpha is None else float(alpha)
    x = features.double().transpose(0, 1)  # [N, n, d]
    n = x.shape[1]
    y = signed_targets(labels, num_classes).to(x)  # [n, C]
    mean = x.mean(1)  # [N, d]
    if method == "ridge":
        scale, constant = torch.ones_like(mean), 0.0
        offset = y.mean(0).expand(x.shape[0], -1)
        target = (y - y.mean(0)).expand(x.shape[0], -1, -1)
    else:  # lsr: standardized features, a constant feature of 100, targets not centered
        scale = standardisation(x, dim=1)[1][:, 0]
        constant, offset = BIAS ** 2, torch.zeros(x.shape[0], num_classes, dtype=x.dtype)
        target = y.expand(x.shape[0], -1, -1)
    z = (x - mean[:, None]) / scale[:, None]
    gram = z @ z.transpose(-1, -2) + constant
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    coef = torch.linalg.solve(gram + alpha * eye, target.to(x.device))
    return DualProbes([], z[None], coef[None], offset[None].to(x.device), constant, mean[None],
                      scale[None], method, alpha)


def _batches(model: nn.Module, dataset, batch_size: int, progress: bool, desc: str):
    from ..stores.stimulus_loader import stimulus_loader
    from ..base.progress import with_progress
    from ..model.layout import TokenLayout

    loader = stimulus_loader(dataset, model.vitcls_info.variant.preprocess,
                             TokenLayout.of(model), batch_size, num_workers=0)
    yield from with_progress(loader, len(dataset), desc, progress)


def fit_probes(model: nn.Module, dataset, kinds: Sequence[str] = KINDS, method: str = "ridge",
               alpha: Optional[float] = None, batch_size: int = 32, progress: bool = True,
               sites: Optional[Sequence[str]] = None) -> Probes:
    """One pass over ``dataset`` (the training images), then the closed-form solve, for every
    site of ``kinds`` (or the given ``sites``)."""
    device = next(model.parameters()).device
    sites = list(sites) if sites is not None else block_sites(model, kinds)
    index = {name: i for i, name in enumerate(sites)}
    num_classes = int(model.num_classes)
    state: Dict[str, object] = {}

    def accumulate(value: torch.Tensor, name: str) -> None:
        x = value.detach().to(torch.float64)  # [B, N, d]
        if "x" not in state:
            shape = (len(sites),) + tuple(x.shape[1:])
            state["x"] = torch.zeros(shape, dtype=torch.float64, device=device)
            state["xx"] = torch.zeros(shape + (x.shape[-1],), dtype=torch.float64, device=device)
            state["class_x"] = torch.zeros((len(sites), x.shape[1], num_classes, x.shape[2]),
                                           dtype=torch.float64, device=device)
        s = index[name]
        state["x"][s] += x.sum(0)
        state["xx"][s] += torch.einsum("bnd,bne->nde", x, x)
        state["class_x"][s].index_add_(1, state["labels"], x.transpose(0, 1))

    count, class_count = 0, torch.zeros(num_classes, dtype=torch.float64, device=device)
    with torch.no_grad(), hooks(model, [(sites, accumulate)]):
        for batch in _batches(model, dataset, batch_size, progress, "fit probes"):
            labels = batch["label"].to(device)
            state["labels"] = labels
            model(batch["image"].to(device))
            count += len(labels)
            class_count += torch.bincount(labels, minlength=num_classes).double()
    if count == 0:
        raise VitclsError("the probe training set is empty")
    parts = []  # one site at a time: the solve's temporaries are a site's, not the group's
    for s in range(len(sites)):
        sums = Sums(count, state["x"][s:s + 1], state["xx"][s:s + 1],
                    state["class_x"][s:s + 1], class_count)
        parts.append([t.float() for t in solve(sums, method, alpha)])
    weight, bias, mean, scale = (torch.cat(ts) for ts in zip(*parts))
    return Probes(sites, weight, bias, mean, scale, method,
                  METHODS[method] if alpha is None else float(alpha))


def fit_dual_probes(model: nn.Module, dataset, method: str = "ridge",
                    alpha: Optional[float] = None, batch_size: int = 32, progress: bool = True,
                    sites: Sequence[str] = ()) -> DualProbes:
    """One pass over ``dataset`` keeping the ``sites``' training features, then the dual solve
    of each site: the probes of :func:`fit_probes` when there are fewer images than widths."""
    sites = list(sites)
    captured: Dict[str, List[torch.Tensor]] = {name: [] for name in sites}

    def keep(value: torch.Tensor, name: str) -> None:
        captured[name].append(value.detach().to(torch.float64))

    device = next(model.parameters()).device
    labels = []
    with torch.no_grad(), hooks(model, [(sites, keep)]):
        for batch in _batches(model, dataset, batch_size, progress, "fit probes"):
            model(batch["image"].to(device))
            labels.append(batch["label"].to(device))
    if not labels:
        raise VitclsError("the probe training set is empty")
    labels_all = torch.cat(labels)
    parts = [solve_dual(torch.cat(captured.pop(name)), labels_all, int(model.num_classes),
                        method, alpha) for name in sites]
    return DualProbes(sites, *(torch.cat([getattr(p, f) for p in parts]) for f in
                               ("train", "coef", "offset")), parts[0].constant,
                      torch.cat([p.mean for p in parts]), torch.cat([p.scale for p in parts]),
                      method, parts[0].alpha)


@dataclass
class ProbeResults:
    """Probe predictions on the test images: rank of the true class and top-1 [I, S, N]."""

    sites: List[str]
    labels: np.ndarray
    rank: np.ndarray
    top1: np.ndarray
    num_prefix: int

    def by_block(self, array: str, kind: str) -> np.ndarray:
        return getattr(self, array)[:, positions_of_kind(self.sites, kind)]


def evaluate_probes(model: nn.Module, probes: "Probes | DualProbes", dataset, batch_size: int = 32,
                    progress: bool = True) -> ProbeResults:
    """Apply every probe to the test images, reduced on the device to rank and top-1."""
    device = next(model.parameters()).device
    index = {name: i for i, name in enumerate(probes.sites)}
    rows: Dict[str, List[np.ndarray]] = {"rank": [], "top1": []}
    current: Dict[str, torch.Tensor] = {}

    def reduce(value: torch.Tensor, name: str) -> None:
        s = index[name]
        reduced = reduce_logits(probes.logits(s, value.detach()), current["labels"])
        current["rank"][:, s] = reduced["rank"]
        current["top1"][:, s] = reduced["top1"]

    labels_all = []
    with torch.no_grad(), hooks(model, [(probes.sites, reduce)]):
        for batch in _batches(model, dataset, batch_size, progress, "evaluate probes"):
            labels = batch["label"].to(device)
            shape = (len(labels), len(probes.sites), probes.n_tokens)
            current.update(labels=labels,
                           rank=torch.empty(shape, dtype=torch.int16, device=device),
                           top1=torch.empty(shape, dtype=torch.int16, device=device))
            model(batch["image"].to(device))
            rows["rank"].append(current["rank"].cpu().numpy())
            rows["top1"].append(current["top1"].cpu().numpy())
            labels_all.append(batch["label"].numpy())
    from ..model.layout import TokenLayout

    return ProbeResults(probes.sites, np.concatenate(labels_all), np.concatenate(rows["rank"]),
                        np.concatenate(rows["top1"]), TokenLayout.of(model).num_prefix)


def bytes_per_site(model: nn.Module, n_train: Optional[int] = None) -> int:
    """Memory of one site's probes for ``model``: the primal's sums (float64) and weights
    (float32), or with ``n_train`` images the dual's features and coefficients (float64)."""
    from ..model.layout import TokenLayout

    n, d, c = TokenLayout.of(model).n_tokens, int(model.embed_dim), int(model.num_classes)
    if n_train is not None:
        return n * n_train * (d + c) * 8
    return n * (c + d + 1) * d * 8 + n * d * c * 4


def pick_solver(model: nn.Module, n_train: int) -> str:
    """``"dual"`` when there are fewer training images than feature widths, else ``"primal"``:
    the smaller of the two systems (the results are the same)."""
    return "dual" if n_train < int(model.embed_dim) else "primal"


def probe_results(model: nn.Module, train, test, kinds: Sequence[str] = KINDS,
                  method: str = "ridge", alpha: Optional[float] = None, batch_size: int = 32,
                  memory_gb: float = 2.0, progress: bool = True,
                  solver: str = "auto") -> ProbeResults:
    """Fit every (site, token) probe on ``train`` and apply it to ``test``, a group of sites
    at a time so that sums and probes stay within ``memory_gb``: one group for the toy, a few
    sites per group for ViT-B/32 with 1000 classes (each site is read once per group pass).

    Args:
        model: a loaded timm ViT (with ``vitcls_info``).
        train: the probes' training images (a dataset).
        test: the images the probes are evaluated on.
        kinds: the site kinds probed, in every block.
        method: "ridge" (the paper's) or "lsr" (the ViT paper's few-shot recipe).
        alpha: the ridge weight; None: the method's default.
        batch_size: images per forward pass.
        memory_gb: memory allowed for one group's sums and probes, in GiB.
        progress: show progress bars.
        solver: "primal", "dual" or "auto" (:func:`pick_solver`).

    Returns:
        A :class:`ProbeResults` over all sites: ``rank`` and ``top1`` [I, S, N] (int16),
        ``labels`` [I], ``sites`` and ``num_prefix``.
    """
    if solver not in ("auto", "primal", "dual"):
        raise VitclsError(f"probe solver must be auto, primal or dual, not {solver!r}")
    sites = block_sites(model, kinds)
    n_train = len(train)
    solver = pick_solver(model, n_train) if solver == "auto" else solver
    fit = fit_dual_probes if solver == "dual" else fit_probes
    per_site = bytes_per_site(model, n_train if solver == "dual" else None)
    group = max(1, int(memory_gb * 2 ** 30 // per_site))
    parts = []
    for start in range(0, len(sites), group):
        probes = fit(model, train, method=method, alpha=alpha, batch_size=batch_size,
                     progress=progress, sites=sites[start:start + group])
        parts.append(evaluate_probes(model, probes, test, batch_size=batch_size,
                                     progress=progress))
        del probes
    first = parts[0]
    return ProbeResults(sites, first.labels, np.concatenate([p.rank for p in parts], axis=1),
                        np.concatenate([p.top1 for p in parts], axis=1), first.num_prefix)


def accuracy_by_block(rank: np.ndarray, num_prefix: int) -> np.ndarray:
    """Top-1 accuracy per block averaged over image tokens, from ranks [I, L, N]."""
    return (rank[:, :, num_prefix:] == 0).mean(axis=(0, 2))


def probe_table(probe: ProbeResults, projection, kinds: Sequence[str] = KINDS) -> pd.DataFrame:
    """A12 left and middle: per block and site kind, the probes' top-1 accuracy and the class
    projection's (share of image tokens whose true class is top-1), both over image tokens.

    Args:
        probe: :func:`probe_results` on the test images.
        projection: an extraction store of the same model on the same test images.
        kinds: the site kinds tabulated (both must hold them).

    Returns:
        DataFrame: ``block`` (1-based), ``site`` (the kind), ``linear probe`` and ``class
        projection`` (top-1 accuracies, fractions in [0, 1]), and each per image ("linear
        probe, images", "class projection, images": [I] arrays whose mean is the accuracy).
    """
    rows = []
    for kind in kinds:
        probe_rank, proj_rank = probe.by_block("rank", kind), projection.by_block("rank", kind)
        probe_acc = accuracy_by_block(probe_rank, probe.num_prefix)
        proj_acc = accuracy_by_block(proj_rank, projection.num_prefix)
        per_image = [(r[:, :, n:] == 0).mean(axis=2) for r, n in (
            (probe_rank, probe.num_prefix), (proj_rank, projection.num_prefix))]     # [I, L]
        for block, (a, b) in enumerate(zip(probe_acc, proj_acc, strict=True)):
            rows.append({"block": block + 1, "site": kind, "linear probe": float(a),
                         "class projection": float(b),
                         "linear probe, images": per_image[0][:, block],
                         "class projection, images": per_image[1][:, block]})
    return pd.DataFrame(rows)


def probe_orders(probe: ProbeResults) -> np.ndarray:
    """E15's probe ordering: image tokens by the sum over blocks of the residual probes' rank of
    the true class, ascending (most important first).

    Args:
        probe: :func:`probe_results` holding the ``resid_post`` sites.

    Returns:
        Image-token indices (0-based, prefix excluded), [I, T] int64.
    """
    total = probe.by_block("rank", "resid_post")[:, :, probe.num_prefix:].astype(np.int64).sum(1)
    return np.argsort(total, axis=1, kind="stable")
