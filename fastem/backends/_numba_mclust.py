"""Numba kernel of EVE/VVE's orientation sweep (mclust's common-orientation models).

Same algorithm, iteration counts and thresholds as
:func:`fastem._mclust._jacobi_sweep` (the NumPy implementation, its oracle in the
tests and the path without Numba); only the rounding differs. The NumPy sweep
rotates ``G_k = D^T W_k D`` with one dense ``R^T G_k R`` product per round,
``O(K d^3)`` per round and ``O(K d^4)`` per sweep. A round's plane rotations act
on disjoint pairs of rows and columns, so here each pair updates only its two
rows and two columns of every ``G_k`` and its two columns of ``D``: ``O(K d^2)``
per round, ``O(K d^3)`` per sweep, and no Python overhead per round. Serial: the
sweep runs on the client once per EM iteration, on ``K d^2`` numbers.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _numba_cache  # noqa: F401  (must precede the @njit definitions)

__all__ = ["jacobi_sweep"]


@njit(cache=True, nogil=True)
def _rotate_round(g, orient, pair_i, pair_j, start, npairs, cos_t, sin_t):
    """``G_k <- R^T G_k R`` and ``D <- D R`` for a round's plane rotations (disjoint
    pairs ``i, j``; ``R_ii = R_jj = c``, ``R_ji = s``, ``R_ij = -s``), touching only
    the pairs' rows and columns, row by row (contiguous)."""
    k, d = g.shape[0], g.shape[1]
    for kk in range(k):
        for r in range(d):  # G R: columns i and j of every row
            for q in range(npairs):
                i, j = pair_i[start + q], pair_j[start + q]
                c, s = cos_t[q], sin_t[q]
                gi = g[kk, r, i]
                gj = g[kk, r, j]
                g[kk, r, i] = c * gi + s * gj
                g[kk, r, j] = c * gj - s * gi
        for q in range(npairs):  # R^T (G R): rows i and j
            i, j = pair_i[start + q], pair_j[start + q]
            c, s = cos_t[q], sin_t[q]
            for col in range(d):
                gi = g[kk, i, col]
                gj = g[kk, j, col]
                g[kk, i, col] = c * gi + s * gj
                g[kk, j, col] = c * gj - s * gi
    for r in range(d):
        for q in range(npairs):
            i, j = pair_i[start + q], pair_j[start + q]
            c, s = cos_t[q], sin_t[q]
            oi = orient[r, i]
            oj = orient[r, j]
            orient[r, i] = c * oi + s * oj
            orient[r, j] = c * oj - s * oi


@njit(cache=True, nogil=True)
def _positive(x):
    """``x > 0`` and finite (False for NaN), as ``_mclust._check_positive``."""
    return x > 0.0 and x < np.inf


@njit(cache=True, nogil=True)
def jacobi_sweep(g, orient, nk, equal_volume, pair_i, pair_j, round_start, plane_iterations):
    """One sweep of exact plane rotations of the common orientation, in place.

    Parameters
    ----------
    g : float64 array (k, d, d), C-contiguous
        ``D^T W_k D`` (``W_k`` with ``reg_covar`` in it); rotated in place.
    orient : float64 array (d, d), C-contiguous
        ``D``; rotated in place.
    nk : float64 array (k,)
    equal_volume : bool
        EVE (True) or VVE (False).
    pair_i, pair_j : int64 arrays
        The round-robin pairs ``i < j``, round after round.
    round_start : int64 array (n_rounds + 1,)
        Round ``r`` is ``pair_i[round_start[r]:round_start[r + 1]]``.
    plane_iterations : int
        Alternations of angles and diagonals per round (``_PLANE_ITERATIONS``).

    Returns
    -------
    int
        -1, or the first component with a non-positive (or non-finite) diagonal,
        where the NumPy sweep raises the singular-covariance error (the caller
        raises it; ``g`` and ``orient`` are then partly rotated).
    """
    k, d = g.shape[0], g.shape[1]
    n = 0.0
    for kk in range(k):
        n += nk[kk]
    n_rounds = round_start.shape[0] - 1
    max_pairs = 0
    for rr in range(n_rounds):
        max_pairs = max(max_pairs, round_start[rr + 1] - round_start[rr])
    half = np.zeros(max_pairs)
    new = np.zeros(max_pairs)
    p = np.zeros(max_pairs)
    r_ = np.zeros(max_pairs)
    size = np.zeros(max_pairs)
    cos2 = np.zeros(max_pairs)
    sin2 = np.zeros(max_pairs)
    dinv = np.zeros((k, max_pairs))  # 1/x_i - 1/x_j per component and pair
    logsum = np.zeros((k, max_pairs))  # log(x_i x_j), EVE
    rest = np.zeros(k)
    gm = np.zeros(k)
    for rr in range(n_rounds):
        start = round_start[rr]
        npairs = round_start[rr + 1] - start
        if equal_volume:  # log-sum of the diagonal entries outside the rotated pairs
            for kk in range(k):
                for t in range(d):
                    if not _positive(g[kk, t, t]):
                        return kk
            for kk in range(k):
                total = 0.0
                for t in range(d):
                    total += math.log(g[kk, t, t])
                for q in range(npairs):
                    i, j = pair_i[start + q], pair_j[start + q]
                    total -= math.log(g[kk, i, i] * g[kk, j, j])
                rest[kk] = total
        for q in range(npairs):
            half[q] = 0.0
        for _ in range(plane_iterations):
            for q in range(npairs):
                cos2[q] = math.cos(2.0 * half[q])
                sin2[q] = math.sin(2.0 * half[q])
            # the diagonals given the angles; the first bad component, as np.argwhere
            for kk in range(k):
                for q in range(npairs):
                    i, j = pair_i[start + q], pair_j[start + q]
                    a, e, b = g[kk, i, i], g[kk, j, j], g[kk, i, j]
                    mid, amp = 0.5 * (a + e), 0.5 * (a - e)
                    x_i = mid + amp * cos2[q] + b * sin2[q]
                    x_j = mid - amp * cos2[q] - b * sin2[q]
                    if not _positive(min(x_i, x_j)):
                        return kk
                    dinv[kk, q] = 1.0 / x_i - 1.0 / x_j
                    if equal_volume:
                        logsum[kk, q] = math.log(x_i * x_j)
            if equal_volume:  # m = 1 / (lambda v / gm(v))
                gsum = 0.0
                for kk in range(k):
                    total = rest[kk]
                    for q in range(npairs):
                        total += logsum[kk, q]
                    gm[kk] = math.exp(total / d)
                    gsum += gm[kk]
                for kk in range(k):
                    gm[kk] = gm[kk] / (gsum / n)
            # the angles given the diagonals
            for q in range(npairs):
                i, j = pair_i[start + q], pair_j[start + q]
                pq = 0.0
                rq = 0.0
                sq = 0.0
                for kk in range(k):
                    a, e, b = g[kk, i, i], g[kk, j, j], g[kk, i, j]
                    amp = 0.5 * (a - e)
                    dm = (gm[kk] if equal_volume else nk[kk]) * dinv[kk, q]
                    pq += dm * amp
                    rq += dm * b
                    sq += abs(dm) * (abs(a) + abs(e))
                p[q], r_[q], size[q] = pq, rq, sq
            done = True
            for q in range(npairs):
                angle = 0.5 * math.atan2(-r_[q], -p[q])
                # P and R both rounding noise: interchangeable axes, do not spin D
                if math.hypot(p[q], r_[q]) <= 1e-12 * size[q]:
                    angle = 0.0
                if not abs(angle - half[q]) <= 1e-13:  # NaN: not done, as NumPy's max
                    done = False
                new[q] = angle
            for q in range(npairs):
                half[q] = new[q]
            if done:
                break
        for q in range(npairs):
            cos2[q] = math.cos(half[q])
            sin2[q] = math.sin(half[q])
        _rotate_round(g, orient, pair_i, pair_j, start, npairs, cos2, sin2)
    return -1
