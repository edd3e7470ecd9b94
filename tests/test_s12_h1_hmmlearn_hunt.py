"""Differences from hmmlearn 0.3.3 found by session 12's hunt (H1), each against
hmmlearn directly: covariances whose feature count is not the means', negative
probabilities, hmmlearn's messages for probabilities that do not sum to one and
for a falling log-likelihood, and GMMHMM's ``weights_prior < 1``."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fastem import hmm as fh
from fastem.hmm._backend import available_hmm_backends

hl = pytest.importorskip("hmmlearn.hmm")
hl_base = pytest.importorskip("hmmlearn.base")

K = 3
BACKENDS = available_hmm_backends()


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    X[60:] += 3
    return X, [50, 70]


def _gaussian(mod, ct="diag", **kw):
    r = np.random.default_rng(1)
    m = mod.GaussianHMM(K, covariance_type=ct, init_params="", **kw)
    m.startprob_ = np.array([0.5, 0.3, 0.2])
    m.transmat_ = r.dirichlet(np.ones(K) * 3, size=K)
    m.means_ = r.normal(size=(K, 2))
    v = r.uniform(0.5, 2, size=K)
    m.covars_ = {
        "diag": np.tile(v[:, None], (1, 2)),
        "spherical": v,
        "full": v[:, None, None] * np.eye(2),
        "tied": np.eye(2) * 1.3,
    }[ct]
    return m


def _gmm(mod, **kw):
    r = np.random.default_rng(1)
    m = mod.GMMHMM(K, n_mix=2, covariance_type="diag", init_params="", **kw)
    m.startprob_ = np.array([0.5, 0.3, 0.2])
    m.transmat_ = r.dirichlet(np.ones(K) * 3, size=K)
    m.weights_ = r.dirichlet(np.ones(2) * 2, size=K)
    m.means_ = r.normal(size=(K, 2, 2))
    m.covars_ = r.uniform(0.5, 2, size=(K, 2, 2))
    return m


WRONG_D = {  # covariances for 3 features beside means of 2
    "diag": np.ones((K, 3)),
    "full": np.tile(np.eye(3), (K, 1, 1)),
    "tied": np.eye(3),
}


def _call(m, method, X, lengths):
    if method == "sample":
        return m.sample(5, random_state=0)
    if method == "fit":
        return m.set_params(n_iter=1).fit(X, lengths)
    return getattr(m, method)(X, lengths)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ct", sorted(WRONG_D))
@pytest.mark.parametrize("method", ["score", "predict", "fit", "sample"])
def test_covars_with_another_feature_count_than_the_means_raise(backend, ct, method):
    """hmmlearn fails (a broadcasting error in its density, or scipy's in
    sample); fastem scored and decoded such a model with the wrong rows (a
    finite score for "diag" and "full") before the shapes were checked."""
    X, lengths = _data()
    ref = _gaussian(hl, ct)
    ref.covars_ = WRONG_D[ct]
    with pytest.raises(ValueError):
        _call(ref, method, X, lengths)
    m = _gaussian(fh, ct, backend=backend)
    m.covars_ = WRONG_D[ct]
    with pytest.raises(ValueError, match="do not fit means_ with 2 features"):
        _call(m, method, X, lengths)


def _negative(kind, mod):
    if kind == "weights_":
        m = _gmm(mod)
        m.weights_ = np.array([[-0.2, 1.2], [0.5, 0.5], [0.5, 0.5]])
    elif kind == "emissionprob_":
        m = mod.CategoricalHMM(K, init_params="", n_features=3)
        m.startprob_ = np.full(K, 1 / K)
        m.transmat_ = np.full((K, K), 1 / K)
        m.emissionprob_ = np.array([[1.2, -0.2, 0.0], [0.3, 0.3, 0.4], [0.3, 0.3, 0.4]])
    else:
        m = _gaussian(mod)
        if kind == "startprob_":
            m.startprob_ = np.array([0.5, 0.6, -0.1])
        else:
            m.transmat_ = np.array([[0.5, 0.6, -0.1], [0.3, 0.3, 0.4], [0.3, 0.3, 0.4]])
    return m


@pytest.mark.parametrize("kind", ["startprob_", "transmat_", "emissionprob_", "weights_"])
def test_negative_probabilities_raise(kind):
    """Rows that sum to one with a negative entry: hmmlearn's score is NaN (the
    log of a negative number); fastem gave a finite score (-553.19 for the
    start probabilities here), now a ValueError naming the attribute."""
    X, lengths = _data()
    if kind == "emissionprob_":
        X, lengths = np.array([[0], [1], [2]]), None
    assert np.isnan(_negative(kind, hl).score(X, lengths))
    with pytest.raises(ValueError, match=f"{kind} must be non-negative"):
        _negative(kind, fh).score(X, lengths)


@pytest.mark.parametrize(
    "attr, value",
    [
        ("startprob_", np.array([0.5, 0.3, 0.3])),
        ("transmat_", np.full((K, K), 0.4)),
    ],
)
def test_sum_messages_are_hmmlearns(attr, value):
    X, lengths = _data()
    messages = []
    for mod in (hl, fh):
        m = _gaussian(mod)
        setattr(m, attr, value)
        with pytest.raises(ValueError) as err:
            m.score(X, lengths)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_not_converging_warning_is_hmmlearns():
    from fastem.hmm import _base

    messages = []
    monitors = (hl_base.ConvergenceMonitor, hl_base._log), (fh.ConvergenceMonitor, _base._log)
    for cls, log in monitors:
        # the library's own logger, whatever other tests did to logging's config
        handler, saved = _Records(), (log.disabled, log.level, logging.root.manager.disable)
        log.addHandler(handler)
        log.disabled = False
        log.setLevel(logging.WARNING)
        logging.disable(logging.NOTSET)
        try:
            monitor = cls(0.01, 10, False)
            monitor.report(-10.0)
            monitor.report(-12.5)
        finally:
            log.removeHandler(handler)
            log.disabled = saved[0]
            log.setLevel(saved[1])
            logging.disable(saved[2])
        assert len(handler.messages) == 1
        messages.append(handler.messages[0])
    assert messages[0] == messages[1]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weights_prior, n_iter", [(0.5, 3), (0.0, 2)])
def test_gmm_weights_prior_below_one_clips_at_zero(backend, weights_prior, n_iter):
    """hmmlearn's weight update ``(n + alpha - 1) / sum`` is not clipped: with
    ``weights_prior < 1`` a component with less than ``1 - alpha`` posterior
    weight gets a negative weight (then NaN log-likelihoods). fastem clips the
    numerator at 0, as for the start, transition and emission probabilities:
    the last iteration (the first to make a negative weight here) equals
    hmmlearn's weights clipped and renormalized, and every other parameter
    equals hmmlearn's."""
    X, lengths = _data()
    ref = _gmm(hl, weights_prior=weights_prior, n_iter=n_iter, tol=-np.inf).fit(X, lengths)
    m = _gmm(fh, weights_prior=weights_prior, n_iter=n_iter, tol=-np.inf, backend=backend)
    m.fit(X, lengths)
    assert (ref.weights_ < 0).any()  # the case: hmmlearn makes a negative weight
    clipped = np.maximum(ref.weights_, 0)
    clipped /= clipped.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(m.weights_, clipped, rtol=1e-7, atol=1e-12)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(m, name), getattr(ref, name), rtol=1e-7, err_msg=name)
    np.testing.assert_allclose(m.monitor_.history, ref.monitor_.history, rtol=1e-9)
    # and a longer fit stays a valid model with finite log-likelihoods
    m = _gmm(fh, weights_prior=weights_prior, n_iter=10, tol=-np.inf, backend=backend)
    m.fit(X, lengths)
    assert (m.weights_ >= 0).all() and np.isfinite(m.monitor_.history).all()


def _refit_other_d(mod, kind, init_params):
    rng = np.random.default_rng(0)
    if kind == "poisson":
        make = lambda: mod.PoissonHMM(2, n_iter=2, random_state=0)  # noqa: E731
        A, B = rng.poisson(2, size=(50, 2)), rng.poisson(2, size=(50, 3))
    else:
        make = lambda: mod.GMMHMM(2, n_mix=2, n_iter=2, random_state=0)  # noqa: E731
        A, B = rng.normal(size=(50, 2)), rng.normal(size=(50, 3))
    m = make().fit(A)
    if init_params is not None:
        m.set_params(init_params=init_params)
    return m.fit(B)


@pytest.mark.parametrize("kind", ["poisson", "gmm"])
def test_refit_keeping_parameters_of_another_feature_count_raises(kind):
    """A second fit on data with another number of features, the emission
    parameters kept (``init_params=""``): hmmlearn refuses it ("Unexpected
    number of dimensions"); fastem's GMMHMM fitted the 3-feature data with its
    2-feature means (the kernels read the wrong columns) and PoissonHMM failed
    in a matrix product. (With the parameters re-initialized, fastem refits,
    as hmmlearn does for a model whose parameters were only assigned.)"""
    with pytest.raises(ValueError, match="Unexpected number of dimensions"):
        _refit_other_d(hl, kind, "")
    with pytest.raises(ValueError, match="X has 3 features"):
        _refit_other_d(fh, kind, "")
    assert _refit_other_d(fh, kind, None).n_features == 3
