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
log_prob_full(X, means, prec_chol, comp_const, out) -> None
log_prob_diag(X, means, prec_chol, comp_const, out) -> None
    ``out`` (n, k) float64 receives the weighted log-densities ``logp_ik``.
kmeans_pass(X, sample_weight, centers, sums, counts, labels) -> inertia
    One Lloyd pass: each row goes to its nearest centre (lowest index on ties);
    ``sums[k] = sum of w_i x_i`` and ``counts[k] = sum of w_i`` over rows of
    centre k; ``labels`` (n,) int64 receives the assignment, or is skipped when
    it has length 0. Returns ``sum_i w_i ||x_i - centers[label_i]||^2``.
"""

from __future__ import annotations

import numpy as np

# Rows per block: bounds temporaries to BLOCK x K whatever n is.
BLOCK = 4096


def logsumexp_rows(a: np.ndarray) -> np.ndarray:
    """``log(sum(exp(a), axis=1))`` computed stably (also used by the estimator)."""
    amax = a.max(axis=1)
    with np.errstate(under="ignore"):
        return amax + np.log(np.exp(a - amax[:, None]).sum(axis=1))


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
        xb = X[start : start + BLOCK]
        wb = sample_weight[start : start + BLOCK]
        logp = block_log_prob(xb, means, prec_chol, comp_const)
        lse = logsumexp_rows(logp)
        loglik += float(wb @ lse)
        with np.errstate(under="ignore"):
            resp = np.exp(logp - lse[:, None]) * wb[:, None]
        accumulate_block(xb, resp, means, nk, sx, sxx, full)
    return loglik


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
            sxx[k] += rk @ (xc * xc)


def em_pass_full(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    return _em_pass(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx, True)


def em_pass_diag(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx):
    return _em_pass(X, sample_weight, means, prec_chol, comp_const, nk, sx, sxx, False)


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
        dist = ((xb[:, None, :] - c64[None, :, :]) ** 2).sum(axis=2)
        lab = np.argmin(dist, axis=1)
        inertia += float(wb @ dist[np.arange(xb.shape[0]), lab])
        np.add.at(sums, lab, xb * wb[:, None])
        np.add.at(counts, lab, wb)
        if labels.shape[0]:
            labels[start : start + BLOCK] = lab
    return inertia
