"""Empty and collapsing components, compared with scikit-learn (issue #13 §3).

- An empty component (no row gives it responsibility) must neither raise nor produce NaN.
  fastem gives it scikit-learn's weight (the ``10 * eps`` floor), covariance (``reg_covar``)
  and log-likelihood; only its mean differs by design: fastem keeps the previous mean, where
  scikit-learn's ``0 / (10 * eps)`` moves it to the origin.
- With ``reg_covar=0`` a 'diag'/'spherical' component that collapses onto one row has a zero
  variance, which fastem's centred moments give as 0 or a rounding residue of either sign.
  scikit-learn "fits through" (its #18216 test) because ``E[x^2] - E[x]^2`` leaves a residue
  of about ``eps * x^2``; fastem fits through the same way, deterministically: such a
  variance is set to ``eps * mean**2`` (:func:`fastem._stats._floor_vanished_variances`).
  The fit then follows scikit-learn's (weights, means, the other covariances, ``n_iter_``);
  only the collapsed variances, rounding noise on both sides, differ. Where scikit-learn's
  variance is an exact 0 (duplicates at the origin) both raise the same error.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES

from fastem import GaussianMixture
from fastem.exceptions import ConvergenceWarning

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


def test_component_collapsing_onto_one_row_fits_through_as_scikit_learn(backend):
    X, kw, narrow = _collapsing_component_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sklearn_mixture.GaussianMixture(**kw).fit(X)
        gm = GaussianMixture(**kw, backend=backend).fit(X)
    assert gm.n_iter_ == ref.n_iter_ and gm.converged_ == ref.converged_
    np.testing.assert_allclose(gm.weights_, ref.weights_, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-7, atol=1e-12)
    others = np.setdiff1d(np.arange(kw["n_components"]), narrow)
    np.testing.assert_allclose(gm.covariances_[others], ref.covariances_[others], rtol=1e-7)
    # the collapsed components: a positive variance at the rounding level of x^2 on both
    # sides (not equal: rounding noise), never NaN
    scale = np.finfo(np.float64).eps * (X**2).sum(axis=1).max()
    assert np.all(gm.covariances_[narrow] > 0) and np.all(gm.covariances_[narrow] < 10 * scale)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bound_"):
        assert np.isfinite(getattr(gm, attr)).all(), attr


def _sklearn_18216_problem():
    """scikit-learn's test_gaussian_mixture_setting_best_params (its issue #18216): the
    first M-step gives component 0 a variance of -3.6e-48 in fastem's centred moments."""
    X = np.random.RandomState(0).uniform(size=(30, 3))
    means_init = np.array(
        [
            [0.670637869618158, 0.21038256107384043, 0.12892629765485303],
            [0.09394051075844147, 0.5759464955561779, 0.929296197576212],
            [0.5033230372781258, 0.9569852381759425, 0.08654043447295741],
            [0.18578301420435747, 0.5531158970919143, 0.19388943970532435],
            [0.4548589928173794, 0.35182513658825276, 0.568146063202464],
            [0.609279894978321, 0.7929063819678847, 0.9620097270828052],
        ]
    )
    precisions_init = np.array(
        [999999.999604483, 999999.9990869573, 553.7603944542167, 204.78596008931834,
         15.867423501783637, 85.4595728389735]
    )  # fmt: skip
    weights_init = np.array([1, 1, 2, 2, 21, 3]) / 30
    kw = dict(
        covariance_type="spherical", reg_covar=0, means_init=means_init,
        weights_init=weights_init, precisions_init=precisions_init, n_components=6,
        max_iter=1, random_state=0,
    )  # fmt: skip
    return X, kw


@pytest.mark.parametrize("covariance_type", ["spherical", "diag"])
def test_sklearn_18216_start_fits_through(backend, covariance_type):
    X, kw = _sklearn_18216_problem()
    kw["covariance_type"] = covariance_type
    if covariance_type == "diag":
        kw["precisions_init"] = np.repeat(kw["precisions_init"][:, None], 3, axis=1)
    with pytest.warns(ConvergenceWarning):  # max_iter=1, as scikit-learn's test
        gm = GaussianMixture(**kw, backend=backend).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sklearn_mixture.GaussianMixture(**kw).fit(X)
    assert not gm.converged_ and gm.n_iter_ == 1
    np.testing.assert_allclose(gm.weights_, ref.weights_, rtol=1e-7)
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-7, atol=1e-12)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bound_"):
        assert np.isfinite(getattr(gm, attr)).all(), attr
    assert np.all(gm.covariances_ > 0)


def test_sklearn_18216_start_needs_the_floor(monkeypatch):
    """Negative control: without the floor the same start raises, as it did before."""
    import fastem._stats

    monkeypatch.setattr(fastem._stats, "_floor_vanished_variances", lambda cov, means, eps: cov)
    X, kw = _sklearn_18216_problem()
    with pytest.raises(ValueError, match=r"component \d has an ill-defined covariance"):
        GaussianMixture(**kw, backend="numpy").fit(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_exact_zero_variance_still_raises_scikit_learns_error(backend, covariance_type):
    """Duplicated rows at 0 and 1 with more components than distinct rows (scikit-learn's
    test_regularisation): scikit-learn's variances are exact zeros and it raises; so does
    fastem, with scikit-learn's message (after its own diagnosis), and fits once reg_covar > 0."""
    X = np.vstack((np.ones((5, 5)), np.zeros((5, 5))))
    msg = (
        "Fitting the mixture model failed because some components have ill-defined "
        "empirical covariance (for instance caused by singleton or collapsed samples). "
        "Try to decrease the number of components, increase reg_covar, or scale the "
        "input data."
    )
    kw = dict(n_components=10, reg_covar=0, covariance_type=covariance_type, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(ValueError, match=re.escape(msg)):
            sklearn_mixture.GaussianMixture(**kw).fit(X)
        gm = GaussianMixture(**kw, backend=backend)
        with pytest.raises(
            ValueError,
            match=r"(component \d+|the shared \(tied\) covariance) has .*"
            + re.escape(msg)
            + " reg_covar is currently 0",
        ):
            gm.fit(X)
        assert not hasattr(gm, "means_")
        gm.set_params(reg_covar=1e-6).fit(X)
    assert np.isfinite(gm.covariances_).all()


def test_scikit_learn_fits_through_the_collapse_only_on_rounding_noise():
    """scikit-learn's fit of the same start ends with the narrow components each on a
    single row (weight 1/30), with a 'variance' at the rounding level of x^2 (~1e-16), not
    a property of the data: the scale fastem's floor ``eps * mean**2`` reproduces."""
    X, kw, narrow = _collapsing_component_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = sklearn_mixture.GaussianMixture(**kw).fit(X)
    np.testing.assert_allclose(ref.weights_[narrow], 1 / 30, rtol=1e-10)
    scale = np.finfo(np.float64).eps * (X**2).sum(axis=1).max()
    assert np.all(ref.covariances_[narrow] < 10 * scale)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_empty_component_without_reg_covar_neither_raises_nor_gives_nan(backend, covariance_type):
    """reg_covar=0: the empty component's variance is 0, set to eps * mean**2 (its mean is
    kept, ~1e3, so 2.2e-10); scikit-learn raises here (its empty mean moves to the origin,
    with an exact 0 variance). full: a singular matrix still raises, as scikit-learn's."""
    X, kw = _empty_component_problem(covariance_type)
    kw["reg_covar"] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(**kw, backend=backend).fit(X)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_", "lower_bound_"):
        assert np.isfinite(getattr(gm, attr)).all(), attr
    np.testing.assert_array_equal(gm.means_[2], kw["means_init"][2])
    floor = np.finfo(np.float64).eps * kw["means_init"][2] ** 2
    expected = floor if covariance_type == "diag" else floor.mean()
    np.testing.assert_allclose(gm.covariances_[2], expected, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_floor_never_fires_with_a_positive_reg_covar(monkeypatch, covariance_type):
    """About a distant shift the centred sum of squares of a collapsed component
    can round below 0, by more than reg_covar; it is clipped at 0 first, so with
    reg_covar > 0 the variance is reg_covar, as scikit-learn's, and the
    reg_covar = 0 floor never fires (found by review: it fired on 6 of 40 seeds)."""
    import fastem._stats

    fired = []
    floor = fastem._stats._floor_vanished_variances

    def spy(cov, means, eps):
        fired.append(bool((cov <= 0).any()))
        return floor(cov, means, eps)

    monkeypatch.setattr(fastem._stats, "_floor_vanished_variances", spy)
    for seed in range(40):
        r = np.random.default_rng(seed)
        x0 = r.uniform(3e6, 9e6)
        X = np.vstack([r.normal(0, 1e6, (300, 1)), np.full((20, 1), x0)])
        gm = GaussianMixture(
            2, covariance_type=covariance_type, reg_covar=1e-6, max_iter=3, backend="numpy",
            means_init=[[0.0], [x0 - r.uniform(1e5, 5e5)]], precisions_init=[1e-12, 1e-9]
            if covariance_type == "spherical" else [[1e-12], [1e-9]],
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(X)
        assert np.all(gm.covariances_ >= 1e-6)
    assert fired and not any(fired)
