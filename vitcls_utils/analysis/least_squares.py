"""The one regularised least-squares recipe of the book, and the ridge probe beside it.

**LSR**, as big_vision's few-shot evaluator runs it (the ViT paper's linear few-shot
evaluation, catalogue §7 V6; chapter 4's ``method="lsr"`` probes): features standardised with
the training rows' mean and population standard deviation plus 1e-5, a constant feature of
100 appended as an almost unregularised bias, targets +1 for the true class and -1 elsewhere,
and the closed-form solution W = (XᵀX + λI)⁻¹XᵀY with λ = 1024, solved in the primal or, with
fewer rows than columns, in the dual W = Xᵀ(XXᵀ + λI)⁻¹Y (the same W).

**Ridge**, the authors' chapter-4 probe (scikit-learn ``Ridge(alpha=1.0)``): centred
features and targets, intercept recovered from the means.

Precision: everything here solves in float64; big_vision solves in float32. On near-ties the
two can pick different classes: on random features at λ = 1 about 1 prediction in 850 flips,
at the default λ = 1024 about 1 in 9,840. float64 is the better-conditioned reading of the
same recipe; a number compared with big_vision's to the last prediction should expect that.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from .. import _compat
from ..base.errors import VitclsError

_compat.ensure_torchvision_ops()

import torch  # noqa: E402
from torch import nn  # noqa: E402

#: LSR's regularisation λ (big_vision's default), bias feature and standardisation epsilon
L2 = 2.0 ** 10
BIAS = 100.0
STD_EPS = 1e-5
#: the ridge probe's alpha (the authors' scikit-learn default)
RIDGE_ALPHA = 1.0
#: the probe methods and their default regularisation
METHODS = {"ridge": RIDGE_ALPHA, "lsr": L2}


def signed_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """+1 for the true class and -1 elsewhere: [N] labels -> [N, C] float64."""
    return 2.0 * nn.functional.one_hot(labels.long(), num_classes).double() - 1.0


def standardisation(x: torch.Tensor, dim: int = -2) -> Tuple[torch.Tensor, torch.Tensor]:
    """LSR's (mean, scale) of features over the rows of ``dim``: the mean and the population
    standard deviation plus ``STD_EPS``, with ``dim`` kept."""
    return (x.mean(dim, keepdim=True),
            x.std(dim, unbiased=False, keepdim=True) + STD_EPS)


def lsr_from_moments(gram: torch.Tensor, cross: torch.Tensor, n: int, y_sum: torch.Tensor,
                     l2: float = L2) -> Tuple[torch.Tensor, torch.Tensor]:
    """LSR from the moments of standardised features, for probes accumulated in one pass.

    Args:
        gram: Σ z zᵀ of the standardised features [..., d, d] (Σ z = 0).
        cross: Σ z yᵀ [..., d, C] with the signed targets y.
        n: the number of training rows.
        y_sum: Σ y [C].
        l2: λ.

    Returns:
        (weight [..., d, C], bias [..., C]): scores are z W + bias, the bias being the constant
        feature's weight times ``BIAS``.
    """
    d = gram.shape[-1]
    full = torch.zeros(gram.shape[:-2] + (d + 1, d + 1), dtype=gram.dtype, device=gram.device)
    full[..., :d, :d] = gram
    full[..., d, d] = n * BIAS ** 2
    rhs = torch.cat([cross, (BIAS * y_sum).expand(cross.shape[:-2] + (1, -1))], dim=-2)
    eye = torch.eye(d + 1, dtype=gram.dtype, device=gram.device)
    solution = torch.linalg.solve(full + l2 * eye, rhs)
    return solution[..., :d, :], BIAS * solution[..., d, :]


@dataclass
class LSRProbe:
    """A fitted few-shot probe: the standardisation and the weights [D + 1, K] (bias last)."""

    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor

    def design(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised features with the bias feature appended."""
        z = (x.double() - self.mean) / self.std
        return torch.cat([z, torch.full(z.shape[:-1] + (1,), BIAS, dtype=z.dtype,
                                        device=z.device)], -1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted class of every row."""
        return (self.design(x) @ self.weight).argmax(-1)


def fit_lsr(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float = L2,
            solver: str = "auto") -> LSRProbe:
    """Ridge regression onto {-1, 1} one-hot targets, in float64 (batched over leading dims).

    Args:
        x: training features [..., N, D].
        y: their classes [N].
        solver: "primal" solves (XᵀX + λI)W = XᵀY, "dual" W = Xᵀ(XXᵀ + λI)⁻¹Y; "auto" picks
            primal when N ≥ D + 1 (the bias column counted), as big_vision does.
    """
    if x.shape[-2] != len(y) or len(y) == 0:
        raise VitclsError(f"{x.shape[-2]} feature rows for {len(y)} labels")
    x = x.double()
    probe = LSRProbe(*standardisation(x, dim=-2), torch.empty(0))
    design = probe.design(x)
    targets = signed_targets(y, num_classes).to(x.device)
    n, d = design.shape[-2:]
    if solver == "auto":
        solver = "primal" if n >= d else "dual"
    gram_t = design.transpose(-1, -2)
    if solver == "primal":
        eye = torch.eye(d, dtype=x.dtype, device=x.device)
        probe.weight = torch.linalg.solve(gram_t @ design + l2 * eye, gram_t @ targets)
    elif solver == "dual":
        eye = torch.eye(n, dtype=x.dtype, device=x.device)
        probe.weight = gram_t @ torch.linalg.solve(design @ gram_t + l2 * eye, targets)
    else:
        raise VitclsError(f"solver must be 'auto', 'primal' or 'dual', not {solver!r}")
    return probe
