"""Numba lock-step HMM kernels on short univariate sequences (HB2's shape):
the D = 1 emission kernel (``_diag_logb_1d``) against the blocked path and the
NumPy formula bit for bit; lock-step batches of equal, mixed and length-1
lanes against the reference; the fused E-step and
whole fits against the NumPy reference (lengths including 1, weights, NaN);
the same bits on 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastem.hmm import GaussianHMM, _backend
from fastem.hmm._backend import available_hmm_backends, get_hmm_kernels

pytestmark = pytest.mark.skipif(
    "numba" not in available_hmm_backends(), reason="numba kernels only"
)
OUTPUTS = ("loglik", "xi", "start", "nk", "sx", "sxx")


def _offsets(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _hmm():
    return get_hmm_kernels("numba").hmm


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 150),
    K=st.integers(1, 12),
    scale=st.sampled_from([0.1, 1.0, 30.0, 1e4]),
    seed=st.integers(0, 2**31 - 1),
)
def test_logb_1d_equals_blocked_path_and_numpy_bit_for_bit(n, K, scale, seed):
    """One feature, row by row, against (a) the blocked path run with a second
    feature of precision 0 (adds exactly 0 to each squared distance) and (b)
    NumPy's ``c - 0.5 * ((x - mu) * u) ** 2``, each step rounded."""
    mod = _hmm()
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=scale, size=(n, 1))
    means = rng.normal(scale=scale, size=(K, 1))
    pc = rng.uniform(0.01, 5.0, size=(K, 1))
    cc = np.log(pc[:, 0]) - 0.5 * np.log(2 * np.pi)
    got = np.empty((n, K))
    mod._diag_logb_1d(X, 0, n, means, pc, cc, got)
    d = (X - means[:, 0]) * pc[:, 0]
    np.testing.assert_array_equal(got, cc - 0.5 * (d * d))
    X2 = np.hstack([X, rng.normal(size=(n, 1))])
    blocked = np.empty((n, K))
    mod._diag_logb(
        X2, 0, n, np.hstack([means, np.zeros((K, 1))]), np.hstack([pc, np.zeros((K, 1))]), cc,
        np.empty((2, mod.BLOCK)), np.empty(mod.BLOCK), blocked,
    )  # fmt: skip
    np.testing.assert_array_equal(got, blocked)
    # And the dispatch: a (n, 1) X goes through the row kernel.
    via = np.empty((n, K))
    mod._diag_logb(X, 0, n, means, pc, cc, np.empty((1, mod.BLOCK)), np.empty(mod.BLOCK), via)
    np.testing.assert_array_equal(got, via)


def test_logb_1d_comparison_sees_one_rounding_less():
    """Negative control for the test above: ``c - 0.5 d^2`` rounded once (what a
    contracted multiply-add gives) differs from the kernel in some entries, so
    bit-for-bit equality there is a real check of the rounding steps."""
    rng = np.random.default_rng(1)
    X = rng.normal(scale=3.0, size=(400, 1))
    means = rng.normal(scale=3.0, size=(10, 1))
    pc = rng.uniform(0.2, 2.0, size=(10, 1))
    cc = np.log(pc[:, 0]) - 0.5 * np.log(2 * np.pi)
    got = np.empty((400, 10))
    _hmm()._diag_logb_1d(X, 0, 400, means, pc, cc, got)
    d = (X - means[:, 0]) * pc[:, 0]
    once = (cc.astype(np.longdouble) - 0.5 * d.astype(np.longdouble) ** 2).astype(np.float64)
    if np.finfo(np.longdouble).nmant <= 52:
        pytest.skip("no extended precision on this platform")
    assert np.any(once != got)
    np.testing.assert_allclose(once, got, rtol=1e-14, atol=1e-14)


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(1, 30),
    other=st.integers(1, 30),
    K=st.integers(1, 9),
    zeros=st.booleans(),
    hole=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_lanes_of_equal_and_mixed_lengths_match_reference(length, other, K, zeros, hole, seed):
    """Batches whose lanes all have one length, a lane of length 1 next to long
    ones and mixed lengths (the backward sweep's ``u < L`` selects), with
    structural zeros (unreachable states: the ``alpha > 0`` masks) and a state
    impossible for half the frames: each sequence equals the reference and does
    not depend on its neighbours (rtol 1e-13)."""
    from fastem.hmm import _kernels_numpy as ref

    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), size=K)
    if zeros and K > 1:  # left-right: states below the first are unreachable
        trans = np.triu(trans)
        trans /= trans.sum(axis=1, keepdims=True)
        start = np.zeros(K)
        start[0] = 1.0
    seq = rng.normal(scale=2.0, size=(length, K))
    if hole and K > 1:
        seq[length // 2 :, K - 1] = -np.inf  # the last state impossible from mid-way

    def run(neighbours):
        lengths = [length, *neighbours]
        logB = np.vstack([seq] + [rng.normal(size=(n, K)) for n in neighbours])
        offsets = _offsets(lengths)
        S = len(lengths)
        w = rng.uniform(0.5, 2.0, size=S)
        got = [np.empty_like(logB), np.empty(S), np.empty((K, K)), np.empty(K)]
        want = [np.empty_like(logB), np.empty(S), np.empty((K, K)), np.empty(K)]
        _hmm().forward_backward(logB, offsets, start, trans, w, *got)
        ref.forward_backward(logB, offsets, start, trans, w, *want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
        return got[0][:length], got[1][0]

    same, ll_same = run([length] * 3)
    for neighbours in ([1, length, length], [other, 1, other], [other] * 3, [length] * 7):
        g, ll = run(neighbours)
        np.testing.assert_allclose(g, same, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(ll, ll_same, rtol=1e-13)


def _problem(rng, lengths, K, D):
    lengths = np.asarray(lengths, dtype=np.int64)
    S, N = lengths.size, int(lengths.sum())
    means = rng.normal(scale=3.0, size=(K, D))
    pc = rng.uniform(0.3, 2.0, size=(K, D))
    cc = np.log(pc).sum(axis=1) - 0.5 * D * np.log(2 * np.pi)
    X = means[rng.integers(K, size=N)] + rng.normal(size=(N, D))
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), size=K)
    w = rng.uniform(0.0, 2.0, size=S)
    w[rng.uniform(size=S) < 0.2] = 0.0
    shift = means + rng.normal(scale=0.1, size=(K, D))
    return (X, _offsets(lengths), means, pc, cc, start, trans, w), np.repeat(w, lengths), shift


def _estep(kernels, args, row_w, shift):
    K, D = args[2].shape
    out = dict(
        loglik=np.empty(args[1].size - 1), xi=np.empty((K, K)), start=np.empty(K),
        nk=np.empty(K), sx=np.empty((K, D)), sxx=np.empty((K, D)),
    )  # fmt: skip
    _backend.estep_diag(kernels, *args, row_w, shift, *(out[n] for n in OUTPUTS))
    return out


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 30), min_size=32, max_size=60),
    K=st.integers(1, 12),
    D=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_fused_estep_matches_numpy_reference(lengths, K, D, seed):
    """Enough sequences for the fused step (>= 8 batches), D = 1 included."""
    args, row_w, shift = _problem(np.random.default_rng(seed), lengths, K, D)
    assert _hmm().estep_diag(
        *args, row_w, shift, np.empty(len(lengths)), np.empty((K, K)), np.empty(K),
        np.empty(K), np.empty((K, D)), np.empty((K, D)),
    )  # fmt: skip
    got = _estep(get_hmm_kernels("numba"), args, row_w, shift)
    want = _estep(get_hmm_kernels("numpy"), args, row_w, shift)
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-9, err_msg=name)


def _hb2_like(seed, S=50, nan=False):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 60, size=S)
    lengths[:20] = 40  # full batches of equal length as well as mixed ones
    X = rng.normal(scale=3.0, size=(int(lengths.sum()), 1)) + rng.integers(3, size=(1, 1))
    if nan:
        X[rng.uniform(size=X.shape[0]) < 0.05] = np.nan
    return X, lengths


@pytest.mark.parametrize("nan", [False, True])
def test_fit_d1_matches_numpy_backend(nan):
    """Whole fits, univariate, 50 sequences (the last batch of two), with and
    without missing values (NaN: the separate kernels), sequence weights."""
    X, lengths = _hb2_like(3, nan=nan)
    w = np.random.default_rng(4).uniform(0.5, 2.0, size=lengths.size)
    fits = {}
    for backend in ("numba", "numpy"):
        m = GaussianHMM(4, "diag", n_iter=5, tol=-np.inf, random_state=0, backend=backend)
        fits[backend] = m.fit(X, lengths, sample_weight=w)
    a, b = fits["numba"], fits["numpy"]
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(a.monitor_.history, b.monitor_.history, rtol=1e-10)


def test_d1_estep_same_bits_on_1_and_2_threads(monkeypatch):
    """The real pool on 2 threads against 1, repeatedly (the last batch of two
    sequences, mixed lengths); negative control: the same partials reduced in
    the opposite group order give other bits, so equal bits are not a given."""
    import numba

    rng = np.random.default_rng(12)
    args, row_w, shift = _problem(rng, rng.integers(1, 80, size=50), K=10, D=1)
    kern = get_hmm_kernels("numba")
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _estep(kern, args, row_w, shift)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        for _ in range(5):
            got = _estep(kern, args, row_w, shift)
            for name in OUTPUTS:
                np.testing.assert_array_equal(one[name], got[name], err_msg=name)
    finally:
        numba.set_num_threads(before)

    mod = kern.hmm
    forward = mod._sum_groups

    def reversed_groups(transmat, *parts_and_outs):
        parts = [p[::-1].copy() for p in parts_and_outs[:5]]
        for p in parts_and_outs[:5]:
            p[...] = 0.0
        forward(transmat, *parts, *parts_and_outs[5:])

    monkeypatch.setattr(mod, "_sum_groups", reversed_groups)
    flipped = _estep(kern, args, row_w, shift)
    assert any(not np.array_equal(one[n], flipped[n]) for n in OUTPUTS)
    for name in OUTPUTS:
        np.testing.assert_allclose(one[name], flipped[name], rtol=1e-12, atol=1e-12)
