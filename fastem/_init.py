"""Initial parameters: k-means (k-means++ seeding + Lloyd passes on a kernel),
k-means++, random responsibilities, random rows, model-based hierarchical
clustering ('hc', :mod:`fastem._hc`), short EM runs ('emem'), the best of
deterministic and random starts after short runs ('best', :func:`best_stats`),
that start converged and searched by split-and-merge EM ('smem',
:mod:`fastem._smem`), and user-given parameters.

Every random choice over rows samples by inverting the cumulative sample
weights, so a row of integer weight ``m`` is chosen exactly as ``m`` copies of
it would be: weighted fits stay equivalent to repeated rows from the start.
The exception is 'random_from_data', ``k`` distinct rows: unweighted it takes
scikit-learn's draw (a permutation), weighted a draw without replacement in
proportion to the weights (which ``m`` copies, any two of which may be drawn,
cannot match exactly).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np

from ._covariance import check_covariance_type, layout
from ._hc import DEFAULT_MAX_ROWS, hc_tree
from ._passes import PassParams, em_stats
from ._stats import Stats, m_step
from .backends._numpy import accumulate_block

INIT_METHODS = (
    "kmeans",
    "k-means++",
    "random",
    "random_from_data",
    "hc",
    "emem",
    "best",
    "smem",
)
# emEM (Biernacki, Celeux & Govaert 2003): short runs from k-means++ seeds.
EMEM_STARTS = 10
EMEM_PASSES = 5
# 'best': deterministic starts plus random seeds, short runs, then the best
# few (and every deterministic one) run longer; the best of those is kept.
BEST_DETERMINISTIC = ("hc", "kmeans")
BEST_RANDOM = 10
BEST_SHORT_PASSES = 5
BEST_FINALISTS = 2
BEST_LONG_PASSES = 40
BEST_LONG_TOL = 1e-8
_BLOCK = 4096


# Data whose largest |value| lies outside [2**-_SCALE_EXP, 2**_SCALE_EXP] is measured in
# k-means at that value's scale (2**480 ~ 3e144: squares summed over rows and features
# stay below float64's 1.8e308; 2**-480: they stay above its normal range).
_SCALE_EXP = 480


def _power_of_two_scale(X: np.ndarray) -> float:
    """1.0 for ordinary data, else ``2**-e`` with ``2**(e-1) <= max|X| < 2**e``.

    Multiplying by a power of two is exact (barring underflow of values that are
    negligible beside the largest), so k-means's distances, variances and shifts
    taken on scaled values choose what they would in exact arithmetic, where at
    1e160 their squares overflowed (k-means++ drew from an infinite potential and
    Lloyd's tolerance became inf: it stopped after one pass)."""
    if X.dtype != np.float64 or X.size == 0:
        return 1.0  # float32 squares, in float64, never leave the range
    top = float(np.max(np.abs(X)))
    if not np.isfinite(top) or top == 0.0:
        return 1.0
    e = int(np.frexp(top)[1])
    if -_SCALE_EXP <= e <= _SCALE_EXP:
        return 1.0
    return float(np.ldexp(1.0, -e))


def _sq_dist_to(X: np.ndarray, centres: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Squared distances (n, c) from every row to a few centres, in row blocks
    (of the rows and centres times ``scale``, a power of two)."""
    out = np.empty((X.shape[0], centres.shape[0]))
    if scale != 1.0:
        centres = centres * scale
    for start in range(0, X.shape[0], _BLOCK):
        xb = X[start : start + _BLOCK].astype(np.float64)
        if scale != 1.0:
            xb *= scale
        out[start : start + _BLOCK] = ((xb[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return out


def _sample_by_cumulative(cumulative: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Rows whose cumulative-weight interval ``(c[i-1], c[i]]`` holds ``u * total``."""
    idx = np.searchsorted(cumulative, u * cumulative[-1], side="left")
    return np.minimum(idx, cumulative.shape[0] - 1)


def kmeans_plusplus(
    X: np.ndarray, sample_weight: np.ndarray, n_clusters: int, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii; scikit-learn's variant).

    Each new centre is the best of ``2 + log(k)`` candidates drawn with
    probability proportional to ``weight * squared distance`` to the nearest
    chosen centre.

    Returns
    -------
    centres : ndarray (n_clusters, d), float64
    indices : ndarray (n_clusters,)
        The rows chosen as centres.
    """
    n_local_trials = 2 + int(np.log(n_clusters))
    scale = _power_of_two_scale(X)  # 1.0 for ordinary data (a far point: see there)
    indices = np.empty(n_clusters, dtype=np.int64)
    indices[0] = _sample_by_cumulative(np.cumsum(sample_weight), rng.uniform(size=1))[0]
    centres = np.empty((n_clusters, X.shape[1]))
    centres[0] = X[indices[0]]
    closest = _sq_dist_to(X, centres[:1], scale)[:, 0]
    for c in range(1, n_clusters):
        potential = sample_weight * closest
        candidates = _sample_by_cumulative(np.cumsum(potential), rng.uniform(size=n_local_trials))
        dist = np.minimum(closest[:, None], _sq_dist_to(X, X[candidates].astype(np.float64), scale))
        best = int(np.argmin(sample_weight @ dist))
        indices[c] = candidates[best]
        centres[c] = X[indices[c]]
        closest = dist[:, best]
    return centres, indices


def kmeans(
    X: np.ndarray,
    sample_weight: np.ndarray,
    n_clusters: int,
    rng,
    backend: ModuleType,
    max_iter: int = 300,
    tol: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Lloyd k-means from k-means++ seeds, one kernel pass per iteration.

    Stops when the centres move less (in summed squared distance) than ``tol``
    times the mean per-feature variance of X, as scikit-learn does. An empty
    cluster keeps its previous centre.

    Returns
    -------
    centres : ndarray (n_clusters, d), float64
    labels : ndarray (n,), int64
    """
    centres, _ = kmeans_plusplus(X, sample_weight, n_clusters, rng)
    # variance and shifts of the values times a power of two (1.0 for ordinary data):
    # near 1e160 their squares overflowed, tol_abs was inf and Lloyd stopped at once
    scale = _power_of_two_scale(X)
    wsum = sample_weight.sum()
    mean = (sample_weight @ X) / wsum
    sq_dev = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], _BLOCK):  # blockwise: no N x D temporary
        xb = X[start : start + _BLOCK] - mean
        if scale != 1.0:
            xb *= scale
        sq_dev += sample_weight[start : start + _BLOCK] @ (xb * xb)
    var = sq_dev / wsum
    tol_abs = tol * float(np.mean(var))
    sums = np.zeros((n_clusters, X.shape[1]))
    counts = np.zeros(n_clusters)
    no_labels = np.empty(0, dtype=np.int64)
    for _ in range(max_iter):
        backend.kmeans_pass(X, sample_weight, centres.astype(X.dtype), sums, counts, no_labels)
        new = centres.copy()
        nonempty = counts > 0
        new[nonempty] = sums[nonempty] / counts[nonempty, None]
        shift = float((((new - centres) * scale) ** 2).sum())
        centres = new
        if shift <= tol_abs:
            break
    labels = np.empty(X.shape[0], dtype=np.int64)
    backend.kmeans_pass(X, sample_weight, centres.astype(X.dtype), sums, counts, labels)
    return centres, labels


def stats_from_responsibilities(
    X: np.ndarray,
    sample_weight: np.ndarray,
    resp_block: Callable[[int, int], np.ndarray],
    shift: np.ndarray,
    full: bool,
) -> Stats:
    """Sufficient statistics for responsibilities given block by block.

    ``resp_block(start, stop)`` returns the (stop - start, k) responsibilities
    of those rows; only one block is held at a time.
    """
    k, d = shift.shape
    stats = Stats.zeros(k, d, full, shift)
    for start in range(0, X.shape[0], _BLOCK):
        stop = min(start + _BLOCK, X.shape[0])
        xb = X[start:stop].astype(np.float64)
        resp = resp_block(start, stop) * sample_weight[start:stop, None]
        accumulate_block(xb, resp, shift, stats.nk, stats.sx, stats.sxx, full)
    stats.weight_sum = float(sample_weight.sum())
    return stats


def stats_from_partition(
    X: np.ndarray,
    sample_weight: np.ndarray,
    rows: np.ndarray,
    row_weights: np.ndarray,
    labels: np.ndarray,
    n_components: int,
    rng,
    full: bool,
) -> Stats:
    """Statistics of a hard partition of some rows, scaled to all rows' weight.

    Parameters
    ----------
    X, sample_weight : ndarray
        All rows and their weights (only ``X[rows]`` is read, and the weights
        for their total and for drawing rows).
    rows, row_weights : ndarray of shape (m,)
        The partitioned rows and the weight each carries (an HC tree's leaves).
    labels : ndarray of shape (m,)
        Groups ``0 .. g - 1``, ``g <= n_components``; each is one component.
        Components beyond ``g`` (more components than distinct rows) get no
        weight and a row drawn by weight as their mean.
    n_components : int
    rng : RandomState or Generator
    full : bool
        Full second moments (else their diagonals).

    Returns
    -------
    Stats
        About each group's weighted mean; ``weight_sum`` is all rows' weight.
    """
    k = n_components
    xs = X[rows].astype(np.float64)
    groups = int(labels.max()) + 1
    if groups > k:  # one component per group: the caller's cut is wrong
        raise ValueError(
            f"the partition has {groups} groups, more than n_components={k}: an "
            "initial partition must have at most one group per component"
        )
    counts = np.bincount(labels, weights=row_weights, minlength=groups)
    shift = np.empty((k, X.shape[1]))
    for g in range(groups):
        shift[g] = (row_weights[labels == g] @ xs[labels == g]) / counts[g]
    if groups < k:
        cumulative = np.cumsum(sample_weight)
        extra = _sample_by_cumulative(cumulative, rng.uniform(size=k - groups))
        shift[groups:] = X[extra]
    eye = np.eye(k)
    stats = stats_from_responsibilities(xs, row_weights, lambda a, b: eye[labels[a:b]], shift, full)
    total = float(sample_weight.sum())
    stats = stats.scaled(total / stats.weight_sum)
    stats.weight_sum = total
    return stats


def _tree_weights(sample_weight: np.ndarray) -> np.ndarray:
    """The weights the HC tree is built with: ``sample_weight`` divided by its
    positive value when every positive weight is the same (0 or 1, then).

    The tree uses every row only for integer weights summing to at most
    ``max_rows`` and otherwise draws rows by weight, so a constant weight of 2.5
    (or of 2 on 1,500 rows) built another, random, tree than no weights at all;
    a fit does not depend on the scale of ``sample_weight`` elsewhere. The
    partition's statistics are scaled to the total weight whatever the tree's.
    """
    positive = sample_weight[sample_weight > 0]
    if positive.size and positive.min() == positive.max() and positive[0] != 1.0:
        return sample_weight / positive[0]
    return sample_weight


def hc_stats(
    X: np.ndarray,
    sample_weight: np.ndarray,
    n_components: int,
    rng,
    full: bool,
    max_rows: int = DEFAULT_MAX_ROWS,
    use: str = "SVD",
) -> Stats:
    """Statistics of the ``n_components``-cluster cut of an HC tree
    (:func:`fastem._hc.hc_tree`, on at most ``max_rows`` rows, data
    transformed by ``use``)."""
    tree = hc_tree(
        X,
        _tree_weights(sample_weight),
        max_rows=max_rows,
        min_clusters=n_components,
        random_state=rng,
        use=use,
    )
    labels = tree.labels(min(n_components, tree.n_leaves))
    return stats_from_partition(
        X, sample_weight, tree.rows, tree.weights, labels, n_components, rng, full
    )


def hc_stats_by_k(
    X: np.ndarray,
    sample_weight: np.ndarray,
    ks,
    rng,
    full: bool,
    max_rows: int = DEFAULT_MAX_ROWS,
    use: str = "SVD",
) -> dict[int, Stats]:
    """:func:`hc_stats` for several numbers of components from one tree (for
    model selection: the tree is built once, down to ``min(ks)`` clusters)."""
    ks = sorted({int(k) for k in ks})
    tree = hc_tree(
        X,
        _tree_weights(sample_weight),
        max_rows=max_rows,
        min_clusters=ks[0],
        random_state=rng,
        use=use,
    )
    leaves = (tree.rows, tree.weights)
    return {
        k: stats_from_partition(
            X, sample_weight, *leaves, tree.labels(min(k, tree.n_leaves)), k, rng, full
        )
        for k in ks
    }


def _short_run(
    X: np.ndarray,
    sample_weight: np.ndarray,
    stats: Stats,
    backend: ModuleType,
    covariance_type: str,
    reg_covar: float,
    n_passes: int,
    rel_tol: float = 0.0,
) -> Stats | None:
    """``n_passes`` plain EM passes from ``stats`` (M-step, then E-step over
    all rows); the statistics of the last pass, or None if a covariance
    collapses. With ``rel_tol > 0`` it stops early once a pass gains less than
    ``rel_tol * (1 + |loglik|)`` (mclust's relative criterion, on the total)."""
    eps = float(np.finfo(X.dtype).eps)
    previous = -np.inf
    state: dict = {}  # EVE/VVE: warm-started orientation sweeps, as in the fit's EM
    try:
        for _ in range(n_passes):
            weights, means, _, prec_chol = m_step(
                stats, covariance_type, reg_covar, eps, state=state
            )
            params = PassParams.from_model(weights, means, prec_chol, covariance_type, X.dtype)
            stats = em_stats(backend, X, sample_weight, params, check_nan=False)
            if not np.isfinite(stats.loglik):
                return None
            if rel_tol > 0 and stats.loglik - previous < rel_tol * (1.0 + abs(stats.loglik)):
                break
            previous = stats.loglik
    except (ValueError, np.linalg.LinAlgError):  # a collapsed component ends this run
        return None
    return stats


def emem_stats(
    X: np.ndarray,
    sample_weight: np.ndarray,
    n_components: int,
    rng,
    backend: ModuleType,
    covariance_type: str,
    reg_covar: float,
    n_starts: int = EMEM_STARTS,
    n_passes: int = EMEM_PASSES,
) -> Stats:
    """emEM (Biernacki, Celeux & Govaert 2003): the best of short EM runs.

    Each of ``n_starts`` starts is a k-means++ seeding (one row per
    component, covariances ``reg_covar``); from each, ``n_passes`` EM passes
    over all rows. The returned statistics are those of the last pass of the
    run with the highest log-likelihood, so the fit's first M-step continues
    that run. A start whose covariances collapse is dropped; if all do, this
    falls back to the 'kmeans' start.
    """
    covariance_type = check_covariance_type(covariance_type)
    full = _full_moments(covariance_type)
    best: Stats | None = None
    for _ in range(n_starts):
        stats = initial_stats(X, sample_weight, n_components, "k-means++", rng, backend, full)
        stats = _short_run(X, sample_weight, stats, backend, covariance_type, reg_covar, n_passes)
        if stats is None:
            continue
        if best is None or stats.loglik > best.loglik:
            best = stats
    if best is None:
        return initial_stats(X, sample_weight, n_components, "kmeans", rng, backend, full)
    return best


def _start(X, sample_weight, k, name, rng, backend, full) -> Stats:
    if name == "hc-std":
        return hc_stats(X, sample_weight, k, rng, full, use="STD")
    # weighted_draw: the random-row starts keep the draw 'best' was measured with
    return initial_stats(X, sample_weight, k, name, rng, backend, full, weighted_draw=True)


def _random_rows(sample_weight: np.ndarray, k: int, rng, like_sklearn: bool) -> np.ndarray:
    """``k`` distinct rows drawn with probability proportional to their weight.

    ``like_sklearn``: unweighted data (all weights equal) takes scikit-learn's own
    draw, ``choice(n, k, replace=False)``, so that ``init_params="random_from_data"``
    with the same ``random_state`` starts from the rows scikit-learn starts from
    (``choice`` with a uniform ``p`` draws other rows from the same stream).
    """
    if like_sklearn and sample_weight.min() == sample_weight.max():
        return rng.choice(sample_weight.shape[0], size=k, replace=False)
    positive = np.flatnonzero(sample_weight > 0)
    p = sample_weight[positive] / sample_weight[positive].sum()
    return positive[rng.choice(positive.shape[0], size=k, replace=False, p=p)]


def _feature_variances(X: np.ndarray, sample_weight: np.ndarray) -> np.ndarray:
    """Weighted per-feature variances of X, in row blocks."""
    wsum = sample_weight.sum()
    mean = (sample_weight @ X) / wsum
    sq = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], _BLOCK):
        xb = X[start : start + _BLOCK] - mean
        sq += sample_weight[start : start + _BLOCK] @ (xb * xb)
    return sq / wsum


#: Models whose every component has its own free shape and orientation, so that a
#: component's covariance is singular whenever its scatter is: it needs ``d + 1``
#: rows. The others share the shape or fix it (or the orientation, then a
#: coordinate's variance needs 2 rows), and need 2.
_FULL_RANK_MODELS = ("full", "VVV", "EVV")


def _full_moments(covariance_type: str) -> bool:
    """Whether a covariance type's M-step needs full second moments (its kernel
    family is 'full'): 'full', 'tied' and the eight non-diagonal mclust models."""
    return layout(check_covariance_type(covariance_type)) in ("full", "tied")


def degenerate(
    stats: Stats,
    covariance_type: str,
    reg_covar: float,
    variances: np.ndarray,
    n_rows: float,
    rel_eig: float = 1e-5,
) -> bool:
    """Whether the M-step of ``stats`` is a degenerate (spurious) solution.

    Degenerate: a component carries fewer than ``d + 1`` rows (models whose
    components each have a free shape and orientation: 'full', VVV, EVV) or 2
    rows (every other scikit-learn type or mclust model), counting ``nk`` in
    rows as ``nk * n_rows / weight_sum``; or a covariance's smallest
    eigenvalue, in units of the features' ``variances``, is below ``rel_eig``
    (collapsed onto a subspace, which ``reg_covar`` alone allows on
    discretised data). Any covariance layout: (k, d, d), (d, d) tied, (k, d)
    diagonals and (k,) spherical variances.
    """
    ct = check_covariance_type(covariance_type)
    d = stats.sx.shape[1]
    rows = stats.nk * (n_rows / stats.weight_sum)
    if rows.min() < (d + 1 if ct in _FULL_RANK_MODELS else 2):
        return True
    eps = float(np.finfo(np.float64).eps)
    _, _, cov, _ = m_step(stats, ct, reg_covar, eps)
    scale = 1.0 / np.sqrt(np.maximum(variances, eps))
    kind = layout(ct)
    if kind in ("full", "tied"):  # (k, d, d), or (d, d) for 'tied'
        scaled = cov * np.outer(scale, scale)
        lam = np.linalg.eigvalsh(scaled).min()
    elif kind == "diag":  # (k, d) diagonals (every diagonal mclust model)
        lam = (cov * scale**2).min()
    else:  # (k,) spherical variances
        lam = cov.min() * (scale**2).min()
    return bool(lam < rel_eig)


def best_stats(
    X: np.ndarray,
    sample_weight: np.ndarray,
    n_components: int,
    rng,
    backend: ModuleType,
    covariance_type: str,
    reg_covar: float,
    *,
    deterministic: tuple[str, ...] = BEST_DETERMINISTIC,
    n_random: int = BEST_RANDOM,
    short_passes: int = BEST_SHORT_PASSES,
    n_finalists: int = BEST_FINALISTS,
    long_passes: int = BEST_LONG_PASSES,
    long_tol: float = BEST_LONG_TOL,
    trace: list | None = None,
    finalists: list | None = None,
) -> Stats:
    """The best of several starts, each run a little, the best few run longer.

    Stage 1: the ``deterministic`` starts (any of 'hc', the tree on
    SVD-scaled data; 'hc-std', the tree on standardised data; 'kmeans') and
    ``n_random`` random ones (alternately k-means++ seeds and random rows), each followed
    by ``short_passes`` EM passes in the model's covariance type. Stage 2:
    every deterministic run and the ``n_finalists`` best random runs continue
    for up to ``long_passes`` passes (stopping early once a pass gains less
    than ``long_tol`` relative). The statistics of the run with the highest
    log-likelihood are returned; the fit continues it.

    A run that ends degenerate (:func:`degenerate`: a component of fewer
    rows than it needs, or a collapsed covariance) is kept only if every run
    does: such optima have unbounded likelihood and are not the better fit.

    ``trace``, when given a list, receives ``(name, stage-1 loglik, final
    loglik, degenerate)`` for every run of stage 2 (for the benchmark);
    ``finalists``, when given a list, receives ``(degenerate, stats)`` of every
    stage-2 run that did not collapse (SMEM searches from each). Falls back to
    the 'kmeans' start if every run collapses.
    """
    covariance_type = check_covariance_type(covariance_type)
    full = _full_moments(covariance_type)
    k = n_components
    names = list(deterministic) + [
        "k-means++" if i % 2 == 0 else "random_from_data" for i in range(n_random)
    ]
    runs = []
    for name in names:
        stats = _start(X, sample_weight, k, name, rng, backend, full)
        stats = _short_run(
            X, sample_weight, stats, backend, covariance_type, reg_covar, short_passes
        )
        if stats is not None:
            runs.append((name, stats))
    if not runs:
        return initial_stats(X, sample_weight, k, "kmeans", rng, backend, full)
    fixed = [r for r in runs if r[0] in deterministic]
    rest = sorted((r for r in runs if r[0] not in deterministic), key=lambda r: -r[1].loglik)
    variances = _feature_variances(X, sample_weight)
    n_rows = float(np.count_nonzero(sample_weight > 0))
    best: Stats | None = None
    best_key = None
    for name, stats in fixed + rest[:n_finalists]:
        before = stats.loglik
        done = _short_run(
            X, sample_weight, stats, backend, covariance_type, reg_covar, long_passes, long_tol
        )
        bad = done is None or degenerate(done, covariance_type, reg_covar, variances, n_rows)
        if trace is not None:
            trace.append((name, before, None if done is None else done.loglik, bad))
        if done is None:
            continue
        if finalists is not None:
            finalists.append((bad, done))
        key = (not bad, done.loglik)
        if best_key is None or key > best_key:
            best, best_key = done, key
    if best is None:
        return max((r[1] for r in runs), key=lambda s: s.loglik)
    return best


def initial_stats(
    X: np.ndarray,
    sample_weight: np.ndarray,
    n_components: int,
    method: str,
    rng,
    backend: ModuleType,
    full: bool,
    *,
    covariance_type: str | None = None,
    reg_covar: float = 1e-6,
    weighted_draw: bool = False,
) -> Stats:
    """Sufficient statistics of the initial responsibilities of ``method``.

    As in scikit-learn: 'kmeans' uses the hard k-means assignment; 'random'
    uniform random responsibilities normalised per row; 'k-means++' and
    'random_from_data' one row per component (so the initial covariances are
    ``reg_covar`` alone). 'hc' is the partition of model-based hierarchical
    clustering (:func:`hc_stats`); 'emem' the best of short EM runs
    (:func:`emem_stats`), 'best' :func:`best_stats` and 'smem' the 'best'
    start converged then searched by split-and-merge moves
    (:func:`fastem._smem.smem_stats`); these three run the model's
    ``covariance_type`` (default 'full' if ``full`` else 'diag') with
    ``reg_covar``. ``weighted_draw``: 'random_from_data' always draws by weight
    (:func:`_random_rows`), as the random-row starts of 'best' do.
    """
    k, d = n_components, X.shape[1]
    if method == "hc":
        return hc_stats(X, sample_weight, k, rng, full)
    if method in ("emem", "best", "smem"):
        ct = covariance_type if covariance_type is not None else ("full" if full else "diag")
        if method == "smem":
            from ._smem import smem_stats  # imports this module: import when used

            return smem_stats(X, sample_weight, k, rng, backend, ct, reg_covar)
        strategy = emem_stats if method == "emem" else best_stats
        return strategy(X, sample_weight, k, rng, backend, ct, reg_covar)
    if method == "kmeans":
        centres, labels = kmeans(X, sample_weight, k, rng, backend)
        eye = np.eye(k)
        return stats_from_responsibilities(
            X, sample_weight, lambda a, b: eye[labels[a:b]], centres, full
        )
    if method == "random":
        mean = (sample_weight @ X) / sample_weight.sum()

        def random_block(a: int, b: int) -> np.ndarray:
            r = rng.uniform(size=(b - a, k))
            return r / r.sum(axis=1, keepdims=True)

        return stats_from_responsibilities(
            X, sample_weight, random_block, np.tile(mean, (k, 1)), full
        )
    if method == "k-means++":
        _, indices = kmeans_plusplus(X, sample_weight, k, rng)
    elif method == "random_from_data":
        indices = _random_rows(sample_weight, k, rng, like_sklearn=not weighted_draw)
    else:  # validated by the estimator; kept as a guard for direct callers
        raise ValueError(f"unknown init_params {method!r}; expected one of {INIT_METHODS}")
    rows = X[indices].astype(np.float64)
    stats = Stats.zeros(k, d, full, rows)
    stats.nk[:] = sample_weight[indices]
    stats.weight_sum = float(sample_weight.sum())
    return stats
