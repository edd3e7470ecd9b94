"""Compiled Baum-Welch steps of GaussianHMMs: the M-step (diag/spherical:
:func:`mstep_diag`; full/tied: :func:`mstep_full`), the E-step's parameters
(:func:`estep_params_diag`, :func:`estep_params_full`) and the full/tied log
prior (:func:`log_prior_full`).

The NumPy M-step (``BaseHMM._do_mstep`` with ``GaussianHMM._emission_mstep``)
costs ~30 NumPy calls per iteration on (K,), (K, K) and (K, D) arrays: ~35 us,
a third of the serial part of an HB2 iteration (D=1, K=10). This is the same
arithmetic in one call, element by element in the NumPy expressions' order of
operations, and the row sums in NumPy's pairwise order (``np.add.reduce`` on a
contiguous row), so it gives the NumPy M-step's values bit for bit (tested).
Used with the numba backend only; the NumPy M-step stays the reference.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from ..backends import _numba_cache  # noqa: F401  (registers the cache locator)

__all__ = [
    "HAVE_LAPACK", "PAIRWISE_MAX", "estep_params_diag", "estep_params_full", "log_prior_full",
    "mstep_diag", "mstep_full",
]  # fmt: skip

try:  # LAPACK as NumPy calls it (numba binds scipy's LAPACK: another OpenBLAS build)
    from numba.np.linalg import _LAPACK, ensure_lapack
    from numba.np.linalg import F_INT_nptype as _F_INT

    ensure_lapack()
    _potrf = _LAPACK().numba_xxpotrf(types.float64)
    _gesv = _LAPACK().numba_xgesv(types.float64)
    HAVE_LAPACK = True
except Exception:  # pragma: no cover - numba without scipy: the NumPy code runs
    _potrf = _gesv = _F_INT = None
    HAVE_LAPACK = False

PAIRWISE_MAX = 128  # the longest row the kernel sums in NumPy's order


@njit(cache=True, nogil=True)
def _pairwise_sum(a, lo, n):
    """``a[lo:lo + n].sum()`` in NumPy's order for ``n <= PAIRWISE_MAX`` (umath's
    pairwise_sum: eight accumulators; above 128 it recurses on halves, which is
    left out: a recursive kernel loaded from Numba's cache crashed)."""
    if n < 8:
        r = -0.0
        for i in range(n):
            r += a[lo + i]
        return r
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True, nogil=True)
def _dirichlet_row(am1, counts, old, out, row):
    """``max(alpha - 1 + counts, 0)``, zeros of ``old`` kept, normalized; a row
    that sums to 0 (or NaN) keeps ``old`` (``BaseHMM._do_mstep``). 1-D arrays."""
    M = counts.shape[0]
    for j in range(M):
        v = am1[j] + counts[j]
        if v < 0.0:  # np.maximum(v, 0): NaN stays NaN
            v = 0.0
        if old[j] == 0:
            v = 0.0
        row[j] = v
    s = _pairwise_sum(row, 0, M)
    if s > 0:
        for j in range(M):
            out[j] = row[j] / s
    else:
        for j in range(M):
            out[j] = old[j]


@njit(cache=True, nogil=True)
def _start_trans_means(start, xi, nk, sx, shift, startprob, transmat, means, hyper, flags):
    """The M-step's start probabilities, transitions and means (flag bits 1, 2,
    4; copies of the old ones where ``params`` leaves them), shared by
    :func:`mstep_diag` and :func:`mstep_full`, and a scratch row of max(K, D)."""
    K, D = sx.shape
    new_start = np.empty(K)
    new_trans = np.empty((K, K))
    row = np.empty(max(K, D))
    if flags & 1:
        _dirichlet_row(hyper[0, 0, :K], start, startprob, new_start, row)
    else:
        for k in range(K):
            new_start[k] = startprob[k]
    for k in range(K):
        if flags & 2:
            _dirichlet_row(hyper[0, k + 1, :K], xi[k], transmat[k], new_trans[k], row)
        else:
            for j in range(K):
                new_trans[k, j] = transmat[k, j]
    mw, mp = hyper[1], hyper[2]
    mu = np.empty((K, D))
    for k in range(K):
        for d in range(D):
            if not flags & 4:
                mu[k, d] = means[k, d]
            else:
                obs = sx[k, d] + nk[k] * shift[k, d]
                denom = mw[k, d] + nk[k]
                if denom > 0:
                    mu[k, d] = (mw[k, d] * mp[k, d] + obs) / denom
                else:  # empty state: keep
                    mu[k, d] = means[k, d]
    return new_start, new_trans, mu, row


@njit(cache=True, nogil=True)
def mstep_diag(
    start, xi, nk, sx, sxx, shift, startprob, transmat, means, covars,
    hyper, reg_covar, flags, spherical,
):  # fmt: skip
    """The M-step of a diag/spherical GaussianHMM from the E-step's statistics.

    Parameters
    ----------
    start, xi : (K,), (K, K) start and transition counts.
    nk, sx, sxx, shift : (K,), (K, D), (K, D), (K, D) posterior weights and
        first and second moments about ``shift``.
    startprob, transmat, means, covars : the current parameters (read only);
        ``covars`` (K, 1) for spherical, (K, D) for diag.
    hyper : (5, K + 1, max(K, D)) prior arrays: [0] ``startprob_prior - 1`` in
        row 0 and ``transmat_prior - 1`` in rows 1..K (first K columns); [1..4]
        ``means_weight``, ``means_prior``, ``covars_prior`` and
        ``max(covars_weight - 1, 0)`` broadcast to (K, D) in their first K rows
        and D columns.
    reg_covar : float
    flags : int, bits 1 's', 2 't', 4 'm', 8 'c' of ``params``; 16, 32, 64
        for the log prior.
    spherical : bool

    Returns
    -------
    startprob, transmat, means, covars : new arrays (copies of the old where
        ``params`` leaves them).
    log_prior : float
        The log prior of these parameters (flag bits 16, 32, 64: see
        :func:`_log_prior`), the next E-step's objective term.
    """
    K, D = sx.shape
    new_start, new_trans, mu, row = _start_trans_means(
        start, xi, nk, sx, shift, startprob, transmat, means, hyper, flags
    )
    mw, mp, cp, cw1 = hyper[1], hyper[2], hyper[3], hyper[4]
    new_cov = np.empty(covars.shape)
    if flags & 8:
        for k in range(K):
            for d in range(D):
                delta = mu[k, d] - shift[k, d]
                md = mu[k, d] - mp[k, d]
                c_n = mw[k, d] * (md * md) + sxx[k, d] - (2 * delta) * sx[k, d]
                c_n = c_n + nk[k] * (delta * delta)
                c_d = cw1[k, d] + nk[k]
                if c_d < 1e-5:  # np.maximum(c_d, 1e-5): NaN stays NaN
                    c_d = 1e-5
                row[d] = (cp[k, d] + c_n) / c_d
            if spherical:  # the mean over features, NumPy's sum / D
                row[0] = _pairwise_sum(row, 0, D) / D
            empty = nk[k] <= 0
            for c in range(covars.shape[1]):
                new_cov[k, c] = covars[k, c] if empty else row[c] + reg_covar
    else:  # copies by loops: slice assignments quadrupled the compile time (~5 s)
        for k in range(K):
            for c in range(covars.shape[1]):
                new_cov[k, c] = covars[k, c]
    return (
        new_start,
        new_trans,
        mu,
        new_cov,
        _log_prior(new_start, new_trans, mu, new_cov, hyper, flags, spherical),
    )


@njit(cache=True, nogil=True)
def mstep_full(
    start, xi, nk, sx, sxx, shift, startprob, transmat, means, covars,
    hyper, cp, cvw, reg_covar, flags, tied,
):  # fmt: skip
    """The M-step of a full/tied GaussianHMM from the E-step's statistics.

    The NumPy M-step's values bit for bit (``BaseHMM._do_mstep`` with
    ``GaussianHMM._emission_mstep``): each (K, D, D) expression element by
    element in its order of operations; the tied sum over states in NumPy's
    order for ``c_n.sum(axis=0)`` (one state after another; pairwise when D = 1)
    and ``nk.sum()`` pairwise.

    Parameters
    ----------
    start, xi, nk, sx, shift : as :func:`mstep_diag`.
    sxx : (K, D, D) second moments about ``shift``.
    startprob, transmat, means : the current parameters (read only).
    covars : (K, D, D) full, (1, D, D) tied; read only.
    hyper : (3, K + 1, max(K, D)): planes 0..2 of :func:`mstep_diag`'s.
    cp : (K, D, D) (full) or (1, D, D) (tied) ``covars_prior`` broadcast.
    cvw : (K,) (full) or (1,) (tied) ``max(covars_weight - D, 0)``.
    reg_covar : float
    flags : int, bits 1 's', 2 't', 4 'm', 8 'c' of ``params``.
    tied : bool

    Returns
    -------
    startprob, transmat, means, covars : new arrays (copies of the old where
        ``params`` leaves them).
    """
    K, D = sx.shape
    new_start, new_trans, mu, _ = _start_trans_means(
        start, xi, nk, sx, shift, startprob, transmat, means, hyper, flags
    )
    mw, mp = hyper[1], hyper[2]
    new_cov = np.empty(covars.shape)
    if not flags & 8:
        for k in range(covars.shape[0]):
            for i in range(D):
                for j in range(D):
                    new_cov[k, i, j] = covars[k, i, j]
        return new_start, new_trans, mu, new_cov
    # c_n = mw md_i md_j + sxx - d_i sx_j - d_j sx_i + nk d_i d_j, left to right
    acc = np.empty((D, D) if tied else (0, 0))
    # D = 1: NumPy sums c_n's (K, 1, 1) over states as one contiguous run, pairwise
    # (8 partial sums from K = 8 on); for D > 1 its axis-0 sum adds states in order.
    vals = np.empty(K if tied and D == 1 else 0)
    div, old = 1.0, False
    for k in range(K):
        if not tied:
            denom = cvw[k] + nk[k]
            keep = denom <= 0
            div = 1.0 if keep else denom
            old = keep or nk[k] <= 0
        for i in range(D):
            di = mu[k, i] - shift[k, i]
            mdi = mu[k, i] - mp[k, i]
            for j in range(D):
                dj = mu[k, j] - shift[k, j]
                mdj = mu[k, j] - mp[k, j]
                v = (mw[k, i] * mdi) * mdj + sxx[k, i, j]
                v = v - di * sx[k, j]
                v = v - dj * sx[k, i]
                v = v + (nk[k] * di) * dj
                if tied and D == 1:
                    vals[k] = v
                elif tied:
                    acc[i, j] = v if k == 0 else acc[i, j] + v
                elif old:
                    new_cov[k, i, j] = covars[k, i, j]
                else:
                    e = 1.0 if i == j else 0.0
                    new_cov[k, i, j] = (cp[k, i, j] + v) / div + reg_covar * e
    if tied:
        if D == 1:
            acc[0, 0] = _pairwise_sum(vals, 0, K)
        den = cvw[0] + _pairwise_sum(nk, 0, K)
        for i in range(D):
            for j in range(D):
                e = 1.0 if i == j else 0.0
                new_cov[0, i, j] = (cp[0, i, j] + acc[i, j]) / den + reg_covar * e
    return new_start, new_trans, mu, new_cov


# error_model="numpy": a variance of 0 (a state whose frames agree on a feature,
# covars_prior=0, reg_covar=0) divides as NumPy does (inf/NaN, no ZeroDivisionError),
# so the next E-step raises the NumPy path's ill-defined-covariance ValueError.
@njit(cache=True, nogil=True, error_model="numpy")
def _log_prior(startprob, transmat, means, covars, hyper, flags, spherical):
    """:func:`fastem.hmm._prior.log_prior` of these parameters (the same terms,
    summed in loop order: equal to rounding). Flag bits 16 and 32: the start
    and transition priors are not flat; 64: some ``covars_weight > 1``."""
    K, D = means.shape
    out = 0.0
    if flags & 16:
        for j in range(K):
            if startprob[j] > 0:
                out += hyper[0, 0, j] * np.log(startprob[j])
    if flags & 32:
        for k in range(K):
            for j in range(K):
                if transmat[k, j] > 0:
                    out += hyper[0, k + 1, j] * np.log(transmat[k, j])
    mw, mp, cp, cw1 = hyper[1], hyper[2], hyper[3], hyper[4]
    g = 0.0
    for k in range(K):
        for d in range(D):
            var = covars[k, 0] if spherical else covars[k, d]
            md = means[k, d] - mp[k, d]
            g += (cp[k, d] + mw[k, d] * (md * md)) / var
            if flags & 64:
                g += cw1[k, d] * np.log(var)
    return out - 0.5 * g


@njit(cache=True, nogil=True)
def estep_params_diag(covars, means, startprob, transmat, pcs, pc, means_out, start_out, trans_out):
    """The fused E-step's inputs for the current parameters, into a fit's buffers.

    ``pcs = 1 / sqrt(covars)`` ((K, 1) spherical or (K, D) diag: what
    :func:`fastem._covariance.precision_cholesky` gives, the same IEEE
    operations), ``pc`` that repeated to (K, D) for spherical (``np.repeat``),
    ``means``, ``startprob`` and ``transmat`` copied. Returns False, with the
    buffers partly written, if a variance is not finite and positive (the caller
    lets ``precision_cholesky`` raise its error then).
    """
    K, D = means.shape
    C = covars.shape[1]
    for k in range(K):
        for c in range(C):
            v = covars[k, c]
            if not (np.isfinite(v) and v > 0):
                return False
            pcs[k, c] = 1.0 / np.sqrt(v)
        for d in range(D):
            pc[k, d] = pcs[k, 0] if C == 1 else pcs[k, d]
            means_out[k, d] = means[k, d]
        start_out[k] = startprob[k]
        for j in range(K):
            trans_out[k, j] = transmat[k, j]
    return True


# ------------------------------------------------------------ full/tied: Cholesky
# ``fastem._covariance.precision_cholesky`` and ``_prior._logdet_trace`` call
# LAPACK through NumPy (``np.linalg.cholesky``: dpotrf, 'L', on a Fortran-order
# copy; ``np.linalg.solve``: dgesv) plus ~20 NumPy calls on (K, D, D) arrays:
# ~100 us per LONGFULL iteration for the precisions, ~60 us for the log prior.
# The functions below make the same LAPACK calls on the same Fortran-order data
# from compiled code (numba binds scipy's OpenBLAS, a separate build from
# NumPy's: 0.3.30 and 0.3.31 here, 0 differing bits, tested) and the rest element
# by element in NumPy's order, so the values are the NumPy code's bit for bit
# where the two builds round alike (tests/test_hmm_longfull.py checks which).


@njit(cache=True, nogil=True)
def _chol_lower(a, buf, out):
    """``np.linalg.cholesky(a)`` into ``out`` (the same dpotrf call: 'L' on the
    Fortran-order copy ``buf``, the upper triangle zeroed); False if LAPACK
    finds ``a`` not positive definite."""
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            buf[j, i] = a[i, j]
    if _potrf(ord("d"), ord("L"), n, buf.ctypes, n) != 0:
        return False
    for i in range(n):
        for j in range(n):
            out[i, j] = buf[j, i] if j <= i else 0.0
    return True


@njit(cache=True, nogil=True)
def _all_finite(a):
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            if not np.isfinite(a[i, j]):
                return False
    return True


@njit(cache=True, nogil=True)
def estep_params_full(covars, half_d_log_2pi, chol, inv, pc, tied_pc, comp_const):
    """The full/tied E-step's precision factors and constants, into a fit's buffers.

    ``precision_cholesky`` (the Cholesky factor ``L``, its inverse by forward
    substitution as ``_inverse_lower``'s einsum sums it, transposed) and
    ``kernel_arguments``' ``comp_const = log 1 + log det U - D/2 log 2 pi``
    (the diagonal's logs summed pairwise; the caller recomputes it with NumPy's
    log, whose last bit libm's does not always match), the factors bit for bit.

    Parameters
    ----------
    covars : (C, D, D) covariances, C = K (full) or 1 (tied).
    half_d_log_2pi : float, ``0.5 * D * log(2 pi)`` as Python computes it.
    chol, inv : (C, D, D) scratch (the factors ``L`` and ``L^-1``).
    pc : (K, D, D) out, ``U = L^-T`` per state (the tied one repeated).
    tied_pc : (D, D) out, the tied ``U`` (untouched for full).
    comp_const : (K,) out.

    Returns
    -------
    bool
        False, with the buffers partly written, where a covariance is not
        finite or not positive definite (the caller lets NumPy raise its error).
    """
    C, D = covars.shape[0], covars.shape[1]
    K = pc.shape[0]
    row = np.empty(D)
    for c in range(C):
        if not _all_finite(covars[c]) or not _chol_lower(covars[c], inv[c], chol[c]):
            return False
        L, iv = chol[c], inv[c]
        for i in range(D):  # _inverse_lower: eye[i] - sum_j<i L[i, j] inv[j], / L[i, i]
            for j in range(D):
                s = 0.0
                for m in range(i):
                    s += L[i, m] * iv[m, j]
                e = 1.0 if i == j else 0.0
                iv[i, j] = (e - s) / L[i, i]
        for i in range(D):
            row[i] = np.log(iv[i, i])  # log det U: U = L^-T has L^-1's diagonal
        const = (0.0 + _pairwise_sum(row, 0, D)) - half_d_log_2pi
        if C == 1:
            for i in range(D):
                for j in range(D):
                    tied_pc[i, j] = iv[j, i]
            for k in range(K):
                comp_const[k] = const
                for i in range(D):
                    for j in range(D):
                        pc[k, i, j] = iv[j, i]
        else:
            comp_const[c] = const
            for i in range(D):
                for j in range(D):
                    pc[c, i, j] = iv[j, i]
    return True


@njit(cache=True, nogil=True)
def _dirichlet_log(p, am1, scalar, scratch):
    """``_prior._dirichlet_term``: ``sum (alpha - 1) log p`` over ``p > 0``, the
    flattened (contiguous) ``log p`` summed pairwise, ``am1 * sum`` for a scalar
    prior, else ``sum(am1 * log p)``; ``p`` and ``am1`` flat, n <= PAIRWISE_MAX."""
    n = p.shape[0]
    for i in range(n):
        lp = np.log(p[i]) if p[i] > 0 else 0.0
        scratch[i] = lp if scalar else am1[i] * lp
    s = _pairwise_sum(scratch, 0, n)
    return am1[0] * s if scalar else s


@njit(cache=True, nogil=True)
def log_prior_full(
    startprob, transmat, means, covars, start_am1, trans_am1, prior_flags, mw, mp, cp, dof,
):  # fmt: skip
    """:func:`fastem.hmm._prior.log_prior` of a full/tied GaussianHMM.

    NumPy's value to a few ulp (the logs are libm's, which differ from NumPy's
    SIMD log in the last bit on some inputs); the same terms in the same order:
    the Dirichlet terms (flattened pairwise sums), then per state
    ``scale = cp + (mw md_i) md_j`` (tied: the states' terms summed in
    ``outer.sum(axis=0)``'s order), ``log|Sigma|`` from LAPACK's Cholesky and
    ``tr(solve(Sigma, scale))`` from LAPACK's dgesv (the calls NumPy makes),
    pairwise sums over features and states.

    Parameters
    ----------
    startprob, transmat, means : the parameters; ``transmat`` flattened (K * K,).
    covars : (C, D, D), C = K full, 1 tied.
    start_am1, trans_am1 : (K,), (K * K,) ``alpha - 1`` broadcast (flattened).
    prior_flags : int, bit 1 start prior not flat, 2 its ``alpha`` a scalar,
        4 transition prior not flat, 8 its ``alpha`` a scalar.
    mw, mp : (K, D) ``means_weight``, ``means_prior`` broadcast.
    cp : (C, D, D) ``covars_prior`` broadcast.
    dof : (C,) ``max(covars_weight - D, 0)``.

    Returns
    -------
    ok : bool
        False (value 0) where a covariance is not finite or LAPACK finds it not
        positive definite: the NumPy code decides then (-inf or an error).
    value : float
    """
    K, D = means.shape
    C = covars.shape[0]
    scratch = np.empty(max(K * K, D, C))
    out = 0.0
    if prior_flags & 1:
        out = _dirichlet_log(startprob, start_am1, prior_flags & 2 != 0, scratch)
    if prior_flags & 4:
        out += _dirichlet_log(transmat, trans_am1, prior_flags & 8 != 0, scratch)
    else:
        out += 0.0  # the flat term's 0.0, added as the NumPy code adds it
    md = np.empty((K, D))
    for k in range(K):
        for i in range(D):
            md[k, i] = means[k, i] - mp[k, i]
    scale = np.empty((D, D))
    L = np.empty((D, D))
    buf = np.empty((D, D))
    sol = np.empty((D, D))
    ipiv = np.empty(D, dtype=_F_INT)
    vals = np.empty(K)
    terms = np.empty(C)
    tied = C == 1
    for c in range(C):
        if tied:  # cp + outer.sum(axis=0): states in order (D = 1: pairwise)
            for i in range(D):
                for j in range(D):
                    if D == 1:
                        for k in range(K):
                            vals[k] = (mw[k, 0] * md[k, 0]) * md[k, 0]
                        acc = _pairwise_sum(vals, 0, K)
                    else:
                        acc = (mw[0, i] * md[0, i]) * md[0, j]
                        for k in range(1, K):
                            acc = acc + (mw[k, i] * md[k, i]) * md[k, j]
                    scale[i, j] = cp[0, i, j] + acc
        else:
            for i in range(D):
                for j in range(D):
                    scale[i, j] = cp[c, i, j] + (mw[c, i] * md[c, i]) * md[c, j]
        if not _all_finite(covars[c]) or not _chol_lower(covars[c], buf, L):
            return False, 0.0
        for i in range(D):
            scratch[i] = np.log(L[i, i])
        logdet = 2.0 * _pairwise_sum(scratch, 0, D)
        # np.linalg.solve(covars[c], scale): dgesv on Fortran-order copies
        for i in range(D):
            for j in range(D):
                buf[j, i] = covars[c, i, j]
                sol[j, i] = scale[i, j]
        if _gesv(ord("d"), D, D, buf.ctypes, D, ipiv.ctypes, sol.ctypes, D) != 0:
            return False, 0.0
        for i in range(D):
            scratch[i] = sol[i, i]
        trace = _pairwise_sum(scratch, 0, D)
        terms[c] = dof[c] * logdet + trace
    if tied:
        emission = -0.5 * terms[0]
    else:
        emission = -0.5 * _pairwise_sum(terms, 0, C)
    return True, out + emission
