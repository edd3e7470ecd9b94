"""Empty and collapsing components, compared with scikit-learn (issue #13 §3).

- An empty component (no row gives it responsibility) must neither raise nor produce NaN.
  fastem gives it scikit-learn's weight (the ``10 * eps`` floor), covariance (``reg_covar``)
  and log-likelihood; only its mean differs by design: fastem keeps the previous mean, where
  scikit-learn's ``0 / (10 * eps)`` moves it to the origin.
- With ``reg_covar=0`` a component that collapses onto one row has a zero variance: the
  likelihood is unbounded there and fastem raises its ill-defined-covariance error.
  scikit-learn sometimes "fits through", but only because ``E[x^2] - E[x]^2`` leaves a
  rounding residue of about ``eps * x^2``: its fitted variance is noise, not an estimate.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES

from fastem import GaussianMixture

sklearn_mixture = pytest.importorskip("sklearn.mixture")


def _empty_component_problem(covariance_type: str):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    kw = dict(
        n_components=3,
        covariance_type=covariance_type,
        means_init=np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1e3, 1e3, 1e3]]),
        weights_init=np.full(3, 1 / 3),
        random_state=0,
        max_iter=20,
        tol=0.0,
    )
    return X, kw


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_empty_component_matches_scikit_learn_except_its_mean(backend, covariance_type):
    X, kw = _empty_component_problem(covariance_type)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tol=0: neither converges
        ref = sklearn_mixture.GaussianMixture(**kw).fit(X)
        gm = GaussianMixture(**kw, backend=backend).fit(X)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.isfinite(getattr(gm, attr)).all(), attr
    np.testing.assert_allclose(gm.weights_, ref.weights_, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_, ref.covariances_, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(gm.lower_bound_, ref.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(gm.means_[:2], ref.means_[:2], rtol=1e-7, atol=1e-10)
    # the empty component: weight at the 10 eps floor, covariance reg_covar, mean unmoved
    assert gm.weights_[2] == pytest.approx(10 * np.finfo(np.float64).eps / X.shape[0], rel=1e-6)
    np.testing.assert_array_equal(gm.means_[2], kw["means_init"][2])
    if covariance_type != "tied":
        np.testing.assert_array_equal(ref.means_[2], 0.0)  # scikit-learn's: the origin
    # (tied: at the origin, under the shared data-scale covariance, scikit-learn's component
    # regains a trickle of responsibility, ~1e-16 of the weight, and drifts from there)
    if covariance_type in ("diag", "spherical"):
        np.testing.assert_allclose(gm.covariances_[2], gm.reg_covar, rtol=1e-12)


def _collapsing_component_problem():
    """Spherical, 6 components on 30 uniform rows in [0, 1]^3, two initial precisions of
    1e6 next to rows (the case of issue #13 §3): the narrow components end on one row."""
    rng = np.random.default_rng(14)
    X = rng.uniform(size=(30, 3))
    means = X[rng.choice(30, 6, replace=False)].copy()
    precisions = np.full(6, 10.0)
    narrow = rng.choice(6, 2, replace=False)
    precisions[narrow] = 1e6
    means[narrow] += rng.normal(size=(2, 3)) * rng.uniform(0.005, 0.03)
    kw = dict(
        n_components=6,
        covariance_type="spherical",
        reg_covar=0.0,
        means_init=means,
        precisions_init=precisions,
        weights_init=np.full(6, 1 / 6),
        random_state=0,
    )
    return X, kw, narrow


def test_component_collapsing_onto_one_row_without_reg_covar_raises(backend):
    X, kw, narrow = _collapsing_component_problem()
    gm = GaussianMixture(**kw, backend=backend)
    with pytest.raises(ValueError, match=r"component \d+ has an ill-defined covariance.*reg_covar"):
        gm.fit(X)
    assert not hasattr(gm, "means_")
    # the same start with a variance floor fits, without NaN
    gm = GaussianMixture(**{**kw, "reg_covar": 1e-6}, backend=backend).fit(X)
    assert np.isfinite(gm.covariances_).all() and np.isfinite(gm.lower_bound_)


def test_scikit_learn_fits_through_the_collapse_only_on_rounding_noise():
    """Why fastem does not copy scikit-learn here: scikit-learn's fit of the same start
    ends with the narrow components each on a single row (weight 1/30), with a
    'variance' at the rounding level of x^2 (~1e-16), not a property of the data."""
    X, kw, narrow = _collapsing_component_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sklearn_mixture.GaussianMixture(**kw).fit(X)
    np.testing.assert_allclose(ref.weights_[narrow], 1 / 30, rtol=1e-10)
    scale = np.finfo(np.float64).eps * (X**2).sum(axis=1).max()
    assert np.all(ref.covariances_[narrow] < 10 * scale)
