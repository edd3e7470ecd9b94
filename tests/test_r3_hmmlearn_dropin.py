"""hmmlearn 0.3.3 drop-in behaviours found by R3's second hunt (session 11): each
test failed on the code before its fix.

Tests that compare with hmmlearn skip without it; the others state hmmlearn's
behaviour as a fixed expectation and run anywhere (``backend="numpy"`` where no
compiled kernel is needed)."""

from __future__ import annotations

import logging
import subprocess

import numpy as np
import pytest

from fastem.cli import main
from fastem.hmm import (
    CategoricalHMM,
    GaussianHMM,
    MultinomialHMM,
    PoissonHMM,
    available_hmm_backends,
    load,
)

BACKENDS = available_hmm_backends()
logging.getLogger("hmmlearn").setLevel(logging.ERROR)
COVARS = {
    "diag": np.ones((2, 2)),
    "spherical": np.ones(2),
    "full": np.tile(np.eye(2), (2, 1, 1)),
    "tied": np.eye(2),
}


def _gaussian(cls, ct, **kw):
    model = cls(2, covariance_type=ct, init_params="", **kw)
    model.startprob_ = np.array([0.6, 0.4])
    model.transmat_ = np.array([[0.7, 0.3], [0.2, 0.8]])
    model.means_ = np.array([[0.0, 0.0], [3.0, 3.0]])
    model.covars_ = COVARS[ct]
    return model


def _two_blobs():
    rng = np.random.RandomState(0)
    return np.r_[rng.randn(40, 2), rng.randn(40, 2) + 3]


# ------------------------------------------------------------ means_weight broadcasting
MW = dict(means_weight=np.array([1.0, 50.0]), means_prior=np.array([[5.0, 5.0], [-5.0, -5.0]]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_1d_means_weight_with_k_equal_d_is_per_feature(backend):
    """hmmlearn computes ``means_weight * means_prior + obs`` with obs (K, D): a
    1-D weight runs along the features when K == D. One M-step from known
    posteriors-free data (one state, so gamma = 1) states it in closed form."""
    X = _two_blobs()
    model = GaussianHMM(2, init_params="", params="m", n_iter=1, backend=backend, **MW)
    model.startprob_ = np.array([1.0, 0.0])
    model.transmat_ = np.array([[1.0, 0.0], [0.0, 1.0]])  # state 0 throughout
    model.means_ = np.zeros((2, 2))
    model.covars_ = np.ones((2, 2))
    model.fit(X)
    w, m0 = MW["means_weight"], MW["means_prior"]
    expected = (w * m0[0] + X.sum(axis=0)) / (w + X.shape[0])  # weight d for feature d
    np.testing.assert_allclose(model.means_[0], expected, rtol=1e-12)


@pytest.mark.parametrize("ct", list(COVARS))
def test_1d_means_weight_equals_hmmlearn(ct):
    hl = pytest.importorskip("hmmlearn.hmm")
    X = _two_blobs()
    theirs = _gaussian(hl.GaussianHMM, ct, n_iter=3, **MW).fit(X)
    for backend in BACKENDS:
        ours = _gaussian(GaussianHMM, ct, n_iter=3, backend=backend, **MW).fit(X)
        np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-10, atol=1e-12)
        their_cov = theirs._covars_[:, 0] if ct == "spherical" else theirs._covars_
        if ct in ("full", "tied"):
            # hmmlearn's term is not symmetric here and its density reads the lower
            # triangle; fastem keeps that triangle and mirrors it, so score() works
            their_cov = np.tril(their_cov) + np.swapaxes(np.tril(their_cov, -1), -1, -2)
            cov = np.asarray(ours._covars_)
            assert np.array_equal(cov, np.swapaxes(cov, -1, -2))
            assert ours.score(X) == pytest.approx(theirs.score(X), rel=1e-12)
        np.testing.assert_allclose(ours._covars_, their_cov, rtol=1e-10, atol=1e-12)
        assert list(ours.monitor_.history) == pytest.approx(list(theirs.monitor_.history))


def test_1d_means_weight_of_length_k_is_per_state_when_d_differs():
    """NumPy cannot broadcast (K,) against (K, D) for D != K: fastem reads it per
    state (hmmlearn's docstring), as before."""
    X = np.c_[_two_blobs(), np.zeros(80)]
    model = GaussianHMM(2, init_params="", params="m", n_iter=1, backend="numpy")
    model.set_params(means_weight=np.array([1.0, 50.0]), means_prior=np.array([5.0, -5.0]))
    model.startprob_, model.transmat_ = np.array([1.0, 0.0]), np.eye(2)
    model.means_, model.covars_ = np.zeros((2, 3)), np.ones((2, 3))
    model.fit(X)
    np.testing.assert_allclose(model.means_[0], (1.0 * 5.0 + X.sum(axis=0)) / (1.0 + 80))


# ------------------------------------------------------------ zero-length sequences
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [[10, 0, 20], [0, 30], [30, 0], [10, 0, 0, 20]])
def test_zero_length_sequences_are_left_out(backend, lengths):
    """hmmlearn 0.3.3 accepts a 0 in ``lengths`` in score/decode/predict(_proba)
    but reads past its empty arrays (an arbitrary number in the score); fastem
    leaves the empty sequence out: everything equals the call without it, and
    its log-likelihood is 0."""
    X = np.random.RandomState(0).randn(30, 2)
    without = [n for n in lengths if n]
    model = _gaussian(GaussianHMM, "diag", backend=backend)
    assert model.score(X, lengths) == model.score(X, without)
    logprob, posteriors = model.score_samples(X, lengths)
    np.testing.assert_array_equal(posteriors, model.predict_proba(X, without))
    seq = model.score_sequences(X, lengths)
    assert seq.shape == (len(lengths),)
    np.testing.assert_array_equal(seq[np.array(lengths) == 0], 0.0)
    np.testing.assert_array_equal(seq[np.array(lengths) > 0], model.score_sequences(X, without))
    for algorithm in ("viterbi", "map"):
        a, b = model.decode(X, lengths, algorithm), model.decode(X, without, algorithm)
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(model.predict(X, lengths), model.predict(X, without))
    weights = np.arange(1.0, len(lengths) + 1)
    fitted = _gaussian(GaussianHMM, "diag", backend=backend, n_iter=4, params="stmc")
    fitted.fit(X, lengths, sample_weight=weights)
    ref = _gaussian(GaussianHMM, "diag", backend=backend, n_iter=4, params="stmc")
    ref.fit(X, without, sample_weight=weights[np.array(lengths) > 0])
    np.testing.assert_array_equal(fitted.means_, ref.means_)
    assert list(fitted.monitor_.history) == list(ref.monitor_.history)


def test_zero_length_scores_equal_hmmlearn_without_them():
    hl = pytest.importorskip("hmmlearn.hmm")
    X = np.random.RandomState(0).randn(30, 2)
    theirs = _gaussian(hl.GaussianHMM, "full")
    ours = _gaussian(GaussianHMM, "full", backend="numpy")
    assert ours.score(X, [10, 0, 20]) == pytest.approx(theirs.score(X, [10, 20]), rel=1e-12)
    np.testing.assert_array_equal(ours.predict(X, [10, 0, 20]), theirs.predict(X, [10, 20]))


def test_negative_lengths_still_raise():
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match="at least 0"):
        _gaussian(GaussianHMM, "diag", backend="numpy").score(X, [4, -1])


# ------------------------------------------------------------ random_state after a fit
def _discrete_data():
    rng = np.random.RandomState(0)
    return {
        "CategoricalHMM": rng.randint(0, 4, size=(100, 1)),
        "PoissonHMM": rng.poisson(3, size=(100, 2)),
        "MultinomialHMM": rng.multinomial(5, [0.2, 0.3, 0.5], size=100),
    }


DISCRETE = {"CategoricalHMM": CategoricalHMM, "PoissonHMM": PoissonHMM}
DISCRETE["MultinomialHMM"] = MultinomialHMM


@pytest.mark.parametrize("name", list(DISCRETE))
def test_sample_after_a_seeded_discrete_fit_continues_a_stream(name):
    """hmmlearn's discrete ``_init`` stores ``check_random_state(seed)`` as
    ``random_state`` after drawing the emissions from it: ``sample()`` then
    continues that stream (two calls differ) instead of restarting the seed."""
    X = _discrete_data()[name]
    model = DISCRETE[name](3, random_state=7, n_iter=2, backend="numpy").fit(X)
    assert isinstance(model.random_state, np.random.RandomState)
    if name != "PoissonHMM":  # the generator after hmmlearn's emission draw
        stream = np.random.RandomState(7)
        stream.rand(3, model.n_features)
        assert model.random_state.rand() == stream.rand()
    a, b = model.sample(6), model.sample(6)
    assert not np.array_equal(a[0], b[0]) or not np.array_equal(a[1], b[1])
    fresh = DISCRETE[name](3, random_state=7, n_iter=2, backend="numpy").fit(X)
    again = fresh.sample(12, random_state=np.random.RandomState(0))
    np.testing.assert_array_equal(again[1], model.sample(12, random_state=0)[1])


@pytest.mark.parametrize("name", list(DISCRETE))
def test_sample_and_refit_after_a_seeded_fit_equal_hmmlearn(name):
    hl = pytest.importorskip("hmmlearn.hmm")
    X = _discrete_data()[name]
    for backend in BACKENDS:
        draws = []
        for cls in (getattr(hl, name), DISCRETE[name]):
            kw = {} if cls.__module__.startswith("hmmlearn") else {"backend": backend}
            model = cls(3, random_state=7, n_iter=3, **kw).fit(X)
            out = [model.sample(5), model.sample(5), model.sample(5, random_state=3)]
            model.fit(X)  # a second fit continues the stream too
            out += [model.sample(4), (model.startprob_, model.transmat_)]
            draws.append(out)
        theirs, ours = draws
        for t, o in zip(theirs, ours, strict=True):
            np.testing.assert_allclose(o[0], t[0], rtol=1e-12)
            np.testing.assert_allclose(o[1], t[1], rtol=1e-12)


def test_gaussian_sample_with_an_int_seed_repeats():
    """GaussianHMM keeps an int seed (hmmlearn's draws its initial model from a
    local generator): each ``sample()`` restarts it, as hmmlearn's does."""
    model = _gaussian(GaussianHMM, "diag", random_state=3, backend="numpy")
    a, b = model.sample(8), model.sample(8)
    np.testing.assert_array_equal(a[0], b[0])
    assert model.random_state == 3


def test_saved_discrete_model_continues_its_stream(tmp_path):
    X = _discrete_data()["CategoricalHMM"]
    model = CategoricalHMM(3, random_state=7, n_iter=2, backend="numpy").fit(X)
    model.save(tmp_path / "m")  # no warning: the generator's state is stored
    loaded = load(tmp_path / "m")
    for _ in range(2):
        np.testing.assert_array_equal(loaded.sample(9)[0], model.sample(9)[0])


# ------------------------------------------------------------ CLI: --kind multinomial
def _cli(capsys, *args):
    try:
        code = main(list(args))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_cli_fits_a_multinomial_hmm_as_the_library(tmp_path, capsys):
    X = _discrete_data()["MultinomialHMM"]
    path = tmp_path / "m.csv"
    np.savetxt(path, X, fmt="%d", delimiter=",", header="a,b,c", comments="")
    out = tmp_path / "m.npz"
    r = _cli(capsys, "hmm", "fit", str(path), "-k", "2", "--kind", "multinomial",
             "-o", str(out), "--seed", "4", "--backend", "numpy")  # fmt: skip
    assert r.returncode == 0, r.stderr
    fitted = load(out)
    assert type(fitted) is MultinomialHMM and fitted.n_trials == 5
    ref = MultinomialHMM(2, n_trials=5, n_iter=100, random_state=4, backend="numpy").fit(X)
    np.testing.assert_array_equal(fitted.emissionprob_, ref.emissionprob_)
    states = tmp_path / "s.csv"
    r = _cli(capsys, "hmm", "decode", str(out), str(path), "-o", str(states))
    assert r.returncode == 0, r.stderr
    decoded = np.loadtxt(states, skiprows=1, dtype=int)
    np.testing.assert_array_equal(decoded, ref.predict(X))
    r = _cli(capsys, "hmm", "sample", str(out), "-n", "7", "-o", str(tmp_path / "d.csv"))
    assert r.returncode == 0, r.stderr
    drawn = np.loadtxt(tmp_path / "d.csv", delimiter=",", skiprows=1)
    np.testing.assert_array_equal(drawn.sum(axis=1), 5)
    # rows with different totals: fitted (n_trials per row), but no sampling
    X2 = X.copy()
    X2[0, 0] += 1
    np.savetxt(path, X2, fmt="%d", delimiter=",", header="a,b,c", comments="")
    assert _cli(capsys, "hmm", "fit", str(path), "-k", "2", "--kind", "multinomial",
                "-o", str(out), "--backend", "numpy").returncode == 0  # fmt: skip
    r = _cli(capsys, "hmm", "sample", str(out), "-n", "3", "-o", str(tmp_path / "e.csv"))
    assert r.returncode == 2 and "different totals" in r.stderr


def test_cli_multinomial_equals_hmmlearn(tmp_path, capsys):
    hl = pytest.importorskip("hmmlearn.hmm")
    X = _discrete_data()["MultinomialHMM"]
    path = tmp_path / "m.csv"
    np.savetxt(path, X, fmt="%d", delimiter=",")
    out = tmp_path / "m.npz"
    r = _cli(capsys, "hmm", "fit", str(path), "-k", "2", "--kind", "multinomial",
             "-o", str(out), "--seed", "4", "--n-iter", "20")  # fmt: skip
    assert r.returncode == 0, r.stderr
    theirs = hl.MultinomialHMM(2, n_trials=5, n_iter=20, random_state=4).fit(X)
    np.testing.assert_allclose(load(out).emissionprob_, theirs.emissionprob_, rtol=1e-9)


# ------------------------------------------------------------ monitor_
def test_monitor_repr_is_hmmlearns_layout():
    """hmmlearn's tutorial prints ``model.monitor_``: the same layout."""
    from fastem.hmm._base import ConvergenceMonitor

    monitor = ConvergenceMonitor(0.01, 5, False)
    monitor.history.extend([-3.5, -2.25])
    monitor.iter = 2
    monitor.objective_history.extend([-3.0, -2.0])  # fastem's: not shown
    expected = (
        "ConvergenceMonitor(\n    history=[-3.5, -2.25],\n    iter=2,\n    n_iter=5,\n"
        "    tol=0.01,\n    verbose=False,\n)"
    )
    assert repr(monitor) == expected
    base = pytest.importorskip("hmmlearn.base")
    theirs = base.ConvergenceMonitor(0.01, 5, False)
    theirs.history.extend([-3.5, -2.25])
    theirs.iter = 2
    assert repr(theirs) == expected


def _gaussian_fit_data():
    return _two_blobs()


def test_an_edited_monitor_is_the_one_fit_uses(capsys):
    """hmmlearn's fit reuses the monitor its constructor made, so
    ``model.monitor_.tol = ...`` (or ``.verbose``) takes effect; the same here.
    ``set_params`` still takes effect on a monitor nobody edited."""
    X = _gaussian_fit_data()
    model = _gaussian(GaussianHMM, "diag", n_iter=20, backend="numpy")
    model.monitor_.tol = 1e9  # stop after the second iteration
    model.monitor_.verbose = True
    model.fit(X)
    assert model.monitor_.iter == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2
    model.fit(X)  # the edited monitor stays in use
    assert model.monitor_.iter == 2 and model.monitor_.tol == 1e9
    fresh = _gaussian(GaussianHMM, "diag", n_iter=20, tol=-1.0, backend="numpy")
    fresh.fit(X)
    assert fresh.monitor_.iter == 20
    fresh.set_params(n_iter=3).fit(X)
    assert fresh.monitor_.iter == 3 and fresh.monitor_.converged


def test_an_edited_monitor_equals_hmmlearn():
    hl = pytest.importorskip("hmmlearn.hmm")
    X = _gaussian_fit_data()
    iters = []
    for cls in (hl.GaussianHMM, GaussianHMM):
        model = _gaussian(cls, "diag", n_iter=20)
        model.monitor_.tol = 5.0
        model.fit(X)
        iters.append((model.monitor_.iter, model.monitor_.converged, len(model.monitor_.history)))
    assert iters[0] == iters[1]


# ------------------------------------------------------------ _compute_log_likelihood
def test_compute_log_likelihood_is_the_emission_log_density():
    """hmmlearn's ``_compute_log_likelihood(X)`` hook, which code calls on a
    fitted model for the per-frame emission log-likelihoods."""
    emission = np.array([[0.5, 0.25, 0.25], [0.125, 0.125, 0.75]])
    model = CategoricalHMM(2, init_params="", backend="numpy")
    model.emissionprob_ = emission
    X = np.array([[0], [2], [1], [2]])
    np.testing.assert_array_equal(model._compute_log_likelihood(X), np.log(emission[:, X[:, 0]].T))
    np.testing.assert_allclose(model._compute_likelihood(X), emission[:, X[:, 0]].T)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("GaussianHMM", {"covariance_type": "full"}),
        ("GaussianHMM", {"covariance_type": "diag"}),
        ("GMMHMM", {"n_mix": 2, "covariance_type": "tied"}),
        ("PoissonHMM", {}),
        ("MultinomialHMM", {}),
    ],
)
def test_compute_log_likelihood_equals_hmmlearn(name, kw):
    hl = pytest.importorskip("hmmlearn.hmm")
    import fastem.hmm as fh

    rng = np.random.RandomState(0)
    X = {
        "PoissonHMM": rng.poisson(3, size=(50, 2)),
        "MultinomialHMM": rng.multinomial(5, [0.2, 0.3, 0.5], size=50),
    }.get(name, np.r_[rng.randn(30, 2), rng.randn(30, 2) + 3])
    ours = getattr(fh, name)(2, random_state=0, n_iter=3, backend="numpy", **kw).fit(X)
    theirs = getattr(hl, name)(2, init_params="", **kw)
    for attr in ("startprob_", "transmat_", "means_", "weights_", "lambdas_", "emissionprob_"):
        if hasattr(ours, attr):
            setattr(theirs, attr, getattr(ours, attr))
    if name == "MultinomialHMM":
        theirs.n_trials = 5
    if name == "GaussianHMM":
        theirs._covars_ = ours._covars_
    elif name == "GMMHMM":
        theirs.covars_ = ours.covars_
    theirs._check()
    np.testing.assert_allclose(
        ours._compute_log_likelihood(X), theirs._compute_log_likelihood(X), rtol=1e-12
    )


# ------------------------------------------------------------ float32 X
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ct", ["diag", "full"])
def test_float32_x_is_computed_as_float64(backend, ct):
    """hmmlearn computes float32 X in float64; so does fastem (bit for bit the
    float64 copy's results; the float32 kernels were ~1e-8 off)."""
    X = (_two_blobs() * 3 + 1).astype(np.float32)
    a = _gaussian(GaussianHMM, ct, n_iter=6, params="stmc", backend=backend).fit(X)
    b = _gaussian(GaussianHMM, ct, n_iter=6, params="stmc", backend=backend)
    b.fit(X.astype(np.float64))
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a._covars_, b._covars_)
    assert a.score(X) == b.score(X.astype(np.float64))


def test_float32_x_equals_hmmlearn():
    hl = pytest.importorskip("hmmlearn.hmm")
    X = (_two_blobs() * 3 + 1).astype(np.float32)
    theirs = _gaussian(hl.GaussianHMM, "full", n_iter=10, tol=-np.inf).fit(X)
    ours = _gaussian(GaussianHMM, "full", n_iter=10, tol=-np.inf, backend="numpy").fit(X)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-12)
    np.testing.assert_allclose(ours.monitor_.history, theirs.monitor_.history, rtol=1e-13)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-13)


# ------------------------------------------------------------ impossible sequences
@pytest.mark.parametrize("backend", BACKENDS)
def test_posteriors_of_an_impossible_sequence_are_nan(backend):
    """A held-out sequence with a symbol no state emits has probability 0: its
    posteriors are 0/0, NaN in hmmlearn (the kernels left zeros); the other
    sequences keep theirs."""
    model = CategoricalHMM(2, init_params="", backend=backend)
    model.startprob_ = np.array([0.5, 0.5])
    model.transmat_ = np.array([[0.9, 0.1], [0.2, 0.8]])
    model.emissionprob_ = np.array([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0]])
    X = np.array([[0], [1], [2], [0], [1], [1]])
    logprob, post = model.score_samples(X, [2, 2, 2])
    assert logprob == -np.inf
    assert np.isnan(post[2:4]).all() and np.isfinite(post[[0, 1, 4, 5]]).all()
    np.testing.assert_allclose(post[[0, 1, 4, 5]].sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict_proba(X, [2, 2, 2]), post)
    hl = pytest.importorskip("hmmlearn.hmm")
    theirs = hl.CategoricalHMM(2, init_params="")
    theirs.startprob_, theirs.transmat_ = model.startprob_, model.transmat_
    theirs.emissionprob_ = model.emissionprob_
    with np.errstate(invalid="ignore"):  # hmmlearn's -inf - -inf
        expected = theirs.predict_proba(X, [2, 2, 2])
    np.testing.assert_allclose(post, expected, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_subclass_overriding_compute_log_likelihood_scores_with_it(backend):
    """hmmlearn's passes read ``_compute_log_likelihood``: a subclass of a
    model that tempers it changes score, posteriors and decoding. The same
    here (the tempered score is half the untempered emission terms)."""

    class Tempered(GaussianHMM):
        def _compute_log_likelihood(self, X):
            return 0.5 * super()._compute_log_likelihood(X)

    X = _two_blobs()
    ours = _gaussian(Tempered, "diag", backend=backend)
    plain = _gaussian(GaussianHMM, "diag", backend=backend)
    np.testing.assert_allclose(
        ours._compute_log_likelihood(X), 0.5 * plain._compute_log_likelihood(X)
    )
    assert ours.score(X) > plain.score(X)  # log-densities < 0 here: halving raises them
    with pytest.raises(NotImplementedError, match="_compute_log_likelihood"):
        _gaussian(Tempered, "diag", backend=backend).fit(X)
    hl = pytest.importorskip("hmmlearn.hmm")

    class TheirTempered(hl.GaussianHMM):
        def _compute_log_likelihood(self, X):
            return 0.5 * super()._compute_log_likelihood(X)

    theirs = _gaussian(TheirTempered, "diag")
    assert ours.score(X) == pytest.approx(theirs.score(X), rel=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_spherical_covars_with_per_feature_values_are_refused():
    """hmmlearn's spherical ``_covars_`` is (K, D) with one value repeated per
    row (accepted, as before); different values in a row were cut to the first
    column silently (hmmlearn's density would read them per feature)."""
    model = GaussianHMM(2, covariance_type="spherical")
    model.covars_ = np.array([[1.5, 1.5, 1.5], [2.0, 2.0, 2.0]])
    np.testing.assert_array_equal(model._covars_, [1.5, 2.0])
    with pytest.raises(ValueError, match="one value per state"):
        model.covars_ = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 2.0]])
