"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np

from fastem import datasets
from fastem.backends import available_backends

BACKENDS = available_backends()
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def initial_parameters(X: np.ndarray, n_components: int, covariance_type: str, seed: int = 0):
    """Keyword arguments fixing the standard initial parameters (seeded)."""
    return datasets.initial_parameters(X, n_components, covariance_type, random_state=seed)


def as_full_covariances(cov: np.ndarray, covariance_type: str, k: int, d: int) -> np.ndarray:
    """(k, d, d) covariance matrices from fitted ``covariances_`` of any type."""
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if covariance_type == "diag":
        return cov[:, :, None] * np.eye(d)
    return cov[:, None, None] * np.eye(d)


def covariances_from_scatter(scatter, nk, covariance_type: str, reg_covar: float) -> np.ndarray:
    """The textbook M-step: ``covariances_`` of the given type from per-component
    scatter matrices (k, d, d) about the new means and the divisors ``nk``."""
    d = scatter.shape[1]
    if covariance_type == "full":
        return scatter / nk[:, None, None] + reg_covar * np.eye(d)
    if covariance_type == "tied":
        return scatter.sum(axis=0) / nk.sum() + reg_covar * np.eye(d)
    cov = np.diagonal(scatter, axis1=1, axis2=2) / nk[:, None] + reg_covar
    return cov.mean(axis=1) if covariance_type == "spherical" else cov


def hmm_offsets(lengths) -> np.ndarray:
    """Sequence start offsets (S + 1,) of an HMM kernel call."""
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def hmm_forward_backward(kern, logB, offsets, start, trans, w) -> dict:
    """One ``forward_backward`` call of an HMM backend, its outputs by name."""
    K, S = logB.shape[1], offsets.size - 1
    out = dict(gamma=np.empty_like(logB), loglik=np.empty(S), xi=np.empty((K, K)))
    out["start"] = np.empty(K)
    kern.forward_backward(logB, offsets, start, trans, w, *out.values())
    return out


def hmm_start_trans(rng, K: int, p_zero_trans: float):
    """Start and transition probabilities with structural zeros (the diagonal
    stays possible, state 0 never starts)."""
    trans = rng.dirichlet(np.ones(K), size=K) * (rng.uniform(size=(K, K)) >= p_zero_trans)
    trans[np.arange(K), np.arange(K)] += 0.1
    trans /= trans.sum(axis=1, keepdims=True)
    start = rng.dirichlet(np.ones(K))
    if K > 1:
        start[0] = 0.0
        start /= start.sum()
    return start, trans


def float32_full_problem(n: int, d: int, k: int, seed: int = 0):
    """float32 rows, weights, means, upper-triangular precision factors and the
    components' log constants of a random full-covariance pass."""
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * 1.5 + 0.5).astype(np.float32)
    w = rng.uniform(0.1, 3.0, n)
    means = (X[rng.integers(0, n, k)] + 0.3 * rng.standard_normal((k, d))).astype(np.float32)
    a = np.triu(rng.standard_normal((k, d, d)) * 0.2)
    a[:, np.arange(d), np.arange(d)] = rng.uniform(0.5, 1.5, (k, d))
    logdet = np.log(np.diagonal(a, axis1=1, axis2=2)).sum(axis=1)
    cc = np.log(np.full(k, 1.0 / k)) + logdet - 0.5 * d * np.log(2 * np.pi)
    return X, w, means, a.astype(np.float32), cc
