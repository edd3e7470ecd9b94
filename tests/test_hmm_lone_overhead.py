"""The numba backend's per-call arrays of one long sequence and of the moment
kernels, kept per calling thread, and the compiled reductions that replace the
NumPy ones there (``_lone_finish``, ``_sum_moments_full``/``_diag``): the same
bits as the NumPy code they replace, partials zeroed for the next call, and a
workspace that a failed pass leaves dirty made again."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from _helpers import hmm_forward_backward, hmm_start_trans
from hypothesis import given, settings
from hypothesis import strategies as st

from fastem.backends._hmm_partials import moment_partials, sum_moment_partials

pytest.importorskip("numba")
nh = pytest.importorskip("fastem.backends._numba_hmm")


def _bits_equal(a, b):
    a = np.ascontiguousarray(np.atleast_1d(np.asarray(a, np.float64)))
    b = np.ascontiguousarray(np.atleast_1d(np.asarray(b, np.float64)))
    assert a.shape == b.shape
    assert np.array_equal(a.view(np.uint8), b.view(np.uint8))


def _partials(rng, shape, signed):
    """Random values with exact zeros of both signs (0.0 + -0.0 is 0.0 in
    NumPy's sums: a compiled sum that started from the first chunk would
    keep -0.0)."""
    v = rng.normal(size=shape) if signed else rng.exponential(size=shape)
    mask = rng.uniform(size=shape)
    v[mask < 0.2] = -0.0
    v[(mask >= 0.2) & (mask < 0.3)] = 0.0
    return v


@settings(max_examples=40, deadline=None)
@given(
    nc=st.integers(1, 25),
    K=st.integers(2, 9),
    impossible=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_lone_finish_is_numpy_bit_for_bit(nc, K, impossible, seed):
    rng = np.random.default_rng(seed)
    A = rng.dirichlet(np.ones(K), size=K)
    outer_p = _partials(rng, (nc, K, K), signed=False)
    start_p = rng.uniform(size=K)
    ll_p = _partials(rng, nc, signed=True) * 1e3
    ll = np.array([-np.inf if impossible else 0.0])
    want_ll = ll[0] if impossible else sum(ll_p.tolist())
    want_xi = np.multiply(A, outer_p.sum(axis=0))
    want_start = start_p.copy()
    counter = np.array([7, 3, 2, 0, 0], dtype=np.int64)  # a pass's counts
    loglik, xi, start = np.empty(1), np.empty((K, K)), np.empty(K)
    assert nh._lone_finish(A, counter, ll, ll_p, outer_p, start_p, loglik, xi, start)
    _bits_equal(loglik[0], want_ll)
    _bits_equal(xi, want_xi)
    _bits_equal(start, want_start)
    assert not counter.any() and not outer_p.any() and not start_p.any()  # ready again


def test_lone_finish_declines_a_redo_and_still_resets():
    K, nc = 3, 4
    outer_p, start_p = np.ones((nc, K, K)), np.ones(K)
    counter = np.array([10, 4, 2, 0, 5], dtype=np.int64)
    xi = np.full((K, K), 7.0)
    out = nh._lone_finish(
        np.eye(K), counter, np.zeros(1), np.ones(nc), outer_p, start_p, np.zeros(1), xi, np.ones(K)
    )
    assert out is False
    assert (xi == 7.0).all()  # nothing written: the coupled recursions will
    assert not counter.any() and not outer_p.any() and not start_p.any()


@settings(max_examples=40, deadline=None)
@given(
    nc=st.integers(1, 25),
    K=st.integers(2, 9),
    D=st.integers(1, 9),
    full=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_sum_moments_is_numpy_bit_for_bit(nc, K, D, full, seed):
    rng = np.random.default_rng(seed)
    nk_p, sx_p, sxx_p = moment_partials(nc, K, D, full)
    nk_p[:] = _partials(rng, nk_p.shape, signed=False)
    sx_p[:] = _partials(rng, sx_p.shape, signed=True)
    sxx_p[:] = _partials(rng, sxx_p.shape, signed=True)
    if full:  # the kernel writes upper triangles; what is below is ignored
        sxx_p[:, :, np.arange(D)[:, None] > np.arange(D)] = 5.0
    want = [np.empty(nk_p.shape[1:]), np.empty(sx_p.shape[1:])]
    want.append(np.empty((K, D, D) if full else (K, D)))
    sum_moment_partials(nk_p, sx_p, sxx_p, full, *want)
    got = [np.full_like(w, np.nan) for w in want]
    (nh._sum_moments_full if full else nh._sum_moments_diag)(nk_p, sx_p, sxx_p, *got)
    for g, w in zip(got, want, strict=True):
        _bits_equal(g, w)
    assert not nk_p.any() and not sx_p.any() and not sxx_p.any()  # ready again


def _logB(rng, T, K):
    return rng.normal(scale=3.0, size=(T, K)) - 5.0


def _fb_numpy(logB, start, trans):
    """The NumPy-reduction path (the code before the kept arrays), fresh arrays."""
    T, K = logB.shape
    out = dict(gamma=np.empty_like(logB), loglik=np.empty(1), xi=np.empty((K, K)))
    out["start"] = np.empty(K)
    nh._forward_backward_lone(
        logB, np.array([0, T]), start, trans, np.array([1.5]), *out.values(), numpy_sums=True
    )
    return out


def _fb(logB, start, trans):
    T = logB.shape[0]
    return hmm_forward_backward(nh, logB, np.array([0, T]), start, trans, np.array([1.5]))


def _assert_same(a, b):
    for name in a:
        _bits_equal(a[name], b[name])


def test_lone_sequence_reuses_its_arrays_bit_for_bit():
    """Calls alternating between shapes (the kept arrays made again) and
    repeated on one shape (kept arrays reused, zeroed by the finish) give the
    bits of fresh arrays and NumPy's reductions; K = 1 keeps NumPy's code."""
    rng = np.random.default_rng(3)
    cases = []
    for T, K in ((3000, 4), (3000, 4), (700, 4), (3000, 4), (3000, 1), (3000, 4), (2500, 6)):
        start, trans = hmm_start_trans(rng, K, 0.0)
        cases.append((_logB(rng, T, K), start, trans))
    for logB, start, trans in cases + cases[::-1]:
        _assert_same(_fb(logB, start, trans), _fb_numpy(logB, start, trans))
    ws = nh._lone_tls.ws
    _fb(*cases[0])
    assert nh._lone_tls.ws is ws  # the same shape again: kept, not made again


def test_dirty_workspace_is_seen_negative_control():
    """Negative control of the test above: partials left non-zero in the kept
    workspace (what a finish that did not zero them would leave) change the
    transition counts, so the comparisons above would fail."""
    rng = np.random.default_rng(4)
    start, trans = hmm_start_trans(rng, 4, 0.0)
    logB = _logB(rng, 3000, 4)
    want = _fb_numpy(logB, start, trans)
    _fb(logB, start, trans)
    outer_p = nh._lone_tls.ws[5]
    outer_p[0] += 1.0
    try:
        assert not np.array_equal(_fb(logB, start, trans)["xi"], want["xi"])
    finally:
        nh._lone_tls.ws = None


def test_failed_pass_drops_the_workspace(monkeypatch):
    """A pass that raises after claiming items leaves the counter and partials
    half written: the next call makes them again and gives the right bits."""
    rng = np.random.default_rng(5)
    start, trans = hmm_start_trans(rng, 5, 0.0)
    logB = _logB(rng, 4000, 5)
    want = _fb_numpy(logB, start, trans)
    real = nh._lone_items

    def fails_after(i0, i1, *args):
        real(i0, i1, *args)
        raise RuntimeError("boom")

    monkeypatch.setattr(nh, "_lone_items", fails_after)
    with pytest.raises(RuntimeError, match="boom"):
        _fb(logB, start, trans)
    assert nh._lone_tls.ws is None
    monkeypatch.setattr(nh, "_lone_items", real)
    _assert_same(_fb(logB, start, trans), want)


def _moments_numpy(X, gamma, rw, shift, full):
    """The moments with fresh partials and NumPy's sum (the code before)."""
    N, D = X.shape
    K = gamma.shape[1]
    nc = nh._row_chunks(N, K * D * D if full else K * D)
    parts = moment_partials(nc, K, D, full)
    nh._moments_chunks(0, nc, nc, nh._ro(X), nh._ro(gamma), nh._ro(rw), nh._ro(shift), *parts, full)
    out = [np.empty(K), np.empty((K, D)), np.empty((K, D, D) if full else (K, D))]
    sum_moment_partials(*parts, full, *out)
    return out


@pytest.mark.parametrize("full", [True, False])
def test_moments_reuse_their_partials_bit_for_bit(full):
    """Row blocks of two sizes in turn (as a GMMHMM's), K = 1 and the threads'
    own kept partials: the bits of fresh partials summed by NumPy."""
    rng = np.random.default_rng(6)
    shapes = [(5000, 4, 3), (5000, 4, 3), (1200, 4, 3), (5000, 4, 3), (3000, 1, 2), (800, 3, 5)]
    cases = []
    for N, K, D in shapes:
        X = rng.normal(size=(N, D))
        gamma = rng.dirichlet(np.ones(K), size=N)
        gamma[rng.uniform(size=N) < 0.1, 0] = 0.0  # zero weights: -0.0 products
        cases.append((X, gamma, rng.uniform(0.5, 2.0, N), rng.normal(size=(K, D))))
    fn = nh.moments_full if full else nh.moments_diag

    def run(case):
        X, gamma, rw, shift = case
        K, D = shift.shape
        got = [np.empty(K), np.empty((K, D)), np.empty((K, D, D) if full else (K, D))]
        fn(X, gamma, rw, shift, *got)
        return got

    want = [_moments_numpy(*c, full) for c in cases]
    for c, w in zip(cases + cases, want + want, strict=True):
        for g, x in zip(run(c), w, strict=True):
            _bits_equal(g, x)
    with ThreadPoolExecutor(2) as ex:  # each thread its own kept partials
        for got, w in zip(ex.map(run, cases * 3), want * 3, strict=True):
            for g, x in zip(got, w, strict=True):
                _bits_equal(g, x)


def test_arrays_over_the_keep_limits_are_fresh_and_right(monkeypatch):
    """Above the keep limits nothing is kept (fresh arrays every call, as
    before), with the same bits."""
    rng = np.random.default_rng(7)
    monkeypatch.setattr(nh, "SCRATCH_KEEP_BYTES", 0)
    monkeypatch.setattr(nh, "MOMENTS_KEEP_BYTES", 0)
    monkeypatch.setattr(nh, "_lone_tls", type(nh._lone_tls)())
    monkeypatch.setattr(nh, "_moments_tls", type(nh._moments_tls)())
    monkeypatch.setattr(nh, "_scratch_tls", type(nh._scratch_tls)())
    start, trans = hmm_start_trans(rng, 4, 0.0)
    logB = _logB(rng, 3000, 4)
    for _ in range(2):
        _assert_same(_fb(logB, start, trans), _fb_numpy(logB, start, trans))
    assert getattr(nh._lone_tls, "ws", None) is None
    X, shift = rng.normal(size=(3000, 3)), rng.normal(size=(4, 3))
    gamma, rw = rng.dirichlet(np.ones(4), size=3000), np.ones(3000)
    want = _moments_numpy(X, gamma, rw, shift, True)
    for _ in range(2):
        got = [np.empty(4), np.empty((4, 3)), np.empty((4, 3, 3))]
        nh.moments_full(X, gamma, rw, shift, *got)
        for g, w in zip(got, want, strict=True):
            _bits_equal(g, w)
    assert not nh._moments_tls.kept


@settings(max_examples=30, deadline=None)
@given(K=st.integers(1, 12), w=st.sampled_from([1.0, 0.7, 3.0]), seed=st.integers(0, 2**31))
def test_count_row_keeps_the_roundings_of_the_loop_it_replaced(K, w, seed):
    """The transition counts' left factors ``at[k, r] = w alpha_t(k) / c_t`` as
    the posterior loop before 2026-12-02 (session 9) rounded them, compiled:
    ``(w * al) * (1 / c)``, a true division for state 0 when K is odd. Fits
    hashed before and after are the same bits (K 2-20, weights, underflow)."""
    rng = np.random.default_rng(seed)
    al = rng.uniform(size=(3, K)) * 10.0 ** rng.integers(-300, 5, size=(3, K))
    c = rng.uniform(1e-3, 8.0, size=3)
    at = np.full((K, 4), np.nan)
    nh._count_row(at, 2, al, 1, w, c[1])
    want = (w * al[1]) * (1.0 / c[1])
    if K % 2 == 1:
        want[0] = (w * al[1, 0]) / c[1]
    _bits_equal(at[:, 2], want)


def test_count_row_roundings_differ_negative_control():
    """The two roundings differ on some inputs, so keeping the division for
    state 0 of an odd K is what keeps those fits' bits."""
    rng = np.random.default_rng(8)
    al, c = rng.uniform(size=1000), rng.uniform(1e-3, 8.0, size=1000)
    assert ((al * (1.0 / c)) != (al / c)).any()
