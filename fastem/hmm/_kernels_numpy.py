"""NumPy reference of the HMM kernels: the oracle the Numba kernels are tested against.

Contract (shared by :mod:`fastem.backends._numba_hmm`)
-----------------------------------------------------
Sequences are the rows ``offsets[s]:offsets[s + 1]`` of the frame arrays
(``offsets`` int64 of shape (S + 1,), every sequence non-empty). ``logB`` is the
(N, K) float64 array of emission log-densities ``log p(x_t | z_t = k)``; a
``-inf`` entry is an impossible emission. Probabilities are float64.

``forward_backward(logB, offsets, startprob, transmat, seq_weight, gamma, loglik, xi, start)``
    Scaled forward-backward with a per-frame max shift. Writes the posteriors
    ``gamma`` (N, K) (unweighted), the per-sequence log-likelihoods ``loglik``
    (S,) (unweighted), and overwrites ``xi`` (K, K) with the transition counts
    ``sum_s w_s sum_t P(z_t = i, z_t+1 = j | x_s)`` and ``start`` (K,) with
    ``sum_s w_s gamma_s0``.
``forward_filter(logB, offsets, startprob, transmat, filt, loglik)``
    Filtered (causal) probabilities ``P(z_t | x_1..t)`` into ``filt`` (N, K).
``viterbi(logB, offsets, log_startprob, log_transmat, path, logprob)``
    Most likely state path (int64, N) and its log-probability per sequence (S,).
``moments_diag / moments_full(X, gamma, row_weight, shift, nk, sx, sxx)``
    Overwrite ``nk`` (K,), ``sx`` (K, D) and ``sxx`` ((K, D) or (K, D, D)) with
    ``sum_t g_tk``, ``sum_t g_tk (x_t - shift_k)`` and the centred second
    moments, where ``g_tk = row_weight[t] * gamma[t, k]`` (X float32 or float64).
``gmm_state_logprob(comp, n_mix, out)``, ``gmm_posteriors(comp, n_mix, state, ...)``
    GMM-HMM: state emissions as the log-sum-exp of each state's ``n_mix``
    weighted component log-densities (``comp``, (N, K * n_mix)), and the
    component posteriors ``row_weight * gamma * exp(comp - state)`` (the
    trailing arguments of ``gmm_posteriors`` are ``gamma, row_weight, out``).

Scaling
-------
Each frame's emissions are shifted by their maximum before ``exp``
(``b_t = exp(logB_t - max_k logB_t)``), so no frame underflows as a whole,
however high-dimensional the data. If the predicted mass still falls only on
states whose shifted emission underflows (``c_t`` below ``TINY``), the frame is
redone with the shift ``max_j (log pred_j + logB_tj)``, which makes its largest
term exactly 1: the forward pass then never underflows where the log-space one
would not.
"""

from __future__ import annotations

import numpy as np

# A normalizer below this is recomputed with the exact (log-space) shift.
TINY = 1e-250
# Shifted emissions are capped at exp(EXP_CAP) in a redone frame (finite backward).
EXP_CAP = 700.0


def _frame_forward(pred, logb_row):
    """Scaled forward update of one frame: (alpha, c, b) with alpha summing to 1.

    ``pred`` is the predicted state distribution (sums to 1), ``b`` the shifted
    emissions that the backward pass must reuse, and ``log c`` plus the shift
    the frame's log-likelihood increment, returned as ``c`` and ``shift``.
    """
    m = logb_row.max()
    if not np.isfinite(m):
        return None
    b = np.exp(logb_row - m)
    a = pred * b
    c = a.sum()
    if c < TINY:
        with np.errstate(divide="ignore"):
            logs = np.log(pred) + logb_row
        m2 = logs.max()
        if not np.isfinite(m2):
            return None
        a = np.exp(logs - m2)
        c = a.sum()
        b = np.exp(np.minimum(logb_row - m2, EXP_CAP))
        m = m2
    return a / c, c, b, m


def _forward(logB, startprob, transmat):
    """(alpha, c, b, loglik) of one sequence; alpha rows sum to 1."""
    T, K = logB.shape
    alpha = np.zeros((T, K))
    c = np.ones(T)
    b = np.zeros((T, K))
    loglik = 0.0
    pred = startprob
    for t in range(T):
        res = _frame_forward(pred, logB[t])
        if res is None:  # every state impossible: the sequence has probability 0
            return alpha, c, b, -np.inf
        alpha[t], c[t], b[t], m = res
        loglik += np.log(c[t]) + m
        pred = alpha[t] @ transmat
    return alpha, c, b, loglik


def forward_backward(logB, offsets, startprob, transmat, seq_weight, gamma, loglik, xi, start):
    K = logB.shape[1]
    xi[:] = 0.0
    start[:] = 0.0
    for s in range(offsets.shape[0] - 1):
        lo, hi = offsets[s], offsets[s + 1]
        alpha, c, b, ll = _forward(logB[lo:hi], startprob, transmat)
        loglik[s] = ll
        if not np.isfinite(ll):
            gamma[lo:hi] = 0.0  # an impossible sequence carries no information
            continue
        w = seq_weight[s]
        T = hi - lo
        beta = np.ones(K)
        outer = np.zeros((K, K))
        g = alpha[T - 1].copy()
        gamma[hi - 1] = g / g.sum()
        for t in range(T - 2, -1, -1):
            # A state with zero posterior at t+1 is on no path: v is exactly 0
            # there, so an inf from an unreachable state cannot turn into NaN.
            with np.errstate(invalid="ignore", over="ignore"):
                v = np.where(gamma[lo + t + 1] > 0, b[t + 1] * beta / c[t + 1], 0.0)
            outer += np.outer(alpha[t], v)
            beta = transmat @ v
            g = alpha[t] * beta
            gamma[lo + t] = g / g.sum()
        xi += w * (transmat * outer)
        start += w * gamma[lo]


def forward_filter(logB, offsets, startprob, transmat, filt, loglik):
    for s in range(offsets.shape[0] - 1):
        lo, hi = offsets[s], offsets[s + 1]
        alpha, _, _, ll = _forward(logB[lo:hi], startprob, transmat)
        filt[lo:hi] = alpha
        loglik[s] = ll


def viterbi(logB, offsets, log_startprob, log_transmat, path, logprob):
    K = logB.shape[1]
    for s in range(offsets.shape[0] - 1):
        lo, hi = offsets[s], offsets[s + 1]
        T = hi - lo
        back = np.zeros((T, K), dtype=np.int64)
        delta = log_startprob + logB[lo]
        for t in range(1, T):
            cand = delta[:, None] + log_transmat  # (from, to)
            # The last maximizing predecessor, as hmmlearn's backtrack picks it
            # (exact ties are common with discrete emissions).
            back[t] = K - 1 - np.argmax(cand[::-1], axis=0)
            delta = cand[back[t], np.arange(K)] + logB[lo + t]
        state = int(np.argmax(delta))
        logprob[s] = delta[state]
        for t in range(T - 1, -1, -1):
            path[lo + t] = state
            state = back[t, state]


def _weighted(gamma, row_weight):
    return gamma * row_weight[:, None]


def moments_diag(X, gamma, row_weight, shift, nk, sx, sxx):
    g = _weighted(gamma, row_weight)
    nk[:] = g.sum(axis=0)
    for k in range(g.shape[1]):
        d = X.astype(np.float64) - shift[k]
        sx[k] = g[:, k] @ d
        sxx[k] = g[:, k] @ (d * d)


def moments_full(X, gamma, row_weight, shift, nk, sx, sxx):
    g = _weighted(gamma, row_weight)
    nk[:] = g.sum(axis=0)
    for k in range(g.shape[1]):
        d = X.astype(np.float64) - shift[k]
        sx[k] = g[:, k] @ d
        sxx[k] = (d * g[:, k, None]).T @ d


def gmm_state_logprob(comp, n_mix, out):
    """State emissions of a GMM-HMM: ``out[t, k] = logsumexp_m comp[t, k*M + m]``
    (``comp`` holds the weighted component log-densities, (N, K*M))."""
    N = comp.shape[0]
    c = comp.reshape(N, -1, n_mix)
    mx = c.max(axis=2)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        out[:] = safe + np.log(np.exp(c - safe[:, :, None]).sum(axis=2))


def gmm_posteriors(comp, n_mix, state, gamma, row_weight, out):
    """Component posteriors ``out[t, k*M + m] = w_t gamma_tk exp(comp - state)``;
    an impossible state (``state = -inf``) gets 0."""
    N = comp.shape[0]
    c = comp.reshape(N, -1, n_mix)
    with np.errstate(invalid="ignore", under="ignore"):
        r = np.exp(c - state[:, :, None])
    r = np.where(np.isfinite(state)[:, :, None], r, 0.0)
    out[:] = ((gamma * row_weight[:, None])[:, :, None] * r).reshape(N, -1)
