"""The fused E-step of diagonal-Gaussian HMMs (``fastem.hmm._backend.estep_diag``):
the numba kernel against the fallback composed of the contract kernels (numba's
and the NumPy reference's), under hypothesis over shapes (lengths including 1,
K = 1, zero sequence weights, structural zeros, frames that need the exact-shift
redo); the same bits on any thread split; whole fits against the reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastem.hmm import _backend
from fastem.hmm._backend import HMMKernels, available_hmm_backends, get_hmm_kernels

HAS_NUMBA = "numba" in available_hmm_backends()
needs_numba = pytest.mark.skipif(not HAS_NUMBA, reason="needs numba")
OUTPUTS = ("loglik", "xi", "start", "nk", "sx", "sxx")


class _Without:
    """A kernel module seen without its optional entries (the fallback path)."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        if name == "estep_diag":
            raise AttributeError(name)
        return getattr(self._module, name)


def _unfused(name: str) -> HMMKernels:
    k = get_hmm_kernels(name)
    return HMMKernels(name, _Without(k.hmm), k.mixture)


def _problem(rng, lengths, K, D, zeros=False, outlier=False):
    lengths = np.asarray(lengths, dtype=np.int64)
    S, N = lengths.size, int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    means = rng.normal(scale=3.0, size=(K, D))
    pc = rng.uniform(0.5, 2.0, size=(K, D))
    comp_const = np.log(pc).sum(axis=1) - 0.5 * D * np.log(2 * np.pi)
    X = means[rng.integers(K, size=N)] + rng.normal(size=(N, D))
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), size=K)
    if zeros and K > 1:  # left-right: structural zeros below the diagonal
        trans = np.triu(trans)
        trans /= trans.sum(axis=1, keepdims=True)
        start = np.zeros(K)
        start[0] = 1.0
    if outlier:
        # A frame far from every mean, and states whose shifted emissions
        # underflow where the predicted mass is: the exact-shift redo.
        pc[0] = 40.0
        comp_const = np.log(pc).sum(axis=1) - 0.5 * D * np.log(2 * np.pi)
        X[offsets[:-1][lengths > 1] + 1] += 30.0
    seq_weight = rng.uniform(0.0, 2.0, size=S)
    seq_weight[rng.uniform(size=S) < 0.2] = 0.0
    shift = means + rng.normal(scale=0.1, size=(K, D))
    args = (X, offsets, means, pc, comp_const, start, trans, seq_weight)
    return args, np.repeat(seq_weight, lengths), shift


def _estep(kernels, args, row_weight, shift):
    offsets = args[1]
    K, D = args[2].shape
    out = dict(
        loglik=np.empty(offsets.size - 1), xi=np.empty((K, K)), start=np.empty(K),
        nk=np.empty(K), sx=np.empty((K, D)), sxx=np.empty((K, D)),
    )  # fmt: skip
    _backend.estep_diag(kernels, *args, row_weight, shift, *(out[n] for n in OUTPUTS))
    return out


def _assert_close(a, b, rtol=1e-10):
    for name in OUTPUTS:
        np.testing.assert_allclose(a[name], b[name], rtol=rtol, atol=1e-9, err_msg=name)


@pytest.fixture
def always_fused(monkeypatch):
    """The fused kernel for every shape (it declines fewer than 8 batches)."""
    mod = get_hmm_kernels("numba").hmm
    monkeypatch.setattr(mod, "FUSED_MIN_BATCHES", 1)
    return mod


def test_fallback_equals_the_contract_kernels_in_turn():
    """Without a fused kernel, estep_diag is log_prob_diag, forward_backward and
    moments_diag, bit for bit (NumPy reference, so this runs without numba)."""
    rng = np.random.default_rng(0)
    args, row_w, shift = _problem(rng, [5, 1, 12, 7], K=3, D=2)
    kern = get_hmm_kernels("numpy")
    got = _estep(_unfused("numpy"), args, row_w, shift)
    X, offsets, means, pc, cc, start, trans, w = args
    logB = np.empty((X.shape[0], 3))
    kern.mixture.log_prob_diag(X, means, pc, cc, logB)
    gamma, ll, xi, st0 = np.empty_like(logB), np.empty(4), np.empty((3, 3)), np.empty(3)
    kern.hmm.forward_backward(logB, offsets, start, trans, w, gamma, ll, xi, st0)
    nk, sx, sxx = np.empty(3), np.empty((3, 2)), np.empty((3, 2))
    kern.hmm.moments_diag(X, gamma, row_w, shift, nk, sx, sxx)
    want = dict(loglik=ll, xi=xi, start=st0, nk=nk, sx=sx, sxx=sxx)
    for name in OUTPUTS:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@needs_numba
@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 25), min_size=1, max_size=30),
    K=st.integers(1, 7),
    D=st.integers(1, 4),
    zeros=st.booleans(),
    outlier=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_fused_matches_fallbacks(lengths, K, D, zeros, outlier, seed):
    mod = get_hmm_kernels("numba").hmm
    before = mod.FUSED_MIN_BATCHES
    mod.FUSED_MIN_BATCHES = 1  # (hypothesis and function-scoped fixtures do not mix)
    try:
        args, row_w, shift = _problem(np.random.default_rng(seed), lengths, K, D, zeros, outlier)
        fused = _estep(get_hmm_kernels("numba"), args, row_w, shift)
    finally:
        mod.FUSED_MIN_BATCHES = before
    _assert_close(fused, _estep(_unfused("numba"), args, row_w, shift))
    _assert_close(fused, _estep(_unfused("numpy"), args, row_w, shift), rtol=1e-9)


@needs_numba
@pytest.mark.parametrize(
    ("n_sequences", "K"),
    [(300, 3), (12, 65)],  # groups of several batches; K > LANES_MAX_K: one sequence a batch
)
def test_fused_matches_fallback_on_many_groups_and_large_k(n_sequences, K, always_fused):
    rng = np.random.default_rng(K)
    args, row_w, shift = _problem(rng, rng.integers(1, 12, size=n_sequences), K, D=2)
    _assert_close(
        _estep(get_hmm_kernels("numba"), args, row_w, shift),
        _estep(_unfused("numba"), args, row_w, shift),
    )


@needs_numba
def test_fused_runs_and_detects_a_changed_input(always_fused):
    """The comparison above is not vacuous: the fused kernel really runs (it
    reports True) and one sequence's weight changed moves its statistics."""
    args, row_w, shift = _problem(np.random.default_rng(3), [9, 4, 1, 30, 2, 8], K=4, D=3)
    K, D = 4, 3
    outs = [
        np.empty(6),
        np.empty((K, K)),
        np.empty(K),
        np.empty(K),
        np.empty((K, D)),
        np.empty((K, D)),
    ]
    assert always_fused.estep_diag(*args, row_w, shift, *outs) is True
    ref = _estep(_unfused("numba"), args, row_w, shift)
    row_w2 = row_w.copy()
    row_w2[13:14] += 0.5  # frame 0 of sequence 2 (length 1)
    changed = _estep(get_hmm_kernels("numba"), args, row_w2, shift)
    with pytest.raises(AssertionError):
        _assert_close(changed, ref)


@needs_numba
def test_fused_declines_few_batches():
    """One long sequence is one batch: the separate kernels (parallel over rows) run."""
    mod = get_hmm_kernels("numba").hmm
    args, row_w, shift = _problem(np.random.default_rng(4), [300], K=3, D=2)
    outs = [
        np.empty(1),
        np.empty((3, 3)),
        np.empty(3),
        np.empty(3),
        np.empty((3, 2)),
        np.empty((3, 2)),
    ]
    assert mod.estep_diag(*args, row_w, shift, *outs) is False
    _assert_close(_estep(get_hmm_kernels("numba"), args, row_w, shift),
                  _estep(_unfused("numpy"), args, row_w, shift), rtol=1e-9)  # fmt: skip


@needs_numba
def test_fused_bit_identical_for_1_2_3_5_threads(monkeypatch, always_fused):
    """1, 2, 3 or 5 real threads claiming the groups from the shared counter
    (the dynamic schedule; ``run_dynamic`` replaced so the count is not capped
    by this machine's pool) give the same bits, on every one of several
    repeats; groups that followed the thread count would not (negative
    control)."""
    from concurrent.futures import ThreadPoolExecutor

    mod = always_fused
    monkeypatch.setattr(mod, "SMALL_WORK", 0)

    def on_threads(n_threads, calls):
        def run(kernel, n_iter, *a):
            calls.append(n_threads)
            with ThreadPoolExecutor(max_workers=n_threads) as pool:
                fs = [pool.submit(kernel, 0, n_iter, *a) for _ in range(n_threads)]
                for f in fs:
                    f.result()

        return run

    rng = np.random.default_rng(9)
    args, row_w, shift = _problem(rng, rng.integers(1, 60, size=70), K=5, D=3, outlier=True)
    monkeypatch.setattr(mod, "run_dynamic", on_threads(1, []))
    one = _estep(get_hmm_kernels("numba"), args, row_w, shift)
    for threads in (2, 3, 5):
        for _ in range(3):
            calls = []
            monkeypatch.setattr(mod, "run_dynamic", on_threads(threads, calls))
            got = _estep(get_hmm_kernels("numba"), args, row_w, shift)
            assert calls == [threads]
            for name in OUTPUTS:
                np.testing.assert_array_equal(one[name], got[name], err_msg=f"{threads}: {name}")

    # Negative controls: threads that do not share the counter (each runs every
    # group) double the counts; groups that followed the thread count change
    # the order of the sums.
    def own_counters(kernel, n_iter, counter, *a):
        for _ in range(2):  # one after the other: no race on the partials
            kernel(0, n_iter, counter.copy(), *a)

    monkeypatch.setattr(mod, "run_dynamic", own_counters)
    doubled = _estep(get_hmm_kernels("numba"), args, row_w, shift)
    np.testing.assert_allclose(doubled["nk"], 2 * one["nk"], rtol=1e-12)
    monkeypatch.setattr(mod, "run_dynamic", on_threads(1, []))
    monkeypatch.setattr(mod, "_seq_chunks", lambda n: 3)
    changed = _estep(get_hmm_kernels("numba"), args, row_w, shift)
    assert any(not np.array_equal(one[n], changed[n]) for n in OUTPUTS)


@needs_numba
def test_fused_on_this_machines_threads_matches_one_thread():
    """The real pool (``run_dynamic``) on every thread this machine has, against
    one thread: the same bits, repeatedly (a group claimed twice or never would
    change the sums)."""
    import numba

    rng = np.random.default_rng(10)
    args, row_w, shift = _problem(rng, rng.integers(20, 80, size=200), K=6, D=2)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = _estep(get_hmm_kernels("numba"), args, row_w, shift)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        for _ in range(5):
            got = _estep(get_hmm_kernels("numba"), args, row_w, shift)
            for name in OUTPUTS:
                np.testing.assert_array_equal(one[name], got[name], err_msg=name)
    finally:
        numba.set_num_threads(before)


@needs_numba
@pytest.mark.parametrize("covariance_type", ["diag", "spherical"])
def test_fit_through_the_fused_step_matches_the_reference(covariance_type, monkeypatch):
    """A fit with 40 sequences (the fused kernel's shape) equals the NumPy
    backend's fit, and the fused kernel is what ran."""
    from fastem.hmm import GaussianHMM

    mod = get_hmm_kernels("numba").hmm
    calls = []
    fused = mod.estep_diag
    monkeypatch.setattr(mod, "estep_diag", lambda *a: calls.append(1) or fused(*a))
    rng = np.random.default_rng(11)
    lengths = rng.integers(1, 30, size=40)
    X = rng.normal(size=(int(lengths.sum()), 2)) + 3.0 * rng.integers(
        3, size=(int(lengths.sum()), 1)
    )
    w = rng.uniform(0.5, 2.0, size=40)
    fits = {}
    for backend in ("numba", "numpy"):
        m = GaussianHMM(3, covariance_type, n_iter=4, random_state=0, backend=backend)
        fits[backend] = m.fit(X, lengths, sample_weight=w)
    assert len(calls) == 4  # one fused E-step per iteration
    a, b = fits["numba"], fits["numpy"]
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(a.monitor_.history, b.monitor_.history, rtol=1e-11)
