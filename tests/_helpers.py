"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import numpy as np

from fastem.backends import available_backends

BACKENDS = available_backends()
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def initial_parameters(X: np.ndarray, n_components: int, covariance_type: str, seed: int = 0):
    """Keyword arguments fixing the initial parameters, as BENCHMARKS.md defines them."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    means = X[rng.choice(n, size=n_components, replace=False)].astype(np.float64)
    var = float(X.astype(np.float64).var(axis=0).mean())
    k = n_components
    precisions = {
        "full": np.tile(np.eye(d) / var, (k, 1, 1)),
        "tied": np.eye(d) / var,
        "diag": np.full((k, d), 1.0 / var),
        "spherical": np.full(k, 1.0 / var),
    }[covariance_type]
    return {
        "n_components": k,
        "covariance_type": covariance_type,
        "weights_init": np.full(k, 1.0 / k),
        "means_init": means,
        "precisions_init": precisions,
    }
