"""EM on incomplete data: NaN entries are missing values in fit, predict, score and impute."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from _helpers import (
    COVARIANCE_TYPES,
    as_full_covariances,
    covariances_from_scatter,
    initial_parameters,
)

from fastem import ConvergenceWarning, GaussianMixture
from fastem._data import ArrayData
from fastem._missing import find_patterns
from fastem.datasets import make_mixture
from fastem.impute import GaussianMixtureImputer


def _quiet_fit(model, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, **kw)


def _with_missing(X, fraction, seed=0):
    """X with entries NaN completely at random; no row loses every value."""
    rng = np.random.default_rng(seed)
    mask = rng.random(X.shape) < fraction
    mask[mask.all(axis=1), 0] = False
    Xm = X.copy()
    Xm[mask] = np.nan
    return Xm


# ------------------------------------------------- an independent slow reference
def _slow_em_step(X, w, weights, means, covs, ct, reg_covar):
    """One EM iteration row by row with explicit inverses (Ghahramani & Jordan 1994).

    Returns the observed-data log-likelihood at the given parameters and the
    parameters after the M-step.
    """
    n, d = X.shape
    k = weights.shape[0]
    nk = np.zeros(k)
    s1 = np.zeros((k, d))
    s2 = np.zeros((k, d, d))
    loglik = 0.0
    for i in range(n):
        o = ~np.isnan(X[i])
        m = ~o
        if not o.any():
            continue
        logp = np.empty(k)
        ex = np.empty((k, d))
        exx = np.empty((k, d, d))
        for j in range(k):
            S = covs[j]
            Soo = S[np.ix_(o, o)]
            diff = X[i, o] - means[j, o]
            sol = np.linalg.solve(Soo, diff)
            _, logdet = np.linalg.slogdet(Soo)
            logp[j] = np.log(weights[j]) - 0.5 * (o.sum() * np.log(2 * np.pi) + logdet + diff @ sol)
            x_hat = X[i].copy()
            cond_cov = np.zeros((d, d))
            if m.any():
                Smo = S[np.ix_(m, o)]
                x_hat[m] = means[j, m] + Smo @ sol
                cond_cov[np.ix_(m, m)] = S[np.ix_(m, m)] - Smo @ np.linalg.solve(Soo, Smo.T)
            ex[j] = x_hat
            exx[j] = np.outer(x_hat, x_hat) + cond_cov
        top = logp.max()
        lse = top + np.log(np.exp(logp - top).sum())
        loglik += w[i] * lse
        r = w[i] * np.exp(logp - lse)
        nk += r
        s1 += r[:, None] * ex
        s2 += r[:, None, None] * exx
    nk_reg = nk + 10 * np.finfo(np.float64).eps
    new_means = s1 / nk_reg[:, None]
    scatter = s2 - nk[:, None, None] * new_means[:, :, None] * new_means[:, None, :]
    cov = covariances_from_scatter(scatter, nk_reg, ct, reg_covar)
    return loglik, nk_reg / nk_reg.sum(), new_means, cov


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_iteration_matches_a_slow_per_row_reference(backend, covariance_type):
    X, _ = make_mixture(300, 4, 3, random_state=1)
    init = initial_parameters(X, 3, covariance_type, seed=2)
    Xm = _with_missing(X, 0.3, seed=3)
    w = np.random.default_rng(4).uniform(0.2, 2.0, size=X.shape[0])
    gm = GaussianMixture(max_iter=1, backend=backend, **init)
    _quiet_fit(gm, Xm, sample_weight=w)
    k, d = 3, 4
    prec = np.asarray(init["precisions_init"], dtype=np.float64)
    full_like = covariance_type in ("full", "tied")
    start_cov = np.linalg.inv(prec) if full_like else 1.0 / prec
    covs = as_full_covariances(start_cov, covariance_type, k, d)
    loglik, weights, means, cov = _slow_em_step(
        Xm, w, init["weights_init"], init["means_init"], covs, covariance_type, gm.reg_covar
    )
    np.testing.assert_allclose(gm.lower_bound_, loglik / w.sum(), rtol=1e-10)
    np.testing.assert_allclose(gm.weights_, weights, rtol=1e-9)
    np.testing.assert_allclose(gm.means_, means, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gm.covariances_, cov, rtol=1e-8, atol=1e-12)


def test_one_component_matches_direct_numerical_maximization():
    """EM's fixed point is the maximum of the observed-data likelihood."""
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2)) @ np.array([[1.0, 0.8], [0.0, 0.6]]) + [1.0, -2.0]
    X[rng.random(60) < 0.35, 1] = np.nan
    X[rng.random(60) < 0.15, 0] = np.nan
    X = X[~np.isnan(X).all(axis=1)]

    def negative_loglik(theta):
        mean = theta[:2]
        L = np.array([[np.exp(theta[2]), 0.0], [theta[3], np.exp(theta[4])]])
        S = L @ L.T
        total = 0.0
        for row in X:
            o = ~np.isnan(row)
            Soo = S[np.ix_(o, o)]
            diff = row[o] - mean[o]
            total += -0.5 * (
                o.sum() * np.log(2 * np.pi)
                + np.linalg.slogdet(Soo)[1]
                + diff @ np.linalg.solve(Soo, diff)
            )
        return -total

    best = scipy_optimize.minimize(
        negative_loglik, np.zeros(5), method="BFGS", options={"gtol": 1e-10, "maxiter": 10_000}
    )
    gm = GaussianMixture(1, tol=1e-14, max_iter=10_000, reg_covar=0.0, backend="numpy").fit(X)
    np.testing.assert_allclose(gm.score(X) * X.shape[0], -best.fun, rtol=1e-7)
    L = np.array([[np.exp(best.x[2]), 0.0], [best.x[3], np.exp(best.x[4])]])
    np.testing.assert_allclose(gm.means_[0], best.x[:2], atol=1e-4)
    np.testing.assert_allclose(gm.covariances_[0], L @ L.T, atol=1e-4)


# ------------------------------------------------------------- no NaN, same fit
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_missing_data_path_on_complete_data_gives_the_same_model(backend, covariance_type):
    X, _ = make_mixture(2000, 3, 4, random_state=5)
    init = initial_parameters(X, 4, covariance_type, seed=1)
    fast = _quiet_fit(GaussianMixture(backend=backend, max_iter=30, **init), X)
    data = ArrayData(X, np.ones(X.shape[0]))
    data.patterns = find_patterns(X)  # force the missing-data kernels
    assert data.patterns.n_patterns == 1
    forced = GaussianMixture(backend=backend, max_iter=30, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        forced._fit_from(data)
    assert forced.n_iter_ == fast.n_iter_
    np.testing.assert_allclose(forced.lower_bounds_, fast.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(forced.means_, fast.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(forced.covariances_, fast.covariances_, rtol=1e-9)


# ----------------------------------------------------------- EM properties
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_lower_bound_never_decreases_on_incomplete_data(covariance_type, init_params):
    X, _ = make_mixture(1500, 4, 3, random_state=2)
    Xm = _with_missing(X, 0.25, seed=1)
    gm = GaussianMixture(
        3,
        covariance_type=covariance_type,
        init_params=init_params,
        tol=1e-8,
        max_iter=200,
        random_state=0,
        backend="numpy",
    )
    _quiet_fit(gm, Xm)
    bounds = np.array(gm.lower_bounds_)
    assert np.all(np.isfinite(bounds))
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_lower_bound_never_decreases_on_every_backend_with_weights(backend, covariance_type):
    X, _ = make_mixture(3000, 5, 4, random_state=3)
    Xm = _with_missing(X, 0.4, seed=2)
    w = np.random.default_rng(1).uniform(0.0, 3.0, size=X.shape[0])
    gm = GaussianMixture(
        4, covariance_type=covariance_type, tol=1e-10, max_iter=150, random_state=1,
        backend=backend,
    )  # fmt: skip
    _quiet_fit(gm, Xm, sample_weight=w)
    bounds = np.array(gm.lower_bounds_)
    assert bounds.size > 10 and np.all(np.isfinite(bounds))
    assert np.all(np.diff(bounds) >= -1e-9 * np.abs(bounds[1:]))


def _match(true_means, means):
    """Index of the fitted mean nearest each true mean, and the largest such distance."""
    dist = np.linalg.norm(true_means[:, None, :] - means[None, :, :], axis=2)
    return dist.argmin(axis=1), float(dist.min(axis=1).max())


def _covariance_error(true_means, true_covs, gm):
    """Largest relative Frobenius error of the fitted covariances, matched by mean."""
    nearest, _ = _match(true_means, gm.means_)
    return max(
        float(np.linalg.norm(gm.covariances_[j] - true_covs[i]) / np.linalg.norm(true_covs[i]))
        for i, j in enumerate(nearest)
    )


@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_estimates_close_to_complete_data_and_better_than_dropping_rows(fraction):
    """Bounds from measured errors (seeded data, so they are fixed) with margin:
    at 10% (30%) missing the EM means are 0.021 (0.032) from the complete-data
    fit's, covariances 4.1% (4.8%) off the true ones against 6.0% (11.3%) for
    listwise deletion, weights within 0.001 (0.0023). EM that leaves out the
    conditional covariance in the second moments gives 0.063 (1.6), 14% (160%)
    and 0.007 (0.12): it fails every bound."""
    X, labels = make_mixture(20_000, 6, 3, random_state=7)
    true_means = np.array([X[labels == k].mean(axis=0) for k in range(3)])
    true_covs = np.array([np.cov(X[labels == k].T) for k in range(3)])
    init = initial_parameters(X, 3, "full", seed=3)
    Xm = _with_missing(X, fraction, seed=8)
    complete_rows = Xm[~np.isnan(Xm).any(axis=1)]
    full = _quiet_fit(GaussianMixture(max_iter=300, tol=1e-6, **init), X)
    em = _quiet_fit(GaussianMixture(max_iter=300, tol=1e-6, **init), Xm)
    dropped = _quiet_fit(GaussianMixture(max_iter=300, tol=1e-6, **init), complete_rows)
    # EM on incomplete data stays near the complete-data fit ...
    assert _match(full.means_, em.means_)[1] < 0.05
    np.testing.assert_allclose(np.sort(em.weights_), np.sort(full.weights_), atol=0.005)
    cov_em = _covariance_error(true_means, true_covs, em)
    assert cov_em < 0.07
    # ... and beats listwise deletion, which throws away 47% (10%) or 88% (30%) of rows.
    assert _match(true_means, em.means_)[1] < _match(true_means, dropped.means_)[1]
    assert cov_em < _covariance_error(true_means, true_covs, dropped)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows_with_missing_values(backend, covariance_type):
    X, _ = make_mixture(400, 3, 2, random_state=3)
    Xm = _with_missing(X, 0.3, seed=2)
    counts = np.random.default_rng(0).integers(0, 3, size=X.shape[0])
    init = initial_parameters(X, 2, covariance_type, seed=0)
    a = _quiet_fit(GaussianMixture(max_iter=20, backend=backend, **init), Xm, sample_weight=counts)
    b = _quiet_fit(GaussianMixture(max_iter=20, backend=backend, **init), np.repeat(Xm, counts, 0))
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-10)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-8)


def test_float32_incomplete_data_fits_in_float32():
    X, _ = make_mixture(3000, 4, 3, random_state=1)
    Xm = _with_missing(X, 0.2).astype(np.float32)
    init = initial_parameters(X, 3, "full", seed=0)
    a = _quiet_fit(GaussianMixture(max_iter=20, backend="numpy", **init), Xm)
    b = _quiet_fit(GaussianMixture(max_iter=20, backend="numpy", **init), Xm.astype(np.float64))
    assert a.means_.dtype == np.float32 and a.impute(Xm).dtype == np.float32
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------- predict, score, impute
def _mixture_marginal_logpdf(gm, row):
    o = ~np.isnan(row)
    k, d = gm.means_.shape
    covs = as_full_covariances(gm.covariances_, gm.covariance_type, k, d)
    terms = []
    for j in range(k):
        S = covs[j][np.ix_(o, o)]
        diff = row[o] - gm.means_[j, o]
        terms.append(
            np.log(gm.weights_[j])
            - 0.5 * (o.sum() * np.log(2 * np.pi) + np.linalg.slogdet(S)[1])
            - 0.5 * diff @ np.linalg.solve(S, diff)
        )
    return np.logaddexp.reduce(terms), np.exp(np.array(terms) - np.logaddexp.reduce(terms))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_predict_and_score_use_the_marginal_of_the_observed_values(backend, covariance_type):
    X, _ = make_mixture(1000, 4, 3, random_state=4)
    gm = _quiet_fit(GaussianMixture(3, covariance_type=covariance_type, random_state=0), X)
    gm.set_params(backend=backend)
    rows = _with_missing(X[:40], 0.4, seed=5)
    rows[3] = np.nan  # nothing observed: the prior
    scores = gm.score_samples(rows)
    proba = gm.predict_proba(rows)
    for i, row in enumerate(rows):
        expected_score, expected_proba = (
            (0.0, gm.weights_) if i == 3 else _mixture_marginal_logpdf(gm, row)
        )
        np.testing.assert_allclose(scores[i], expected_score, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(proba[i], expected_proba, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(gm.predict(rows), proba.argmax(axis=1))
    np.testing.assert_allclose(gm.score(rows), scores.mean())


def test_impute_one_component_is_the_conditional_mean():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 3)) @ np.array([[1.0, 0.5, 0.2], [0, 1.0, 0.7], [0, 0, 0.5]])
    gm = GaussianMixture(1, backend="numpy").fit(X)
    rows = X[:5].copy()
    rows[0, 2] = rows[1, 0] = rows[2, 1] = rows[2, 2] = np.nan
    rows[3] = np.nan
    imputed = gm.impute(rows)
    S, mu = gm.covariances_[0], gm.means_[0]
    for i in range(3):
        o, m = ~np.isnan(rows[i]), np.isnan(rows[i])
        cond = mu[m] + S[np.ix_(m, o)] @ np.linalg.solve(S[np.ix_(o, o)], rows[i, o] - mu[o])
        np.testing.assert_allclose(imputed[i, m], cond, rtol=1e-10)
        np.testing.assert_array_equal(imputed[i, o], rows[i, o])  # observed untouched
    np.testing.assert_allclose(imputed[3], mu, rtol=1e-12)
    np.testing.assert_array_equal(imputed[4], rows[4])
    assert np.isnan(rows).any()  # the input is not modified


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_impute_is_the_responsibility_weighted_conditional_mean(backend, covariance_type, dtype):
    """Several components, every backend: each NaN gets
    ``sum_k p(k | x_o) (mu_km + S_mo S_oo^-1 (x_o - mu_o))``, row by row."""
    X, _ = make_mixture(1500, 5, 3, random_state=6)
    gm = _quiet_fit(GaussianMixture(3, covariance_type=covariance_type, random_state=0), X)
    gm.set_params(backend=backend)
    rows = _with_missing(X[:60], 0.4, seed=9).astype(dtype)
    rows[7] = np.nan  # nothing observed: the mixture mean
    imputed = gm.impute(rows)
    assert imputed.dtype == dtype
    k, d = gm.means_.shape
    covs = as_full_covariances(gm.covariances_.astype(np.float64), covariance_type, k, d)
    means = gm.means_.astype(np.float64)
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    for i, row in enumerate(rows.astype(np.float64)):
        m, o = np.isnan(row), ~np.isnan(row)
        np.testing.assert_array_equal(imputed[i, o], rows[i, o])  # observed untouched
        if not m.any():
            continue
        resp = gm.weights_ if not o.any() else _mixture_marginal_logpdf(gm, row)[1]
        want = np.zeros(int(m.sum()))
        for j in range(k):
            cond = means[j, m].copy()
            if o.any():
                S = covs[j]
                cond += S[np.ix_(m, o)] @ np.linalg.solve(S[np.ix_(o, o)], row[o] - means[j, o])
            want += resp[j] * cond
        np.testing.assert_allclose(imputed[i, m], want, rtol=rtol, atol=rtol)


def test_impute_beats_column_means_on_clustered_data(backend):
    X, _ = make_mixture(5000, 5, 4, random_state=11)
    Xm = _with_missing(X, 0.2, seed=3)
    mask = np.isnan(Xm)
    gm = _quiet_fit(GaussianMixture(4, n_init=2, random_state=0, backend=backend), Xm)
    imputed = gm.impute(Xm)
    column_means = np.where(mask, np.nanmean(Xm, axis=0), Xm)
    rmse = np.sqrt(np.mean((imputed - X)[mask] ** 2))
    rmse_means = np.sqrt(np.mean((column_means - X)[mask] ** 2))
    assert rmse < 0.8 * rmse_means


def test_imputer_beats_iterative_imputer_on_clustered_data():
    pytest.importorskip("sklearn")
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    X, _ = make_mixture(4000, 5, 4, random_state=12)
    Xm = _with_missing(X, 0.2, seed=4)
    mask = np.isnan(Xm)
    ours = GaussianMixtureImputer(4, n_init=2, random_state=0).fit_transform(Xm)
    theirs = IterativeImputer(max_iter=20, random_state=0).fit_transform(Xm)
    rmse_ours = np.sqrt(np.mean((ours - X)[mask] ** 2))
    rmse_theirs = np.sqrt(np.mean((theirs - X)[mask] ** 2))
    assert rmse_ours < rmse_theirs


def test_imputer_in_a_pipeline_and_clone():
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    X, labels = make_mixture(1000, 4, 3, random_state=1)
    y = X @ np.array([1.0, -2.0, 0.5, 3.0])
    Xm = _with_missing(X, 0.1)
    from sklearn.impute import SimpleImputer

    pipe = make_pipeline(GaussianMixtureImputer(3, random_state=0), LinearRegression())
    pipe.fit(Xm, y)
    baseline = make_pipeline(SimpleImputer(), LinearRegression()).fit(Xm, y)
    assert pipe.score(Xm, y) > baseline.score(Xm, y) + 0.01  # measured: 0.919 vs 0.898
    twin = clone(pipe).fit(Xm, y)
    np.testing.assert_allclose(twin.predict(Xm), pipe.predict(Xm))


class _Frame:
    """The part of a DataFrame that matters here: named columns and __array__."""

    def __init__(self, values, columns):
        self.values, self.columns = values, columns

    def __array__(self, dtype=None, copy=None):
        return self.values if dtype is None else self.values.astype(dtype)

    def __len__(self):
        return len(self.values)


def test_imputer_keeps_column_names_and_float32():
    X, _ = make_mixture(500, 3, 2, random_state=2)
    Xm = _with_missing(X, 0.2)
    imp = GaussianMixtureImputer(2, random_state=0).fit(_Frame(Xm, ["a", "b", "c"]))
    np.testing.assert_array_equal(imp.get_feature_names_out(), ["a", "b", "c"])
    imp.fit(Xm)  # refit on a plain array: the names go
    assert not hasattr(imp, "feature_names_in_")
    np.testing.assert_array_equal(imp.get_feature_names_out(), ["x0", "x1", "x2"])
    out = imp.fit(Xm.astype(np.float32)).transform(Xm.astype(np.float32))
    assert out.dtype == np.float32 and not np.isnan(out).any()


def test_imputer_works_without_scikit_learn():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import numpy as np\n"
        "from fastem.impute import GaussianMixtureImputer\n"
        "X = np.random.default_rng(0).normal(size=(300, 3)); X[::7, 1] = np.nan\n"
        "imp = GaussianMixtureImputer(2, random_state=0)\n"
        "out = imp.fit_transform(X)\n"
        "assert not np.isnan(out).any() and out.shape == X.shape\n"
        "assert imp.get_params()['n_components'] == 2\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_imputer_estimator_checks():
    pytest.importorskip("sklearn")
    from sklearn.utils.estimator_checks import check_estimator

    check_estimator(GaussianMixtureImputer(backend="numpy"))


# ------------------------------------------------------------------- errors
def test_rows_with_nothing_observed_are_skipped_with_a_warning():
    X, _ = make_mixture(500, 3, 2, random_state=0)
    init = initial_parameters(X, 2, "full", seed=0)
    Xm = _with_missing(X, 0.2)
    padded = np.vstack([Xm, np.full((7, 3), np.nan)])
    a = _quiet_fit(GaussianMixture(max_iter=10, backend="numpy", **init), Xm)
    with pytest.warns(UserWarning, match="7 row"):
        b = _quiet_fit(GaussianMixture(max_iter=10, backend="numpy", **init), padded)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=1e-12)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-12)


@pytest.mark.parametrize(
    "X, message",
    [
        (np.full((5, 2), np.nan), "no observed value"),
        (np.c_[np.arange(5.0), np.full(5, np.nan)], r"Feature\(s\) \[1\]"),
        (np.array([[1.0, np.inf], [np.nan, 1.0], [2.0, 3.0]]), "infinity"),
    ],
)
def test_clear_errors_for_unusable_incomplete_data(X, message):
    with pytest.raises(ValueError, match=message):
        GaussianMixture(1, backend="numpy").fit(X)


def test_feature_observed_only_in_rows_of_weight_zero_is_never_observed():
    """Weight 0 drops a row: a feature seen only there cannot be estimated, and
    the fit says so before any work (not as a degenerate covariance later)."""
    X, _ = make_mixture(200, 3, 2, random_state=0)
    X[10:, 2] = np.nan
    w = np.ones(200)
    w[:10] = 0.0
    with pytest.raises(ValueError, match=r"Feature\(s\) \[2\] .*never observed"):
        GaussianMixture(2, random_state=0, backend="numpy").fit(X, sample_weight=w)
    w[3] = 0.5  # one informative row observes it: the fit runs
    gm = _quiet_fit(GaussianMixture(2, random_state=0, backend="numpy"), X, sample_weight=w)
    assert np.isfinite(gm.means_).all()


def test_initialization_fill_uses_weighted_column_means():
    from fastem._data import fill_with_column_means

    X = np.array([[1.0, np.nan], [3.0, 4.0], [np.nan, 10.0], [5.0, np.nan]])
    w = np.array([1.0, 3.0, 1.0, 0.0])
    filled = fill_with_column_means(X, w)
    np.testing.assert_array_equal(filled[~np.isnan(X)], X[~np.isnan(X)])
    np.testing.assert_allclose(filled[2, 0], (1.0 + 9.0) / 4.0)
    np.testing.assert_allclose(filled[[0, 3], 1], (12.0 + 10.0) / 4.0)


def test_too_few_informative_rows():
    X = np.array([[1.0, 2.0], [np.nan, np.nan], [np.nan, np.nan], [3.0, np.nan]])
    with pytest.raises(ValueError, match="fewer than n_components = 3"):
        GaussianMixture(3, backend="numpy").fit(X)


def test_predict_rejects_infinity_and_wrong_width():
    X, _ = make_mixture(200, 2, 2, random_state=0)
    gm = GaussianMixture(2, random_state=0, backend="numpy").fit(X)
    with pytest.raises(ValueError, match="infinity"):
        gm.predict(np.array([[np.inf, 0.0]]))
    with pytest.raises(ValueError, match="3 features"):
        gm.impute(np.zeros((2, 3)))


def test_an_em_pass_on_incomplete_data_allocates_no_per_row_temporaries(backend):
    """Memory: what a pass over incomplete data allocates does not grow with n
    (no (n, k) responsibilities, no (n, d) completed rows, no (n,) gathers),
    only with the fixed number of chunks and their bounded scratch. tracemalloc
    sees NumPy's allocations and those Numba makes inside kernels."""
    import tracemalloc

    from fastem.backends import get_backend

    kernels = get_backend(backend)
    peaks, sizes = [], []
    for n in (100_000, 400_000):
        X, _ = make_mixture(n, 8, 4, random_state=0)
        Xm = _with_missing(X, 0.1, seed=1)
        init = initial_parameters(X, 4, "full", seed=0)
        gm = _quiet_fit(GaussianMixture(max_iter=1, backend=backend, **init), Xm[:2000])
        data = ArrayData(Xm, np.ones(n))
        params = gm._pass_params(Xm.dtype)
        data.em_stats(kernels, params)  # warm up (compilation, caches)
        tracemalloc.start()
        try:
            data.em_stats(kernels, params)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        peaks.append(peak)
        sizes.append(Xm.nbytes)
    growth = (peaks[1] - peaks[0]) / (sizes[1] - sizes[0])
    # one (n,) float64 temporary alone would be 1/8 of X's growth here
    assert growth < 0.03, f"pass memory grows by {growth:.1%} of X's size: {peaks}"
