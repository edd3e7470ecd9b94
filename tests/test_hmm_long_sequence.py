"""One long sequence on the numba backend: its forward and backward recursions
run at once (each scaled by its own normalizers), its emissions and
posteriors/transition counts in fixed chunks of frames. Checked against the
NumPy reference, for bit-identical results on any number of threads, on
impossible frames and on the shapes where the backward's own scale cannot be
used (the coupled recursions take over)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _helpers import hmm_forward_backward, hmm_start_trans
from hypothesis import given, settings
from hypothesis import strategies as st

from fastem.hmm import _kernels_numpy as ref

numba = pytest.importorskip("numba")
nh = pytest.importorskip("fastem.backends._numba_hmm")


def _one(T):
    return np.array([0, T], dtype=np.int64)


def _fb(kern, logB, start, trans, w=1.0):
    return hmm_forward_backward(kern, logB, _one(logB.shape[0]), start, trans, np.array([w]))


def _assert_close(a, b):
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-12, err_msg=name)


def _threads(n, calls):
    """A stand-in for ``run_dynamic`` that runs the kernel on ``n`` real threads
    at once (this machine has 2 cores; the items are claimed dynamically, so
    more threads than cores is a harder schedule, not an invalid one)."""

    def run(kernel, n_iter, *args):
        calls.append(n)
        with ThreadPoolExecutor(max_workers=n) as pool:
            for f in [pool.submit(kernel, 0, n_iter, *args) for _ in range(n)]:
                f.result()

    return run


def _no_fallback(monkeypatch):
    """Fail if the coupled (serial) recursions are used."""

    def boom(*args):
        raise AssertionError("the coupled recursions ran")

    monkeypatch.setattr(nh, "_fb_chunks", boom)


@pytest.mark.parametrize("K", [3, 8])
@pytest.mark.parametrize("level", [0.0, -5000.0])
def test_long_sequence_matches_reference(monkeypatch, K, level):
    """Several chunks of frames, structural zeros, a weight; around -5000 every
    exp(logB) underflows (the per-frame shift keeps the answer)."""
    rng = np.random.default_rng(K)
    T = 3000
    logB = level + rng.normal(scale=3.0, size=(T, K))
    start, trans = hmm_start_trans(rng, K, 0.3)
    _no_fallback(monkeypatch)
    calls = []
    monkeypatch.setattr(nh, "run_dynamic", _threads(2, calls))
    out = _fb(nh, logB, start, trans, 1.7)
    assert calls == [2]  # the pool pass, on two threads
    _assert_close(out, _fb(ref, logB, start, trans, 1.7))


@st.composite
def _lone_problems(draw):
    K = draw(st.integers(1, 9))
    T = draw(st.sampled_from([1, 2, 3, 17, 1100, 2500]))
    return K, T, draw(st.floats(0.0, 0.5)), draw(st.integers(0, 2**16))


@settings(max_examples=12, deadline=None)
@given(problem=_lone_problems())
def test_lone_sequence_matches_reference_hypothesis(problem):
    K, T, p_zero, seed = problem
    rng = np.random.default_rng(seed)
    logB = rng.normal(scale=4.0, size=(T, K))
    start, trans = hmm_start_trans(rng, K, p_zero)
    w = rng.uniform(0.1, 3.0)
    _assert_close(_fb(nh, logB, start, trans, w), _fb(ref, logB, start, trans, w))


def _long_problem(T=5000, K=8):
    rng = np.random.default_rng(11)
    logB = rng.normal(scale=6.0, size=(T, K))
    start, trans = hmm_start_trans(rng, K, 0.2)
    return logB, start, trans


def test_long_sequence_bit_identical_on_any_thread_count(monkeypatch):
    """1, 2, 3 and 5 threads claiming the work items give the same bits, and the
    real pool on 1 and 2 threads too."""
    logB, start, trans = _long_problem()
    results = []
    for n in (1, 2, 3, 5):
        calls = []
        with monkeypatch.context() as m:
            m.setattr(nh, "run_dynamic", _threads(n, calls))
            results.append(_fb(nh, logB, start, trans, 0.7))
        assert calls == [n]
    before = numba.get_num_threads()
    try:
        for n in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(n)
            results.append(_fb(nh, logB, start, trans, 0.7))
    finally:
        numba.set_num_threads(before)
    for other in results[1:]:
        for name in other:
            np.testing.assert_array_equal(other[name], results[0][name], err_msg=name)


def test_bit_identity_check_detects_a_changed_split(monkeypatch):
    """Negative control for the test above: were the frames chunked by the
    thread count (here: one more chunk), the transition counts would differ in
    their last bits, so an equality check over thread counts can fail."""
    logB, start, trans = _long_problem()
    a = _fb(nh, logB, start, trans, 0.7)
    chunks = nh._row_chunks
    monkeypatch.setattr(nh, "_row_chunks", lambda n, f=0: chunks(n, f) + 1)
    b = _fb(nh, logB, start, trans, 0.7)
    assert not np.array_equal(a["xi"], b["xi"])
    _assert_close(a, b)  # the same up to rounding


@pytest.mark.parametrize("threads", [1, 2])
def test_long_sequence_impossible_frame_mid_way(monkeypatch, threads):
    """An impossible frame (every log-density -inf) in the middle of a long
    sequence: log-likelihood -inf, zero posteriors and counts."""
    logB, start, trans = _long_problem(T=4000, K=5)
    logB[2500] = -np.inf
    monkeypatch.setattr(nh, "run_dynamic", _threads(threads, []))
    out = _fb(nh, logB, start, trans)
    assert out["loglik"][0] == -np.inf
    for name in ("gamma", "xi", "start"):
        np.testing.assert_array_equal(out[name], 0.0, err_msg=name)
    _assert_close(out, _fb(ref, logB, start, trans))


def test_long_sequence_impossible_by_transitions():
    """No impossible frame, but no path: a left-right model that must go back
    at frame 2010 (the forward's exact-shift redo finds nothing)."""
    rng = np.random.default_rng(3)
    T, K = 3000, 4
    logB = rng.normal(size=(T, K))
    logB[2000:2010, :-1] = -np.inf  # only the last state
    logB[2010:, 1:] = -np.inf  # only the first state: unreachable from the last
    trans = np.triu(rng.dirichlet(np.ones(K), size=K))
    trans /= trans.sum(axis=1, keepdims=True)
    start = np.full(K, 1.0 / K)
    out = _fb(nh, logB, start, trans)
    assert out["loglik"][0] == -np.inf
    np.testing.assert_array_equal(out["gamma"], 0.0)
    _assert_close(out, _fb(ref, logB, start, trans))


def test_backward_scale_that_loses_the_forward_mass_falls_back(monkeypatch):
    """States that never meet (identity transitions), the likely one
    unreachable: the backward's own scale holds only the likely state, the
    forward only the other. The chunks detect it and the coupled recursions
    redo the sequence: the log-space answer, as the reference gives."""
    T = 3000
    logB = np.tile([-1000.0, 0.0], (T, 1))
    start, trans = np.array([1.0, 0.0]), np.eye(2)
    calls = []
    original = nh._fb_chunks
    monkeypatch.setattr(nh, "_fb_chunks", lambda *a: calls.append(1) or original(*a))
    out = _fb(nh, logB, start, trans)
    assert calls == [1]
    np.testing.assert_allclose(out["loglik"][0], -1000.0 * T, rtol=1e-14)
    np.testing.assert_array_equal(out["gamma"][:, 0], 1.0)
    np.testing.assert_allclose(out["xi"], [[T - 1, 0], [0, 0]])
    _assert_close(out, _fb(ref, logB, start, trans))


def test_backward_underflow_falls_back(monkeypatch):
    """The backward's own scale underflows (its state at the second-to-last
    frame has an emission 700 nats below the frame's best, whose state almost
    never reaches the last frame): it stops, the chunks see the lost mass and
    the coupled recursions redo the sequence, as the reference does."""
    T = 2000
    rng = np.random.default_rng(4)
    logB = rng.normal(size=(T, 2))
    logB[-1] = [0.0, -np.inf]  # the last frame: only state 0
    logB[-2] = [0.0, -700.0]  # the frame before: state 0 by far
    trans = np.array([[1e-280, 1.0 - 1e-280], [0.5, 0.5]])
    start = np.array([0.5, 0.5])
    calls = []
    original = nh._fb_chunks
    monkeypatch.setattr(nh, "_fb_chunks", lambda *a: calls.append(1) or original(*a))
    out = _fb(nh, logB, start, trans)
    assert calls == [1]
    assert np.isfinite(out["loglik"][0])
    _assert_close(out, _fb(ref, logB, start, trans))
