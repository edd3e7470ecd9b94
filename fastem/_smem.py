"""Split-and-merge EM (SMEM; Ueda, Nakano, Ghahramani & Hinton 2000, "SMEM
algorithm for mixture models", Neural Computation 12): a search after a
converged fit for a better local maximum.

EM cannot move a component from a place with too many (two components on one
cluster) to a place with too few (one component spread over two clusters).
SMEM does so in one move: merge a pair of components ``i, j`` into one, split
a component ``k`` into two, settle the three new components by *partial* EM
(the other components fixed), then run full EM; the move is kept if the
log-likelihood ends higher, and the search repeats from there.

- **Merge criterion** ``J_merge(i, j) = P_i^T P_j``, the inner product of the
  two components' posterior vectors over the rows (rows weighted by their
  sample weight): components that claim the same rows.
- **Split criterion** ``J_split(k) = sum_n f_k(x_n) (log f_k(x_n) - log p_k(x_n))``,
  the local Kullback-Leibler divergence between the empirical density around
  component ``k``, ``f_k(x_n) = P(k | x_n) / sum_m w_m P(k | x_m)`` per copy of
  a row, and the component's own density ``p_k``: a component that fits its
  rows badly.
- **Candidates.** Pairs ranked by ``J_merge`` (highest first), and for each
  pair the components ``k`` outside it ranked by ``J_split``; triples are
  tried in order of the sum of the two ranks (ties: merge rank first), the
  first ``n_candidates`` of them (the paper uses 5 to 10). The first triple
  ``(pair 1, best split)`` is the paper's.
- **Move.** The merged component is moment-matched (weight ``w_i + w_j``, the
  weighted mean, the covariance of the two together). The split component is
  cut along the direction in which its rows' scatter is widest relative to
  the pooled within-component scatter (a generalized eigenvector: invariant
  to the features' units and to any linear transformation of the data; the
  plain principal axis would split a wide cluster across a narrow feature
  after standardisation, or follow the feature with the largest unit without
  it): two halves of weight ``w_k / 2`` at ``mu_k +- delta``, each with the
  covariance ``Sigma_k - delta delta^T`` (moment-preserving; ``delta`` takes
  half the scatter along that direction; the diagonal, or its average, for
  'diag' and 'spherical'; the shared covariance is kept for 'tied').
  Deterministic: no random perturbation is needed.
- **Partial EM.** The three new components are fitted to the rows with
  weights ``w_n s(x_n)``, ``s`` the share of the three old components in the
  row's posterior, as a three-component mixture; the others stay fixed and
  the three's total weight stays that of the three old ones (the paper's
  renormalized responsibilities). 'tied' keeps the shared covariance fixed in
  this stage.
- **Acceptance.** Full EM to convergence from the combined parameters; the
  first candidate whose log-likelihood ends more than ``accept_tol`` nats per
  row above the current one, and whose solution is not degenerate
  (:func:`fastem._init.degenerate`, which would otherwise let the search
  chase spurious optima), replaces it. The search stops when no candidate
  improves (or after ``max_rounds`` accepted moves).

Everything runs on fastem's own passes (:func:`fastem._passes.em_stats`,
:func:`fastem._stats.m_step`), so every backend, ``sample_weight`` and float32
work; the four scikit-learn covariance types are searched (``GaussianMixture``
initializes mclust's models from a 'full' or 'diag' start, and so does this).
Missing values: as every start, the search runs on the copy of the data with
NaN filled by column means that the fit initializes from.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ._covariance import check_covariance_type, precision_cholesky
from ._init import (
    _feature_variances,
    _full_moments,
    _short_run,
    best_stats,
    degenerate,
    hc_stats,
    initial_stats,
)
from ._passes import PassParams, em_stats, log_prob
from ._stats import Stats, m_step
from .backends._numpy import logsumexp_rows

#: The start searched from (any start of :func:`fastem._init.initial_stats`).
SMEM_START = "best"
#: Candidate moves tried per round (the paper: 5 to 10). 20 measured best on the
#: initialization suite (docs/initialization.md): 60% success against 55% with 5,
#: at 1.1x the CPU time; 50 found nothing more.
SMEM_CANDIDATES = 20
#: Accepted moves at most (each is followed by a new round of candidates).
SMEM_MAX_ROUNDS = 20
#: Passes of partial EM on the three changed components.
SMEM_PARTIAL_PASSES = 20
#: Passes of full EM (the converging start, and each candidate) at most.
SMEM_FULL_PASSES = 1000
#: Relative stopping rule of those runs (mclust's, on the total log-likelihood).
SMEM_REL_TOL = 1e-10
#: A candidate is kept if it ends this many nats per row above the current fit.
SMEM_ACCEPT_TOL = 1e-6
_BLOCK = 4096


def _as_layout(covariance_type: str) -> str:
    ct = check_covariance_type(covariance_type)
    if ct not in ("full", "tied", "diag", "spherical"):
        raise ValueError(f"SMEM searches the four scikit-learn covariance types, not {ct!r}")
    return ct


def smem_criteria(
    X: np.ndarray,
    sample_weight: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    prec_chol: np.ndarray,
    covariance_type: str,
    backend: ModuleType,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The merge and split criteria of a mixture, and its components' scatter.

    One pass over the rows in blocks (no (n, k) array is held).

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Complete rows.
    sample_weight : ndarray of shape (n,)
        A row of weight ``m`` counts as ``m`` copies of it.
    weights, means, prec_chol : ndarray
        The mixture, ``prec_chol`` in the layout of ``covariance_type``.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    backend : module
        The kernels computing the log-densities.

    Returns
    -------
    j_merge : ndarray of shape (k, k)
        ``sum_n w_n P(i | x_n) P(j | x_n)`` (symmetric).
    j_split : ndarray of shape (k,)
        The local KL divergence of each component (``inf`` for a component
        that carries no weight: nothing to compare).
    scatter : ndarray of shape (k, d, d)
        ``sum_n w_n P(k | x_n) (x_n - mu_k)(x_n - mu_k)^T / N_k``, the rows'
        covariance about each component's mean (for the split direction).
    """
    ct = _as_layout(covariance_type)
    k, d = means.shape
    params = PassParams.from_model(weights, means, prec_chol, ct, X.dtype)
    log_w = np.log(np.asarray(weights, dtype=np.float64))
    gram = np.zeros((k, k))
    nk = np.zeros(k)
    p_log_p = np.zeros(k)  # sum w P log P
    p_log_dens = np.zeros(k)  # sum w P log p_k(x)
    scatter = np.zeros((k, d, d))
    for start in range(0, X.shape[0], _BLOCK):
        xb = np.ascontiguousarray(X[start : start + _BLOCK])
        wb = sample_weight[start : start + _BLOCK]
        lp = np.empty((xb.shape[0], k))  # float64 for every data dtype, as kernels take
        log_prob(backend, xb, params, lp, check_nan=False)
        log_post = lp - logsumexp_rows(lp)[:, None]
        post = np.exp(log_post)
        wpost = post * wb[:, None]
        gram += wpost.T @ post
        nk += wpost.sum(axis=0)
        p_log_p += (wpost * log_post).sum(axis=0)  # P log P -> 0 where P underflows to 0
        p_log_dens += (wpost * (lp - log_w)).sum(axis=0)
        x64 = xb.astype(np.float64)
        for c in range(k):
            dev = x64 - means[c]
            scatter[c] += (wpost[:, c, None] * dev).T @ dev
    with np.errstate(divide="ignore", invalid="ignore"):
        # f = P / N_k per copy of a row: sum f (log f - log p) = (S1 - S2) / N_k - log N_k
        j_split = np.where(nk > 0, (p_log_p - p_log_dens) / nk - np.log(nk), np.inf)
        scatter /= np.where(nk > 0, nk, 1.0)[:, None, None]
    return gram, j_split, scatter


def candidate_triples(j_merge: np.ndarray, j_split: np.ndarray, n_candidates: int) -> list:
    """The first ``n_candidates`` moves ``(i, j, k)``: merge ``i < j``, split ``k``.

    Pairs by ``j_merge`` (highest first), splits outside the pair by
    ``j_split`` (highest first); triples in order of the sum of the two ranks,
    ties broken by the merge rank. Equal criteria keep index order (stable).
    """
    k = j_split.shape[0]
    if k < 3:
        return []
    iu, ju = np.triu_indices(k, 1)
    pair_order = np.argsort(-j_merge[iu, ju], kind="stable")
    pairs = [(int(iu[p]), int(ju[p])) for p in pair_order]
    split_order = [int(c) for c in np.argsort(-j_split, kind="stable")]
    ranked = []
    for m, (i, j) in enumerate(pairs):
        splits = [c for c in split_order if c != i and c != j]
        for s, c in enumerate(splits):
            ranked.append((m + s, m, i, j, c))
    ranked.sort()
    return [(i, j, c) for _, _, i, j, c in ranked[:n_candidates]]


def _principal_offset(scatter: np.ndarray, pooled: np.ndarray) -> np.ndarray:
    """``delta``, the split's mean offset: along the direction ``v`` in which
    ``scatter`` is widest relative to ``pooled`` (the generalized eigenproblem
    ``scatter v = lambda pooled v``: invariant to any linear transformation of
    the data, so neither the features' units nor their correlations decide
    it), scaled so that ``delta^T scatter^-1 delta = 1/2``: the two halves keep
    the component's covariance with ``scatter - delta delta^T`` positive
    definite."""
    lower = np.linalg.cholesky(pooled)
    inv = np.linalg.inv(lower)
    _, vec = np.linalg.eigh(inv @ scatter @ inv.T)
    v = inv.T @ vec[:, -1]
    sv = scatter @ v
    return np.sqrt(0.5 / max(float(v @ sv), np.finfo(np.float64).tiny)) * sv


def split_merge(
    weights: np.ndarray,
    means: np.ndarray,
    cov: np.ndarray,
    scatter: np.ndarray,
    pooled: np.ndarray,
    move: tuple[int, int, int],
    covariance_type: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The parameters after merging ``i, j`` into slot ``i`` and splitting
    ``k`` into slots ``j`` and ``k`` (see the module docstring).

    Parameters
    ----------
    weights, means, cov : ndarray
        The current mixture, ``cov`` in the layout of ``covariance_type``.
    scatter : ndarray of shape (k, d, d)
        Each component's rows' covariance (:func:`smem_criteria`).
    pooled : ndarray of shape (d, d)
        The pooled within-component scatter, the metric of the split direction
        (:func:`_pooled_scatter`).
    move : (i, j, k)
    covariance_type : {'full', 'tied', 'diag', 'spherical'}

    Returns
    -------
    weights, means, cov : ndarray (new arrays)
    """
    ct = _as_layout(covariance_type)
    i, j, k = move
    w, mu, cv = weights.copy(), means.copy(), cov.copy()
    wm = w[i] + w[j]
    merged_mean = (w[i] * mu[i] + w[j] * mu[j]) / wm
    di, dj = mu[i] - merged_mean, mu[j] - merged_mean
    if ct == "full":
        merged = (w[i] * (cv[i] + np.outer(di, di)) + w[j] * (cv[j] + np.outer(dj, dj))) / wm
    elif ct == "diag":
        merged = (w[i] * (cv[i] + di**2) + w[j] * (cv[j] + dj**2)) / wm
    elif ct == "spherical":
        d = mu.shape[1]
        merged = (w[i] * (cv[i] + di @ di / d) + w[j] * (cv[j] + dj @ dj / d)) / wm
    delta = _principal_offset(scatter[k], pooled)
    half = w[k] / 2.0
    mean_k = mu[k].copy()
    if ct == "full":
        # Moment-preserving: the two halves together have the component's covariance.
        # The split removes at most half the axis' scatter: positive definite in exact
        # arithmetic; the eigenvalue floor guards rounding.
        halved = cv[k] - np.outer(delta, delta)
        lam, vec = np.linalg.eigh(halved)
        floor = 1e-3 * np.linalg.eigvalsh(cv[k])[-1]
        halved = (vec * np.maximum(lam, floor)) @ vec.T
    elif ct == "diag":
        halved = np.maximum(cv[k] - delta**2, 0.1 * cv[k])
    elif ct == "spherical":
        halved = max(cv[k] - delta @ delta / mu.shape[1], 0.1 * cv[k])
    w[i], mu[i] = wm, merged_mean
    w[j] = w[k] = half
    mu[j], mu[k] = mean_k + delta, mean_k - delta
    if ct != "tied":
        cv[i] = merged
        cv[j] = cv[k] = halved
    return w, mu, cv


def _pooled_scatter(weights: np.ndarray, scatter: np.ndarray, variances: np.ndarray):
    """``sum_k w_k scatter_k``, with a ridge of 1e-9 feature variances (a
    component on a subspace would leave it singular)."""
    pooled = np.einsum("k,kij->ij", weights, scatter)
    return pooled + np.diag(1e-9 * np.maximum(variances, np.finfo(np.float64).tiny))


def _estep(X, sample_weight, weights, means, prec_chol, ct, backend) -> Stats:
    params = PassParams.from_model(weights, means, prec_chol, ct, X.dtype)
    return em_stats(backend, X, sample_weight, params, check_nan=False)


def _share(X, weights, means, prec_chol, ct, backend, comps) -> np.ndarray:
    """Each row's posterior share of the components ``comps`` (n,)."""
    k = means.shape[0]
    params = PassParams.from_model(weights, means, prec_chol, ct, X.dtype)
    share = np.empty(X.shape[0])
    for start in range(0, X.shape[0], _BLOCK):
        xb = np.ascontiguousarray(X[start : start + _BLOCK])
        lp = np.empty((xb.shape[0], k))  # float64 for every data dtype, as kernels take
        log_prob(backend, xb, params, lp, check_nan=False)
        share[start : start + xb.shape[0]] = np.exp(
            logsumexp_rows(lp[:, comps]) - logsumexp_rows(lp)
        )
    return share


def _partial_em(
    X, sample_weight, share, weights, means, cov, comps, ct, reg_covar, backend, n_passes
):
    """Partial EM on the components ``comps``: a mixture of them fitted to the rows
    weighted by ``sample_weight * share``; the others unchanged. Returns the full
    (weights, means, cov)."""
    eps = float(np.finfo(X.dtype).eps)
    sw = sample_weight * share
    total = float(weights[comps].sum())
    sub_w = weights[comps] / total
    sub_mu = means[comps]
    sub_cov = cov if ct == "tied" else cov[comps]
    previous = -np.inf
    for _ in range(n_passes):
        prec = precision_cholesky(sub_cov, ct)
        stats = _estep(X, sw, sub_w, sub_mu, prec, ct, backend)
        if not np.isfinite(stats.loglik):
            raise ValueError("partial EM diverged")
        sub_w, sub_mu, new_cov, _ = m_step(stats, ct, reg_covar, eps)
        if ct != "tied":  # 'tied' keeps the covariance shared with the fixed components
            sub_cov = new_cov
        if stats.loglik - previous < 1e-8 * (1.0 + abs(stats.loglik)):
            break
        previous = stats.loglik
    w, mu, cv = weights.copy(), means.copy(), cov.copy()
    w[comps] = sub_w * total
    mu[comps] = sub_mu
    if ct != "tied":
        cv[comps] = sub_cov
    return w / w.sum(), mu, cv


def smem_search(
    X: np.ndarray,
    sample_weight: np.ndarray,
    stats: Stats,
    backend: ModuleType,
    covariance_type: str,
    reg_covar: float,
    *,
    n_candidates: int | None = None,
    max_rounds: int | None = None,
    partial_passes: int | None = None,
    full_passes: int | None = None,
    rel_tol: float | None = None,
    accept_tol: float | None = None,
    trace: list | None = None,
) -> Stats:
    """Converge the fit that ``stats`` starts, then search split-and-merge moves.

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Complete rows (no NaN).
    sample_weight : ndarray of shape (n,)
    stats : Stats
        The start: its M-step is the first parameters (as every start of
        :func:`fastem._init.initial_stats`).
    backend : module
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    reg_covar : float
    n_candidates : int, default=SMEM_CANDIDATES
        Moves tried per round (the paper's ``C``).
    max_rounds : int, default=SMEM_MAX_ROUNDS
        Accepted moves at most.
    partial_passes, full_passes : int, default=SMEM_PARTIAL_PASSES, SMEM_FULL_PASSES
        Passes of partial EM and (at most) of each full EM run.
    rel_tol : float, default=SMEM_REL_TOL
        A full EM run stops once a pass gains less than ``rel_tol * (1 + |l|)``,
        ``l`` the total log-likelihood.
    accept_tol : float, default=SMEM_ACCEPT_TOL
        Nats per row a move must gain to be kept.
    trace : list, optional
        Receives ``(i, j, k, loglik or None, accepted)`` for every candidate
        tried (``loglik``: the average log-likelihood it converged to).

    Returns
    -------
    Stats
        The last E-step of the best fit found: its M-step continues it. Its
        log-likelihood is never below that of the converged start.
    """
    # None: the module's constants, read at call time (the benchmark varies them).
    n_candidates = SMEM_CANDIDATES if n_candidates is None else n_candidates
    max_rounds = SMEM_MAX_ROUNDS if max_rounds is None else max_rounds
    partial_passes = SMEM_PARTIAL_PASSES if partial_passes is None else partial_passes
    full_passes = SMEM_FULL_PASSES if full_passes is None else full_passes
    rel_tol = SMEM_REL_TOL if rel_tol is None else rel_tol
    accept_tol = SMEM_ACCEPT_TOL if accept_tol is None else accept_tol
    ct = _as_layout(covariance_type)
    eps = float(np.finfo(X.dtype).eps)
    weight_sum = float(sample_weight.sum())
    n_rows = float(np.count_nonzero(sample_weight > 0))
    variances = _feature_variances(X, sample_weight)
    run = _short_run(X, sample_weight, stats, backend, ct, reg_covar, full_passes, rel_tol)
    if run is None:  # the start collapses when converged: nothing to search from
        return stats
    current = run
    for _ in range(max_rounds):
        weights, means, cov, prec_chol = m_step(current, ct, reg_covar, eps)
        j_merge, j_split, scatter = smem_criteria(
            X, sample_weight, weights, means, prec_chol, ct, backend
        )
        pooled = _pooled_scatter(weights, scatter, variances)
        improved = False
        for move in candidate_triples(j_merge, j_split, n_candidates):
            comps = np.array(move)
            result = None
            try:
                w, mu, cv = split_merge(weights, means, cov, scatter, pooled, move, ct)
                share = _share(X, weights, means, prec_chol, ct, backend, comps)
                w, mu, cv = _partial_em(
                    X, sample_weight, share, w, mu, cv, comps, ct, reg_covar, backend,
                    partial_passes,
                )  # fmt: skip
                start = _estep(X, sample_weight, w, mu, precision_cholesky(cv, ct), ct, backend)
                if np.isfinite(start.loglik):
                    result = _short_run(
                        X, sample_weight, start, backend, ct, reg_covar, full_passes, rel_tol
                    )
            except (ValueError, np.linalg.LinAlgError):  # a collapsed component: no move
                result = None
            ok = (
                result is not None
                and result.loglik > current.loglik + accept_tol * weight_sum
                and not degenerate(result, ct, reg_covar, variances, n_rows)
            )
            if trace is not None:
                value = None if result is None else result.loglik / weight_sum
                trace.append((*move, value, ok))
            if ok:
                current, improved = result, True
                break
        if not improved:
            break
    return current


def smem_stats(
    X: np.ndarray,
    sample_weight: np.ndarray,
    n_components: int,
    rng,
    backend: ModuleType,
    covariance_type: str,
    reg_covar: float,
    *,
    start: str | None = None,
    **search,
) -> Stats:
    """``init_params='smem'``: a start (``SMEM_START``, 'best', by default;
    or 'hc', 'kmeans', ...), converged, then :func:`smem_search`; ``search``
    passes its keyword arguments through."""
    start = SMEM_START if start is None else start
    ct = _as_layout(covariance_type)
    full = _full_moments(ct)
    if start == "best-all":  # search from every proper finalist of 'best'; keep the best
        runs: list = []
        fallback = best_stats(
            X, sample_weight, n_components, rng, backend, ct, reg_covar, finalists=runs
        )
        starts = [stats for bad, stats in runs if not bad] or [fallback]
        found = [smem_search(X, sample_weight, s, backend, ct, reg_covar, **search) for s in starts]
        variances = _feature_variances(X, sample_weight)
        n_rows = float(np.count_nonzero(sample_weight > 0))
        return max(
            found,
            key=lambda s: (not degenerate(s, ct, reg_covar, variances, n_rows), s.loglik),
        )
    if start == "best":
        stats = best_stats(X, sample_weight, n_components, rng, backend, ct, reg_covar)
    elif start == "hc":
        stats = hc_stats(X, sample_weight, n_components, rng, full)
    else:
        stats = initial_stats(
            X, sample_weight, n_components, start, rng, backend, full,
            covariance_type=ct, reg_covar=reg_covar,
        )  # fmt: skip
    return smem_search(X, sample_weight, stats, backend, ct, reg_covar, **search)
