"""qn and MPE on the HMMs: Baum-Welch through the generic driver with every scheme.

The schemes are the driver's beyond SQUAREM and Anderson (``fastem._em.METHODS``);
``tests/test_hmm_driver.py`` covers those two. qn and MPE extrapolate the
probability rows as probabilities, an overshoot cut at a tenth of the last EM
point's value (``fastem/hmm/_accel.py``); the negative controls at the end break
the safeguard and the packer's feasibility check and show what catches them.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastem._em.fixed_point as fixed_point
import fastem.hmm._accel as accel
from fastem._em import ACCELERATIONS, METHODS
from fastem.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM, load
from fastem.hmm._prior import log_prior

SCHEMES = [m for m in METHODS if m not in ACCELERATIONS]  # qn, mpe
LENGTHS = [60, 1, 45, 74]
N = sum(LENGTHS)


def _states():
    """A sticky 3-state chain (each sequence starts afresh)."""
    rng = np.random.default_rng(7)
    trans = np.array([[0.9, 0.06, 0.04], [0.05, 0.9, 0.05], [0.07, 0.03, 0.9]])
    z = np.empty(N, dtype=np.int64)
    for lo, n in zip(np.cumsum([0, *LENGTHS[:-1]]), LENGTHS, strict=True):
        z[lo] = rng.integers(3)
        for t in range(lo + 1, lo + n):
            z[t] = rng.choice(3, p=trans[z[t - 1]])
    return z


def _cases():
    rng = np.random.default_rng(0)
    z = _states()
    X = rng.normal(size=(N, 2)) * 0.9 + np.array([[-2.0, 0.5], [0.0, -1.0], [2.0, 1.0]])[z]
    counts = rng.poisson(np.array([1.0, 4.0, 9.0])[z])[:, None]
    emission = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]])
    symbols = np.array([rng.choice(4, p=p) for p in emission[z]])[:, None]
    return [
        (GaussianHMM(3, covariance_type="full"), X),
        (GaussianHMM(3, covariance_type="diag"), X),
        (GMMHMM(2, n_mix=2, covariance_type="diag"), X),
        (CategoricalHMM(3), symbols),
        (PoissonHMM(3), counts),
    ]


CASES = _cases()
IDS = [f"{type(m).__name__}-{getattr(m, 'covariance_type', '')}" for m, _ in CASES]


def _params(model):
    return {n: np.array(getattr(model, n)) for n in model._param_attrs()}


def _start(model, X, lengths=LENGTHS):
    """The parameters after the model's initialization and one Baum-Welch step.

    A RandomState, not the int 0: CategoricalHMM and PoissonHMM re-seed their
    emissions from an int seed (hmmlearn's initialization), and these starts are
    the ones the cases were chosen on (one stream)."""
    model = type(model)(**model.get_params())
    rs = np.random.RandomState(0)
    return _params(model.set_params(n_iter=1, random_state=rs, backend="numpy").fit(X, lengths))


def _from(model, start, **params):
    params = {"init_params": "", "backend": "numpy", **params}
    clone = type(model)(**{**model.get_params(), **params})
    for name, value in start.items():
        setattr(clone, name, value.copy())
    return clone


def _objective(model, X, lengths=LENGTHS):
    return model.score(X, lengths) + log_prior(model)


def test_the_hmms_accept_every_scheme_of_the_driver():
    assert {"qn", "mpe"} <= set(SCHEMES)
    for scheme in SCHEMES:
        GaussianHMM(2, acceleration=scheme)._check_constructor()
    with pytest.raises(ValueError, match="acceleration must be one of"):
        GaussianHMM(2, acceleration="newton")._check_constructor()


@functools.cache
def _plain(i: int):
    """Case ``i``'s start and plain Baum-Welch from it to 1e-11 (shared by the schemes)."""
    model, X = CASES[i]
    start = _start(model, X)
    plain = _from(model, start, n_iter=3000, tol=1e-11).fit(X, LENGTHS)
    return start, plain.monitor_.iter, _objective(plain, X)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("i", range(len(CASES)), ids=IDS)
def test_monotone_and_reaches_the_plain_maximum(i, scheme):
    model, X = CASES[i]
    start, plain_passes, plain_objective = _plain(i)
    fast = _from(model, start, n_iter=3000, tol=1e-11, acceleration=scheme).fit(X, LENGTHS)
    history = np.array(fast.objective_history_)
    assert history.size == fast.monitor_.iter == len(fast.monitor_.history)
    assert (np.diff(history) >= 0).all()
    assert fast.monitor_.converged
    # the fitted model is the M-step of the best point: never below its bound
    assert _objective(fast, X) >= history[-1] - 1e-9 * abs(history[-1])
    # the same maximum as plain Baum-Welch from the same start
    np.testing.assert_allclose(_objective(fast, X), plain_objective, rtol=1e-9)
    if isinstance(model, CategoricalHMM):  # the slow one: ~900 plain passes
        assert fast.monitor_.iter < 0.3 * plain_passes
        assert fast.monitor_.n_extrapolations_accepted > 0


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", ["gaussian", "categorical"])
def test_structural_zeros_stay_exactly_zero(scheme, kind):
    model, X = CASES[1] if kind == "gaussian" else CASES[3]
    transmat = np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.05, 0.0, 0.95]])
    start = _start(model, X)
    start["startprob_"] = np.array([1.0, 0.0, 0.0])
    start["transmat_"] = transmat
    fast = _from(model, start, n_iter=200, tol=1e-9, acceleration=scheme).fit(X, LENGTHS)
    assert fast.monitor_.n_extrapolations_accepted > 0
    assert (fast.transmat_[transmat == 0] == 0).all()
    assert (fast.startprob_[1:] == 0).all()
    np.testing.assert_allclose(fast.transmat_.sum(axis=1), 1.0, rtol=1e-12)


WEIGHTS = np.array([1.0, 3.0, 0.5, 2.0])


@functools.cache
def _missing():
    """GaussianHMM diag with 15% NaN: data, start, plain's final bound under WEIGHTS."""
    model, X = CASES[1]
    X = X.copy()
    X[np.random.default_rng(3).random(X.shape) < 0.15] = np.nan
    start = _start(model, X)
    plain = _from(model, start, n_iter=2000, tol=1e-11).fit(X, LENGTHS, sample_weight=WEIGHTS)
    return X, start, plain.objective_history_[-1]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_sample_weight_and_missing_values(scheme):
    model = CASES[1][0]
    X, start, plain_bound = _missing()
    fast = _from(model, start, n_iter=2000, tol=1e-11, acceleration=scheme)
    fast.fit(X, LENGTHS, sample_weight=WEIGHTS)
    history = np.array(fast.objective_history_)
    assert np.isfinite(history).all() and (np.diff(history) >= 0).all()
    # the weighted objective: plain's final bound and the accelerated one agree
    np.testing.assert_allclose(history[-1], plain_bound, rtol=1e-9)
    # integer weights equal repeated sequences, as in plain Baum-Welch
    ints = np.array([1, 2, 1, 1])
    parts = np.split(X, np.cumsum(LENGTHS)[:-1])
    repeated = np.concatenate([parts[0], parts[1], parts[1], parts[2], parts[3]])
    rep_lengths = [60, 1, 1, 45, 74]
    a = _from(model, start, n_iter=40, tol=-np.inf, acceleration=scheme)
    a.fit(X, LENGTHS, sample_weight=ints)
    b = _from(model, start, n_iter=40, tol=-np.inf, acceleration=scheme).fit(repeated, rep_lengths)
    assert a.monitor_.iter == b.monitor_.iter
    np.testing.assert_allclose(a.objective_history_, b.objective_history_, rtol=1e-10)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_bit_identical_across_thread_counts(scheme):
    pytest.importorskip("numba")
    rng = np.random.default_rng(5)
    lengths = [int(n) for n in rng.integers(20, 120, size=24)]
    z = (np.arange(sum(lengths)) // 17) % 3
    X = rng.normal(size=(sum(lengths), 3)) + np.array([-1.5, 0.0, 1.5])[z, None]
    base = GaussianHMM(3, covariance_type="diag", random_state=0, backend="numba")
    start = _start(base, X, lengths)
    fits = [
        _from(base, start, n_iter=60, tol=1e-10, acceleration=scheme, backend="numba",
              n_threads=t).fit(X, lengths)
        for t in (1, 2)
    ]  # fmt: skip
    assert fits[0].monitor_.n_extrapolations_accepted > 0
    assert np.array_equal(fits[0].objective_history_, fits[1].objective_history_)
    for name, value in _params(fits[0]).items():
        assert np.array_equal(getattr(fits[1], name), value), name


def test_cli_offers_the_schemes(tmp_path, capsys):
    from fastem.cli import main

    X = CASES[4][1]
    np.save(tmp_path / "p.npy", X)
    for scheme in SCHEMES:
        code = main(["hmm", "fit", str(tmp_path / "p.npy"), "-k", "2", "--kind", "poisson",
                     "-o", str(tmp_path / f"{scheme}.npz"), "--acceleration", scheme, "-q",
                     "--backend", "numpy"])  # fmt: skip
        assert code == 0, capsys.readouterr().err
        assert load(tmp_path / f"{scheme}.npz").acceleration == scheme


# ---------------------------------------------------------------- negative controls


def test_packer_prob_frame_roundtrip_and_infeasible_rows():
    model, X = CASES[3]
    fitted = _from(model, _start(model, X), n_iter=5).fit(X, LENGTHS)
    packer = accel._Packer(fitted, "prob")
    x = packer.pack(fitted)
    copy = _from(model, _params(fitted))
    assert packer.unpack(copy, x)
    for name, value in _params(fitted).items():
        np.testing.assert_allclose(getattr(copy, name), value, rtol=1e-14, atol=1e-300)
    bad = x.copy()
    bad[packer.simplex_index[0]] = -1e-3  # a negative probability: not a model
    assert not packer.unpack(copy, bad)
    # the cut keeps every probability at least a tenth of the EM point's
    cut = packer.limit(bad, x, 0.1)
    i = packer.simplex_index
    assert (cut[i] >= 0.1 * x[i]).all() and packer.unpack(copy, cut)


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([1e-3, 1.0, 50.0]),
)
def test_prob_frame_cut_keeps_rows_on_the_simplex_and_zeros_structural(k, seed, scale):
    """Any extrapolation, cut at a tenth of the EM point's probabilities, unpacks to
    rows on the simplex with the structural zeros exactly zero."""
    rng = np.random.default_rng(seed)
    model = CategoricalHMM(k, n_features=3)
    transmat = rng.dirichlet(np.ones(k), size=k) * (rng.random((k, k)) < 0.7)
    transmat[np.arange(k), rng.integers(k, size=k)] += 0.5  # no empty row
    model.startprob_ = np.full(k, 1.0 / k)
    model.transmat_ = transmat / transmat.sum(axis=1, keepdims=True)
    model.emissionprob_ = rng.dirichlet(np.ones(3), size=k)
    packer = accel._Packer(model, "prob")
    reference = packer.pack(model)
    x = reference + scale * rng.normal(size=reference.size)
    assert packer.unpack(model, packer.limit(x, reference, 0.1))
    for p in (model.startprob_[None], model.transmat_, model.emissionprob_):
        assert (p >= 0).all()
        np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    assert (model.transmat_[transmat == 0] == 0).all()


def _broken_acceptance(self, x, reference):
    """The safeguard without its comparison: every feasible extrapolation is kept."""
    if self.exhausted:
        return None
    ev = self.problem.evaluate(x, True)
    if ev is None or ev.image is None:
        self.result.n_rejected += 1
        return None
    self.result.n_accepted += 1
    self._set_best(ev)  # as if it were the best
    self.rule.reset(ev.objective)
    self._record(ev, "accepted")
    return ev


@pytest.mark.parametrize("scheme", SCHEMES)
def test_control_a_broken_acceptance_rule_is_not_monotone(scheme, monkeypatch):
    """The monotonicity check above catches a safeguard that accepts every step: on
    the GMMHMM problem some extrapolations lose (they are rejected with the real
    rule), and the recorded objective then falls."""
    model, X = CASES[2]
    start = _start(model, X)
    monkeypatch.setattr(fixed_point.Run, "propose", _broken_acceptance)
    fast = _from(model, start, n_iter=400, tol=1e-10, acceleration=scheme).fit(X, LENGTHS)
    assert (np.diff(fast.objective_history_) < 0).any()


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_control_a_packer_that_lets_negative_probabilities_through(monkeypatch):
    """Without the packer's feasibility check (and without the cut), negative
    transition probabilities reach the model; the driver's safeguard still catches
    every one (the E-step's log-likelihood is not finite there: rejected at no
    pass), so the fit stays monotone and feasible."""
    unpack = accel._Block.unpack

    def lax(self, v):
        if self.kind == "simplex" and self.simplex == "prob":
            p = np.zeros(self.mask.shape)
            p[self.mask] = v
            return (p / p.sum(axis=1, keepdims=True)).reshape(self.shape)
        return unpack(self, v)

    negatives = []
    evaluate = accel._BaumWelchProblem._evaluate

    def spy(self, x, extrapolated):
        if extrapolated and (x[self.packer.simplex_index] < 0).any():
            negatives.append(x)
        return evaluate(self, x, extrapolated)

    monkeypatch.setattr(accel._Block, "unpack", lax)
    monkeypatch.setattr(accel._BaumWelchProblem, "_evaluate", spy)
    monkeypatch.setitem(accel.SHRINK, "qn", None)
    model, X = CASES[3]
    start = _start(model, X)
    fast = _from(model, start, n_iter=300, tol=1e-10, acceleration="qn").fit(X, LENGTHS)
    assert negatives, "the control needs proposals with negative probabilities"
    assert (np.diff(fast.objective_history_) >= 0).all()
    assert (fast.transmat_ >= 0).all() and (fast.emissionprob_ >= 0).all()
