"""The one LSR recipe against second computations: the primal, the dual, an augmented
least-squares system and big_vision's eigendecomposition give one solution, and the same
solution comes out of the moments that chapter 4's probes accumulate."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitcls_utils.analysis import least_squares
from vitcls_utils.base.errors import VitclsError


def problem(n, d, k=4, seed=0):
    gen = np.random.default_rng(seed)
    return torch.from_numpy(gen.normal(size=(n, d)) * 3 + 1), torch.from_numpy(gen.integers(0, k, n))


def augmented_solution(x, y, k, l2):
    """Ridge as ordinary least squares on [X; sqrt(l2) I] w = [Y; 0] (numpy)."""
    x = x.numpy()
    mean, std = x.mean(0), x.std(0) + least_squares.STD_EPS
    z = np.hstack([(x - mean) / std, np.full((len(x), 1), least_squares.BIAS)])
    t = 2 * np.eye(k)[y.numpy()] - 1
    a = np.vstack([z, np.sqrt(l2) * np.eye(z.shape[1])])
    b = np.vstack([t, np.zeros((z.shape[1], k))])
    return np.linalg.lstsq(a, b, rcond=None)[0]


def big_vision_solution(x, y, k, l2):
    """big_vision's cached eigendecomposition, rewritten in numpy from its formulas."""
    x = x.numpy()
    mean, std = x.mean(0, keepdims=True), x.std(0, keepdims=True) + 1e-5
    z = np.pad((x - mean) / std, ((0, 0), (0, 1)), constant_values=100.0)
    t = 2.0 * np.eye(k)[y.numpy()] - 1.0
    if z.shape[0] >= z.shape[1]:
        eigs, q = np.linalg.eigh(z.T @ z)
        rhs, lhs = q.T @ (z.T @ t), q
    else:
        eigs, q = np.linalg.eigh(z @ z.T)
        rhs, lhs = q.T @ t, z.T @ q
    return (lhs * (1.0 / (eigs + l2))[None]) @ rhs


@pytest.mark.parametrize("n, d", [(60, 7), (9, 30)])
def test_primal_dual_least_squares_and_big_vision_agree(n, d):
    x, y = problem(n, d)
    for l2 in (1.0, least_squares.L2):
        primal = least_squares.fit_lsr(x, y, 4, l2, solver="primal").weight.numpy()
        dual = least_squares.fit_lsr(x, y, 4, l2, solver="dual").weight.numpy()
        np.testing.assert_allclose(primal, dual, rtol=1e-7, atol=1e-10)
        np.testing.assert_allclose(primal, augmented_solution(x, y, 4, l2), rtol=1e-6,
                                   atol=1e-9)
        np.testing.assert_allclose(primal, big_vision_solution(x, y, 4, l2), rtol=1e-6,
                                   atol=1e-9)


def test_the_solver_is_picked_by_shape_counting_the_bias_column(monkeypatch):
    picked = []
    real = torch.linalg.solve
    monkeypatch.setattr(torch.linalg, "solve", lambda a, b: picked.append(a.shape[-1]) or real(a, b))
    least_squares.fit_lsr(*problem(8, 7), 4)  # N = 8 = D + 1: primal, an 8x8 system
    least_squares.fit_lsr(*problem(7, 7), 4)  # N = 7 < D + 1: dual, a 7x7 system
    least_squares.fit_lsr(*problem(20, 7), 4)  # primal: 8x8
    assert picked == [8, 7, 8]


def test_the_solve_from_moments_is_the_same_recipe():
    """chapter 4's probes solve LSR from sums over one pass; the weights equal fit_lsr's."""
    x, y = problem(40, 5)
    probe = least_squares.fit_lsr(x, y, 4, solver="primal")
    mean, scale = least_squares.standardisation(x)
    z = (x - mean) / scale
    t = least_squares.signed_targets(y, 4)
    weight, bias = least_squares.lsr_from_moments(z.T @ z, z.T @ t, len(y), t.sum(0))
    np.testing.assert_allclose(weight.numpy(), probe.weight[:-1].numpy(), rtol=1e-9)
    np.testing.assert_allclose(bias.numpy(), least_squares.BIAS * probe.weight[-1].numpy(),
                               rtol=1e-9)
    test = torch.from_numpy(np.random.default_rng(3).normal(size=(7, 5)))
    scores = ((test - mean) / scale) @ weight + bias
    assert torch.equal(scores.argmax(-1), probe.predict(test))


def test_bad_shapes_and_solvers_are_refused():
    x, y = problem(6, 3)
    with pytest.raises(VitclsError, match="feature rows"):
        least_squares.fit_lsr(x, y[:4], 4)
    with pytest.raises(VitclsError, match="solver"):
        least_squares.fit_lsr(x, y, 4, solver="svd")
