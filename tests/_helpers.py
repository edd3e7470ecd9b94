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
