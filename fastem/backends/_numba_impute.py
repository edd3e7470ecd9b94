"""Numba imputation kernel, re-exported by :mod:`fastem.backends._numba`.

``impute_missing_full`` has the signature and semantics of the NumPy
reference (the kernel contract in :mod:`fastem.backends._numpy`): each listed
row's missing coordinates get the responsibility-weighted conditional means.

Rows (already grouped by pattern) are split into contiguous chunks run in
parallel; inside a chunk each run of rows sharing a pattern gets its
regressions ``B_k = -inv(L_k[m, m]) L_k[m, o]`` once (a Cholesky factor of
``L_k[m, m]`` and two triangular solves per observed coordinate), never per
row. Every row is written by exactly one chunk and computed the same way
whichever chunk holds it, so the result does not depend on the thread count.
This is a one-pass, post-fit kernel: plain scalar loops suffice (the
per-pattern set-up costs about ``k (|m|^3 / 6 + |m|^2 |o|)`` flops).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _numba_cache  # noqa: F401  (registers the cache locator)
from ._numba_missing import _pattern

__all__ = ["impute_missing_full"]

# Rows per chunk: enough for per-chunk scratch and set-up to be negligible,
# small enough for the chunks to balance across threads.
_CHUNK_ROWS = 256


@njit(cache=True, nogil=True)
def _regressions(precisions, miss, nm, obs, no, chol, rhs, reg):
    """``reg[kk, i, a] = B_kk[i, a]``, the regression of missing coordinate
    ``miss[i]`` on observed coordinate ``obs[a]`` under component ``kk``."""
    k = precisions.shape[0]
    for kk in range(k):
        L = precisions[kk]
        for i in range(nm):  # chol: lower Cholesky factor of L[m, m]
            for j in range(i + 1):
                s = L[miss[i], miss[j]]
                for t in range(j):
                    s -= chol[i, t] * chol[j, t]
                if i == j:
                    chol[i, i] = math.sqrt(s)  # NaN unless L[m, m] is positive definite
                else:
                    chol[i, j] = s / chol[j, j]
        for a in range(no):  # solve chol chol^T b = -L[m, obs[a]]
            for i in range(nm):
                s = -L[miss[i], obs[a]]
                for t in range(i):
                    s -= chol[i, t] * rhs[t]
                rhs[i] = s / chol[i, i]
            for i in range(nm - 1, -1, -1):
                s = rhs[i]
                for t in range(i + 1, nm):
                    s -= chol[t, i] * rhs[t]
                rhs[i] = s / chol[i, i]
            for i in range(nm):
                reg[kk, i, a] = rhs[i]


@njit(cache=True, nogil=True)
def _impute_chunk(X, rows, pattern_ptr, means, precisions, resp, out, lo, hi):
    d = X.shape[1]
    k = means.shape[0]
    miss = np.empty(d, dtype=np.int64)
    obs = np.empty(d, dtype=np.int64)
    chol = np.empty((d, d))
    rhs = np.empty(d)
    reg = np.empty((k, d, d))
    yo = np.empty(d)
    acc = np.empty(d)
    p = max(np.searchsorted(pattern_ptr, lo, side="right") - 1, 0)
    pos = lo
    while pos < hi:
        while pattern_ptr[p + 1] <= pos:  # skip empty patterns
            p += 1
        end = min(pattern_ptr[p + 1], hi)
        nm, no = _pattern(X, rows[pos], miss, obs)
        if nm:
            _regressions(precisions, miss, nm, obs, no, chol, rhs, reg)
            for q in range(pos, end):
                i = rows[q]
                for t in range(nm):
                    acc[t] = 0.0
                for kk in range(k):
                    r = resp[i, kk]
                    if r == 0.0:
                        continue
                    for a in range(no):
                        yo[a] = np.float64(X[i, obs[a]]) - means[kk, obs[a]]
                    for t in range(nm):
                        v = means[kk, miss[t]]
                        for a in range(no):
                            v += reg[kk, t, a] * yo[a]
                        acc[t] += r * v
                for t in range(nm):
                    out[i, miss[t]] = acc[t]
        pos = end


@njit(cache=True, nogil=True)
def _impute_chunks(i0, i1, nc, X, rows, pattern_ptr, means, precisions, resp, out):
    """Chunks ``i0:i1`` of ``nc`` equal shares of ``rows[ptr[0]:ptr[-1]]``."""
    base = pattern_ptr[0]
    m = pattern_ptr[pattern_ptr.shape[0] - 1] - base
    for c in range(i0, i1):
        lo = base + c * m // nc
        hi = base + (c + 1) * m // nc
        if hi > lo:
            _impute_chunk(X, rows, pattern_ptr, means, precisions, resp, out, lo, hi)


def impute_missing_full(X, rows, pattern_ptr, means, precisions, resp, out):
    """Conditional-mean imputation of the listed rows (kernel contract)."""
    m = int(pattern_ptr[-1] - pattern_ptr[0])
    if m <= 0:
        return
    nc = (m + _CHUNK_ROWS - 1) // _CHUNK_ROWS
    run_chunks(_impute_chunks, nc, nc, X, rows, pattern_ptr, means, precisions, resp, out)


from ._numba import run_chunks  # noqa: E402  (after the kernels: _numba imports this module)
