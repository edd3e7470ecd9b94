"""fastem.hmm against hmmlearn 0.3.3 (its "log" implementation), from identical
initial parameters: every fitted attribute, the monitor's history, score,
posteriors and the Viterbi path, with several sequences of different lengths
including length 1."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fastem.hmm import (
    GMMHMM,
    CategoricalHMM,
    GaussianHMM,
    PoissonHMM,
    available_hmm_backends,
)

hl = pytest.importorskip("hmmlearn.hmm")
logging.getLogger("hmmlearn").setLevel(logging.ERROR)

BACKENDS = available_hmm_backends()
LENGTHS = [40, 1, 25, 7, 1, 16]
RTOL = 1e-7


def _gaussian_data(D: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(3, D))
    labels = rng.integers(3, size=sum(LENGTHS))
    X = centres[labels] + rng.normal(size=(sum(LENGTHS), D))
    return X, rng


def _initial(rng, K: int, D: int, covariance_type: str):
    covs = {
        "diag": rng.uniform(0.5, 2.0, size=(K, D)),
        "spherical": rng.uniform(0.5, 2.0, size=K),
        "full": np.array([np.eye(D) + 0.3 * np.ones((D, D)) * u for u in rng.uniform(0, 1, K)]),
        "tied": np.eye(D) * 1.5 + 0.2,
    }[covariance_type]
    return dict(
        startprob_=rng.dirichlet(np.ones(K)),
        transmat_=rng.dirichlet(np.ones(K), size=K),
        means_=rng.normal(scale=2.0, size=(K, D)),
        covars_=covs,
    )


def _set(model, params):
    for name, value in params.items():
        setattr(model, name, np.array(value, copy=True))
    return model


def _compact_covars(model, covariance_type):
    """hmmlearn's internal covariances in fastem's compact shape."""
    c = model._covars_
    return c[:, 0] if covariance_type == "spherical" and c.ndim == 2 else c


def _assert_close(ours, theirs, what):
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=1e-10, err_msg=what)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "full", "tied"])
def test_gaussian_fit_matches_hmmlearn(backend, covariance_type):
    K, D = 3, 2
    X, rng = _gaussian_data(D)
    init = _initial(rng, K, D, covariance_type)
    kw = dict(covariance_type=covariance_type, init_params="", n_iter=6, tol=-np.inf)
    theirs = _set(hl.GaussianHMM(K, **kw), init).fit(X, LENGTHS)
    ours = _set(GaussianHMM(K, backend=backend, **kw), init).fit(X, LENGTHS)

    _assert_close(np.array(ours.monitor_.history), np.array(theirs.monitor_.history), "history")
    _assert_close(ours.startprob_, theirs.startprob_, "startprob_")
    _assert_close(ours.transmat_, theirs.transmat_, "transmat_")
    _assert_close(ours.means_, theirs.means_, "means_")
    _assert_close(ours._covars_, _compact_covars(theirs, covariance_type), "covars")
    if covariance_type != "spherical":  # hmmlearn's spherical getter has a shape bug
        _assert_close(ours.covars_, theirs.covars_, "covars_")

    np.testing.assert_allclose(ours.score(X, LENGTHS), theirs.score(X, LENGTHS), rtol=RTOL)
    ll_o, post_o = ours.score_samples(X, LENGTHS)
    ll_t, post_t = theirs.score_samples(X, LENGTHS)
    np.testing.assert_allclose(ll_o, ll_t, rtol=RTOL)
    _assert_close(post_o, post_t, "posteriors")
    lp_o, path_o = ours.decode(X, LENGTHS)
    lp_t, path_t = theirs.decode(X, LENGTHS)
    np.testing.assert_array_equal(path_o, path_t)
    np.testing.assert_allclose(lp_o, lp_t, rtol=RTOL)
    np.testing.assert_allclose(ours.aic(X, LENGTHS), theirs.aic(X, LENGTHS), rtol=RTOL)
    np.testing.assert_allclose(ours.bic(X, LENGTHS), theirs.bic(X, LENGTHS), rtol=RTOL)
    _assert_close(
        ours.get_stationary_distribution(), theirs.get_stationary_distribution(), "stationary"
    )


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_gaussian_priors_and_partial_params_match_hmmlearn(covariance_type):
    """Non-default priors, and params/init_params subsets, follow hmmlearn's M-step."""
    K, D = 3, 2
    X, rng = _gaussian_data(D, seed=1)
    init = _initial(rng, K, D, covariance_type)
    kw = dict(
        covariance_type=covariance_type,
        init_params="",
        n_iter=4,
        tol=-np.inf,
        startprob_prior=1.5,
        transmat_prior=np.full((K, K), 1.2),
        means_prior=0.5,
        means_weight=2.0,
        covars_prior=0.3,
        covars_weight=4.0,
    )
    # hmmlearn drops the covariance statistics when "m" is not in params (its
    # "c"-only update ignores the data), so "c" without "m" is not compared.
    for params in ("stmc", "tm", "st"):
        theirs = _set(hl.GaussianHMM(K, params=params, **kw), init).fit(X, LENGTHS)
        ours = _set(GaussianHMM(K, params=params, **kw), init).fit(X, LENGTHS)
        _assert_close(ours.startprob_, theirs.startprob_, f"startprob_ {params}")
        _assert_close(ours.transmat_, theirs.transmat_, f"transmat_ {params}")
        _assert_close(ours.means_, theirs.means_, f"means_ {params}")
        _assert_close(ours._covars_, theirs._covars_, f"covars {params}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_categorical_matches_hmmlearn(backend):
    rng = np.random.default_rng(2)
    K, M = 3, 5
    X = rng.integers(M, size=(sum(LENGTHS), 1))
    init = dict(
        startprob_=rng.dirichlet(np.ones(K)),
        transmat_=rng.dirichlet(np.ones(K), size=K),
        emissionprob_=rng.dirichlet(np.ones(M), size=K),
    )
    kw = dict(init_params="", n_iter=5, tol=-np.inf, emissionprob_prior=1.1)
    theirs = _set(hl.CategoricalHMM(K, **kw), init).fit(X, LENGTHS)
    ours = _set(CategoricalHMM(K, backend=backend, **kw), init).fit(X, LENGTHS)
    _assert_close(np.array(ours.monitor_.history), np.array(theirs.monitor_.history), "history")
    for name in ("startprob_", "transmat_", "emissionprob_"):
        _assert_close(getattr(ours, name), getattr(theirs, name), name)
    _assert_close(ours.predict_proba(X, LENGTHS), theirs.predict_proba(X, LENGTHS), "posteriors")
    np.testing.assert_array_equal(ours.predict(X, LENGTHS), theirs.predict(X, LENGTHS))
    np.testing.assert_allclose(ours.bic(X, LENGTHS), theirs.bic(X, LENGTHS), rtol=RTOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_poisson_matches_hmmlearn(backend):
    rng = np.random.default_rng(3)
    K, D = 3, 2
    rates = np.array([[1.0, 5.0], [4.0, 0.5], [9.0, 9.0]])
    X = rng.poisson(rates[rng.integers(K, size=sum(LENGTHS))])
    init = dict(
        startprob_=rng.dirichlet(np.ones(K)),
        transmat_=rng.dirichlet(np.ones(K), size=K),
        lambdas_=rng.uniform(0.5, 8.0, size=(K, D)),
    )
    for prior in (dict(), dict(lambdas_prior=0.5, lambdas_weight=0.2)):
        kw = dict(init_params="", n_iter=5, tol=-np.inf, **prior)
        theirs = _set(hl.PoissonHMM(K, **kw), init).fit(X, LENGTHS)
        ours = _set(PoissonHMM(K, backend=backend, **kw), init).fit(X, LENGTHS)
        _assert_close(np.array(ours.monitor_.history), np.array(theirs.monitor_.history), "history")
        for name in ("startprob_", "transmat_", "lambdas_"):
            _assert_close(getattr(ours, name), getattr(theirs, name), name)
        np.testing.assert_allclose(ours.score(X, LENGTHS), theirs.score(X, LENGTHS), rtol=RTOL)
        np.testing.assert_array_equal(ours.predict(X, LENGTHS), theirs.predict(X, LENGTHS))


def test_default_constructor_matches_hmmlearn():
    """Same parameter names and defaults (fastem adds n_init, reg_covar, backend,
    n_threads, acceleration and stopping)."""
    extras = {"n_init", "reg_covar", "backend", "n_threads", "acceleration", "stopping"}
    for ours, theirs in [
        (GaussianHMM(), hl.GaussianHMM()),
        (CategoricalHMM(), hl.CategoricalHMM()),
        (PoissonHMM(), hl.PoissonHMM()),
        (GMMHMM(), hl.GMMHMM()),
    ]:
        p_ours = {k: v for k, v in ours.get_params().items() if k not in extras}
        assert p_ours == theirs.get_params()


def _gmm_initial(rng, K, M, D, covariance_type):
    covs = {
        "diag": rng.uniform(0.5, 2.0, size=(K, M, D)),
        "spherical": rng.uniform(0.5, 2.0, size=(K, M)),
        "full": np.tile(np.eye(D) * 1.3 + 0.2, (K, M, 1, 1)),
        "tied": np.tile(np.eye(D) * 1.3 + 0.2, (K, 1, 1)),
    }[covariance_type]
    return dict(
        startprob_=rng.dirichlet(np.ones(K)),
        transmat_=rng.dirichlet(np.ones(K), size=K),
        weights_=rng.dirichlet(np.ones(M), size=K),
        means_=rng.normal(scale=2.0, size=(K, M, D)),
        covars_=covs,
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "full", "tied"])
def test_gmmhmm_matches_hmmlearn(backend, covariance_type):
    K, M, D = 3, 2, 2
    X, rng = _gaussian_data(D, seed=4)
    init = _gmm_initial(rng, K, M, D, covariance_type)
    kw = dict(n_mix=M, covariance_type=covariance_type, init_params="", n_iter=3, tol=-np.inf)
    theirs = _set(hl.GMMHMM(K, **kw), init).fit(X, LENGTHS)
    ours = _set(GMMHMM(K, backend=backend, **kw), init).fit(X, LENGTHS)
    _assert_close(np.array(ours.monitor_.history), np.array(theirs.monitor_.history), "history")
    for name in ("startprob_", "transmat_", "weights_", "means_", "covars_"):
        _assert_close(getattr(ours, name), getattr(theirs, name), name)
    np.testing.assert_allclose(ours.score(X, LENGTHS), theirs.score(X, LENGTHS), rtol=RTOL)
    _assert_close(ours.predict_proba(X, LENGTHS), theirs.predict_proba(X, LENGTHS), "posteriors")
    np.testing.assert_array_equal(ours.predict(X, LENGTHS), theirs.predict(X, LENGTHS))
    # hmmlearn counts M - 1 free weights in all, fastem K (M - 1) (one simplex per state).
    extra = (K - 1) * (M - 1)
    assert ours._n_parameters() == sum(theirs._get_n_fit_scalars_per_param().values()) + extra
    n = X.shape[0]
    np.testing.assert_allclose(
        ours.bic(X, LENGTHS), theirs.bic(X, LENGTHS) + extra * np.log(n), rtol=RTOL
    )
    np.testing.assert_allclose(ours.aic(X, LENGTHS), theirs.aic(X, LENGTHS) + 2 * extra, rtol=RTOL)


def test_gmmhmm_priors_match_hmmlearn():
    K, M, D = 2, 3, 2
    X, rng = _gaussian_data(D, seed=5)
    for covariance_type in ("diag", "full"):
        init = _gmm_initial(rng, K, M, D, covariance_type)
        kw = dict(
            n_mix=M, covariance_type=covariance_type, init_params="", n_iter=3, tol=-np.inf,
            weights_prior=1.5, means_prior=0.3, means_weight=0.5,
            covars_prior=0.2 if covariance_type == "diag" else 0.1 * np.eye(D),
            covars_weight=1.0 if covariance_type == "diag" else 3.0,
        )  # fmt: skip
        theirs = _set(hl.GMMHMM(K, **kw), init).fit(X, LENGTHS)
        ours = _set(GMMHMM(K, **kw), init).fit(X, LENGTHS)
        for name in ("startprob_", "transmat_", "weights_", "means_", "covars_"):
            _assert_close(getattr(ours, name), getattr(theirs, name), f"{name} {covariance_type}")


# hmmlearn's issue #2 (its test_fit_zero_variance): a constant feature, few frames per state.
ZERO_VARIANCE_X = np.array([
    [715.0, 585.0, 0.0, 0.0], [715.0, 520.0, 1.04705811, -60.3696289],
    [715.0, 455.0, 0.72088623, -52.7055664], [715.0, 390.0, -0.457946777, -78.0605469],
    [715.0, 325.0, -6.43127441, -55.9954834], [715.0, 260.0, -2.90063477, -78.0220947],
    [715.0, 195.0, 8.45532227, -70.3294373], [715.0, 130.0, 4.09387207, -58.3621216],
    [715.0, 65.0, -1.2166748, -44.8131409],
])  # fmt: skip


def _zero_variance_start():
    """hmmlearn's zero-variance data, K = 3 and a common full-covariance start."""
    X, K = ZERO_VARIANCE_X, 3
    cv = np.cov(X.T) + 1e-3 * np.eye(4)
    init = dict(
        startprob_=np.full(K, 1 / K), transmat_=np.full((K, K), 1 / K),
        means_=X[[0, 4, 8]].copy(), covars_=np.tile(cv, (K, 1, 1)),
    )  # fmt: skip
    return X, K, init


@pytest.mark.parametrize("backend", BACKENDS)
def test_singular_full_covariance_takes_hmmlearns_fallback(backend, monkeypatch):
    """On hmmlearn's zero-variance example the third M-step gives a full
    covariance that is not positive definite (in NumPy's and SciPy's Cholesky
    alike). hmmlearn's density adds 1e-7 to its diagonal and goes on; fastem
    stores that floored matrix and goes on too (it raised before; found by
    hmmlearn's own suite). Up to there the fits agree; afterwards another state's
    covariance has an eigenvalue ~1e-13, so no two implementations track each
    other (docs/hmmlearn_suite.md): the test asserts a finite fit and score."""
    X, K, init = _zero_variance_start()
    theirs = _set(hl.GaussianHMM(K, "full", init_params="", n_iter=4, tol=-np.inf), init).fit(X)
    ours = GaussianHMM(K, "full", init_params="", n_iter=4, tol=-np.inf, backend=backend)
    _set(ours, init).fit(X)
    np.testing.assert_allclose(
        list(ours.monitor_.history)[:3], list(theirs.monitor_.history)[:3], rtol=RTOL
    )
    assert len(ours.monitor_.history) == 4 and np.isfinite(ours.monitor_.history).all()
    assert np.isfinite(ours.score(X))
    np.linalg.cholesky(ours.covars_)  # what score and decode factor
    # Negative control: without the fallback the same fit fails at its 4th E-step.
    monkeypatch.setattr(GaussianHMM, "_floor_singular", lambda self: False)
    with pytest.raises(ValueError, match="ill-defined covariance"):
        _set(GaussianHMM(K, "full", init_params="", n_iter=4, backend=backend), init).fit(X)


@pytest.mark.parametrize("kw", [{"acceleration": "squarem"}, {"stopping": "aitken"}])
def test_singular_fallback_in_the_accelerated_driver(kw, monkeypatch):
    """The generic driver (acceleration or a fastem stopping rule) runs the EM
    points through the same singular-covariance fallback as plain Baum-Welch."""
    X, K, init = _zero_variance_start()
    ours = GaussianHMM(K, "full", init_params="", n_iter=6, tol=-np.inf, **kw)
    _set(ours, init).fit(X)
    assert np.isfinite(ours.score(X))
    np.linalg.cholesky(ours.covars_)
    # Negative control: without the fallback the driver's EM point fails.
    monkeypatch.setattr(GaussianHMM, "_floor_singular", lambda self: False)
    with pytest.raises(ValueError, match="ill-defined covariance"):
        _set(GaussianHMM(K, "full", init_params="", n_iter=6, tol=-np.inf, **kw), init).fit(X)
