"""Synthetic data: seeded Gaussian mixtures for the demo, tests and benchmarks."""

from __future__ import annotations

import numpy as np

from ._covariance import check_covariance_type, layout

__all__ = ["make_mixture", "WORKLOADS", "make_workload", "initial_parameters"]

# The standard workloads of the project's BENCHMARKS.md: name -> (N, D, K, covariance).
WORKLOADS: dict[str, tuple[int, int, int, str]] = {
    "W1": (200_000, 2, 8, "full"),
    "W2": (200_000, 16, 16, "full"),
    "W3": (200_000, 16, 16, "diag"),
    "W4": (50_000, 64, 8, "full"),
    "W5": (200_000, 24, 16, "tied"),
}


def _random_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def make_mixture(
    n_samples: int,
    n_features: int,
    n_components: int,
    *,
    rotate: bool = True,
    random_state: int | None = 0,
    dtype: type = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw rows from a random Gaussian mixture.

    Centres are drawn from N(0, (6/sqrt(2D))^2) per coordinate, mixing weights
    from Dirichlet(5, ..., 5), and each component's covariance is
    ``Q diag(ev) Q^T`` with ``ev ~ U(0.3, 1.5)`` and ``Q`` a random orthogonal
    matrix (the identity when ``rotate`` is False). Rows are shuffled.

    Parameters
    ----------
    n_samples, n_features, n_components : int
        Shape of the data and number of mixture components.
    rotate : bool, default=True
        Random orientation of each covariance; False gives diagonal covariances.
    random_state : int or None, default=0
        Seed of the generator.
    dtype : numpy dtype, default=float64
        dtype of the returned data.

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    labels : ndarray of shape (n_samples,)
        The component each row was drawn from.
    """
    rng = np.random.default_rng(random_state)
    d = n_features
    centres = rng.normal(0.0, 6.0 / np.sqrt(2.0 * d), size=(n_components, d))
    weights = rng.dirichlet(np.full(n_components, 5.0))
    counts = rng.multinomial(n_samples, weights)
    X = np.empty((n_samples, d), dtype=np.float64)
    labels = np.empty(n_samples, dtype=np.int64)
    row = 0
    for k in range(n_components):
        ev = rng.uniform(0.3, 1.5, size=d)
        q = _random_orthogonal(rng, d) if rotate else np.eye(d)
        factor = q * np.sqrt(ev)  # factor @ factor.T == q diag(ev) q.T
        z = rng.standard_normal((counts[k], d))
        X[row : row + counts[k]] = centres[k] + z @ factor.T
        labels[row : row + counts[k]] = k
        row += counts[k]
    order = rng.permutation(n_samples)
    return np.ascontiguousarray(X[order], dtype=dtype), labels[order]


def make_workload(
    name: str, *, random_state: int = 0, dtype: type = np.float64
) -> tuple[np.ndarray, dict]:
    """Data and initial parameters of a standard workload (W1-W5).

    Returns
    -------
    X : ndarray
    init : dict
        ``n_components``, ``covariance_type``, ``weights_init``, ``means_init``
        and ``precisions_init`` in the form scikit-learn's and fastem's
        ``GaussianMixture`` take: K distinct random rows as means, equal
        weights, and every covariance the identity times the mean per-feature
        variance of X.
    """
    n, d, k, cov = WORKLOADS[name]
    X, _ = make_mixture(n, d, k, rotate=cov != "diag", random_state=random_state, dtype=dtype)
    return X, initial_parameters(X, k, cov, random_state=random_state + 1)


def initial_parameters(
    X: np.ndarray, n_components: int, covariance_type: str, *, random_state: int = 0
) -> dict:
    """The standard initial parameters for ``X``, as ``GaussianMixture`` keywords.

    K distinct random rows as means, equal weights, and every covariance the
    identity times the mean per-feature variance of X (BENCHMARKS.md).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    n_components : int
    covariance_type : str
        One of scikit-learn's four names ('full', 'tied', 'diag', 'spherical')
        or one of mclust's 14 model names (any case, fastem's estimator only):
        ``precisions_init`` then has the model's layout, (k, d) for the
        diagonal models and (k, d, d) for the others (the start has every
        model's structure, so fastem's projection leaves it as it is).
    random_state : int, default=0
        Seed of the choice of rows.

    Returns
    -------
    init : dict
        ``n_components``, ``covariance_type`` (canonical: mclust names in upper
        case), ``weights_init``, ``means_init`` and ``precisions_init``, for
        scikit-learn's and fastem's estimators alike (scikit-learn's names).

    Raises
    ------
    ValueError
        If ``covariance_type`` is none of those names (the message lists them).
    """
    covariance_type = check_covariance_type(covariance_type)
    n, d = X.shape
    k = n_components
    rng = np.random.default_rng(random_state)
    means = X[rng.choice(n, size=k, replace=False)].astype(np.float64)
    var = float(X.astype(np.float64).var(axis=0).mean())
    precisions = {
        "full": np.tile(np.eye(d) / var, (k, 1, 1)),
        "tied": np.eye(d) / var,
        "diag": np.full((k, d), 1.0 / var),
        "spherical": np.full(k, 1.0 / var),
    }[layout(covariance_type)]
    return {
        "n_components": k,
        "covariance_type": covariance_type,
        "weights_init": np.full(k, 1.0 / k),
        "means_init": means,
        "precisions_init": precisions,
    }
