"""The numba kernels' 64-byte-aligned scratch (``fastem.backends._numba._empty_aligned``).

Alignment is a speed matter only (a vector load from a 32-byte boundary spans two
cache lines); what must hold:

* the helper returns arrays of the requested size and dtype whose data, and every
  row of a ``(rows, cols)`` reshape with 64-byte rows, starts on a 64-byte boundary;
* results do not depend on alignment: a chunk kernel recompiled with scratch placed
  on 32-byte (not 64-byte) boundaries, as Numba's ``np.empty`` may place it, gives
  the same bits, and so does input ``X`` at any 8-byte offset.
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

numba = pytest.importorskip("numba")
nb = pytest.importorskip("fastem.backends._numba")


@numba.njit(cache=False)
def _allocate(size, rows, cols, like):
    """Addresses of a 1-D and a reshaped ``(rows, cols)`` scratch of ``like``'s dtype,
    and their sizes."""
    a = nb._empty_aligned(size, like.dtype)
    b = nb._empty_aligned(rows * cols, like.dtype).reshape((rows, cols))
    starts = np.empty(rows, dtype=np.int64)
    for i in range(rows):
        starts[i] = b[i].ctypes.data
    return a.ctypes.data, a.size, a.itemsize, starts, b.size


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 5000),
    rows=st.integers(1, 70),
    lines=st.integers(1, 8),
    f32=st.booleans(),
)
def test_empty_aligned_is_64_byte_aligned(size, rows, lines, f32):
    itemsize = 4 if f32 else 8
    cols = lines * 64 // itemsize  # rows of whole 64-byte lines, as the kernels' blocks
    like = np.empty(0, np.float32 if f32 else np.float64)
    addr, n, item, starts, n2 = _allocate(size, rows, cols, like)
    assert (n, item, n2) == (size, itemsize, rows * cols)
    assert addr % 64 == 0
    assert np.all(starts % 64 == 0)


def _misaligned_kernel(kernel):
    """``kernel`` recompiled with its ``_empty_aligned`` scratch starting 32 bytes past
    a 64-byte boundary (negative control of the bit-identity below: it is the layout
    Numba's own ``np.empty`` may give)."""

    @numba.njit(nogil=True)
    def off32(size, dtype):
        buf = np.empty(size + 64, dtype=dtype)
        it = buf.itemsize
        off = (-np.int64(buf.ctypes.data // it)) & (64 // it - 1)
        off += 32 // it
        return buf[off : off + size]

    py = kernel.py_func
    glb = dict(py.__globals__)
    glb["_empty_aligned"] = off32
    fn = types.FunctionType(py.__code__, glb, py.__name__, py.__defaults__, py.__closure__)
    return numba.njit(nogil=True, fastmath=nb._FASTMATH)(fn), off32


def _problem(n, d, k, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 1.5 + 0.5
    w = rng.uniform(0.1, 3.0, n)
    means = X[rng.integers(0, n, k)] + 0.3 * rng.standard_normal((k, d))
    a = np.triu(rng.standard_normal((k, d, d)) * 0.2)
    a[:, np.arange(d), np.arange(d)] = rng.uniform(0.5, 1.5, (k, d))
    logdet = np.log(np.diagonal(a, axis1=1, axis2=2)).sum(axis=1)
    cc = np.log(np.full(k, 1.0 / k)) + logdet - 0.5 * d * np.log(2 * np.pi)
    return X, w, means, a, cc


def _run(kernel, X, w, means, prec, cc, sxx_shape):
    n = X.shape[0]
    k, d = means.shape
    nc = 8
    ll_p, nk_p, sx_p = np.zeros(nc), np.zeros((nc, k)), np.zeros((nc, k, d))
    sxx_p = np.zeros((nc, *sxx_shape))
    out = np.empty((0, k))
    kernel(0, nc, nc, X, w, means, prec, cc, ll_p, nk_p, sx_p, sxx_p, out, True)
    lp = np.empty((n, k))
    kernel(0, nc, nc, X, w, means, prec, cc, *nb._no_partials(len(sxx_shape) + 1), lp, False)
    return ll_p, nk_p, sx_p, sxx_p, lp


@pytest.mark.parametrize("name", ["_chunks_full", "_chunks_diag"])
def test_misaligned_scratch_same_bits(name):
    """The full (tiled, d = 13: every tile remainder path) and diagonal kernels with
    scratch on 32-byte boundaries give the bits of the aligned ones, on short last
    blocks too (n not a multiple of the block)."""
    kernel = getattr(nb, name)
    mis, off32 = _misaligned_kernel(kernel)
    assert off32(100, np.float64).ctypes.data % 64 == 32  # the control is misaligned
    X, w, means, prec, cc = _problem(3001, 13, 5)
    if name == "_chunks_diag":
        prec = np.ascontiguousarray(np.diagonal(prec, axis1=1, axis2=2))
        sxx_shape = (5, 13)
    else:
        sxx_shape = (5, 13, 13)
    a = _run(kernel, X, w, means, prec, cc, sxx_shape)
    b = _run(mis, X, w, means, prec, cc, sxx_shape)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("ct", ["full", "diag", "tied"])
def test_input_alignment_same_bits(ct):
    """``X`` starting 8, 16, ..., 56 bytes past a 64-byte boundary: the same pass."""
    X0, w, means, prec, cc = _problem(2500, 9, 4, seed=1)
    k, d = means.shape
    results = []
    for shift in range(8):
        buf = np.empty(X0.size + 16)
        start = (-(buf.ctypes.data // 8)) % 8 + shift
        X = buf[start : start + X0.size].reshape(X0.shape)
        X[...] = X0
        assert X.ctypes.data % 64 == 8 * shift
        nk, sx = np.empty(k), np.empty((k, d))
        if ct == "full":
            sxx = np.empty((k, d, d))
            ll = nb.em_pass_full(X, w, means, prec, cc, nk, sx, sxx)
        elif ct == "diag":
            sxx = np.empty((k, d))
            dp = np.ascontiguousarray(np.diagonal(prec, axis1=1, axis2=2))
            ll = nb.em_pass_diag(X, w, means, dp, cc, nk, sx, sxx)
        else:
            sxx = np.empty((d, d))
            ll = nb.em_pass_tied(X, w, means, prec[0], cc, nk, sx, sxx)
        results.append((np.array([ll]), nk, sx, sxx))
    for r in results[1:]:
        for u, v in zip(results[0], r, strict=True):
            np.testing.assert_array_equal(u, v)
