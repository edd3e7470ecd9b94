"""The serial part of a Baum-Welch iteration (issue #15): the compiled M-step of
diag/spherical GaussianHMMs (:mod:`fastem.hmm._mstep_numba`) against the NumPy
M-step bit for bit (hypothesis over shapes, priors, ``params``, empty states,
structural zeros), whole fits alike, where it is not used; the log prior
prepared once per fit against a fresh one."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastem.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM
from fastem.hmm._base import _FBResult
from fastem.hmm._prior import log_prior, log_prior_function

pytest.importorskip("numba")
from fastem.hmm import _mstep_numba  # noqa: E402

LENGTHS = [40, 1, 29, 50]
N = sum(LENGTHS)


def _numpy_mstep(model, fb, stats):
    """``model._do_mstep`` on a copy, the compiled path switched off."""
    new = copy.deepcopy(model)
    new._compiled_mstep = lambda fb, stats: None
    new._do_mstep(fb, stats)
    return new


def _compiled_mstep(model, fb, stats):
    new = copy.deepcopy(model)
    lp = new._compiled_mstep(fb, stats)
    assert lp is not None  # the compiled path ran
    np.testing.assert_allclose(lp, log_prior(new), rtol=1e-12, atol=1e-12)
    return new


def _assert_same(a, b):
    for name in a._param_attrs():
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name, strict=True)


@st.composite
def _case(draw):
    ct = draw(st.sampled_from(["diag", "spherical"]))
    K = draw(st.sampled_from([1, 2, 3, 7, 8, 9, 16, 17, 20]))
    D = draw(st.sampled_from([1, 2, 5, 8, 9, 12]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # E-step statistics: in half the cases some states empty, some counts zero
    nk = rng.gamma(2.0, 10.0, K)
    if draw(st.booleans()):
        nk *= rng.random(K) > 0.2
    shift = rng.normal(size=(K, D))
    sx = rng.normal(size=(K, D)) * nk[:, None] ** 0.5
    sxx = sx**2 / np.maximum(nk, 1)[:, None] + rng.gamma(2.0, 1.0, (K, D)) * nk[:, None]
    xi = rng.gamma(1.0, 5.0, (K, K)) * (rng.random((K, K)) > 0.3)
    if draw(st.booleans()):
        xi[0] = 0.0  # a row with no count keeps its old value
    start = rng.gamma(1.0, 1.0, K) * (rng.random(K) > 0.3)
    fb = _FBResult(np.zeros(1), None, xi, start, None)
    # current parameters, structural zeros included
    transmat = rng.random((K, K)) * (rng.random((K, K)) > 0.2) + np.eye(K)
    transmat /= transmat.sum(axis=1, keepdims=True)
    startprob = rng.random(K) * (rng.random(K) > 0.2)
    startprob[0] += 0.1
    startprob /= startprob.sum()
    priors = draw(st.sampled_from(["default", "scalar", "array"]))
    kw = {}
    if priors == "scalar":
        kw = dict(startprob_prior=1.5, transmat_prior=0.7, means_prior=0.3, means_weight=2.0,
                  covars_prior=0.5, covars_weight=3.0)  # fmt: skip
    elif priors == "array":
        kw = dict(startprob_prior=1 + rng.random(K), transmat_prior=1 + rng.random((K, K)),
                  means_prior=rng.normal(size=(K, D)), means_weight=rng.random(K),
                  covars_prior=rng.random((K, D)),
                  covars_weight=1 + 3 * rng.random((K, D)))  # fmt: skip
    params = draw(st.sampled_from(["stmc", "mc", "st", "sc", "tm", "c"]))
    reg = draw(st.sampled_from([0.0, 1e-3]))
    model = GaussianHMM(K, covariance_type=ct, params=params, reg_covar=reg, backend="numba", **kw)
    model.startprob_, model.transmat_ = startprob, transmat
    model.means_ = rng.normal(size=(K, D))
    model.covars_ = rng.gamma(2.0, 1.0, K if ct == "spherical" else (K, D))
    model._check()
    return model, fb, (nk, sx, sxx, shift)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(case=_case())
def test_compiled_mstep_equals_numpy_bit_for_bit(case):
    model, fb, stats = case
    if not stats[0].all():
        # an empty state: the NumPy M-step's rule (hmmlearn's update where its
        # priors define one, else the previous values), not the compiled one
        assert copy.deepcopy(model)._compiled_mstep(fb, stats) is None
        return
    _assert_same(_compiled_mstep(model, fb, stats), _numpy_mstep(model, fb, stats))


@pytest.mark.parametrize("n", [*range(1, 40), 64, 100, 127, 128])
def test_pairwise_sum_is_numpys(n):
    rng = np.random.default_rng(n)
    for _ in range(20):
        row = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)
        a = np.vstack([row, row])  # a contiguous row, as the M-step sums it
        assert _mstep_numba._pairwise_sum(row, 0, n) == a.sum(axis=1, keepdims=True)[0, 0]


def test_negative_control_summation_order_matters():
    """Left-to-right sums differ from NumPy's in the last bits (so the exact
    comparisons above do check the kernel's order, not only its arithmetic)."""
    rng = np.random.default_rng(0)
    differ = 0
    for _ in range(200):
        row = rng.standard_normal(17) * 10.0 ** rng.integers(-8, 8, 17)
        seq = 0.0
        for v in row:
            seq += v
        differ += seq != row.sum()
    assert differ > 0


def _data(missing=False):
    rng = np.random.default_rng(3)
    z = (np.arange(N) // 15) % 3
    X = rng.normal(size=(N, 2)) * 0.7 + np.array([-2.0, 0.0, 2.5])[z, None]
    if missing:
        X[rng.random(X.shape) < 0.1] = np.nan
    return X


@pytest.mark.parametrize("ct", ["diag", "spherical"])
@pytest.mark.parametrize(("missing", "dtype"), [(False, np.float64), (True, np.float64),
                                                (False, np.float32)])  # fmt: skip
@pytest.mark.parametrize("priors", [False, True])
def test_fits_equal_with_and_without_the_compiled_mstep(monkeypatch, ct, missing, dtype, priors):
    X = _data(missing).astype(dtype)
    kw = dict(n_iter=6, tol=-np.inf, random_state=0, backend="numba", covariance_type=ct)
    if priors:
        kw.update(startprob_prior=2.0, transmat_prior=1.5, means_weight=0.5, covars_weight=2.0)
    calls = [0]
    original = GaussianHMM._compiled_mstep

    def counting(self, fb, stats):
        lp = original(self, fb, stats)
        calls[0] += lp is not None
        return lp

    with monkeypatch.context() as mp:
        mp.setattr(GaussianHMM, "_compiled_mstep", counting)
        fast = GaussianHMM(3, **kw).fit(X, LENGTHS, sample_weight=[1.0, 2.0, 0.5, 3.0])
    assert calls[0] == 6
    with monkeypatch.context() as mp:
        mp.setattr(GaussianHMM, "_compiled_mstep", lambda self, fb, stats: None)
        ref = GaussianHMM(3, **kw).fit(X, LENGTHS, sample_weight=[1.0, 2.0, 0.5, 3.0])
    _assert_same(fast, ref)
    # the log prior summed in another order: the objective equal to rounding
    np.testing.assert_allclose(fast.objective_history_, ref.objective_history_, rtol=1e-13)


def test_left_right_zeros_stay_zero():
    X = _data()
    trans = np.triu(np.full((3, 3), 1 / 3))
    trans /= trans.sum(axis=1, keepdims=True)
    model = GaussianHMM(3, n_iter=5, tol=-np.inf, random_state=0, backend="numba",
                        init_params="mc", params="tmc")  # fmt: skip
    model.startprob_, model.transmat_ = np.array([1.0, 0.0, 0.0]), trans
    model.fit(X, LENGTHS)
    assert (model.transmat_[np.tril_indices(3, -1)] == 0).all()
    np.testing.assert_array_equal(model.startprob_, [1.0, 0.0, 0.0])


@pytest.mark.parametrize(
    "kw",
    [{}, dict(covariance_type="full"), dict(covariance_type="tied"), dict(backend="numpy"),
     dict(n_components=129), dict(covariance_type="spherical", n_features=129)],
)  # fmt: skip
def test_numpy_mstep_where_the_compiled_one_does_not_apply(kw):
    default = not kw  # the positive control: diag, numba, K = 3, D = 2
    kw = {"n_components": 3, "backend": "numba", "covariance_type": "diag", **kw}
    D = kw.pop("n_features", 2)
    model = GaussianHMM(**kw)
    model.means_ = np.zeros((kw["n_components"], D))
    assert (model._compiled_mstep_plan() is not None) == default


def _models():
    rng = np.random.default_rng(0)
    X = _data()
    out = []
    for ct in ("diag", "spherical", "full", "tied"):
        for priors in (False, True):
            kw = dict(startprob_prior=1.5, transmat_prior=2.0, means_weight=0.5,
                      covars_weight=3.0, covars_prior=0.2) if priors else {}  # fmt: skip
            out.append((GaussianHMM(3, covariance_type=ct, n_iter=2, random_state=0, **kw), X))
    out.append((GMMHMM(2, n_mix=2, n_iter=2, random_state=0, transmat_prior=1.3), X))
    counts = rng.integers(0, 5, (N, 1))
    out.append((CategoricalHMM(2, n_iter=2, random_state=0, emissionprob_prior=1.5), counts))
    out.append((PoissonHMM(2, n_iter=2, random_state=0, lambdas_prior=0.5), counts))
    return out


@pytest.mark.parametrize("index", range(11))
def test_prepared_log_prior_follows_the_parameters(index):
    """Built at one point and evaluated at another, it equals a fresh
    ``log_prior`` there: only hyperparameters are frozen."""
    model, X = _models()[index]
    model.fit(X, LENGTHS)
    prepared = log_prior_function(model)
    at_first = prepared(model)
    model.set_params(n_iter=3, init_params="").fit(X, LENGTHS)
    fresh = log_prior(model)  # built at the new parameters
    assert fresh != at_first  # the parameters moved, and the prior with them
    assert prepared(model) == fresh


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_plans_do_not_outlive_a_fit(backend):
    """The prior arrays are prepared once per fit: fits with other
    hyperparameters differ (a plan kept across fits would make them equal),
    and a refit with new ones equals a fresh model with them."""
    X = _data()
    kw = dict(n_iter=4, tol=-np.inf, random_state=0, backend=backend)
    # only hyperparameters that both M-steps hold in plans
    b = dict(startprob_prior=2.0, transmat_prior=3.0, means_weight=2.0)
    fresh_b = GaussianHMM(3, **b, **kw).fit(X, LENGTHS)
    model = GaussianHMM(3, **kw).fit(X, LENGTHS)
    assert not np.array_equal(model.transmat_, fresh_b.transmat_)
    assert not np.array_equal(model._covars_, fresh_b._covars_)
    model.set_params(**b).fit(X, LENGTHS)
    _assert_same(model, fresh_b)
    assert not hasattr(model, "_fit_data")
