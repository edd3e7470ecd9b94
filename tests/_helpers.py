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
