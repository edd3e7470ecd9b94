"""Model-based agglomerative hierarchical clustering (mclust's ``hc``, model VVV).

Starting from singletons, repeatedly merge the two clusters whose merge
increases the regularised Gaussian classification criterion least (Fraley
1998; mclust's ``hcVVV``). One tree gives a partition for every number of
clusters, so model selection can build it once and cut it at each ``K``.

The criterion
-------------
A cluster ``C`` with total weight ``n`` (its number of rows when unweighted),
row count ``c``, scatter ``W = sum_i w_i (z_i - mean)(z_i - mean)^T`` and trace
``tr W`` contributes ::

    term(C) = n * log( det(W / n) + beta * (tr W + alpha) / n )

with ``det(W / n) = 0`` when ``c <= p`` (the scatter of at most ``p`` rows is
singular). Merging ``A`` and ``B`` costs ``term(A u B) - term(A) - term(B)``;
the cheapest pair merges (ties: the pair ``(a, b)``, ``a < b``, first in
lexicographic order of the clusters' names, a cluster being named by its
smallest row index). Without regularisation the criterion is
``sum_C n_C log det(W_C / n_C)``, the classification likelihood of
unconstrained Gaussian clusters, undefined while clusters have at most ``p``
rows; ``alpha`` and ``beta`` are mclust's fix: a singleton costs
``log(alpha * beta)``, a pair ``2 log(beta (tr + alpha) / 2)``, so small
clusters merge by a trace (Ward-like) criterion until their determinants
exist. As in mclust, ``beta = 1`` and ``alpha`` is the mean per-feature
variance of the transformed data, ``tr(W_all) / (N p)``.

Data transformation
-------------------
mclust's default ``hcUse = "SVD"``: columns are centred and scaled to unit
variance (constant columns dropped), then projected on their right singular
vectors and each direction divided by the square root of its singular value
(a partial whitening; directions of zero singular value are dropped). Scaling
matters: without it, features of large scale dominate the early merges.

Which rows
----------
At most ``max_rows`` rows (default 2000, mclust's ``subset``) enter the tree.
When the weights are integers summing to at most ``max_rows`` (unweighted data
of at most ``max_rows`` rows among them), every row of positive weight enters
with its weight, which the criterion treats as a multiplicity. Otherwise
``max_rows`` rows are drawn with replacement by inverting the cumulative
weights (a row of integer weight ``m`` is drawn as ``m`` copies would be), and
each distinct drawn row enters weighted by how often it was drawn. Identical
rows then form one leaf whose weight is their total (mclust starts from the
partition that groups duplicates, ``dupPartition``, for the same reason: the
criterion of a group of copies is defined, a greedy merge order among them is
arbitrary), so a row of integer weight ``m`` and ``m`` copies of it give the
same tree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["HCTree", "hc_tree", "hc_transform", "hc_vvv_numpy", "svd_transform"]

DEFAULT_MAX_ROWS = 2000
#: mclust's ``hcUse`` options implemented here (see :func:`hc_transform`).
HC_TRANSFORMS = ("SVD", "STD", "VARS")


def _standardise(X, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weighted z-scores of the non-constant columns of ``X`` (float64).

    Each column is first divided by a power of two near its largest magnitude,
    which z-scores do not depend on and which is exact: the result has the same
    bits as without it, but a column with values near 1e160 (whose squares
    overflow) is standardised too instead of becoming 0/inf and NaN.

    Returns
    -------
    keep : ndarray of bool, shape (d,)
        The columns whose spread is above rounding (the others are constant).
    standard : ndarray of shape (m, keep.sum())
    """
    X = np.asarray(X, dtype=np.float64)
    peak = np.abs(X).max(axis=0)
    exponent = np.frexp(np.where(peak > 0, peak, 1.0))[1]
    X = np.ldexp(X, -exponent)  # |X| < 1 per column, exactly rescaled
    total = w.sum()
    mean = (w @ X) / total
    centred = X - mean
    sd = np.sqrt((w @ (centred * centred)) / total)
    keep = sd > np.finfo(np.float64).eps * np.maximum(np.abs(mean), 2.0**-exponent)
    return keep, centred[:, keep] / sd[keep]


def svd_transform(X: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """mclust's ``hcUse="SVD"`` transformation of weighted rows (float64).

    Parameters
    ----------
    X : ndarray of shape (m, d)
    weights : ndarray of shape (m,)
        Positive row weights.

    Returns
    -------
    Z : ndarray of shape (m, p), p <= d
        Standardised rows in the scaled singular basis; a single zero column
        if every feature is constant.
    """
    w = np.asarray(weights, dtype=np.float64)
    keep, standard = _standardise(X, w)
    if not keep.any():
        return np.zeros((X.shape[0], 1))
    _, s, vt = np.linalg.svd(np.sqrt(w)[:, None] * standard, full_matrices=False)
    rank = s > s[0] * max(standard.shape) * np.finfo(np.float64).eps
    return (standard @ vt[rank].T) / np.sqrt(s[rank])


def hc_transform(X: np.ndarray, weights: np.ndarray, use: str = "SVD") -> np.ndarray:
    """The data the tree is built on, as mclust's ``hcUse``.

    Parameters
    ----------
    X : ndarray of shape (m, d)
    weights : ndarray of shape (m,)
        Positive row weights.
    use : {'SVD', 'STD', 'VARS'}, default='SVD'
        'SVD': :func:`svd_transform` (mclust's default); 'STD': each feature
        centred and scaled to unit variance (constant ones dropped); 'VARS':
        the features as they are.

    Returns
    -------
    ndarray of shape (m, p), float64
    """
    if use == "SVD":
        return svd_transform(X, weights)
    X = np.asarray(X, dtype=np.float64)
    if use == "VARS":
        return X.copy()
    if use != "STD":
        raise ValueError(f"use must be one of {HC_TRANSFORMS}, got {use!r}")
    keep, standard = _standardise(X, np.asarray(weights, dtype=np.float64))
    if not keep.any():
        return np.zeros((X.shape[0], 1))
    return standard


def hc_alpha(Z: np.ndarray, weights: np.ndarray) -> float:
    """mclust's ``alpha``: ``tr(W_all) / (N p)``, at least machine epsilon."""
    total = weights.sum()
    centred = Z - (weights @ Z) / total
    alpha = float(weights @ (centred * centred).sum(axis=1)) / (total * Z.shape[1])
    return max(alpha, float(np.finfo(np.float64).eps))


def hc_vvv_numpy(
    Z: np.ndarray, weights: np.ndarray, alpha: float, beta: float, n_merges: int
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised NumPy implementation of the VVV agglomeration.

    Same contract as :func:`fastem.backends._numba_hc.hc_vvv` (and used where
    Numba is not installed): ``merges`` (n_merges, 2) with ``a < b`` meaning
    cluster ``b`` joins cluster ``a``, and the cost of each merge.
    """
    Z = np.asarray(Z, dtype=np.float64)
    m, p = Z.shape
    n = np.asarray(weights, dtype=np.float64).copy()
    count = np.ones(m, dtype=np.int64)
    mean = Z.copy()
    W = np.zeros((m, p, p))
    tr = np.zeros(m)
    term = n * np.log(beta * alpha / n)
    active = np.ones(m, dtype=bool)
    merges = np.empty((n_merges, 2), dtype=np.int64)
    costs = np.empty(n_merges)
    if n_merges == 0:
        return merges, costs

    def costs_to(a: int, ks: np.ndarray):
        nab = n[a] + n[ks]
        c = n[a] * n[ks] / nab
        delta = mean[a] - mean[ks]
        trab = tr[a] + tr[ks] + c * (delta * delta).sum(axis=1)
        cab = count[a] + count[ks]
        log_det = np.full(ks.shape[0], -np.inf)
        big = cab > p
        if big.any():
            d = delta[big]
            Wab = W[a] + W[ks[big]] + c[big, None, None] * d[:, :, None] * d[:, None, :]
            sign, ld = np.linalg.slogdet(Wab)
            log_det[big] = np.where(sign > 0, ld, -np.inf)
        tab = nab * np.logaddexp(log_det - p * np.log(nab), np.log(beta * (trab + alpha) / nab))
        return tab - term[a] - term[ks], trab, tab

    cost = np.full((m, m), np.inf)
    for i in range(m - 1):
        ks = np.arange(i + 1, m)
        cost[i, ks] = cost[ks, i] = costs_to(i, ks)[0]
    best_idx = np.argmin(cost, axis=1)  # first minimum: ties go to the smallest column
    best_val = cost[np.arange(m), best_idx]
    for t in range(n_merges):
        i = int(np.argmin(np.where(active, best_val, np.inf)))
        j = int(best_idx[i])
        a, b = min(i, j), max(i, j)
        merges[t] = a, b
        costs[t] = cost[a, b]
        _, trab, tab = costs_to(a, np.array([b]))
        nab = n[a] + n[b]
        delta = mean[a] - mean[b]
        W[a] = W[a] + W[b] + (n[a] * n[b] / nab) * np.outer(delta, delta)
        mean[a] = (n[a] * mean[a] + n[b] * mean[b]) / nab
        n[a], count[a], tr[a], term[a] = nab, count[a] + count[b], trab[0], tab[0]
        active[b] = False
        cost[b, :] = cost[:, b] = np.inf
        others = np.flatnonzero(active)
        others = others[others != a]
        if others.size == 0:
            continue
        cost[a, others] = cost[others, a] = costs_to(a, others)[0]
        best_idx[a] = np.argmin(cost[a])
        best_val[a] = cost[a, best_idx[a]]
        pointed = (best_idx[others] == a) | (best_idx[others] == b)
        stale, fresh = others[pointed], others[~pointed]
        best_idx[stale] = np.argmin(cost[stale], axis=1)
        best_val[stale] = cost[stale, best_idx[stale]]
        new = cost[fresh, a]
        better = (new < best_val[fresh]) | ((new == best_val[fresh]) & (a < best_idx[fresh]))
        best_val[fresh[better]] = new[better]
        best_idx[fresh[better]] = a
    return merges, costs


def _kernel(implementation: str):
    if implementation not in ("auto", "numba", "numpy"):
        raise ValueError(
            f"implementation must be 'auto', 'numba' or 'numpy', got {implementation!r}"
        )
    if implementation != "numpy":
        try:
            from .backends._numba_hc import hc_vvv
        except ImportError:
            if implementation == "numba":
                raise
        else:
            return hc_vvv
    return hc_vvv_numpy


@dataclass(frozen=True)
class HCTree:
    """A model-based agglomeration of some rows of ``X``.

    Attributes
    ----------
    rows : ndarray of shape (m,)
        Indices into ``X`` of the tree's leaves: distinct rows, ascending (the
        first of each set of identical rows).
    weights : ndarray of shape (m,)
        Each leaf's weight in the criterion (the weight of its identical rows
        in the sample).
    merges : ndarray of shape (n_merges, 2)
        ``(a, b)``, ``a < b``: the cluster named ``b`` joins the one named
        ``a`` (a cluster is named by its smallest leaf position).
    costs : ndarray of shape (n_merges,)
        Criterion change of each merge.
    """

    rows: np.ndarray
    weights: np.ndarray
    merges: np.ndarray
    costs: np.ndarray

    @property
    def n_leaves(self) -> int:
        """Number of leaves (rows the tree was built on)."""
        return int(self.rows.shape[0])

    @property
    def min_clusters(self) -> int:
        """Fewest clusters the tree can be cut into."""
        return self.n_leaves - int(self.merges.shape[0])

    def labels(self, n_clusters: int) -> np.ndarray:
        """Partition of the leaves into ``n_clusters`` clusters.

        Parameters
        ----------
        n_clusters : int
            Between :attr:`min_clusters` and :attr:`n_leaves`.

        Returns
        -------
        ndarray of shape (n_leaves,), int64
            Labels ``0 .. n_clusters - 1``, numbered by each cluster's first leaf.
        """
        m = self.n_leaves
        if not self.min_clusters <= n_clusters <= m:
            raise ValueError(
                f"n_clusters must lie in [{self.min_clusters}, {m}] for this tree, got {n_clusters}"
            )
        parent = np.arange(m)
        done = self.merges[: m - n_clusters]
        parent[done[:, 1]] = done[:, 0]
        root = parent.copy()
        for i in range(m):  # a parent is always a smaller index, so one ascending pass
            root[i] = root[parent[i]]
        return np.unique(root, return_inverse=True)[1].astype(np.int64)

    def partitions(self, ks) -> dict[int, np.ndarray]:
        """``{k: self.labels(k)}`` for every ``k`` in ``ks``."""
        return {int(k): self.labels(int(k)) for k in ks}


def _leaves(
    X: np.ndarray, sample_weight: np.ndarray, max_rows: int, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Rows and weights that enter the tree (see the module docstring)."""
    w = sample_weight
    if np.all(w == np.round(w)) and w.sum() <= max_rows:
        rows = np.flatnonzero(w > 0)
        weights = w[rows].astype(np.float64)
    else:
        cumulative = np.cumsum(w)
        u = rng.uniform(size=max_rows) * cumulative[-1]
        drawn = np.minimum(np.searchsorted(cumulative, u, side="left"), w.shape[0] - 1)
        rows, counts = np.unique(drawn, return_counts=True)
        weights = counts.astype(np.float64)
    # Identical rows form one leaf (mclust's dupPartition): then a row of
    # integer weight m and m copies of it build the same tree.
    _, first, inverse = np.unique(X[rows], axis=0, return_index=True, return_inverse=True)
    summed = np.bincount(inverse.ravel(), weights=weights)
    order = np.argsort(first)
    return rows[first[order]], summed[order]


def hc_tree(
    X,
    sample_weight=None,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    min_clusters: int = 1,
    random_state=None,
    implementation: str = "auto",
    use: str = "SVD",
) -> HCTree:
    """Model-based agglomerative hierarchical clustering (VVV, SVD-scaled).

    Parameters
    ----------
    X : array-like of shape (n, d)
        Finite data.
    sample_weight : array-like of shape (n,), default=None
        Non-negative row weights, at least one positive.
    max_rows : int, default=2000
        Most rows the tree is built on (its cost is about ``max_rows**2``
        memory and ``max_rows**2 * p`` work at least).
    min_clusters : int, default=1
        Stop merging at this many clusters (saves the last, costliest merges).
    random_state : None, int, RandomState or Generator
        Draws the subsample when one is needed.
    implementation : {'auto', 'numba', 'numpy'}, default='auto'
        The Numba kernel when Numba imports, else the NumPy implementation.
    use : {'SVD', 'STD', 'VARS'}, default='SVD'
        The transformation of the data before merging (mclust's ``hcUse``,
        :func:`hc_transform`).

    Returns
    -------
    HCTree
        Cut it with :meth:`HCTree.labels` for any number of clusters.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity; fill missing values first.")
    w = np.ones(X.shape[0]) if sample_weight is None else np.asarray(sample_weight, np.float64)
    if w.shape != (X.shape[0],) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("sample_weight must be finite, non-negative, not all zero, one per row")
    if int(max_rows) < 1 or int(min_clusters) < 1:
        raise ValueError("max_rows and min_clusters must be positive")
    if random_state is None or isinstance(random_state, (int, np.integer)):
        rng = np.random.RandomState(random_state)
    else:
        rng = random_state
    if use not in HC_TRANSFORMS:
        raise ValueError(f"use must be one of {HC_TRANSFORMS}, got {use!r}")
    kernel = _kernel(implementation)
    rows, leaf_w = _leaves(X, w, int(max_rows), rng)
    Z = np.ascontiguousarray(hc_transform(X[rows], leaf_w, use))
    alpha = hc_alpha(Z, leaf_w)
    n_merges = max(rows.shape[0] - int(min_clusters), 0)
    merges, costs = kernel(Z, leaf_w, alpha, 1.0, n_merges)
    return HCTree(rows, leaf_w, merges, costs)
