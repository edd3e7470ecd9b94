"""Per-fit arrays and the compiled full/tied M-step (issue #15).

- ``fastem.hmm._base._fit_buffer``: a fit's per-iteration (N, K) arrays (the
  emission log-densities, the posteriors) are made once per fit; fits are
  bit-identical to fits with fresh arrays, arrays returned to the user stay
  fresh, and a fit on a new X does not reuse the last fit's arrays.
- ``fastem.hmm._mstep_numba.mstep_full``: the full and tied M-step against the
  NumPy M-step bit for bit, over priors, ``params`` and ``reg_covar`` (and
  hypothesis over shapes); whole fits through it against the NumPy M-step.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fastem.hmm._base as hmm_base
import fastem.hmm._gaussian as hmm_gaussian
import fastem.hmm._gmm as hmm_gmm
from fastem.hmm import GMMHMM, GaussianHMM
from fastem.hmm._backend import available_hmm_backends

ATTRS = ("startprob_", "transmat_", "means_", "_covars_", "weights_", "covars_")


def _data(seed: int = 0, N: int = 600, D: int = 3, nan: bool = False):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D)) + 2.5 * rng.integers(3, size=(N, 1))
    if nan:
        X[rng.random(X.shape) < 0.05] = np.nan
    return X, [N // 4, N // 2, N - N // 4 - N // 2]


def _state(m) -> list[np.ndarray]:
    out = [np.asarray(getattr(m, a)) for a in ATTRS if hasattr(m, a)]
    return out + [np.asarray(m.monitor_.history, dtype=float), m.objective_history_]


def _assert_same_bits(a, b) -> None:
    for x, y in zip(_state(a), _state(b), strict=True):
        assert x.shape == y.shape and x.tobytes() == y.tobytes()


def _fresh(model, X, name, shape):
    return np.empty(shape)


def _backends():
    return [b for b in ("numba", "numpy") if b in available_hmm_backends()]


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize(
    "make, nan",
    [
        (lambda b: GaussianHMM(3, "full", n_iter=4, random_state=0, backend=b), False),
        (lambda b: GaussianHMM(3, "tied", n_iter=4, random_state=0, backend=b), True),
        (lambda b: GaussianHMM(3, "diag", n_iter=4, random_state=0, backend=b), True),
        (
            lambda b: GMMHMM(
                2, n_mix=2, covariance_type="full", n_iter=3, random_state=0, backend=b
            ),
            False,
        ),  # fmt: skip
    ],
)
def test_fit_with_buffers_is_bit_identical_to_fresh_arrays(backend, make, nan, monkeypatch):
    """The reused per-fit arrays change no bit of a fit (fresh ``np.empty``
    arrays each iteration are what ran before), and the fit did reuse them."""
    X, lengths = _data(1, nan=nan)
    made = []
    real = hmm_base._fit_buffer

    def counting(model, X, name, shape):
        a = real(model, X, name, shape)
        made.append((name, id(a)))
        return a

    for mod in (hmm_base, hmm_gaussian, hmm_gmm):
        monkeypatch.setattr(mod, "_fit_buffer", counting)
    a = make(backend).fit(X, lengths)
    assert made and len(set(made)) < len(made)  # the same arrays handed out again
    for mod in (hmm_base, hmm_gaussian, hmm_gmm):
        monkeypatch.setattr(mod, "_fit_buffer", _fresh)
    b = make(backend).fit(X, lengths)
    _assert_same_bits(a, b)


def test_buffers_are_per_fit_and_not_returned():
    """Outside a fit every call makes a fresh array; posteriors returned to the
    user are not the fit's buffer and survive later calls and fits."""
    X, lengths = _data(2)
    m = GaussianHMM(3, "full", n_iter=3, random_state=0).fit(X, lengths)
    assert not hasattr(m, "_fit_data")
    p1 = m.predict_proba(X, lengths)
    keep = p1.copy()
    p2 = m.predict_proba(X, lengths)
    assert p1 is not p2 and np.shares_memory(p1, p2) is False
    m.fit(X, lengths)
    m.score_samples(X, lengths)
    np.testing.assert_array_equal(p1, keep)
    # within a fit: the same array for the fit's own X, a fresh one for another X
    d = hmm_base._FitData(X, np.array([0, X.shape[0]]), np.ones(1))
    m._fit_data = d
    try:
        b1 = hmm_base._fit_buffer(m, X, "gamma", (X.shape[0], 3))
        assert hmm_base._fit_buffer(m, X, "gamma", (X.shape[0], 3)) is b1
        assert hmm_base._fit_buffer(m, X.copy(), "gamma", (X.shape[0], 3)) is not b1
        assert hmm_base._fit_buffer(m, X, "gamma", (X.shape[0], 2)).shape == (X.shape[0], 2)
    finally:
        del m._fit_data


# ------------------------------------------------------------ compiled full M-step
numba_only = pytest.mark.skipif("numba" not in available_hmm_backends(), reason="needs numba")


def _random_mstep_case(rng, K, D, covariance_type, params, priors, empty=False):
    m = GaussianHMM(K, covariance_type, params=params, backend="numba", **priors)
    m.startprob_ = rng.dirichlet(np.ones(K))
    m.transmat_ = rng.dirichlet(np.ones(K), size=K)
    if K > 1:
        m.transmat_[0, -1] = 0.0  # a structural zero stays zero
        m.transmat_[0] /= m.transmat_[0].sum()
    m.means_ = rng.normal(size=(K, D))
    A = rng.normal(size=(K, D, D))
    full = A @ np.swapaxes(A, 1, 2) + np.eye(D)
    m._covars_ = full[0] if covariance_type == "tied" else full
    m.n_features = D
    nk = rng.uniform(0.5, 50, size=K)
    if empty:  # an empty state: the NumPy M-step's rule, not the compiled one
        nk[-1] = 0.0
    B = rng.normal(size=(K, D, D))
    stats = (nk, rng.normal(size=(K, D)), B @ np.swapaxes(B, 1, 2), m.means_.copy())
    fb = hmm_base._FBResult(
        np.zeros(1), None, rng.uniform(0, 9, (K, K)), rng.uniform(0, 3, K), None
    )
    return m, fb, stats


PRIORS = [
    {},
    {"reg_covar": 1e-3, "covars_weight": 7.0, "covars_prior": 0.3},
    {"means_weight": 0.5, "means_prior": 1.5, "startprob_prior": 2.0, "transmat_prior": 1.5},
    {"means_weight": "K", "means_prior": "KD", "covars_prior": "DD", "covars_weight": "K"},
    {"covars_prior": "KDD", "startprob_prior": 0.5, "transmat_prior": 0.5},
]


def _priors(spec, rng, K, D, covariance_type):
    out = {}
    for name, v in spec.items():
        if v == "K":
            v = rng.uniform(0.5, 9, size=K)
            if covariance_type == "tied" and name == "covars_weight":
                v = 6.5
        elif v == "KD":
            v = rng.normal(size=(K, D))
        elif v == "DD":
            v = np.eye(D) * 0.2 + 0.01
        elif v == "KDD":
            v = np.eye(D) * rng.uniform(0.1, 1, size=(K, 1, 1))
            if covariance_type == "tied":
                v = v[0]
        out[name] = v
    return out


_REAL_PLAN = hmm_gaussian.GaussianHMM._compiled_mstep_full_plan


def _both_msteps(m, fb, stats, monkeypatch):
    """(compiled, NumPy): the M-step of copies of ``m``, each way."""
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    calls = []
    real = _REAL_PLAN

    def plan(self):
        p = real(self)
        if p is None:
            return p

        def counted(*args):
            calls.append(True)
            return p[0](*args)

        return (counted, *p[1:])

    monkeypatch.setattr(hmm_gaussian.GaussianHMM, "_compiled_mstep_full_plan", plan)
    assert a._do_mstep(fb, stats) is None
    assert calls == ([] if not stats[0].all() else [True])  # the compiled M-step ran
    monkeypatch.setattr(hmm_gaussian.GaussianHMM, "_compiled_mstep_full_plan", lambda self: None)
    b._do_mstep(fb, stats)
    return a, b


@numba_only
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("spec", PRIORS)
@pytest.mark.parametrize("params", ["stmc", "mc", "st", "c"])
def test_mstep_full_is_the_numpy_mstep_bit_for_bit(covariance_type, spec, params, monkeypatch):
    rng = np.random.default_rng(len(params) + 7 * len(spec))
    K, D = 4, 3
    m, fb, stats = _random_mstep_case(
        rng, K, D, covariance_type, params, _priors(spec, rng, K, D, covariance_type)
    )
    a, b = _both_msteps(m, fb, stats, monkeypatch)
    for name in ("startprob_", "transmat_", "means_", "_covars_"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.tobytes() == y.tobytes(), name


@numba_only
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
def test_mstep_full_leaves_an_empty_state_to_the_numpy_mstep(covariance_type, monkeypatch):
    """A state with no posterior weight: the NumPy M-step runs (hmmlearn's
    update where the priors define it), the compiled one is not called."""
    rng = np.random.default_rng(3)
    spec = PRIORS[1]
    m, fb, stats = _random_mstep_case(
        rng, 4, 3, covariance_type, "stmc", _priors(spec, rng, 4, 3, covariance_type), True
    )
    a, b = _both_msteps(m, fb, stats, monkeypatch)
    for name in ("startprob_", "transmat_", "means_", "_covars_"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@numba_only
@settings(max_examples=25, deadline=None)
@given(
    K=st.integers(1, 20),
    D=st.integers(1, 6),
    tied=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
@example(K=9, D=1, tied=True, seed=0)  # NumPy sums (K, 1, 1) pairwise: found by hypothesis
def test_mstep_full_shapes(K, D, tied, seed):
    """Every shape, including tied sums over up to 20 states (NumPy's order of
    ``c_n.sum(axis=0)`` and ``nk.sum()``)."""
    ct = "tied" if tied else "full"
    rng = np.random.default_rng(seed)
    m, fb, stats = _random_mstep_case(rng, K, D, ct, "stmc", {"reg_covar": 1e-4})
    with pytest.MonkeyPatch.context() as mp:
        a, b = _both_msteps(m, fb, stats, mp)
    for name in ("startprob_", "transmat_", "means_", "_covars_"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name


@numba_only
def test_mstep_full_negative_control(monkeypatch):
    """The bitwise comparison is sensitive to the summation order: the tied sum
    over the same states in reverse order gives other bits (so a kernel that
    summed in another order than NumPy would fail the tests above)."""
    rng = np.random.default_rng(3)
    K, D = 13, 4
    m, fb, stats = _random_mstep_case(rng, K, D, "tied", "stmc", {})
    nk, sx, sxx, shift = stats
    sxx = sxx * rng.uniform(0.5, 1e3, size=(K, 1, 1))  # magnitudes that expose order
    a, b = _both_msteps(m, fb, (nk, sx, sxx, shift), monkeypatch)
    assert a._covars_.tobytes() == b._covars_.tobytes()
    perm = np.arange(K)[::-1]  # the states in reverse: the same sum in another order
    m.means_ = m.means_[perm]
    permuted = (nk[perm], sx[perm], sxx[perm], shift[perm])
    c, d = _both_msteps(m, fb, permuted, monkeypatch)
    assert c._covars_.tobytes() == d._covars_.tobytes()
    assert c._covars_.tobytes() != a._covars_.tobytes()


@numba_only
@pytest.mark.parametrize("covariance_type", ["full", "tied"])
@pytest.mark.parametrize("n_threads", [1, 2])
def test_fit_through_compiled_full_mstep_is_bit_identical(covariance_type, n_threads, monkeypatch):
    X, lengths = _data(4, D=4)
    kw = dict(n_iter=5, random_state=0, backend="numba", n_threads=n_threads,
              covars_weight=6.0, means_weight=0.3, reg_covar=1e-4)  # fmt: skip
    a = GaussianHMM(3, covariance_type, **kw).fit(X, lengths, sample_weight=[1.0, 2.0, 0.5])
    monkeypatch.setattr(hmm_gaussian.GaussianHMM, "_compiled_mstep_full_plan", lambda self: None)
    b = GaussianHMM(3, covariance_type, **kw).fit(X, lengths, sample_weight=[1.0, 2.0, 0.5])
    _assert_same_bits(a, b)


# ------------------------------------------------------------ pool dispatch
@numba_only
def test_run_dynamic_thread_count_follows_numba_and_limit_threads():
    """The cached thread-count getter is numba's per-thread count: it follows
    ``numba.set_num_threads`` on this thread (not another thread's setting) and
    fastem's ``limit_threads``."""
    import threading

    import numba

    from fastem._threads import limit_threads
    from fastem.backends import _numba_hmm

    before = numba.get_num_threads()
    try:
        for n in range(1, numba.config.NUMBA_NUM_THREADS + 1):
            numba.set_num_threads(n)
            assert _numba_hmm._num_threads() == n == numba.get_num_threads()
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        seen = []
        t = threading.Thread(
            target=lambda: (numba.set_num_threads(1), seen.append(_numba_hmm._num_threads()))
        )
        t.start()
        t.join()
        assert seen == [1]
        assert _numba_hmm._num_threads() == numba.config.NUMBA_NUM_THREADS
        with limit_threads("numba", 1):
            assert _numba_hmm._num_threads() == 1
        assert _numba_hmm._pool() is _numba_hmm._pool()
    finally:
        numba.set_num_threads(before)


def _claiming_kernel(fail_in_worker=False):
    """A Python stand-in for the dynamic kernels: claims ``counter[0]`` (under
    a lock) until a claim is past ``i1``; optionally raises in a worker."""
    import threading

    lock = threading.Lock()
    done = []

    def kernel(i0, i1, counter):
        if fail_in_worker and threading.current_thread() is not threading.main_thread():
            raise RuntimeError("worker failed")
        while True:
            with lock:
                it = int(counter[0])
                counter[0] += 1
            if it >= i1:
                return
            done.append(it)

    return kernel, done


@numba_only
def test_run_dynamic_claims_wait_and_errors(monkeypatch):
    """On 2 threads the caller returns once every thread made its final claim,
    the futures settled by the next pass; a worker's error is raised (the claim
    count is never reached: the futures are waited on); WAIT_POLLS=0 waits on
    the futures."""
    import numba

    from fastem.backends import _numba_hmm

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs 2 numba threads")
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        _numba_hmm._settle()
        for polls in (10**6, 0):
            monkeypatch.setattr(_numba_hmm, "WAIT_POLLS", polls)
            kernel, done = _claiming_kernel()
            counter = np.zeros(1, dtype=np.int64)
            _numba_hmm.run_dynamic(kernel, 50, counter)
            assert sorted(done) == list(range(50)) and counter[0] == 52
            assert len(_numba_hmm._unsettled) == (1 if polls else 0)
            _numba_hmm._settle()
            assert not _numba_hmm._unsettled
        monkeypatch.setattr(_numba_hmm, "WAIT_POLLS", 50)
        kernel, done = _claiming_kernel(fail_in_worker=True)
        with pytest.raises(RuntimeError, match="worker failed"):
            _numba_hmm.run_dynamic(kernel, 20, np.zeros(1, dtype=np.int64))
        assert sorted(done) == list(range(20))  # the caller ran every item
    finally:
        numba.set_num_threads(before)
