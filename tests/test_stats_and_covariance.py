"""Sufficient statistics add up; the M-step and covariance algebra are exact."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastem._covariance import (
    _inverse_lower,
    covariances_from_cholesky,
    kernel_arguments,
    precision_cholesky,
    precision_cholesky_from_precisions,
    precisions_from_cholesky,
)
from fastem._stats import Stats, m_step
from fastem.backends import _numpy as ref


def _pass(X, w, means, prec_chol, weights, ct):
    k, d = means.shape
    full, m, pc, cc = kernel_arguments(weights, means, prec_chol, ct, X.dtype)
    stats = Stats.zeros(k, d, full, m)
    kernel = ref.em_pass_full if full else ref.em_pass_diag
    stats.loglik = kernel(X, w, m, pc, cc, stats.nk, stats.sx, stats.sxx)
    stats.weight_sum = float(w.sum())
    return stats


@given(
    n=st.integers(2, 60),
    d=st.integers(1, 4),
    k=st.integers(1, 3),
    split=st.floats(0.0, 1.0),
    ct=st.sampled_from(["full", "tied", "diag", "spherical"]),
    seed=st.integers(0, 2**16),
)
def test_statistics_of_a_split_add_up_to_the_whole(n, d, k, split, ct, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    w = rng.uniform(0.1, 2.0, size=n)
    means = rng.normal(size=(k, d))
    weights = rng.dirichlet(np.ones(k))
    cov = {
        "full": np.tile(np.eye(d), (k, 1, 1)),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[ct]
    pc = precision_cholesky(cov, ct)
    cut = int(split * n)
    whole = _pass(X, w, means, pc, weights, ct)
    parts = _pass(X[:cut], w[:cut], means, pc, weights, ct) + _pass(
        X[cut:], w[cut:], means, pc, weights, ct
    )
    for field in ("loglik", "weight_sum", "nk", "sx", "sxx"):
        np.testing.assert_allclose(
            getattr(parts, field), getattr(whole, field), rtol=1e-10, atol=1e-12
        )
    a, b = m_step(whole, ct, 1e-6, 1e-16), m_step(parts, ct, 1e-6, 1e-16)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12)


def test_stats_with_different_shifts_do_not_add():
    a = Stats.zeros(2, 2, True, np.zeros((2, 2)))
    b = Stats.zeros(2, 2, True, np.ones((2, 2)))
    with pytest.raises(ValueError, match="same shift"):
        a + b


def test_m_step_is_independent_of_the_shift():
    """Moments about any shift give the same parameters (the shift only fights cancellation)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)) + 5.0
    resp = rng.dirichlet(np.ones(2), size=200)
    results = []
    for shift in (np.zeros((2, 3)), rng.normal(size=(2, 3)) * 4):
        stats = Stats.zeros(2, 3, True, shift)
        for j in range(2):
            xc = X - shift[j]
            stats.nk[j] = resp[:, j].sum()
            stats.sx[j] = resp[:, j] @ xc
            stats.sxx[j] = (xc * resp[:, j, None]).T @ xc
        results.append(m_step(stats, "full", 0.0, 1e-16))
    for x, y in zip(*results, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-10)


@given(d=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_precision_cholesky_round_trips(d, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(3, d, d))
    cov = a @ np.swapaxes(a, 1, 2) + d * np.eye(d)
    pc = precision_cholesky(cov, "full")
    assert np.allclose(np.tril(pc, -1), 0.0)  # upper triangular, as scikit-learn's
    np.testing.assert_allclose(
        precisions_from_cholesky(pc, "full"), np.linalg.inv(cov), rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(covariances_from_cholesky(pc, "full"), cov, rtol=1e-8)
    pc2 = precision_cholesky_from_precisions(np.linalg.inv(cov), "full")
    np.testing.assert_allclose(pc2, pc, rtol=1e-7, atol=1e-10)
    low = np.linalg.cholesky(cov)
    np.testing.assert_allclose(_inverse_lower(low), np.linalg.inv(low), rtol=1e-8, atol=1e-12)


def test_non_positive_definite_covariance_raises_value_error():
    cov = np.array([np.eye(2), [[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="component 1"):
        precision_cholesky(cov, "full", reg_covar=0.0)
    with pytest.raises(ValueError, match="component 0"):
        precision_cholesky(np.array([[0.0, 1.0]]), "diag")
