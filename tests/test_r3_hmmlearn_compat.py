"""hmmlearn 0.3.3 drop-in behaviours that hmmlearn's own suite does not pin down
(R3's bug hunt): each test failed on the code before its fix.

Tests that compare with hmmlearn skip without it; the others state hmmlearn's
behaviour as a fixed expectation and run anywhere (``backend="numpy"`` where no
compiled kernel is needed)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastem.hmm import CategoricalHMM, available_hmm_backends

BACKENDS = available_hmm_backends()
logging.getLogger("hmmlearn").setLevel(logging.ERROR)


def _categorical(module_cls, start, trans, emission, **kw):
    model = module_cls(start.size, init_params="", **kw)
    model.startprob_ = np.array(start, dtype=float)
    model.transmat_ = np.array(trans, dtype=float)
    model.emissionprob_ = np.array(emission, dtype=float)
    return model


# ------------------------------------------------------------ Viterbi ties
@pytest.mark.parametrize("backend", BACKENDS)
def test_viterbi_ties_resolve_as_hmmlearn(backend):
    """Every path ties: hmmlearn's backtrack takes the last maximizing state
    (std::max over (value, index) pairs), the final frame the first maximum."""
    half = np.full(2, 0.5)
    model = _categorical(CategoricalHMM, half, np.full((2, 2), 0.5), np.full((2, 2), 0.5))
    model.backend = backend
    X = np.zeros((6, 1), dtype=int)
    logprob, path = model.decode(X, lengths=[4, 2])
    np.testing.assert_array_equal(path, [1, 1, 1, 0, 1, 0])
    assert logprob == pytest.approx(6 * np.log(0.25))


def _dyadic_rows(draw, K, width):
    """Rows of probabilities 2^-j summing to 1 (exact logs: ties stay exact)."""
    rows = []
    for _ in range(K):
        row = [0.5**j for j in range(1, width)] + [0.5 ** (width - 1)]
        perm = draw(st.permutations(row))
        rows.append(perm)
    return np.array(rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_viterbi_path_equals_hmmlearns_on_ties(data):
    """Discrete emissions with repeated symbols tie often; every backend's
    path equals hmmlearn's (same log-probability and the same states)."""
    hl = pytest.importorskip("hmmlearn.hmm")
    K = data.draw(st.integers(2, 9), label="K")
    n_symbols = data.draw(st.integers(1, 3), label="symbols")
    start = _dyadic_rows(data.draw, 1, K)[0]
    trans = _dyadic_rows(data.draw, K, data.draw(st.integers(1, K)))
    if trans.shape[1] < K:  # fewer distinct targets: structural zeros (log -inf)
        trans = np.hstack([trans, np.zeros((K, K - trans.shape[1]))])
        trans = np.array([data.draw(st.permutations(list(r))) for r in trans])
    emission = _dyadic_rows(data.draw, K, n_symbols) if n_symbols > 1 else np.ones((K, 1))
    lengths = data.draw(st.lists(st.integers(1, 12), min_size=1, max_size=3), label="lengths")
    X = np.array(
        data.draw(
            st.lists(st.integers(0, n_symbols - 1), min_size=sum(lengths), max_size=sum(lengths))
        )  # fmt: skip
    ).reshape(-1, 1)
    theirs = _categorical(hl.CategoricalHMM, start, trans, emission, n_features=n_symbols)
    lp_h, path_h = theirs.decode(X, lengths)
    for backend in BACKENDS:
        ours = _categorical(CategoricalHMM, start, trans, emission, backend=backend)
        lp_f, path_f = ours.decode(X, lengths)
        assert lp_f == pytest.approx(lp_h, rel=1e-12), backend
        np.testing.assert_array_equal(path_f, path_h, err_msg=backend)


# ------------------------------------------------------------ random_state
def _symbols(n=120, seed=3):
    return np.random.RandomState(seed).randint(0, 4, size=(n, 1))


def test_random_state_none_uses_numpys_global_stream():
    """random_state=None is NumPy's global stream (sklearn's check_random_state,
    which hmmlearn uses): np.random.seed makes fit and sample repeatable."""
    from fastem.hmm import GaussianHMM

    X = _symbols()
    fits = []
    for _ in range(2):
        np.random.seed(0)  # noqa: NPY002 (the global stream is the point)
        fits.append(CategoricalHMM(3, n_iter=2, backend="numpy").fit(X).emissionprob_)
    np.testing.assert_array_equal(fits[0], fits[1])
    Xg = np.random.RandomState(1).normal(size=(60, 2))
    means = []
    for _ in range(2):
        np.random.seed(5)  # noqa: NPY002 (the global stream is the point)
        means.append(GaussianHMM(2, n_iter=2, backend="numpy").fit(Xg).means_)
    np.testing.assert_array_equal(means[0], means[1])
    model = CategoricalHMM(3, n_iter=2, random_state=0, backend="numpy").fit(X)
    model.random_state = None
    np.random.seed(11)  # noqa: NPY002 (the global stream is the point)
    X1, z1 = model.sample(25)
    X2, z2 = model.sample(25, random_state=np.random.RandomState(11))
    np.testing.assert_array_equal(z1, z2)
    np.testing.assert_array_equal(X1, X2)


@pytest.mark.parametrize("seed", [0, 7, np.int64(3)])
def test_int_seed_initializes_categorical_and_poisson_as_hmmlearn(seed):
    """hmmlearn's CategoricalHMM/PoissonHMM draw startprob_ and transmat_ from
    RandomState(seed) and their emissions from a fresh RandomState(seed): the
    same seed gives the same initial model (n_iter=0 keeps it)."""
    from fastem.hmm import PoissonHMM

    K = 3
    X = _symbols()
    cat = CategoricalHMM(K, n_iter=0, random_state=seed, backend="numpy").fit(X)
    rs = np.random.RandomState(seed)
    np.testing.assert_array_equal(cat.startprob_, rs.dirichlet(np.full(K, 1 / K)))
    np.testing.assert_array_equal(cat.transmat_, rs.dirichlet(np.full(K, 1 / K), size=K))
    e = np.random.RandomState(seed).rand(K, 4)
    np.testing.assert_allclose(cat.emissionprob_, e / e.sum(axis=1, keepdims=True), rtol=1e-15)
    C = np.random.RandomState(4).poisson(3, size=(80, 2))
    poi = PoissonHMM(K, n_iter=0, random_state=seed, backend="numpy").fit(C)
    mean, var = C.mean(), C.var()
    lam = np.random.RandomState(seed).gamma(mean**2 / var, var / mean, size=(K, 2))
    np.testing.assert_array_equal(poi.lambdas_, lam)
    # restarts after the first draw other emissions (the stream goes on)
    two = CategoricalHMM(K, n_iter=0, n_init=2, random_state=seed, backend="numpy")
    two._initialize(X, np.array([0, len(X)]), np.ones(1), two._kernels(),
                    np.random.RandomState(seed), first=False)  # fmt: skip
    assert not np.allclose(two.emissionprob_, cat.emissionprob_)


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_categorical_and_poisson_fits_equal_hmmlearns(backend):
    hl = pytest.importorskip("hmmlearn.hmm")
    from fastem.hmm import PoissonHMM

    X = _symbols(200)
    C = np.random.RandomState(4).poisson(3, size=(150, 2))
    for seed in (0, 7):
        theirs = hl.CategoricalHMM(3, random_state=seed, n_iter=5).fit(X, [120, 80])
        ours = CategoricalHMM(3, random_state=seed, n_iter=5, backend=backend).fit(X, [120, 80])
        for name in ("startprob_", "transmat_", "emissionprob_"):
            np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-7)
        np.testing.assert_allclose(ours.monitor_.history, theirs.monitor_.history, rtol=1e-9)
        theirs = hl.PoissonHMM(3, random_state=seed, n_iter=5).fit(C)
        ours = PoissonHMM(3, random_state=seed, n_iter=5, backend=backend).fit(C)
        for name in ("startprob_", "transmat_", "lambdas_"):
            np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-7)


# ------------------------------------------------------------ lengths
def test_lengths_read_flat_as_hmmlearns_cumsum():
    """hmmlearn reads lengths through np.cumsum: an int is one sequence, a
    column of lengths is a list (fit, score, decode, posteriors alike)."""
    X = _symbols(30)
    model = CategoricalHMM(2, n_iter=3, random_state=0, backend="numpy")
    ref = CategoricalHMM(2, n_iter=3, random_state=0, backend="numpy").fit(X, [30])
    np.testing.assert_array_equal(model.fit(X, 30).emissionprob_, ref.emissionprob_)
    assert model.score(X, 30) == ref.score(X, [30])
    column = np.array([[12], [18]])
    np.testing.assert_array_equal(model.predict(X, column), ref.predict(X, [12, 18]))
    np.testing.assert_array_equal(model.predict_proba(X, column), ref.predict_proba(X, [12, 18]))
    model._init(X, 30)  # hmmlearn's hook took an int already
    with pytest.raises(ValueError, match="lengths sum to 29"):
        model.score(X, 29)


# ------------------------------------------------------------ MultinomialHMM
def _multinomial_data(n=200, n_trials=5, seed=0):
    rs = np.random.RandomState(seed)
    emission = rs.dirichlet(np.ones(4), size=3)
    z = rs.randint(0, 3, n)
    return np.array([rs.multinomial(n_trials, emission[k]) for k in z])


def test_multinomial_emissions_are_scipys_logpmf():
    """hmmlearn's MultinomialHMM scores frames with scipy's multinomial.logpmf
    (n = the row's total); a zero probability of an unseen symbol is fine."""
    stats = pytest.importorskip("scipy.stats")
    from fastem.hmm import MultinomialHMM

    X = _multinomial_data(40)
    X[::4, 0] += 3  # frames with other totals
    model = MultinomialHMM(2, n_trials=X.sum(axis=1), init_params="", backend="numpy")
    model.startprob_ = np.array([0.3, 0.7])
    model.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    model.emissionprob_ = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.0, 0.0]])
    logB = model._emission_logprob(model._kernels(), model._validate_X(X, fitting=False))
    for k in range(2):
        expected = stats.multinomial.logpmf(X, n=X.sum(axis=1), p=model.emissionprob_[k])
        np.testing.assert_allclose(logB[:, k], expected, rtol=1e-12)
    assert np.isfinite(model.score(X[X[:, 2:].sum(axis=1) == 0]))


def test_multinomial_n_trials_as_hmmlearn():
    from fastem.hmm import MultinomialHMM

    X = _multinomial_data(30)
    model = MultinomialHMM(3, random_state=0, n_iter=2, backend="numpy").fit(X)
    np.testing.assert_array_equal(model.n_trials, X.sum(axis=1))  # None: the row sums
    assert model.n_features == 4 and model.emissionprob_.shape == (3, 4)
    with pytest.raises(ValueError, match="add up to the number of trials"):
        MultinomialHMM(3, n_trials=6, backend="numpy").fit(X)
    uneven = X.copy()
    uneven[0, 0] += 1
    with pytest.raises(ValueError, match="a single n_trials"):
        MultinomialHMM(3, n_iter=1, random_state=0, backend="numpy").fit(uneven).sample(2)
    Xs, states = model.sample(15, random_state=1)
    assert Xs.shape == (15, 4) and (Xs.sum(axis=1) == 5).all() and states.shape == (15,)
    with pytest.raises(ValueError, match="n_trials must be set"):
        fresh = MultinomialHMM(1, init_params="")
        fresh.startprob_, fresh.transmat_ = np.ones(1), np.ones((1, 1))
        fresh.emissionprob_ = np.full((1, 4), 0.25)
        fresh.score(X)


@pytest.mark.parametrize("backend", BACKENDS)
def test_multinomial_matches_hmmlearn(backend):
    """fastem.hmm.MultinomialHMM (missing before: ImportError) against
    hmmlearn's from the same seed: its initialization, every fitted attribute,
    the monitor's history, score, posteriors, the path, aic/bic and a sample."""
    hl = pytest.importorskip("hmmlearn.hmm")
    from fastem.hmm import MultinomialHMM

    X, lengths = _multinomial_data(), [120, 80]
    theirs = hl.MultinomialHMM(3, n_trials=5, random_state=0, n_iter=6).fit(X, lengths)
    ours = MultinomialHMM(3, n_trials=5, random_state=0, n_iter=6, backend=backend)
    ours.fit(X, lengths)
    for name in ("startprob_", "transmat_", "emissionprob_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-7)
    np.testing.assert_allclose(ours.monitor_.history, theirs.monitor_.history, rtol=1e-10)
    assert ours.score(X, lengths) == pytest.approx(theirs.score(X, lengths), rel=1e-10)
    np.testing.assert_allclose(
        ours.predict_proba(X, lengths), theirs.predict_proba(X, lengths), atol=1e-9
    )
    np.testing.assert_array_equal(ours.predict(X, lengths), theirs.predict(X, lengths))
    assert ours.bic(X, lengths) == pytest.approx(theirs.bic(X, lengths), rel=1e-10)
    pairs = zip(ours.sample(20, random_state=3), theirs.sample(20, random_state=3), strict=True)
    for a, b in pairs:
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("error")
def test_zero_probabilities_score_without_warnings():
    """A zero Poisson rate or multinomial probability with a zero count is
    0 * log 0 = 0: no RuntimeWarning (it raised under -W error)."""
    from fastem.hmm import MultinomialHMM, PoissonHMM

    poisson = PoissonHMM(2, init_params="", backend="numpy")
    poisson.startprob_, poisson.transmat_ = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
    poisson.lambdas_ = np.array([[0.0, 1.0], [2.0, 3.0]])
    X = np.array([[0, 1], [0, 2]])
    # log p(x | lam) = sum_d x log lam - lam - log x!, with 0 log 0 = 0
    logB = np.array([[-1.0, -5.0 + np.log(3.0)], [-1.0 - np.log(2.0), -5.0 + np.log(4.5)]])
    np.testing.assert_allclose(poisson._emission_logprob(None, X), logB, rtol=1e-14)
    np.testing.assert_allclose(poisson.score(X), np.log(np.exp(logB).mean(axis=1)).sum())
    multi = MultinomialHMM(2, n_trials=3, init_params="", backend="numpy")
    multi.startprob_, multi.transmat_ = np.array([0.5, 0.5]), np.full((2, 2), 0.5)
    multi.emissionprob_ = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    assert np.isfinite(multi.score(np.array([[1, 2, 0], [0, 0, 3]])))


def test_multinomial_model_file_round_trips(tmp_path):
    """A MultinomialHMM's file (fastem.persistence's reader lists it): same scores,
    paths, n_trials and history after load."""
    from fastem.hmm import MultinomialHMM, load

    X = _multinomial_data(30)
    model = MultinomialHMM(2, random_state=0, n_iter=3, backend="numpy").fit(X, [10, 20])
    model.save(tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    assert type(loaded) is MultinomialHMM
    np.testing.assert_array_equal(loaded.n_trials, model.n_trials)
    np.testing.assert_array_equal(loaded.emissionprob_, model.emissionprob_)
    assert loaded.score(X, [10, 20]) == model.score(X, [10, 20])
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert list(loaded.monitor_.history) == list(model.monitor_.history)


# ------------------------------------------------------------ empty states
def _unreachable(cls, covariance_type, **kw):
    """State 1 is never visited (start and transitions into it are 0): it gets
    no posterior weight, and with means_weight > 0 and a covariance prior
    hmmlearn's update is defined there (the prior's mode)."""
    D = 2
    cp = 0.2 if covariance_type in ("diag", "spherical") else 0.2 * np.eye(D)
    priors = dict(means_prior=1.0, means_weight=0.5, covars_prior=cp, covars_weight=4.0)
    model = cls(2, covariance_type=covariance_type, init_params="", n_iter=2, tol=-np.inf,
                **priors, **kw)  # fmt: skip
    model.startprob_ = np.array([1.0, 0.0])
    model.transmat_ = np.array([[1.0, 0.0], [0.5, 0.5]])
    model.means_ = np.array([[0.0, 0.0], [3.0, -3.0]])
    model.covars_ = {
        "diag": np.array([[1.0, 2.0], [3.0, 4.0]]),
        "spherical": np.array([1.5, 2.5]),
        "full": np.array([np.eye(D), 2 * np.eye(D) + 0.5]),
        "tied": np.eye(D) + 0.2,
    }[covariance_type]
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_state_takes_the_priors_update(backend):
    """A state with no posterior weight: mean = means_prior and covariance =
    covars_prior / max(covars_weight - 1, 1e-5) ("diag"), as hmmlearn's update
    gives; fastem kept the previous values (mean 3/-3 ... covariance 3, 4)."""
    from fastem.hmm import GaussianHMM

    X = np.random.RandomState(0).normal(size=(40, 2))
    model = _unreachable(GaussianHMM, "diag", backend=backend).fit(X)
    np.testing.assert_allclose(model.means_[1], [1.0, 1.0])
    np.testing.assert_allclose(model._covars_[1], [0.2 / 3, 0.2 / 3])
    # without a mean prior hmmlearn's mean is 0/0 (NaN): the previous values stay
    kept = _unreachable(GaussianHMM, "diag", backend=backend).set_params(means_weight=0.0)
    kept.fit(X)
    np.testing.assert_array_equal(kept.means_[1], [3.0, -3.0])
    np.testing.assert_array_equal(kept._covars_[1], [3.0, 4.0])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "full", "tied"])
def test_empty_state_matches_hmmlearn(backend, covariance_type):
    hl = pytest.importorskip("hmmlearn.hmm")
    from fastem.hmm import GaussianHMM

    X = np.random.RandomState(0).normal(size=(40, 2))
    theirs = _unreachable(hl.GaussianHMM, covariance_type).fit(X, [25, 15])
    ours = _unreachable(GaussianHMM, covariance_type, backend=backend).fit(X, [25, 15])
    # the transition row of the empty state never fires: fastem keeps it, hmmlearn
    # zeros it (a documented difference)
    np.testing.assert_array_equal(ours.transmat_[0], theirs.transmat_[0])
    for name in ("startprob_", "means_", "covars_"):
        theirs_value = getattr(theirs, name)
        if name == "covars_" and covariance_type == "spherical":
            # hmmlearn's getter gives (K * D, D, D) here: compare its (K, D) internal array
            theirs_value = theirs._covars_[:, 0, None, None] * np.eye(2)
        np.testing.assert_allclose(getattr(ours, name), theirs_value, rtol=1e-10, err_msg=name)
    np.testing.assert_allclose(ours.monitor_.history, theirs.monitor_.history, rtol=1e-12)


def _unreachable_gmm(cls, covariance_type, priors=True, **kw):
    D, M = 2, 2
    extra = {}
    if priors:
        full = covariance_type in ("full", "tied")
        extra = dict(
            weights_prior=2.0, means_prior=1.0, means_weight=0.5,
            covars_prior=0.3 * np.eye(D) if full else 0.5,
            covars_weight={"full": 5.0, "tied": 6.0}.get(covariance_type, 2.0),
        )  # fmt: skip
    model = cls(2, n_mix=M, covariance_type=covariance_type, init_params="", n_iter=2,
                tol=-np.inf, **extra, **kw)  # fmt: skip
    model.startprob_ = np.array([1.0, 0.0])
    model.transmat_ = np.array([[1.0, 0.0], [0.5, 0.5]])
    model.means_ = np.random.RandomState(1).normal(size=(2, M, D))
    model.weights_ = np.array([[0.5, 0.5], [0.3, 0.7]])
    model.covars_ = {
        "diag": np.full((2, M, D), 1.5),
        "spherical": np.full((2, M), 1.5),
        "full": np.tile(1.5 * np.eye(D), (2, M, 1, 1)),
        "tied": np.tile(1.5 * np.eye(D), (2, 1, 1)),
    }[covariance_type]
    return model


@pytest.mark.parametrize("covariance_type", ["diag", "spherical", "full", "tied"])
def test_gmmhmm_empty_state(covariance_type):
    """GMMHMM: an unvisited state takes hmmlearn's update where the priors
    define it (the covariances kept their previous values before), and keeps
    its previous values under the default priors, where hmmlearn's is 0/0."""
    from fastem.hmm import GMMHMM

    X = np.random.RandomState(0).normal(size=(60, 2))
    kept = _unreachable_gmm(GMMHMM, covariance_type, priors=False, backend="numpy").fit(X)
    start = _unreachable_gmm(GMMHMM, covariance_type, priors=False)
    for name in ("weights_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(kept, name)[1], getattr(start, name)[1])
    hl = pytest.importorskip("hmmlearn.hmm")
    theirs = _unreachable_gmm(hl.GMMHMM, covariance_type).fit(X)
    ours = _unreachable_gmm(GMMHMM, covariance_type, backend="numpy").fit(X)
    for name in ("weights_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), rtol=1e-10)
