"""Numba kernel of model-based agglomerative hierarchical clustering (VVV).

Same algorithm, tie-breaking and output as :func:`fastem._hc.hc_vvv_numpy`
(the NumPy implementation it is tested against, itself tested against a
brute-force reference that recomputes every cluster from its rows). The merge
criterion and its regularisation are documented in :mod:`fastem._hc`.

Each active cluster ``s`` (slot ``s`` = the smallest row index it holds) keeps
its weight ``n``, row count, mean, ``tr W``, its criterion term and an
upper-triangular factor ``R`` of its scatter ``W = R^T R``, grown by Givens
rotations (at most ``min(count - 1, p)`` nonzero rows). ``cost[a, b]`` caches
the change in criterion of merging ``a`` and ``b``; each row keeps its minimum
and where it is, so one merge costs one row of new costs plus rescans of the
rows whose minimum pointed at the merged pair. A new cost needs a determinant
only once the merged cluster has more than ``p`` rows; with the larger
cluster's scatter nonsingular it comes from the determinant lemma
(``O(p^2 r)`` for a partner of rank ``r - 1``, a singleton ``O(p^2)``), else
from a Givens update of the factor. Serial: the tree is built on a few
thousand rows at most, and a serial kernel compiles faster.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _numba_cache  # noqa: F401  (must precede the @njit definitions)

__all__ = ["hc_vvv"]


@njit(cache=True, nogil=True)
def _log_add(a, b):
    """``log(exp(a) + exp(b))``, with ``a = -inf`` allowed."""
    if a == -np.inf:
        return b
    hi = max(a, b)
    return hi + math.log1p(math.exp(min(a, b) - hi))


@njit(cache=True, nogil=True)
def _add_row(R, v, first):
    """Givens update of the upper-triangular ``R``: ``R^T R += v v^T``
    (``v`` is overwritten; its entries before ``first`` must be 0)."""
    p = R.shape[0]
    for a in range(first, p):
        va = v[a]
        if va == 0.0:
            continue
        h = math.hypot(R[a, a], va)
        cs = R[a, a] / h
        sn = va / h
        R[a, a] = h
        for b in range(a + 1, p):
            t = R[a, b]
            R[a, b] = cs * t + sn * v[b]
            v[b] = cs * v[b] - sn * t


@njit(cache=True, nogil=True)
def _diag_log_det(R):
    """``log det(R^T R)`` of a triangular factor; ``-inf`` if singular."""
    total = 0.0
    for a in range(R.shape[0]):
        if R[a, a] == 0.0:
            return -np.inf
        total += 2.0 * math.log(abs(R[a, a]))
    return total


@njit(cache=True, nogil=True)
def _merged_factor(big, small, R, rank, c, delta, out, v):
    """Triangular factor of ``W_big + W_small + c delta delta^T`` into ``out``."""
    p = out.shape[0]
    out[:, :] = R[big]
    for r in range(rank[small]):
        v[:] = R[small, r]
        _add_row(out, v, r)
    sc = math.sqrt(c)
    for q in range(p):
        v[q] = sc * delta[q]
    _add_row(out, v, 0)


@njit(cache=True, nogil=True)
def _merged_log_det(big, small, R, rank, log_det, c, delta, work, v, Y, G):
    """``log det(W_big + W_small + c delta delta^T)``.

    With ``W_big = R^T R`` nonsingular, the determinant lemma costs
    ``O(p^2 r)`` for a small cluster of rank ``r - 1`` (a singleton: one
    triangular solve), against ``O(p^3)`` for a fresh factorisation.
    """
    p = delta.shape[0]
    if log_det[big] == -np.inf:
        _merged_factor(big, small, R, rank, c, delta, work, v)
        return _diag_log_det(work)
    Rb = R[big]
    r = rank[small] + 1
    sc = math.sqrt(c)
    for col in range(r):  # Y[:, col] = R_big^-T V[:, col], V = [R_small rows, sqrt(c) delta]
        for q in range(p):
            v[q] = R[small, col, q] if col < r - 1 else sc * delta[q]
        for q in range(p):
            s = v[q]
            for t in range(q):
                s -= Rb[t, q] * Y[t, col]
            Y[q, col] = s / Rb[q, q]
    for i in range(r):  # G = I + Y^T Y, then its log det by Cholesky (G is positive definite)
        for j in range(i + 1):
            s = 0.0
            for q in range(p):
                s += Y[q, i] * Y[q, j]
            G[i, j] = s + (1.0 if i == j else 0.0)
    total = log_det[big]
    for j in range(r):
        s = G[j, j]
        for t in range(j):
            s -= G[j, t] * G[j, t]
        if not s > 0.0:
            return total  # rounding only: G >= I
        d = math.sqrt(s)
        G[j, j] = d
        total += 2.0 * math.log(d)
        for i in range(j + 1, r):
            s = G[i, j]
            for t in range(j):
                s -= G[i, t] * G[j, t]
            G[i, j] = s / d
    return total


@njit(cache=True, nogil=True)
def _term(n, count, tr, log_det_w, p, alpha, beta):
    """``n log(det(W/n) + beta (tr W + alpha) / n)``; det is 0 for ``count <= p``."""
    log_reg = math.log(beta * (tr + alpha) / n)
    if count <= p:
        return n * log_reg
    return n * _log_add(log_det_w - p * math.log(n), log_reg)


@njit(cache=True, nogil=True)
def _merge_cost(a, b, n, count, mean, R, rank, log_det, tr, term, alpha, beta, delta, ws):
    """Criterion change of merging clusters ``a`` and ``b``; returns
    (cost, merged trace, merged term) and leaves ``mean_a - mean_b`` in delta."""
    work, v, Y, G = ws
    p = mean.shape[1]
    nab = n[a] + n[b]
    c = n[a] * n[b] / nab
    sq = 0.0
    for q in range(p):
        delta[q] = mean[a, q] - mean[b, q]
        sq += delta[q] * delta[q]
    trab = tr[a] + tr[b] + c * sq
    cab = count[a] + count[b]
    log_det_w = -np.inf
    if cab > p:
        big, small = (a, b) if count[a] >= count[b] else (b, a)
        log_det_w = _merged_log_det(big, small, R, rank, log_det, c, delta, work, v, Y, G)
    tab = _term(nab, cab, trab, log_det_w, p, alpha, beta)
    return tab - term[a] - term[b], trab, tab


@njit(cache=True, nogil=True)
def _rescan(cost, active, i, best_val, best_idx):
    """Row ``i``'s minimum over active columns (ties: smallest column)."""
    m = cost.shape[0]
    bv = np.inf
    bi = -1
    for k in range(m):
        if k != i and active[k] and cost[i, k] < bv:
            bv = cost[i, k]
            bi = k
    best_val[i] = bv
    best_idx[i] = bi


@njit(cache=True, nogil=True)
def hc_vvv(Z, weights, alpha, beta, n_merges):
    """Agglomerate the rows of ``Z`` by the regularised VVV criterion.

    Parameters
    ----------
    Z : ndarray (m, p) float64
        Rows to cluster (already transformed), each one a singleton cluster.
    weights : ndarray (m,) float64
        Positive row weights (multiplicities).
    alpha, beta : float
        Regularisation of the criterion (see :mod:`fastem._hc`).
    n_merges : int
        Merges to perform, at most ``m - 1``.

    Returns
    -------
    merges : ndarray (n_merges, 2) int64
        ``(a, b)`` with ``a < b``: cluster ``b`` joins cluster ``a``; a cluster
        is named by the smallest row index it holds.
    costs : ndarray (n_merges,) float64
        The criterion change of each merge (the minimum over all pairs).
    """
    m, p = Z.shape
    merges = np.empty((n_merges, 2), dtype=np.int64)
    costs = np.empty(n_merges)
    if n_merges == 0:
        return merges, costs
    n = weights.copy()
    count = np.ones(m, dtype=np.int64)
    mean = Z.copy()
    R = np.zeros((m, p, p))  # upper-triangular factor of each cluster's scatter
    rank = np.zeros(m, dtype=np.int64)  # rows of R that can be nonzero: min(count - 1, p)
    log_det = np.full(m, -np.inf)  # log det of the scatter, -inf while singular
    tr = np.zeros(m)
    term = np.empty(m)
    for i in range(m):
        term[i] = _term(n[i], 1, 0.0, -np.inf, p, alpha, beta)
    active = np.ones(m, dtype=np.bool_)
    delta = np.empty(p)
    ws = (np.zeros((p, p)), np.empty(p), np.empty((p, p + 1)), np.empty((p + 1, p + 1)))
    cost = np.full((m, m), np.inf)
    for i in range(m):
        for k in range(i + 1, m):
            dk, _, _ = _merge_cost(i, k, n, count, mean, R, rank, log_det, tr, term, alpha, beta,
                                   delta, ws)  # fmt: skip
            cost[i, k] = dk
            cost[k, i] = dk
    best_val = np.empty(m)
    best_idx = np.empty(m, dtype=np.int64)
    for i in range(m):
        _rescan(cost, active, i, best_val, best_idx)

    for t in range(n_merges):
        i = -1
        bv = np.inf
        for s in range(m):  # the smallest row holding the minimum; ties never pick a later row
            if active[s] and (i < 0 or best_val[s] < bv):
                i = s
                bv = best_val[s]
        j = best_idx[i]
        a, b = min(i, j), max(i, j)
        merges[t, 0] = a
        merges[t, 1] = b
        costs[t] = cost[a, b]
        _, trab, tab = _merge_cost(a, b, n, count, mean, R, rank, log_det, tr, term, alpha, beta,
                                   delta, ws)  # fmt: skip
        # New statistics of a (delta = mean_a - mean_b, c = n_a n_b / n_ab).
        nab = n[a] + n[b]
        c = n[a] * n[b] / nab
        big, small = (a, b) if rank[a] >= rank[b] else (b, a)
        work = ws[0]
        _merged_factor(big, small, R, rank, c, delta, work, ws[1])
        R[a] = work
        rank[a] = min(rank[a] + rank[b] + 1, p)
        log_det[a] = _diag_log_det(work) if count[a] + count[b] > p else -np.inf
        for q in range(p):
            mean[a, q] = (n[a] * mean[a, q] + n[b] * mean[b, q]) / nab
        n[a] = nab
        count[a] += count[b]
        tr[a] = trab
        term[a] = tab
        active[b] = False
        for k in range(m):
            if active[k] and k != a:
                dk, _, _ = _merge_cost(a, k, n, count, mean, R, rank, log_det, tr, term, alpha,
                                       beta, delta, ws)  # fmt: skip
                cost[a, k] = dk
                cost[k, a] = dk
        _rescan(cost, active, a, best_val, best_idx)
        for k in range(m):
            if not active[k] or k == a:
                continue
            if best_idx[k] == a or best_idx[k] == b:
                _rescan(cost, active, k, best_val, best_idx)
            elif cost[k, a] < best_val[k] or (cost[k, a] == best_val[k] and a < best_idx[k]):
                best_val[k] = cost[k, a]
                best_idx[k] = a
    return merges, costs
