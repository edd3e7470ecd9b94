"""The lone sequence's pass as a pipeline (numba backend): the recursions wait
for a chunk's emissions only as they reach it, the posterior chunks run from
the last one down behind the backward recursion. Same bits on any number of
claiming threads; impossible frames wherever they are; the progress counts
that the items wait on."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import hmm_forward_backward, hmm_start_trans
from test_hmm_long_sequence import _threads

numba = pytest.importorskip("numba")
nh = pytest.importorskip("fastem.backends._numba_hmm")


def _fb(logB, start, trans, w=0.7):
    offsets = np.array([0, logB.shape[0]], dtype=np.int64)
    return hmm_forward_backward(nh, logB, offsets, start, trans, np.array([w]))


def _problem(T, K, seed=5):
    rng = np.random.default_rng(seed)
    start, trans = hmm_start_trans(rng, K, 0.2)
    return rng.normal(scale=4.0, size=(T, K)), start, trans


@pytest.mark.parametrize("T", [1, 2, 1500, 5000, 7777])
def test_pipeline_same_bits_on_any_thread_count(monkeypatch, T):
    """Chunk counts 1 to 7 (odd and even: the emission items take the ends
    first), 1, 2, 3 and 5 claiming threads: the same bits."""
    logB, start, trans = _problem(T, 6)
    outs = []
    for n in (1, 2, 3, 5):
        monkeypatch.setattr(nh, "run_dynamic", _threads(n, []))
        outs.append(_fb(logB, start, trans))
    for other in outs[1:]:
        for name in other:
            np.testing.assert_array_equal(other[name], outs[0][name], err_msg=name)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("where", ["first", "last", "boundary", "two"])
def test_impossible_frame_anywhere(monkeypatch, threads, where):
    """An impossible frame reached first by the forward (frame 0), first by the
    backward (the last frame), at a chunk's first frame, or two of them: the
    recursions run on (their values unused), the sequence is impossible."""
    T = 5000
    logB, start, trans = _problem(T, 4)
    nc = nh._row_chunks(T)
    rows = {
        "first": [0],
        "last": [T - 1],
        "boundary": [nh._chunk_bounds(T, nc, 3)[0]],
        "two": [10, T - 10],
    }[where]
    logB[rows] = -np.inf
    monkeypatch.setattr(nh, "run_dynamic", _threads(threads, []))
    out = _fb(logB, start, trans)
    assert out["loglik"][0] == -np.inf
    for name in ("gamma", "xi", "start"):
        np.testing.assert_array_equal(out[name], 0.0, err_msg=name)
    again = _fb(np.nan_to_num(logB, neginf=0.0), start, trans)  # the workspace is reusable
    assert np.isfinite(again["loglik"][0])


def test_backward_counts_each_chunk_once():
    """The backward publishes each chunk (last one first) exactly once, after
    waiting for every chunk's emissions flag; an early stop (its scale
    underflows) publishes fewer, and the item tops the count up."""
    T, K = 5000, 3
    nc = nh._row_chunks(T)
    rng = np.random.default_rng(0)
    b = rng.random((T, K)) + 0.1
    trans = rng.dirichlet(np.ones(K), size=K)
    be = np.empty((T, K))
    counter = np.zeros(nh._READY + nc, dtype=np.int64)
    counter[nh._READY :] = 1  # every chunk's emissions done
    nh._lone_backward(trans, b, be, counter, nc)
    assert counter[5] == nc
    b[2000] = 0.0  # the scale underflows at frame 2000: stops there
    counter[5] = 0
    nh._lone_backward(trans, b, be, counter, nc)
    published = nc - 2000 * nc // T  # the chunks from frame 2000 up (be[2000] written)
    assert counter[5] == published
    np.testing.assert_array_equal(be[:2000], 0.0)
