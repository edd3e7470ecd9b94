"""HMMs on the fixed-point driver: acceleration, stopping rules, n_threads."""

from __future__ import annotations

import numpy as np
import pytest

from fastem.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM, available_hmm_backends
from fastem.hmm._prior import log_prior

LENGTHS = [70, 1, 49, 80]
N = sum(LENGTHS)


def _gauss(d=2, seed=0):
    rng = np.random.default_rng(seed)
    z = (np.arange(N) // 25) % 3
    return rng.normal(size=(N, d)) * 0.8 + np.array([-2.0, 0.0, 2.5])[z, None]


def _cases():
    X = _gauss()
    counts = np.random.default_rng(1).poisson(np.where((np.arange(N) // 20) % 2, 6.0, 1.0))
    cases = [
        (GaussianHMM(3, covariance_type=ct), X) for ct in ("full", "diag", "tied", "spherical")
    ]
    cases += [(GMMHMM(2, n_mix=2, covariance_type=ct), X) for ct in ("full", "diag")]
    cases += [(CategoricalHMM(3), np.minimum(counts, 4)[:, None])]
    cases += [(PoissonHMM(2), counts[:, None])]
    return cases


CASES = _cases()
IDS = [f"{type(m).__name__}-{getattr(m, 'covariance_type', '')}" for m, _ in CASES]


def _params(model):
    return {n: np.array(getattr(model, n)) for n in model._param_attrs()}


def _start(model, X):
    """The model after its initialization, then fitted from it with init_params=''."""
    model.set_params(n_iter=1, random_state=0, backend="numpy").fit(X, LENGTHS)
    return _params(model)


def _from(model, start, **params):
    clone = type(model)(**{**model.get_params(), "init_params": "", **params})
    for name, value in start.items():
        setattr(clone, name, value.copy())
    return clone


@pytest.mark.parametrize(("model", "X"), CASES, ids=IDS)
def test_driver_without_acceleration_is_plain_baum_welch(model, X):
    """The packing is exact: the driver's plain EM follows the plain loop's iterates."""
    start = _start(model, X)
    plain = _from(model, start, n_iter=6, tol=-np.inf).fit(X, LENGTHS)
    driven = _from(model, start, n_iter=6, tol=0.0, stopping="absolute").fit(X, LENGTHS)
    assert driven.monitor_.iter == plain.monitor_.iter == 6
    np.testing.assert_allclose(driven.monitor_.history, plain.monitor_.history, rtol=1e-10)
    for name, value in _params(plain).items():
        np.testing.assert_allclose(getattr(driven, name), value, rtol=1e-7, atol=1e-10)


def _regularized(model):
    return model.set_params(reg_covar=1e-2) if hasattr(model, "reg_covar") else model


SAME_MAX = [1, 3, 7]  # diag, spherical, poisson (categorical: the slow-problem test)


@pytest.mark.parametrize("acceleration", ["squarem", "anderson"])
@pytest.mark.parametrize(("model", "X"), CASES, ids=IDS)
def test_accelerated_fit_is_monotone(model, X, acceleration):
    # The M-step maximizes log-likelihood + log prior (docs/hmm.md, "The objective"); a
    # reg_covar floor is in no objective, so the guarantee is tested without one.
    unfloored = model.set_params(reg_covar=0.0) if hasattr(model, "reg_covar") else model
    start = _start(unfloored, X)
    fast = _from(unfloored, start, n_iter=25, tol=1e-9, acceleration=acceleration).fit(X, LENGTHS)
    history = np.array(fast.objective_history_)
    assert history.size == fast.monitor_.iter == len(fast.monitor_.history)
    assert (np.diff(history) >= 0).all()
    # The fitted model is the M-step of the best point: never below its bound.
    objective = fast.score(X, LENGTHS) + log_prior(fast)
    assert objective >= history[-1] - 1e-9 * abs(history[-1])


@pytest.mark.parametrize("acceleration", ["squarem", "anderson"])
@pytest.mark.parametrize(
    ("model", "X"), [CASES[i] for i in SAME_MAX], ids=[IDS[i] for i in SAME_MAX]
)
def test_accelerated_fit_reaches_the_plain_maximum(model, X, acceleration):
    start = _start(_regularized(model), X)
    plain = _from(model, start, n_iter=400, tol=1e-9).fit(X, LENGTHS)
    fast = _from(model, start, n_iter=400, tol=1e-9, acceleration=acceleration).fit(X, LENGTHS)
    np.testing.assert_allclose(fast.score(X, LENGTHS), plain.score(X, LENGTHS), rtol=1e-8)
    assert fast.monitor_.converged


def test_squarem_saves_passes_on_a_slow_problem():
    model, X = CASES[6]  # categorical: plain Baum-Welch needs ~170 passes to 1e-9
    start = _start(model, X)
    plain = _from(model, start, n_iter=1000, tol=1e-9).fit(X, LENGTHS)
    fast = _from(model, start, n_iter=1000, tol=1e-9, acceleration="squarem").fit(X, LENGTHS)
    assert fast.score(X, LENGTHS) >= plain.score(X, LENGTHS) - 1e-8 * abs(plain.score(X, LENGTHS))
    assert fast.monitor_.iter < 0.7 * plain.monitor_.iter
    assert fast.monitor_.n_extrapolations_accepted > 0


def test_structural_zeros_stay_zero_under_acceleration():
    X = _gauss()
    transmat = np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.05, 0.0, 0.95]])
    model = GaussianHMM(3, n_iter=60, tol=1e-8, init_params="mc", random_state=0,
                        acceleration="anderson", backend="numpy")  # fmt: skip
    model.startprob_ = np.array([1.0, 0.0, 0.0])
    model.transmat_ = transmat
    model.fit(X, LENGTHS)
    assert (model.transmat_[transmat == 0] == 0).all()
    assert model.startprob_[1] == model.startprob_[2] == 0
    np.testing.assert_allclose(model.transmat_.sum(axis=1), 1)


def test_stopping_rules():
    X = _gauss()
    model = GaussianHMM(3, covariance_type="diag")
    start = _start(model, X)
    loose = _from(model, start, n_iter=500, tol=1e-2, stopping="aitken").fit(X, LENGTHS)
    tight = _from(model, start, n_iter=500, tol=1e-8, stopping="aitken").fit(X, LENGTHS)
    assert loose.monitor_.converged and tight.monitor_.converged
    assert loose.monitor_.iter < tight.monitor_.iter
    capped = _from(model, start, n_iter=3, tol=1e-12, stopping="relative").fit(X, LENGTHS)
    assert capped.monitor_.iter == 3 and not capped.monitor_.converged


@pytest.mark.skipif("numba" not in available_hmm_backends(), reason="needs numba")
@pytest.mark.parametrize("acceleration", [None, "squarem"])
def test_bit_identical_across_thread_counts(acceleration):
    X = _gauss(d=3)
    fits = []
    for n_threads in (1, 2, 3):
        model = GMMHMM(2, n_mix=2, n_iter=6, random_state=0, backend="numba",
                       n_threads=n_threads, acceleration=acceleration)  # fmt: skip
        model.fit(X, LENGTHS)
        fits.append((_params(model), list(model.monitor_.history), model.predict_proba(X, LENGTHS)))
    for params, history, proba in fits[1:]:
        assert history == fits[0][1]
        np.testing.assert_array_equal(proba, fits[0][2])
        for name, value in params.items():
            np.testing.assert_array_equal(value, fits[0][0][name])


def test_n_threads_is_restored_and_validated():
    X = _gauss()
    if "numba" in available_hmm_backends():
        import numba

        before = numba.get_num_threads()
        GaussianHMM(2, n_iter=2, n_threads=1, backend="numba").fit(X, LENGTHS)
        assert numba.get_num_threads() == before
    for bad in (dict(n_threads=0), dict(n_threads=1.5), dict(acceleration="fast"),
                dict(stopping="never")):  # fmt: skip
        with pytest.raises(ValueError, match=next(iter(bad))):
            GaussianHMM(2, **bad).fit(X, LENGTHS)
