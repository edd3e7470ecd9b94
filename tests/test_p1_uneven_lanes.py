"""Numba and Cython HMM batches of uneven lengths (one long sequence beside short ones) run
one sequence at a time instead of in lock-step lanes (which run every lane to
the longest one's end): the choice itself, and forward-backward and the fused
diagonal E-step on such batches against the NumPy reference, impossible
sequences (a frame no state can emit) and zero weights included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastem.hmm import _backend
from fastem.hmm._backend import available_hmm_backends, get_hmm_kernels

BACKENDS = [b for b in ("numba", "cython") if b in available_hmm_backends()]
OUTPUTS = ("loglik", "xi", "start", "nk", "sx", "sxx")


def _offsets(lengths):
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


def _hmm(backend="numba"):
    return get_hmm_kernels(backend).hmm


@pytest.mark.parametrize("backend", BACKENDS)
def test_lock_step_only_for_even_enough_batches(backend):
    mod = _hmm(backend)
    lock = mod._lock_step if backend == "numba" else mod._lock_step_py
    assert lock(_offsets([50, 50, 50, 50]), 0, 4)
    assert lock(_offsets([50, 20, 20, 10]), 0, 4)  # 100 frames >= 2 x 50
    assert not lock(_offsets([500, 1, 1, 1]), 0, 4)
    assert not lock(_offsets([50, 20, 20, 9]), 0, 4)  # 99 < 2 x 50
    assert not lock(_offsets([7]), 0, 1)  # a batch of one runs alone
    # the batch is the one named: sequences 4:8 here
    assert not lock(_offsets([5, 5, 5, 5, 300, 2, 2, 2]), 4, 4)
    assert lock(_offsets([5, 5, 5, 5, 300, 2, 2, 2]), 0, 4)


def _lengths(rng, n_batches, long):
    """Batches of four: each one long sequence and three short ones, in a
    shuffled position (so one-at-a-time order within a batch is exercised)."""
    out = []
    for _ in range(n_batches):
        batch = [long, *rng.integers(1, 4, size=3).tolist()]
        rng.shuffle(batch)
        out += batch
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=25, deadline=None)
@given(K=st.integers(1, 9), long=st.integers(12, 80), seed=st.integers(0, 2**31 - 1))
def test_forward_backward_on_uneven_batches_matches_reference(backend, K, long, seed):
    from fastem.hmm import _kernels_numpy as ref

    rng = np.random.default_rng(seed)
    lengths = _lengths(rng, 3, long)
    offsets = _offsets(lengths)
    S, N = len(lengths), int(sum(lengths))
    logB = rng.normal(scale=2.0, size=(N, K))
    if K > 1:
        logB[offsets[1] : offsets[2], 0] = -np.inf  # a state impossible in one sequence
    logB[offsets[5], :] = -np.inf  # an impossible sequence (probability 0)
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), size=K)
    w = rng.uniform(0.5, 2.0, size=S)
    got = [np.empty_like(logB), np.empty(S), np.empty((K, K)), np.empty(K)]
    want = [np.empty_like(logB), np.empty(S), np.empty((K, K)), np.empty(K)]
    _hmm(backend).forward_backward(logB, offsets, start, trans, w, *got)
    ref.forward_backward(logB, offsets, start, trans, w, *want)
    assert got[1][5] == -np.inf
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def _estep(kernels, args, row_w, shift):
    K, D = args[2].shape
    out = dict(
        loglik=np.empty(args[1].size - 1), xi=np.empty((K, K)), start=np.empty(K),
        nk=np.empty(K), sx=np.empty((K, D)), sxx=np.empty((K, D)),
    )  # fmt: skip
    _backend.estep_diag(kernels, *args, row_w, shift, *(out[n] for n in OUTPUTS))
    return out


@pytest.mark.parametrize("backend", BACKENDS)
@settings(max_examples=20, deadline=None)
@given(
    K=st.integers(1, 9),
    D=st.integers(1, 3),
    long=st.integers(12, 60),
    seed=st.integers(0, 2**31 - 1),
)
def test_fused_estep_on_uneven_batches_matches_reference(backend, K, D, long, seed):
    """Enough batches for the fused diagonal step; a sequence with a row far
    from every mean (probability 0 in float64) inside an uneven batch: its
    rows must add nothing to the moments."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(_lengths(rng, 10, long), dtype=np.int64)
    S, N = lengths.size, int(lengths.sum())
    offsets = _offsets(lengths)
    means = rng.normal(scale=3.0, size=(K, D))
    pc = rng.uniform(0.3, 2.0, size=(K, D))
    cc = np.log(pc).sum(axis=1) - 0.5 * D * np.log(2 * np.pi)
    X = means[rng.integers(K, size=N)] + rng.normal(size=(N, D))
    X[offsets[6]] = 1e200  # an impossible frame: sequence 6 has probability 0
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), size=K)
    w = rng.uniform(0.0, 2.0, size=S)
    w[rng.uniform(size=S) < 0.2] = 0.0
    shift = means + rng.normal(scale=0.1, size=(K, D))
    args = (X, offsets, means, pc, cc, start, trans, w)
    row_w = np.repeat(w, lengths)
    assert _hmm(backend).estep_diag(
        *args, row_w, shift, np.empty(S), np.empty((K, K)), np.empty(K),
        np.empty(K), np.empty((K, D)), np.empty((K, D)),
    )  # fmt: skip
    got = _estep(get_hmm_kernels(backend), args, row_w, shift)
    assert got["loglik"][6] == -np.inf
    # The reference on the data without sequence 6 (which adds nothing; the
    # reference itself would give 0 * inf = NaN in the moments on its rows).
    keep = np.ones(N, dtype=bool)
    keep[offsets[6] : offsets[7]] = False
    lengths_k, w_k = np.delete(lengths, 6), np.delete(w, 6)
    args_k = (X[keep], _offsets(lengths_k), *args[2:7], w_k)
    want = _estep(get_hmm_kernels("numpy"), args_k, np.repeat(w_k, lengths_k), shift)
    want["loglik"] = np.insert(want["loglik"], 6, -np.inf)
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-9, atol=1e-9, err_msg=name)
