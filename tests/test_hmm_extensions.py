"""fastem.hmm beyond hmmlearn: sequence weights, missing values, restarts,
reg_covar, per-sequence scores, filtered probabilities, structural zeros,
empty states, float32, and where hmmlearn is numerically wrong."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest

from fastem.hmm import CategoricalHMM, GaussianHMM, PoissonHMM, available_hmm_backends
from fastem.hmm._backend import get_hmm_kernels

BACKENDS = available_hmm_backends()
LENGTHS = [30, 1, 12, 20]
# Flat priors: the fit is maximum likelihood, so the likelihood itself must not decrease.
FLAT = dict(covars_prior=0.0, covars_weight=1.0)


def _data(D=2, seed=0, lengths=LENGTHS):
    rng = np.random.default_rng(seed)
    centres = np.array([[-3.0] * D, [0.0] * D, [3.0] * D])
    z = rng.integers(3, size=sum(lengths))
    return centres[z] + rng.normal(size=(sum(lengths), D)), rng


def _init(rng, K, D, covariance_type="full"):
    cov = {
        "full": np.tile(np.eye(D) * 2.0 + 0.3, (K, 1, 1)),
        "diag": np.full((K, D), 2.0),
        "tied": np.eye(D) * 2.0,
        "spherical": np.full(K, 2.0),
    }[covariance_type]
    return dict(
        startprob_=rng.dirichlet(np.ones(K)),
        transmat_=rng.dirichlet(np.ones(K) * 3, size=K),
        means_=rng.normal(scale=2.0, size=(K, D)),
        covars_=cov,
    )


def _set(model, params):
    for name, value in params.items():
        setattr(model, name, np.array(value, copy=True))
    return model


# ------------------------------------------------------------------ weights
@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_sequence_weights_equal_repeated_sequences(backend):
    X, rng = _data()
    init = _init(rng, 3, 2)
    weights = np.array([2, 1, 0, 3])
    offsets = np.concatenate([[0], np.cumsum(LENGTHS)])
    seqs = [X[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    X_rep = np.concatenate([s for s, w in zip(seqs, weights, strict=True) for _ in range(w)])
    len_rep = [len(s) for s, w in zip(seqs, weights, strict=True) for _ in range(w)]
    kw = dict(covariance_type="full", init_params="", n_iter=5, tol=-np.inf, backend=backend)
    a = _set(GaussianHMM(3, **kw), init).fit(X, LENGTHS, sample_weight=weights)
    b = _set(GaussianHMM(3, **kw), init).fit(X_rep, len_rep)
    np.testing.assert_allclose(a.monitor_.history, b.monitor_.history, rtol=1e-10)
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-12)


def test_sequence_weights_validated():
    X, _ = _data()
    with pytest.raises(ValueError, match="one weight per sequence"):
        GaussianHMM(2).fit(X, LENGTHS, sample_weight=[1.0, 2.0])
    with pytest.raises(ValueError, match="non-negative"):
        GaussianHMM(2).fit(X, LENGTHS, sample_weight=[1.0, -1.0, 1.0, 1.0])


# ------------------------------------------------------------------ missing values
def _slow_missing_iteration(X, lengths, start, trans, means, covs):
    """One Baum-Welch step with explicit marginals and conditional expectations,
    frame by frame (full covariances, flat priors)."""
    N, D = X.shape
    K = means.shape[0]
    logB = np.zeros((N, K))
    for t in range(N):
        o = ~np.isnan(X[t])
        if not o.any():
            continue  # nothing observed: density 1
        for k in range(K):
            S = covs[k][np.ix_(o, o)]
            d = X[t, o] - means[k, o]
            logB[t, k] = -0.5 * (
                o.sum() * np.log(2 * np.pi) + np.linalg.slogdet(S)[1] + d @ np.linalg.solve(S, d)
            )
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    gamma = np.zeros((N, K))
    xi = np.zeros((K, K))
    st = np.zeros(K)
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):
        la = np.zeros((b - a, K))
        lb = np.zeros((b - a, K))
        la[0] = np.log(start) + logB[a]
        for t in range(1, b - a):
            la[t] = np.logaddexp.reduce(la[t - 1][:, None] + np.log(trans), axis=0) + logB[a + t]
        for t in range(b - a - 2, -1, -1):
            lb[t] = np.logaddexp.reduce(np.log(trans) + logB[a + t + 1] + lb[t + 1], axis=1)
        ll = np.logaddexp.reduce(la[-1])
        gamma[a:b] = np.exp(la + lb - ll)
        st += gamma[a]
        for t in range(b - a - 1):
            xi += np.exp(la[t][:, None] + np.log(trans) + logB[a + t + 1] + lb[t + 1] - ll)
    new_means = np.zeros((K, D))
    new_covs = np.zeros((K, D, D))
    for k in range(K):
        s0, s1, s2 = 0.0, np.zeros(D), np.zeros((D, D))
        for t in range(N):
            o = ~np.isnan(X[t])
            if not o.any():
                continue
            m = ~o
            ex = means[k].copy()
            cc = np.zeros((D, D))
            ex[o] = X[t, o]
            if m.any():
                reg = covs[k][np.ix_(m, o)] @ np.linalg.inv(covs[k][np.ix_(o, o)])
                ex[m] = means[k, m] + reg @ (X[t, o] - means[k, o])
                cc[np.ix_(m, m)] = covs[k][np.ix_(m, m)] - reg @ covs[k][np.ix_(o, m)]
            s0 += gamma[t, k]
            s1 += gamma[t, k] * ex
            s2 += gamma[t, k] * (np.outer(ex, ex) + cc)
        new_means[k] = s1 / s0
        new_covs[k] = s2 / s0 - np.outer(new_means[k], new_means[k])
    return st / st.sum(), xi / xi.sum(axis=1, keepdims=True), new_means, new_covs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_missing_values_one_iteration_equals_slow_reference(backend, covariance_type):
    X, rng = _data(D=3, seed=4)
    X[rng.uniform(size=X.shape) < 0.25] = np.nan
    X[5] = np.nan  # a frame with nothing observed
    K = 3
    init = _init(rng, K, 3, covariance_type)
    model = _set(
        GaussianHMM(
            K, covariance_type=covariance_type, init_params="", n_iter=1, backend=backend, **FLAT
        ),
        init,
    ).fit(X, LENGTHS)
    covs = _set(GaussianHMM(K, covariance_type=covariance_type), init)  # full matrices
    start, trans, means, new_covs = _slow_missing_iteration(
        X, LENGTHS, init["startprob_"], init["transmat_"], init["means_"], covs.covars_
    )
    if covariance_type == "diag":
        new_covs = np.array([np.diag(np.diag(c)) for c in new_covs])
    np.testing.assert_allclose(model.startprob_, start, rtol=1e-9)
    np.testing.assert_allclose(model.transmat_, trans, rtol=1e-9)
    np.testing.assert_allclose(model.means_, means, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.covars_, new_covs, rtol=1e-8, atol=1e-12)


def test_missing_values_never_decrease_the_likelihood():
    X, rng = _data(D=3, seed=5)
    X[rng.uniform(size=X.shape) < 0.3] = np.nan
    model = GaussianHMM(3, "full", n_iter=8, tol=-np.inf, random_state=0, **FLAT).fit(X, LENGTHS)
    assert np.all(np.diff(model.monitor_.history) >= -1e-9)
    assert np.isfinite(model.score(X, LENGTHS))


# ------------------------------------------------------------------ monotonicity
@pytest.mark.parametrize("covariance_type", ["full", "diag", "tied", "spherical"])
def test_baum_welch_never_decreases_likelihood(covariance_type):
    X, _ = _data(D=2, seed=6)
    model = GaussianHMM(3, covariance_type, n_iter=20, tol=-np.inf, random_state=1, **FLAT).fit(
        X, LENGTHS
    )
    assert np.all(np.diff(model.monitor_.history) >= -1e-9)


# ------------------------------------------------------------------ restarts, reg_covar
def test_n_init_keeps_the_best_restart():
    X, _ = _data(seed=7)
    one = GaussianHMM(4, n_iter=8, random_state=3).fit(X, LENGTHS)
    best = GaussianHMM(4, n_iter=8, random_state=3, n_init=4).fit(X, LENGTHS)
    # the first restart draws what the single fit draws, so the best is at least as good
    # by the objective the fit ascends (log-likelihood + log prior)
    assert best.objective_ >= one.objective_ - 1e-9


def test_n_init_restarts_from_given_parameters():
    """A parameter set before fit and left out of init_params is every restart's start."""
    X, rng = _data(seed=8)
    init = _init(rng, 3, 2)
    model = _set(GaussianHMM(3, "full", init_params="st", n_iter=3, n_init=3, random_state=0), init)
    model.fit(X, LENGTHS)
    assert np.isfinite(model.means_).all()


def test_reg_covar_floors_every_covariance():
    rng = np.random.default_rng(9)
    X = np.repeat(rng.normal(size=(3, 2)), 10, axis=0)  # states collapse onto points
    model = GaussianHMM(3, "full", covars_prior=0.0, reg_covar=0.05, n_iter=10, random_state=0)
    model.fit(X)
    for c in model.covars_:
        assert np.linalg.eigvalsh(c).min() >= 0.05 - 1e-12


# ------------------------------------------------------------------ scores and filtering
@pytest.mark.parametrize("backend", BACKENDS)
def test_score_sequences_are_per_sequence_scores(backend):
    X, rng = _data(seed=10)
    model = _set(GaussianHMM(3, "full", backend=backend), _init(rng, 3, 2))
    per_seq = model.score_sequences(X, LENGTHS)
    offsets = np.concatenate([[0], np.cumsum(LENGTHS)])
    singles = [model.score(X[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    np.testing.assert_allclose(per_seq, singles, rtol=1e-12)
    np.testing.assert_allclose(per_seq.sum(), model.score(X, LENGTHS), rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_filtered_probabilities_use_only_the_past(backend):
    X, rng = _data(seed=11, lengths=[25])
    model = _set(GaussianHMM(3, "full", backend=backend), _init(rng, 3, 2))
    filt = model.predict_filtered_proba(X)
    for t in (0, 7, 24):
        # the smoothed posterior of the last frame of a prefix is the filtered one
        np.testing.assert_allclose(filt[t], model.predict_proba(X[: t + 1])[-1], rtol=1e-10)
    # and it changes when the future does not: compare with the full smoothing
    assert not np.allclose(filt, model.predict_proba(X))


# ------------------------------------------------------------------ zeros and empty states
@pytest.mark.parametrize("backend", BACKENDS)
def test_structural_zeros_stay_zero_and_empty_state_gives_no_nan(backend):
    X, rng = _data(seed=12)
    K = 4
    init = _init(rng, K, 2)
    trans = np.triu(init["transmat_"][:, :])  # left-right
    trans[:, 3] = 0.0  # nothing ever enters state 3
    trans[3] = [0.0, 0.0, 0.0, 1.0]
    trans /= trans.sum(axis=1, keepdims=True)
    init["transmat_"] = trans
    init["startprob_"] = np.array([0.5, 0.3, 0.2, 0.0])
    model = _set(GaussianHMM(K, "full", init_params="", n_iter=5, backend=backend), init)
    model.fit(X, LENGTHS)
    assert (model.transmat_[trans == 0] == 0).all()
    assert model.startprob_[3] == 0
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        assert np.isfinite(getattr(model, name)).all(), name
    np.testing.assert_allclose(model.transmat_.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.means_[3], init["means_"][3])  # kept
    assert np.isfinite(model.score(X, LENGTHS))


def test_hmmlearn_gives_nan_for_an_empty_state():
    """The difference documented in docs/hmm.md: hmmlearn's M-step divides by the
    empty state's zero posterior sum."""
    hl = pytest.importorskip("hmmlearn.hmm")
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    X, rng = _data(seed=12)
    init = _init(rng, 2, 2)
    init["startprob_"] = np.array([1.0, 0.0])
    init["transmat_"] = np.array([[1.0, 0.0], [0.5, 0.5]])
    kw = dict(covariance_type="full", init_params="")
    with np.errstate(all="ignore"):
        theirs = _set(hl.GaussianHMM(2, n_iter=1, **kw), init).fit(X, LENGTHS)
        assert np.isnan(theirs.means_[1]).all()
        with pytest.raises(ValueError):  # and its next iteration fails on the NaN
            _set(hl.GaussianHMM(2, n_iter=2, **kw), init).fit(X, LENGTHS)
    ours = _set(GaussianHMM(2, n_iter=3, **kw), init).fit(X, LENGTHS)
    assert np.isfinite(ours.means_).all() and np.isfinite(ours.covars_).all()


# ------------------------------------------------------------------ dtypes, scaling, decoding
@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_input_fits_like_float64(backend):
    X, rng = _data(seed=13)
    init = _init(rng, 3, 2, "diag")
    kw = dict(covariance_type="diag", init_params="", n_iter=5, backend=backend)
    a = _set(GaussianHMM(3, **kw), init).fit(X.astype(np.float32), LENGTHS)
    b = _set(GaussianHMM(3, **kw), init).fit(X, LENGTHS)
    assert a.means_.dtype == np.float64
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.transmat_, b.transmat_, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(a.score(X, LENGTHS), b.score(X, LENGTHS), rtol=1e-6)


def test_high_dimensional_data_where_hmmlearn_scaling_underflows():
    hl = pytest.importorskip("hmmlearn.hmm")
    rng = np.random.default_rng(14)
    D, K = 400, 3
    X = rng.normal(size=(60, D)) * 3.0
    init = dict(
        startprob_=np.full(K, 1 / K),
        transmat_=np.full((K, K), 1 / K),
        means_=rng.normal(size=(K, D)),
        covars_=np.full((K, D), 0.5),
    )
    log_model = _set(hl.GaussianHMM(K, implementation="log"), init)
    scaling = _set(hl.GaussianHMM(K, implementation="scaling"), init)
    ours = _set(GaussianHMM(K), init)
    with np.errstate(all="ignore"), pytest.raises(ValueError, match="underflow"):
        scaling.score(X)  # every exp(logB) underflows in hmmlearn's scaling mode
    np.testing.assert_allclose(ours.score(X), log_model.score(X), rtol=1e-10)
    np.testing.assert_allclose(ours.predict_proba(X), log_model.predict_proba(X), atol=1e-10)


def test_decode_map_returns_the_joint_log_probability_of_its_path():
    X, rng = _data(seed=15)
    model = _set(GaussianHMM(3, "full"), _init(rng, 3, 2))
    logprob, path = model.decode(X, LENGTHS, algorithm="map")
    np.testing.assert_array_equal(path, model.predict_proba(X, LENGTHS).argmax(axis=1))
    kern = get_hmm_kernels(None)
    logB = model._emission_logprob(kern, X)
    expected = 0.0
    offsets = np.concatenate([[0], np.cumsum(LENGTHS)])
    for a, b in zip(offsets[:-1], offsets[1:], strict=True):
        expected += np.log(model.startprob_[path[a]]) + logB[a, path[a]]
        for t in range(a + 1, b):
            expected += np.log(model.transmat_[path[t - 1], path[t]]) + logB[t, path[t]]
    np.testing.assert_allclose(logprob, expected, rtol=1e-12)
    # Viterbi's path is the most likely one, so its joint probability is at least as high
    assert model.decode(X, LENGTHS)[0] >= logprob - 1e-9


# ------------------------------------------------------------------ API
def test_estimator_protocol_and_errors():
    sklearn_base = pytest.importorskip("sklearn.base")
    model = GaussianHMM(3, "tied", n_init=2)
    clone = sklearn_base.clone(model)
    assert clone.get_params() == model.get_params()
    X, _ = _data()
    with pytest.raises(Exception, match="not fitted"):
        model.predict(X)
    with pytest.raises(ValueError, match="lengths sum"):
        model.fit(X, [5, 5])
    with pytest.raises(ValueError, match="at least 0"):  # an empty sequence is dropped
        model.fit(X, [sum(LENGTHS) + 1, -1])
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianHMM(2, "bogus").fit(X)
    with pytest.raises(ValueError, match="Unknown decoder"):
        GaussianHMM(2, algorithm="bogus").fit(X)
    with pytest.raises(ValueError, match="unknown HMM backend"):
        GaussianHMM(2, backend="bogus").fit(X)
    with pytest.raises(ValueError, match="integers"):
        CategoricalHMM(2).fit(np.array([[0.5], [1.0]]))
    with pytest.raises(ValueError, match="nonnegative"):
        PoissonHMM(2).fit(np.array([[-1], [2]]))


def test_sample_and_refit():
    X, _ = _data()
    model = GaussianHMM(3, "full", random_state=0, n_iter=5).fit(X, LENGTHS)
    Xs, states = model.sample(200, random_state=1)
    assert Xs.shape == (200, 2) and states.shape == (200,)
    Xs2, states2 = model.sample(200, random_state=1)
    np.testing.assert_array_equal(Xs, Xs2)
    np.testing.assert_array_equal(states, states2)
    cat = CategoricalHMM(2, random_state=0, n_iter=3).fit(np.array([[0], [1], [2], [1], [0]]))
    assert cat.sample(10)[0].shape == (10, 1)
    poi = PoissonHMM(2, random_state=0, n_iter=3).fit(np.array([[0, 3], [1, 2], [5, 0], [4, 1]]))
    assert poi.sample(10)[0].shape == (10, 2)
    np.testing.assert_allclose(
        model.get_stationary_distribution() @ model.transmat_,
        model.get_stationary_distribution(),
        atol=1e-12,
    )


def test_import_fastem_does_not_import_hmm():
    code = "import sys, fastem; assert 'fastem.hmm' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------ GMMHMM
def test_gmmhmm_weights_missing_values_and_monotonicity():
    from fastem.hmm import GMMHMM

    X, rng = _data(D=2, seed=16)
    K, M = 2, 2
    init = dict(
        startprob_=np.array([0.6, 0.4]),
        transmat_=np.array([[0.8, 0.2], [0.3, 0.7]]),
        weights_=np.full((K, M), 0.5),
        means_=rng.normal(scale=2.0, size=(K, M, 2)),
        covars_=np.tile(np.eye(2) * 2.0, (K, M, 1, 1)),
    )
    kw = dict(n_mix=M, covariance_type="full", init_params="", n_iter=4, tol=-np.inf)
    weights = np.array([1, 2, 1, 0])
    offsets = np.concatenate([[0], np.cumsum(LENGTHS)])
    seqs = [X[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    X_rep = np.concatenate([s for s, w in zip(seqs, weights, strict=True) for _ in range(w)])
    len_rep = [len(s) for s, w in zip(seqs, weights, strict=True) for _ in range(w)]
    a = _set(GMMHMM(K, **kw), init).fit(X, LENGTHS, sample_weight=weights)
    b = _set(GMMHMM(K, **kw), init).fit(X_rep, len_rep)
    for name in ("transmat_", "weights_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-12)

    Xm = X.copy()
    Xm[rng.uniform(size=X.shape) < 0.2] = np.nan
    flat = dict(covars_prior=0.0, covars_weight=-(1.0 + 2 + 1.0), n_iter=5)
    model = _set(GMMHMM(K, **{**kw, **flat}), init).fit(Xm, LENGTHS)
    assert np.all(np.diff(model.monitor_.history) >= -1e-9)
    assert np.isfinite(model.covars_).all()


@pytest.mark.skipif("numba" not in BACKENDS, reason="needs numba")
def test_fit_bit_identical_on_any_thread_count():
    import numba

    from fastem.hmm import GMMHMM

    rng = np.random.default_rng(17)
    lengths = rng.integers(1, 40, size=30)
    X = rng.normal(size=(int(lengths.sum()), 3))
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    before = numba.get_num_threads()
    fits = []
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            g = GaussianHMM(3, "full", n_iter=3, random_state=0, backend="numba")
            m = GMMHMM(2, n_mix=2, n_iter=2, random_state=0, backend="numba")
            fits.append((g.fit(X, lengths), m.fit(X, lengths)))
    finally:
        numba.set_num_threads(before)
    for a, b in zip(fits[0], fits[-1], strict=True):
        for name in ("startprob_", "transmat_", "means_", "covars_"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
        np.testing.assert_array_equal(a.monitor_.history, b.monitor_.history)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gmmhmm_stats_reuse_the_passs_state_densities(backend):
    """GMMHMM's statistics take the forward-backward's state log-densities
    instead of recomputing their log-sum-exp: the same bits, with or without
    missing values."""
    from fastem.hmm import GMMHMM
    from fastem.hmm._base import _offsets, _seq_weights

    rng = np.random.default_rng(21)
    X = rng.normal(size=(sum(LENGTHS), 3))
    X[::4] += 3.0
    kern = get_hmm_kernels(backend)
    for missing in (False, True):
        if missing:
            X[rng.uniform(size=X.shape) < 0.1] = np.nan
        m = GMMHMM(2, n_mix=3, n_iter=1, random_state=0, backend=backend).fit(X, LENGTHS)
        offsets = _offsets(LENGTHS, X.shape[0])
        w = _seq_weights(None, len(LENGTHS))
        fb = m._forward_backward(kern, X, offsets, w)
        reused = m._emission_stats(kern, X, fb.gamma, offsets, w, logB=fb.logB)
        fresh = m._emission_stats(kern, X, fb.gamma, offsets, w)
        for a, b in zip(reused, fresh, strict=True):
            np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- hmmlearn's own suite
# Regressions found by running hmmlearn 0.3.3's test suite against fastem.hmm
# (tests/test_peer_hmmlearn_suite.py, docs/hmmlearn_suite.md).


def test_init_hook_has_hmmlearns_signature_and_fits_start():
    """``_init(X, lengths)`` (hmmlearn's hook, called by its tests and by users
    who initialize without fitting) sets what fit's initialization sets, and
    leaves given parameters alone."""
    X, rng = _data(D=2, seed=3)
    a = GaussianHMM(3, "diag", random_state=7)
    a._init(X, LENGTHS)
    a._check()
    b = GaussianHMM(3, "diag", random_state=7, n_iter=1, tol=np.inf).fit(X, LENGTHS)
    # fit's first history entry is the log-likelihood at its initial parameters
    assert a.score(X, LENGTHS) == pytest.approx(b.monitor_.history[0], rel=1e-12)
    c = GaussianHMM(3, "diag", init_params="st", random_state=7)
    c.means_, c.covars_ = a.means_ + 1.0, a._covars_ * 2.0
    c._init(X, sum(LENGTHS))  # an int is one sequence, as in hmmlearn's tests
    np.testing.assert_array_equal(c.means_, a.means_ + 1.0)
    np.testing.assert_array_equal(c._covars_, a._covars_ * 2.0)


def test_hmmlearns_initialization_warnings(caplog):
    """hmmlearn logs a warning when init_params overwrites a parameter the user
    set, and when there are fewer data points than free parameters."""
    X, _ = _data(D=2, seed=4)
    m = GaussianHMM(3, "diag", random_state=0, n_iter=2)
    m.startprob_ = np.full(3, 1 / 3)
    with caplog.at_level(logging.WARNING, logger="fastem.hmm"):
        m.fit(X, LENGTHS)
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("'startprob_' attribute is set, it will be overwritten" in s for s in msgs) == 1
    assert not any("degenerate" in s for s in msgs)
    caplog.clear()
    small = GaussianHMM(3, "full", init_params="")
    small.startprob_, small.transmat_ = np.full(3, 1 / 3), np.full((3, 3), 1 / 3)
    small.means_, small.covars_ = np.zeros((3, 2)), np.tile(np.eye(2), (3, 1, 1))
    with caplog.at_level(logging.WARNING, logger="fastem.hmm"):
        small._init(X[:4], 4)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == [
        "Fitting a model with 23 free scalar parameters with only 8 data points "
        "will result in a degenerate solution."
    ]


def test_monitor_exists_before_fit_and_an_assigned_one_is_used():
    """hmmlearn's custom-monitor idiom: ``monitor_`` exists after construction
    and a monitor assigned before ``fit`` is the one fit reports to."""
    from fastem.hmm import ConvergenceMonitor

    class Counting(ConvergenceMonitor):
        def report(self, log_prob):
            self.calls = getattr(self, "calls", 0) + 1
            super().report(log_prob)

    X, _ = _data(D=2, seed=5)
    m = GaussianHMM(2, "diag", n_iter=4, tol=-np.inf, random_state=0)
    assert (m.monitor_.tol, m.monitor_.n_iter) == (-np.inf, 4)
    assert "monitor_" not in vars(m) and not any(k.endswith("_") for k in vars(m))
    m.monitor_ = Counting(-np.inf, 3, False)
    m.fit(X, LENGTHS)
    assert isinstance(m.monitor_, Counting) and m.monitor_.calls == 3
    assert len(m.monitor_.history) == 3 and m.monitor_.converged
    # Without an assigned monitor each fit builds one from tol / n_iter.
    plain = GaussianHMM(2, "diag", n_iter=4, tol=-np.inf, random_state=0)
    _ = plain.monitor_
    plain.n_iter = 2
    plain.fit(X, LENGTHS)
    assert type(plain.monitor_) is ConvergenceMonitor and len(plain.monitor_.history) == 2


def test_spherical_covars_in_hmmlearns_other_shapes():
    """hmmlearn accepts spherical covars as (K, D, D) multiples of I and as
    (K, 1, 1, 1) (its issue #385); so does fastem. A non-isotropic (K, D, D)
    is refused."""
    m = GaussianHMM(2, "spherical")
    m.means_ = np.zeros((2, 3))
    m.covars_ = np.array([[[[4.0]]], [[[3.0]]]])
    np.testing.assert_array_equal(m._covars_, [4.0, 3.0])
    m.covars_ = np.array([2.0, 5.0])[:, None, None] * np.eye(3)
    np.testing.assert_array_equal(m._covars_, [2.0, 5.0])
    np.testing.assert_array_equal(m.covars_, np.array([2.0, 5.0])[:, None, None] * np.eye(3))
    with pytest.raises(ValueError, match="multiples of I"):
        m.covars_ = np.array([np.diag([1.0, 2.0, 3.0])] * 2)


def test_gmmhmm_check_refuses_a_bad_covariance_type_with_valueerror():
    from fastem.hmm import GMMHMM

    X, _ = _data(D=2, seed=6)
    m = GMMHMM(2, n_mix=2, n_iter=1, random_state=0).fit(X, LENGTHS)
    m.covariance_type = "bad_covariance_type"
    with pytest.raises(ValueError, match="covariance_type"):
        m._check()
    with pytest.raises(ValueError, match="covariance_type"):
        m.score(X, LENGTHS)


def test_custom_emission_subclass_hmmlearns_idiom():
    """hmmlearn's documented extension point: subclass BaseHMM and override
    _compute_log_likelihood. Scoring and decoding then run on fastem's kernels
    and equal a GaussianHMM's given the same emission log-densities; fit
    refuses clearly."""
    from fastem.hmm import BaseHMM

    X, rng = _data(D=2, seed=8)
    ref = GaussianHMM(3, "diag", n_iter=3, random_state=0).fit(X, LENGTHS)

    class Fixed(BaseHMM):
        def _compute_log_likelihood(self, X):
            return ref._emission_logprob(get_hmm_kernels("numpy"), X).copy()

    m = Fixed(3)
    assert m.get_params()["n_components"] == 3 and m.params == "st"
    m.startprob_, m.transmat_ = ref.startprob_, ref.transmat_
    assert m.score(X, LENGTHS) == pytest.approx(ref.score(X, LENGTHS), rel=1e-12)
    np.testing.assert_allclose(m.predict_proba(X, LENGTHS), ref.predict_proba(X, LENGTHS))
    np.testing.assert_array_equal(m.predict(X, LENGTHS), ref.predict(X, LENGTHS))
    _, states = m.sample(5, random_state=0)
    assert states.shape == (5,)
    with pytest.raises(NotImplementedError, match="scoring, decoding and sampling only"):
        m.fit(X, LENGTHS)
    with pytest.raises(NotImplementedError, match="_compute_log_likelihood"):
        bare = BaseHMM(3)
        bare.startprob_, bare.transmat_ = ref.startprob_, ref.transmat_
        bare.score(X)


def test_stationary_distribution_needs_transmat_only():
    """As hmmlearn: a model with only ``transmat_`` set has a stationary distribution."""
    m = CategoricalHMM(2)
    m.transmat_ = np.array([[0.9, 0.1], [0.3, 0.7]])
    np.testing.assert_allclose(m.get_stationary_distribution(), [0.75, 0.25])
    with pytest.raises(Exception, match="transmat_"):
        CategoricalHMM(2).get_stationary_distribution()


# ---------------------------------------------- a custom monitor calling the model
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag"])
def test_a_monitor_may_call_the_model_during_the_fit(backend, covariance_type):
    """A custom monitor's ``report`` runs with the fit's per-fit state hidden:
    scoring other data with NaN works (the compiled full/tied E-step parameters
    are for the fit's own X, which has none), posteriors of the fit's own X are
    fresh arrays (not the fit's reused buffer), and the fit is unchanged."""
    from fastem.hmm._base import ConvergenceMonitor

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (150, 2)), rng.normal(4, 1, (150, 2))])
    Xv = X[:100].copy()
    Xv[5, 0] = np.nan
    scores, posteriors = [], []

    class Calling(ConvergenceMonitor):
        def report(self, log_prob):
            scores.append(model.score(Xv))
            posteriors.append(model.predict_proba(X))
            super().report(log_prob)

    kw = dict(covariance_type=covariance_type, n_iter=3, tol=-np.inf, random_state=0)
    model = GaussianHMM(2, backend=backend, **kw)
    model.monitor_ = Calling(-np.inf, 3, False)
    model.fit(X)
    ref = GaussianHMM(2, backend=backend, **kw).fit(X)
    assert len(scores) == 3 and np.isfinite(scores).all()
    assert not np.shares_memory(posteriors[0], posteriors[-1])
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(model, name), getattr(ref, name), err_msg=name)


def test_an_installed_hmmlearn_monitor_is_the_one_fit_reports_to():
    """hmmlearn's idiom: ``model.monitor_ = ConvergenceMonitor(...)`` before
    ``fit``; fit reports to that object (hmmlearn's own class too, which has no
    ``objective_history``), and restarts report to reset copies of it."""
    hb = pytest.importorskip("hmmlearn.base")
    from fastem.hmm._base import ConvergenceMonitor

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (150, 2)), rng.normal(3, 1, (150, 2))])
    for cls in (ConvergenceMonitor, hb.ConvergenceMonitor):
        mon = cls(1e-2, 5, False)
        m = GaussianHMM(2, n_iter=5, tol=-np.inf, random_state=1)
        m.monitor_ = mon
        m.fit(X)
        assert m.monitor_ is mon and mon.iter == 5 and len(mon.history) == 5, cls
        assert len(m.objective_history_) == 5
    mon = ConvergenceMonitor(1e-2, 4, False)
    m = GaussianHMM(2, n_iter=4, tol=-np.inf, random_state=1, n_init=3)
    m.monitor_ = mon
    m.fit(X)
    assert m.monitor_.iter == 4 and type(m.monitor_) is ConvergenceMonitor
