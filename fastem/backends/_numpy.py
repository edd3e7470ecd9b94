"""NumPy reference backend: the oracle every compiled backend is tested against.

Written for clarity, not speed. It still works in row blocks so that it never
holds N x K temporaries, which also makes it usable as a last-resort backend.

Kernel contract (identical signatures in every backend)
-------------------------------------------------------
All kernels take C-contiguous arrays. ``X`` is ``(n, d)`` float32 or float64;
``means``/``centers`` and ``prec_chol`` have the dtype of ``X``;
``sample_weight`` and every output are float64. Outputs are preallocated by the
caller and fully overwritten by the kernel.

``comp_const[k] = log(weight_k) + log det(prec_chol_k) - d/2 log(2 pi)`` so that
the weighted log-density of row ``x`` under component ``k`` is
``comp_const[k] - 0.5 * ||(x - means[k]) @ prec_chol[k]||^2``.

em_pass_full(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx) -> loglik
    One fused E-step and sufficient-statistics pass with full precision
    Cholesky factors ``prec_chol`` (k, d, d) (upper triangular, as in
    scikit-learn). With ``r_ik`` the responsibilities times ``sample_weight[i]``
    and second moments centred on ``means`` (the *shift*):
    ``nk[k] = sum_i r_ik``; ``sx[k] = sum_i r_ik (x_i - means[k])``;
    ``sxx[k] = sum_i r_ik (x_i - means[k])(x_i - means[k])^T`` (k, d, d).
    Returns ``sum_i sample_weight[i] * log sum_k exp(logp_ik)``.
em_pass_diag(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx) -> loglik
    The same with diagonal factors ``prec_chol`` (k, d) (inverse standard
    deviations); ``sxx`` is (k, d), the diagonal of the centred second moment.
em_pass_tied(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx) -> loglik
    The same with one precision factor ``prec_chol`` (d, d) shared by every
    component; ``sxx`` is (d, d): the pooled
    ``sum_k sum_i r_ik (x_i - means[k])(x_i - means[k])^T``, all the tied
    M-step needs (so the pass costs ``d^2`` per row, not ``k d^2``).
log_prob_full(X, means, prec_chol, comp_const, out) -> None
log_prob_diag(X, means, prec_chol, comp_const, out) -> None
log_prob_tied(X, means, prec_chol, comp_const, out) -> None
    ``out`` (n, k) float64 receives the weighted log-densities ``logp_ik``
    (``prec_chol`` as in the matching ``em_pass``).
kmeans_pass(X, sample_weight, centers, sums, counts, labels) -> inertia
    One Lloyd pass: each row goes to its nearest centre (lowest index on ties);
    ``sums[k] = sum of w_i x_i`` and ``counts[k] = sum of w_i`` over rows of
    centre k; ``labels`` (n,) int64 receives the assignment, or is skipped when
    it has length 0. Returns ``sum_i w_i ||x_i - centers[label_i]||^2``.

Missing values (NaN in X; Ghahramani & Jordan, 1994)
----------------------------------------------------
``rows`` (m,) int64 lists the rows of X to visit, grouped by missingness
pattern: ``rows[pattern_ptr[p]:pattern_ptr[p + 1]]`` have NaN in exactly the
same coordinates (read from the first of them); ``pattern_ptr`` is (P + 1,)
int64. Rows not listed are not touched. ``precisions`` (k, d, d) float64 is
``prec_chol @ prec_chol^T``.

For a pattern with missing coordinates ``m`` and observed ``o``, and each
component with precision ``L``: ``C = inv(L[m, m])`` is the covariance of the
missing coordinates given the observed ones, ``B = -C @ L[m, o]`` the
regression of the former on the latter. A row's deviation from the mean,
``y = xhat - means[k]``, has ``y[o] = x[o] - means[k, o]`` and the conditional
mean ``y[m] = B @ y[o]``; at that point ``||y @ prec_chol[k]||^2`` equals the
Mahalanobis distance of ``x[o]`` under the marginal of ``o``, whose
log-density constant is ``comp_const[k] + |m|/2 log(2 pi) - 1/2 log det L[m, m]``.
So a row's log-density is the marginal density of its observed values, and a
row with nothing observed gets ``log weight_k``.

em_pass_missing_full(X, sample_weight, rows, pattern_ptr, means, prec_chol, precisions,
                     comp_const, nk, sx, sxx) -> loglik
    The EM pass over the listed rows with expected sufficient statistics:
    ``sx[k] += r_ik y_ik`` and ``sxx[k] += r_ik (y_ik y_ik^T + C_k)`` with ``C_k``
    placed in the (m, m) block. Returns the observed-data log-likelihood
    ``sum_i w_i log sum_k exp(logp_ik)``.
em_pass_missing_diag(X, sample_weight, rows, pattern_ptr, means, prec_chol, comp_const,
                     nk, sx, sxx) -> loglik
    The same for diagonal factors: ``y[m] = 0`` and ``C = 1 / prec_chol[k, m]^2``.
log_prob_missing_full(X, rows, pattern_ptr, means, prec_chol, precisions, comp_const, out)
log_prob_missing_diag(X, rows, pattern_ptr, means, prec_chol, comp_const, out)
    Row ``rows[j]`` of ``out`` (n, k) receives the marginal log-densities.
em_pass_missing_tied(X, sample_weight, rows, pattern_ptr, means, prec_chol, comp_const,
                     nk, sx, sxx) -> loglik
log_prob_missing_tied(X, rows, pattern_ptr, means, prec_chol, comp_const, out)
    The full-precision kernels with one factor ``prec_chol`` (d, d) shared by
    every component (no ``precisions``: ``L = U U^T`` is the same for all);
    ``sxx`` (d, d) receives the pooled ``sum_k sxx[k]``, all the tied M-step
    needs. Under a shared precision ``C`` and ``B`` are the same for every
    component, so a compiled pass needs one factorization per pattern, not k.
impute_missing_full(X, rows, pattern_ptr, means, precisions, resp, out) -> None
    Imputation under full precisions: for each listed row with missing
    coordinates ``m``, ``out[row, m] = sum_k resp[row, k] (means[k, m] + B_k y_k[o])``,
    the responsibility-weighted conditional means. ``means`` (k, d) is float64
    here, ``resp`` (n, k) float64 (rows sum to 1), ``out`` (n, d) has the dtype
    of ``X``; nothing else of ``out`` is written. (Under diagonal precisions
    ``B = 0`` and the imputation is ``resp @ means``: no kernel is needed.)
"""

from __future__ import annotations

import numpy as np

# Rows per block: bounds temporaries to BLOCK x K whatever n is.
BLOCK = 4096


def logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """``log(sum(exp(a), axis=1))`` computed stably (also used by the estimator).

    A row whose entries are all ``-inf`` (a density that underflows to 0 under
    every component, as for a point ~1e155 standard deviations away) gives
    ``-inf``, as scipy's ``logsumexp`` does, not the NaN of ``-inf - -inf``.
    """
    amax = a.max(axis=1)
    # shifting by 0 instead of -inf leaves such rows at log(0) = -inf
    shift = np.where(np.isneginf(amax), 0.0, amax)
    with np.errstate(under="ignore", divide="ignore"):
        return shift + np.log(np.exp(a - shift[:, None]).sum(axis=1))


def _block_log_prob_full(xb, means, prec_chol, comp_const):
    n_comp = means.shape[0]
    logp = np.empty((xb.shape[0], n_comp), dtype=np.float64)
    for k in range(n_comp):
        y = (xb - means[k]) @ prec_chol[k]
        logp[:, k] = comp_const[k] - 0.5 * np.einsum("ij,ij->i", y, y)
    return logp


def _block_log_prob_diag(xb, means, prec_chol, comp_const):
    n_comp = means.shape[0]
    logp = np.empty((xb.shape[0], n_comp), dtype=np.float64)
    for k in range(n_comp):
        y = (xb - means[k]) * prec_chol[k]
        logp[:, k] = comp_const[k] - 0.5 * np.einsum("ij,ij->i", y, y)
    return logp


def _em_pass(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx, full):
    block_log_prob = _block_log_prob_full if full else _block_log_prob_diag
    nk[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    loglik = 0.0
    for start in range(0, X.shape[0], BLOCK):
        xb, wb = _weighted_rows(X[start : start + BLOCK], sample_weight[start : start + BLOCK])
        logp = block_log_prob(xb, means, prec_chol, comp_const)
        lse = logsumexp_rows(logp)
        loglik += float(wb @ lse)
        with np.errstate(under="ignore"):
            resp = np.exp(logp - lse[:, None]) * wb[:, None]
        accumulate_block(xb, resp, means, nk, sx, sxx, full)
    return loglik


def _weighted_rows(xb, wb):
    """The rows of positive weight: a row of weight 0 adds nothing to any statistic,
    even one whose density underflows to 0 (its ``0 * -inf`` and ``0 * inf`` would be
    NaN)."""
    keep = wb != 0.0
    if keep.all():
        return xb, wb
    return xb[keep], wb[keep]


def accumulate_block(xb, resp, shift, nk, sx, sxx, full):
    """Add one block's statistics: ``resp`` (b, k) are weighted responsibilities,
    moments are taken about ``shift`` (k, d) in float64 (also used by the
    estimator's initialization)."""
    nk += resp.sum(axis=0)
    for k in range(shift.shape[0]):
        xc = (xb - shift[k]).astype(np.float64)
        rk = resp[:, k]
        sx[k] += rk @ xc
        if full:
            sxx[k] += (xc * rk[:, None]).T @ xc
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                sq = rk @ (xc * xc)
                if not np.isfinite(sq).all():
                    # a row ~1e155+ from this component squares to inf where its r is 0
                    # (0 * inf = NaN): (r x) x, as the compiled kernels and the full
                    # branch above multiply; ordinary blocks keep the product above
                    sq = ((xc * rk[:, None]) * xc).sum(axis=0)
            sxx[k] += sq


def em_pass_full(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    return _em_pass(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx, True)


def em_pass_diag(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    return _em_pass(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx, False)


def em_pass_tied(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    k, d = means.shape
    shared = np.broadcast_to(prec_chol, (k, d, d))
    per_component = np.zeros((k, d, d))
    loglik = _em_pass(X, sample_weight, means, shared, comp_const, nk, sx, per_component, True)
    sxx[...] = per_component.sum(axis=0)
    return loglik


def log_prob_tied(X, means, prec_chol, comp_const, out):
    k, d = means.shape
    log_prob_full(X, means, np.broadcast_to(prec_chol, (k, d, d)), comp_const, out)


def log_prob_full(X, means, prec_chol, comp_const, out):
    for start in range(0, X.shape[0], BLOCK):
        out[start : start + BLOCK] = _block_log_prob_full(
            X[start : start + BLOCK], means, prec_chol, comp_const
        )


def log_prob_diag(X, means, prec_chol, comp_const, out):
    for start in range(0, X.shape[0], BLOCK):
        out[start : start + BLOCK] = _block_log_prob_diag(
            X[start : start + BLOCK], means, prec_chol, comp_const
        )


def kmeans_pass(X, sample_weight, centers, sums, counts, labels):
    sums[:] = 0.0
    counts[:] = 0.0
    inertia = 0.0
    c64 = centers.astype(np.float64)
    for start in range(0, X.shape[0], BLOCK):
        xb = X[start : start + BLOCK].astype(np.float64)
        wb = sample_weight[start : start + BLOCK]
        with np.errstate(over="ignore"):  # a row ~1e155+ away: inf, as compiled kernels
            dist = ((xb[:, None, :] - c64[None, :, :]) ** 2).sum(axis=2)
        lab = np.argmin(dist, axis=1)
        inertia += float(wb @ dist[np.arange(xb.shape[0]), lab])
        np.add.at(sums, lab, xb * wb[:, None])
        np.add.at(counts, lab, wb)
        if labels.shape[0]:
            labels[start : start + BLOCK] = lab
    return inertia


# ----------------------------------------------------------- missing values
_LOG_2PI = np.log(2.0 * np.pi)


def pattern_conditionals(missing, precision):
    """``(B, C, const_shift)`` of one pattern under one full precision matrix.

    ``missing`` (d,) bool. ``B`` (|m|, |o|) regresses the missing coordinates on
    the observed ones, ``C`` (|m|, |m|) is their conditional covariance, and
    ``const_shift`` is what the log-density constant gains by marginalizing.
    """
    m = np.flatnonzero(missing)
    o = np.flatnonzero(~missing)
    if m.size == 0:
        return np.zeros((0, o.size)), np.zeros((0, 0)), 0.0
    lmm = precision[np.ix_(m, m)]
    chol = np.linalg.cholesky(lmm)
    inv_chol = np.linalg.inv(chol)
    cond_cov = inv_chol.T @ inv_chol
    regression = -cond_cov @ precision[np.ix_(m, o)]
    log_det_lmm = 2.0 * np.log(np.diagonal(chol)).sum()
    return regression, cond_cov, 0.5 * m.size * _LOG_2PI - 0.5 * log_det_lmm


def _pattern_deviations(xs, missing, means, prec_chol, precisions, comp_const, full):
    """Deviations ``y`` (k, b, d), log-densities (b, k) and conditional
    covariances (k, |m|, |m|) (or (k, |m|) for diag) of rows sharing a pattern."""
    n_comp, d = means.shape
    o = ~missing
    b = xs.shape[0]
    y = np.zeros((n_comp, b, d))
    logp = np.empty((b, n_comp))
    n_m = int(missing.sum())
    conds = np.zeros((n_comp, n_m, n_m) if full else (n_comp, n_m))
    for k in range(n_comp):
        mu = means[k].astype(np.float64)
        pc = prec_chol[k].astype(np.float64)
        y[k][:, o] = xs[:, o] - mu[o]
        if full:
            reg, conds[k], const_shift = pattern_conditionals(missing, precisions[k])
            if n_m:
                y[k][:, missing] = y[k][:, o] @ reg.T
            z = y[k] @ pc
        else:
            conds[k] = 1.0 / pc[missing] ** 2
            # log det L[m, m] = 2 sum log pc[m] for diagonal precisions
            const_shift = 0.5 * n_m * _LOG_2PI - np.log(pc[missing]).sum()
            z = y[k] * pc
        logp[:, k] = comp_const[k] + const_shift - 0.5 * np.einsum("ij,ij->i", z, z)
    return y, logp, conds


def _missing_blocks(X, rows, pattern_ptr):
    """Yield ``(row indices, missing mask)`` for blocks of rows of one pattern."""
    for p in range(pattern_ptr.shape[0] - 1):
        lo, hi = int(pattern_ptr[p]), int(pattern_ptr[p + 1])
        if hi <= lo:
            continue
        missing = np.isnan(X[rows[lo]])
        for start in range(lo, hi, BLOCK):
            yield rows[start : min(start + BLOCK, hi)], missing


def _em_pass_missing(X, sw, rows, ptr, means, prec_chol, precisions, comp_const, nk, sx, sxx, full):
    nk[:] = 0.0
    sx[:] = 0.0
    sxx[:] = 0.0
    loglik = 0.0
    for idx, missing in _missing_blocks(X, rows, ptr):
        idx = idx[sw[idx] != 0.0]  # as _weighted_rows
        xs = X[idx].astype(np.float64)
        wb = sw[idx]
        y, logp, conds = _pattern_deviations(
            xs, missing, means, prec_chol, precisions, comp_const, full
        )
        lse = logsumexp_rows(logp)
        loglik += float(wb @ lse)
        with np.errstate(under="ignore"):
            resp = np.exp(logp - lse[:, None]) * wb[:, None]
        nk += resp.sum(axis=0)
        mm = np.ix_(missing, missing)
        for k in range(means.shape[0]):
            rk = resp[:, k]
            sx[k] += rk @ y[k]
            if full:
                sxx[k] += (y[k] * rk[:, None]).T @ y[k]
                sxx[k][mm] += rk.sum() * conds[k]
            else:
                sxx[k] += rk @ (y[k] * y[k])
                sxx[k][missing] += rk.sum() * conds[k]
    return loglik


def em_pass_missing_full(
    X, sample_weight, rows, pattern_ptr, means, prec_chol, precisions, comp_const, nk, sx, sxx
):
    return _em_pass_missing(
        X, sample_weight, rows, pattern_ptr, means, prec_chol, precisions, comp_const,
        nk, sx, sxx, True,
    )  # fmt: skip


def em_pass_missing_diag(
    X, sample_weight, rows, pattern_ptr, means, prec_chol, comp_const, nk, sx, sxx
):
    return _em_pass_missing(
        X, sample_weight, rows, pattern_ptr, means, prec_chol, None, comp_const,
        nk, sx, sxx, False,
    )  # fmt: skip


def em_pass_missing_tied(
    X, sample_weight, rows, pattern_ptr, means, prec_chol, comp_const, nk, sx, sxx
):
    k, d = means.shape
    shared = np.broadcast_to(prec_chol, (k, d, d))
    pc64 = np.asarray(prec_chol, dtype=np.float64)
    precisions = np.broadcast_to(pc64 @ pc64.T, (k, d, d))
    per_component = np.zeros((k, d, d))
    loglik = em_pass_missing_full(
        X, sample_weight, rows, pattern_ptr, means, shared, precisions, comp_const,
        nk, sx, per_component,
    )  # fmt: skip
    sxx[...] = per_component.sum(axis=0)
    return loglik


def log_prob_missing_tied(X, rows, pattern_ptr, means, prec_chol, comp_const, out):
    k, d = means.shape
    pc64 = np.asarray(prec_chol, dtype=np.float64)
    log_prob_missing_full(
        X, rows, pattern_ptr, means, np.broadcast_to(prec_chol, (k, d, d)),
        np.broadcast_to(pc64 @ pc64.T, (k, d, d)), comp_const, out,
    )  # fmt: skip


def _log_prob_missing(X, rows, ptr, means, prec_chol, precisions, comp_const, out, full):
    for idx, missing in _missing_blocks(X, rows, ptr):
        xs = X[idx].astype(np.float64)
        _, out[idx], _ = _pattern_deviations(
            xs, missing, means, prec_chol, precisions, comp_const, full
        )


def log_prob_missing_full(X, rows, pattern_ptr, means, prec_chol, precisions, comp_const, out):
    _log_prob_missing(X, rows, pattern_ptr, means, prec_chol, precisions, comp_const, out, True)


def log_prob_missing_diag(X, rows, pattern_ptr, means, prec_chol, comp_const, out):
    _log_prob_missing(X, rows, pattern_ptr, means, prec_chol, None, comp_const, out, False)


def impute_missing_full(X, rows, pattern_ptr, means, precisions, resp, out):
    for idx, missing in _missing_blocks(X, rows, pattern_ptr):
        if not missing.any():
            continue
        observed = ~missing
        xo = X[idx][:, observed].astype(np.float64)
        cond = np.zeros((idx.shape[0], int(missing.sum())))
        for k in range(means.shape[0]):
            regression, _, _ = pattern_conditionals(missing, precisions[k])
            mu = means[k].astype(np.float64)
            cond += resp[idx, k][:, None] * (mu[missing] + (xo - mu[observed]) @ regression.T)
        out[np.ix_(idx, np.flatnonzero(missing))] = cond
