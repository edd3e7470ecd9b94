"""HMM kernels: the NumPy reference against brute-force enumeration and a
log-space oracle; every other backend against the reference (hypothesis over
shapes: lengths including 1, K = 1, D = 1, float32); thread-count determinism."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastem.hmm import _kernels_numpy as ref
from fastem.hmm._backend import available_hmm_backends, get_hmm_kernels

OTHER_BACKENDS = [b for b in available_hmm_backends() if b != "numpy"]


def _offsets(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _model(rng, K, zeros=False):
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), size=K)
    if zeros and K > 1:  # left-right structure: structural zeros below the diagonal
        trans = np.triu(trans)
        trans /= trans.sum(axis=1, keepdims=True)
    return start, trans


def _fb(kern, logB, offsets, start, trans, w=None):
    K = logB.shape[1]
    S = offsets.size - 1
    w = np.ones(S) if w is None else w
    out = dict(
        gamma=np.empty_like(logB), loglik=np.empty(S), xi=np.empty((K, K)), start=np.empty(K)
    )
    kern.forward_backward(
        logB, offsets, start, trans, w, out["gamma"], out["loglik"], out["xi"], out["start"]
    )
    return out


def _log_oracle(logB, start, trans):
    """Log-space forward-backward of one sequence (independent of the kernels)."""
    T, K = logB.shape
    with np.errstate(divide="ignore"):
        ls, lt = np.log(start), np.log(trans)
    la = np.empty((T, K))
    lb = np.zeros((T, K))
    la[0] = ls + logB[0]
    for t in range(1, T):
        la[t] = np.logaddexp.reduce(la[t - 1][:, None] + lt, axis=0) + logB[t]
    for t in range(T - 2, -1, -1):
        lb[t] = np.logaddexp.reduce(lt + logB[t + 1] + lb[t + 1], axis=1)
    ll = np.logaddexp.reduce(la[-1])
    return ll, np.exp(la + lb - ll)


def test_reference_matches_enumeration():
    """Exact sums over all K**T paths: log-likelihood, posteriors, xi, start."""
    rng = np.random.default_rng(0)
    K, lengths = 3, [4, 1, 3]
    offsets = _offsets(lengths)
    logB = rng.normal(scale=2.0, size=(sum(lengths), K))
    start, trans = _model(rng, K)
    w = np.array([1.0, 2.0, 0.5])
    out = _fb(ref, logB, offsets, start, trans, w)
    xi = np.zeros((K, K))
    st0 = np.zeros(K)
    for s, (lo, hi) in enumerate(itertools.pairwise(offsets)):
        T = hi - lo
        joint = {}
        for path in itertools.product(range(K), repeat=T):
            p = start[path[0]] * np.exp(logB[lo, path[0]])
            for t in range(1, T):
                p *= trans[path[t - 1], path[t]] * np.exp(logB[lo + t, path[t]])
            joint[path] = p
        total = sum(joint.values())
        np.testing.assert_allclose(out["loglik"][s], np.log(total), rtol=1e-12)
        gamma = np.zeros((T, K))
        for path, p in joint.items():
            for t in range(T):
                gamma[t, path[t]] += p / total
            for t in range(T - 1):
                xi[path[t], path[t + 1]] += w[s] * p / total
            st0[path[0]] += w[s] * p / total
        np.testing.assert_allclose(out["gamma"][lo:hi], gamma, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(out["xi"], xi, rtol=1e-10)
    np.testing.assert_allclose(out["start"], st0, rtol=1e-10)


@pytest.mark.parametrize("backend", available_hmm_backends())
def test_no_underflow_where_log_space_is_fine(backend):
    """Emission log-densities around -5000 (high-dimensional data): every
    exp(logB) underflows, which breaks hmmlearn's "scaling" mode; the per-frame
    shift gives the log-space answer."""
    kern = get_hmm_kernels(backend).hmm
    rng = np.random.default_rng(1)
    K, T = 4, 30
    logB = -5000.0 + rng.normal(scale=30.0, size=(T, K))
    start, trans = _model(rng, K)
    assert not np.exp(logB).any()
    out = _fb(kern, logB, _offsets([T]), start, trans)
    ll, post = _log_oracle(logB, start, trans)
    np.testing.assert_allclose(out["loglik"][0], ll, rtol=1e-12)
    np.testing.assert_allclose(out["gamma"], post, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("backend", available_hmm_backends())
def test_rescued_frame_when_predicted_state_underflows(backend):
    """All predicted mass on a state 1000 nats less likely than another, which it
    cannot reach: the max-shifted frame underflows to 0 and is redone with the
    exact shift, as the log-space recursion would."""
    kern = get_hmm_kernels(backend).hmm
    K, T = 2, 5
    logB = np.tile([-1000.0, 0.0], (T, 1))
    start = np.array([1.0, 0.0])
    trans = np.eye(K)
    out = _fb(kern, logB, _offsets([T]), start, trans)
    np.testing.assert_allclose(out["loglik"][0], -1000.0 * T, rtol=1e-14)
    np.testing.assert_array_equal(out["gamma"][:, 0], 1.0)
    np.testing.assert_allclose(out["xi"], [[T - 1, 0], [0, 0]])


@pytest.mark.skipif(not OTHER_BACKENDS, reason="only the numpy reference is available")
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
def test_lockstep_batches_match_reference_on_hard_cases(backend):
    """Sequences that share a lock-step batch (numba runs four at a time) but
    end at different frames, need the exact-shift redo, are impossible from the
    start or become impossible mid-way, or have weight 0: each gets the
    reference's result, and its neighbours are unaffected."""
    kern = get_hmm_kernels(backend).hmm
    rng = np.random.default_rng(11)
    K = 3
    start = np.array([1.0, 0.0, 0.0])
    trans = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]])  # left-right
    lengths = [7, 1, 12, 5, 9, 3, 8, 2, 6]  # 9 sequences: two batches of 4 and one alone
    offsets = _offsets(lengths)
    logB = rng.normal(scale=2.0, size=(sum(lengths), K))
    lo = offsets[:-1]
    logB[lo[1]] = -np.inf  # sequence 1: nothing possible (impossible from the start)
    logB[lo[2] : lo[2] + 4] = [-1000.0, 0.0, 0.0]  # sequence 2: state 0 far below: redo
    logB[lo[4] + 1] = [-np.inf, -np.inf, 0.0]  # sequence 4: state 2 unreachable at frame 1
    logB[lo[6] : lo[6] + 8] += -5000.0  # sequence 6: every exp underflows
    w = rng.uniform(0.5, 2.0, size=len(lengths))
    w[5] = 0.0
    a, b = _fb(kern, logB, offsets, start, trans, w), _fb(ref, logB, offsets, start, trans, w)
    assert a["loglik"][1] == -np.inf and a["loglik"][4] == -np.inf
    assert np.isfinite(a["loglik"][[0, 2, 3, 5, 6, 7, 8]]).all()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-13, err_msg=name)
    # A sequence's result does not depend on its batch: alone, it gives the same.
    for s in (0, 2, 6):
        one = _fb(kern, logB[lo[s] : offsets[s + 1]], _offsets([lengths[s]]), start, trans)
        np.testing.assert_allclose(one["loglik"][0], a["loglik"][s], rtol=1e-13)
        np.testing.assert_allclose(one["gamma"], a["gamma"][lo[s] : offsets[s + 1]], rtol=1e-12)


@pytest.mark.skipif(not OTHER_BACKENDS, reason="only the numpy reference is available")
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("lengths", [[6], [5, 4, 7, 3, 6]])
def test_sequence_alone_impossible_mid_way(backend, lengths):
    """A sequence that runs alone (numba: the last one after the lock-step
    batches, whose emissions are computed before its recursion) with an
    impossible frame in its middle: log-likelihood -inf, zero posteriors,
    filtered probabilities and counts; the other sequences as the reference."""
    kern = get_hmm_kernels(backend).hmm
    rng = np.random.default_rng(5)
    K = 3
    offsets = _offsets(lengths)
    logB = rng.normal(scale=2.0, size=(offsets[-1], K))
    bad = offsets[-2] + 3  # frame 3 of the last sequence
    logB[bad] = -np.inf
    start, trans = _model(rng, K)
    w = np.ones(len(lengths))
    a, b = _fb(kern, logB, offsets, start, trans, w), _fb(ref, logB, offsets, start, trans, w)
    assert a["loglik"][-1] == -np.inf
    np.testing.assert_array_equal(a["gamma"][offsets[-2] :], 0.0)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-13, err_msg=name)
    filt, ll = np.empty_like(logB), np.empty(len(lengths))
    kern.forward_filter(logB, offsets, start, trans, filt, ll)
    assert ll[-1] == -np.inf
    np.testing.assert_array_equal(filt[offsets[-2] :], 0.0)
    np.testing.assert_allclose(ll[:-1], b["loglik"][:-1], rtol=1e-12)


@st.composite
def _problems(draw):
    K = draw(st.integers(1, 4))
    D = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, 12), min_size=1, max_size=6))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    zeros = draw(st.booleans())
    return K, D, lengths, dtype, seed, zeros


@pytest.mark.skipif(not OTHER_BACKENDS, reason="only the numpy reference is available")
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@settings(max_examples=15)
@given(problem=_problems())
def test_backend_matches_reference(backend, problem):
    K, D, lengths, dtype, seed, zeros = problem
    kern = get_hmm_kernels(backend).hmm
    rng = np.random.default_rng(seed)
    offsets = _offsets(lengths)
    N = sum(lengths)
    logB = rng.normal(scale=3.0, size=(N, K))
    start, trans = _model(rng, K, zeros)
    w = rng.uniform(0.1, 3.0, size=len(lengths))
    a, b = _fb(kern, logB, offsets, start, trans, w), _fb(ref, logB, offsets, start, trans, w)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-13, err_msg=name)

    filt_a, filt_b = np.empty_like(logB), np.empty_like(logB)
    ll_a, ll_b = np.empty(len(lengths)), np.empty(len(lengths))
    kern.forward_filter(logB, offsets, start, trans, filt_a, ll_a)
    ref.forward_filter(logB, offsets, start, trans, filt_b, ll_b)
    np.testing.assert_allclose(filt_a, filt_b, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ll_a, ll_b, rtol=1e-12)

    with np.errstate(divide="ignore"):
        ls, lt = np.log(start), np.log(trans)
    path_a, path_b = np.empty(N, dtype=np.int64), np.empty(N, dtype=np.int64)
    lp_a, lp_b = np.empty(len(lengths)), np.empty(len(lengths))
    kern.viterbi(logB, offsets, ls, lt, path_a, lp_a)
    ref.viterbi(logB, offsets, ls, lt, path_b, lp_b)
    np.testing.assert_array_equal(path_a, path_b)
    np.testing.assert_allclose(lp_a, lp_b, rtol=1e-12)

    X = rng.normal(loc=100.0, size=(N, D)).astype(dtype)
    shift = rng.normal(loc=100.0, size=(K, D))
    row_w = np.repeat(w, lengths)
    for name, shape in (("moments_diag", (K, D)), ("moments_full", (K, D, D))):
        res = []
        for module in (kern, ref):
            nk, sx, sxx = np.empty(K), np.empty((K, D)), np.empty(shape)
            getattr(module, name)(X, a["gamma"], row_w, shift, nk, sx, sxx)
            res.append((nk, sx, sxx))
        for u, v in zip(*res, strict=True):
            np.testing.assert_allclose(u, v, rtol=1e-9, atol=1e-9, err_msg=name)


@pytest.mark.skipif("numba" not in available_hmm_backends(), reason="needs numba")
def test_numba_bit_identical_on_any_thread_count():
    import numba

    kern = get_hmm_kernels("numba").hmm
    rng = np.random.default_rng(5)
    lengths = rng.integers(1, 60, size=70)
    offsets = _offsets(lengths)
    N, K, D = int(lengths.sum()), 5, 3
    logB = rng.normal(scale=3.0, size=(N, K))
    start, trans = _model(rng, K)
    w = rng.uniform(0.5, 2.0, size=lengths.size)
    X = rng.normal(size=(N, D))
    shift = rng.normal(size=(K, D))
    before = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            out = _fb(kern, logB, offsets, start, trans, w)
            nk, sx, sxx = np.empty(K), np.empty((K, D)), np.empty((K, D, D))
            kern.moments_full(X, out["gamma"], np.repeat(w, lengths), shift, nk, sx, sxx)
            results.append([*out.values(), nk, sx, sxx])
    finally:
        numba.set_num_threads(before)
    for a, b in zip(results[0], results[-1], strict=True):
        np.testing.assert_array_equal(a, b)


def _all_numba_outputs(kern, rng_seed=8):
    """Every numba HMM kernel's outputs on one problem with several sequence
    groups and row chunks (about 5000 rows)."""
    rng = np.random.default_rng(rng_seed)
    lengths = rng.integers(1, 150, size=70)
    offsets = _offsets(lengths)
    N, K, D = int(lengths.sum()), 5, 3
    logB = rng.normal(scale=3.0, size=(N, K))
    start, trans = _model(rng, K)
    w = rng.uniform(0.5, 2.0, size=lengths.size)
    out = list(_fb(kern, logB, offsets, start, trans, w).values())
    filt, ll = np.empty((N, K)), np.empty(lengths.size)
    kern.forward_filter(logB, offsets, start, trans, filt, ll)
    path, lp = np.empty(N, dtype=np.int64), np.empty(lengths.size)
    kern.viterbi(logB, offsets, np.log(start), np.log(trans), path, lp)
    out += [filt, ll, path, lp]
    row_w = np.repeat(w, lengths)
    shift = rng.normal(size=(K, D))
    for dtype in (np.float64, np.float32):
        X = rng.normal(size=(N, D)).astype(dtype)
        for fn, sxx in ((kern.moments_full, np.empty((K, D, D))), (kern.moments_diag, None)):
            sxx = np.empty((K, D)) if sxx is None else sxx
            nk, sx = np.empty(K), np.empty((K, D))
            fn(X, out[0], row_w, shift, nk, sx, sxx)
            out += [nk, sx, sxx]
    comp = rng.normal(scale=5.0, size=(N, K * 2))
    state, post = np.empty((N, K)), np.empty((N, K * 2))
    kern.gmm_state_logprob(comp, 2, state)
    kern.gmm_posteriors(comp, 2, state, out[0], row_w, post)
    return out + [state, post]


def _splitter(n_threads, calls):
    """A stand-in for ``run_chunks`` that splits the chunks into ``n_threads``
    contiguous ranges, as it does on that many threads, and runs them on real
    threads (recording the ranges)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(kernel, n_iter, *args):
        nt = min(n_threads, n_iter)
        bounds = [t * n_iter // nt for t in range(nt + 1)]
        calls.append(nt)
        with ThreadPoolExecutor(max_workers=nt) as pool:
            futures = [pool.submit(kernel, bounds[t], bounds[t + 1], *args) for t in range(nt)]
            for f in futures:
                f.result()

    return run


@pytest.mark.skipif("numba" not in available_hmm_backends(), reason="needs numba")
def test_numba_kernels_bit_identical_for_1_2_3_5_threads(monkeypatch):
    """The kernels' split of their sequence groups / row chunks over 1, 2, 3 or 5
    threads (this machine's pool may have fewer, so the split is imposed by
    replacing ``run_chunks``) gives the same bits."""
    mod = get_hmm_kernels("numba").hmm
    monkeypatch.setattr(mod, "SMALL_WORK", 0)  # every pass through run_chunks
    results = {}
    for threads in (1, 2, 3, 5):
        calls = []
        monkeypatch.setattr(mod, "run_chunks", _splitter(threads, calls))
        results[threads] = _all_numba_outputs(mod)
        assert max(calls) == threads  # the split really happened
    for threads in (2, 3, 5):
        for a, b in zip(results[1], results[threads], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=f"{threads} threads")
    # Negative control: groups that followed the thread count (a group per
    # thread) would change the summation order, and the comparison sees it.
    monkeypatch.setattr(mod, "run_chunks", _splitter(1, []))
    monkeypatch.setattr(mod, "_seq_chunks", lambda n: 3)
    monkeypatch.setattr(mod, "_row_chunks", lambda n, f=0: 3)
    changed = _all_numba_outputs(mod)
    assert any(not np.array_equal(a, b) for a, b in zip(results[1], changed, strict=True))


@pytest.mark.skipif(not OTHER_BACKENDS, reason="only the numpy reference is available")
@pytest.mark.parametrize("backend", OTHER_BACKENDS)
@pytest.mark.parametrize("n_mix", [1, 3])
def test_gmm_kernels_match_reference(backend, n_mix):
    kern = get_hmm_kernels(backend).hmm
    rng = np.random.default_rng(6)
    N, K = 50, 3
    comp = rng.normal(scale=5.0, size=(N, K * n_mix)) - 300.0
    comp[3, :n_mix] = -np.inf  # state 0 impossible at frame 3
    comp[5, n_mix : 2 * n_mix] -= 2000.0  # state 1 far below the row's best: exp underflows
    if n_mix > 1:
        comp[7, 0] = -np.inf  # one impossible component of a possible state
    comp[9, :] = -np.inf  # nothing possible at frame 9
    gamma = rng.dirichlet(np.ones(K), size=N)
    gamma[3, 0] = 0.0
    gamma[9, :] = 0.0  # a frame where nothing is possible has no posterior
    row_w = rng.uniform(0.5, 2.0, size=N)
    results = []
    for module in (kern, ref):
        state, post = np.empty((N, K)), np.empty((N, K * n_mix))
        module.gmm_state_logprob(comp, n_mix, state)
        module.gmm_posteriors(comp, n_mix, state, gamma, row_w, post)
        results.append((state, post))
    assert np.isfinite(results[0][0][5, 1]) and results[0][0][5, 1] < -2000.0
    assert (results[0][0][9] == -np.inf).all() and results[0][0][3, 0] == -np.inf
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-13)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-300)
    # the component posteriors of a state sum to its weighted posterior
    sums = results[1][1].reshape(N, K, n_mix).sum(axis=2)
    np.testing.assert_allclose(sums, gamma * row_w[:, None], rtol=1e-12)


@pytest.mark.skipif("numba" not in available_hmm_backends(), reason="needs numba")
def test_log64_within_one_ulp_of_numpy():
    """The vectorizable log of the numba HMM kernels, over the positive normal
    numbers (its domain): random exponents, the [sqrt(2)/2, sqrt(2)) reduction
    boundaries, the ends of the range and values next to 1."""
    from numba import njit

    log64 = get_hmm_kernels("numba").hmm.log64

    @njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = log64(x[i])

    rng = np.random.default_rng(12)
    r2 = np.sqrt(2.0)
    x = np.concatenate(
        [
            10.0 ** rng.uniform(-307, 308, 20000),
            rng.uniform(0.5, 2.0, 20000),
            [1.0, 2.0, 0.5, r2, np.nextafter(r2, 3), np.nextafter(r2, 0), r2 / 2],
            [np.finfo(float).tiny, np.finfo(float).max, 1e-250, 1 + 2e-16, 1 - 1e-16],
        ]
    )
    out = np.empty_like(x)
    apply(x, out)
    ref = np.log(x)
    assert out[x == 1.0][0] == 0.0
    nonzero = ref != 0
    ulps = np.abs(out - ref)[nonzero] / np.spacing(np.abs(ref[nonzero]))
    assert ulps.max() <= 1.0
