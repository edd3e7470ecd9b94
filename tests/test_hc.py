"""Model-based hierarchical clustering (``fastem._hc``): the Numba kernel and the
NumPy implementation against a brute-force reference that recomputes every
cluster's criterion from its member rows at every step."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from fastem._hc import HCTree, hc_alpha, hc_tree, hc_vvv_numpy, svd_transform

try:
    from fastem.backends._numba_hc import hc_vvv as hc_vvv_numba
except ImportError:  # the cython-only CI job: the NumPy implementation alone
    hc_vvv_numba = None

IMPLEMENTATIONS = [hc_vvv_numpy] + ([hc_vvv_numba] if hc_vvv_numba is not None else [])
IDS = ["numpy"] + (["numba"] if hc_vvv_numba is not None else [])


# ------------------------------------------------------------ the reference
def cluster_term(Z, w, members, alpha, beta, trace_only=False):
    """``n log(det(W/n) + beta (tr W + alpha)/n)`` of the rows ``members``,
    from the rows themselves (det(W/n) = 0 for at most p rows)."""
    z, wm = Z[members], w[members]
    n = wm.sum()
    centred = z - (wm @ z) / n
    W = (wm[:, None] * centred).T @ centred
    p = Z.shape[1]
    det = 0.0
    if len(members) > p and not trace_only:
        det = max(np.linalg.det(W / n), 0.0)
    return n * math.log(det + beta * (np.trace(W) + alpha) / n)


def reference_hc(Z, w, alpha, beta, n_merges, trace_only=False):
    """Greedy agglomeration by brute force. Returns merges, costs and, per
    step, the gap between the best and the second-best pair (near-ties are
    where two correct implementations may legitimately part ways)."""
    clusters = {i: [i] for i in range(Z.shape[0])}  # name = smallest member
    merges, costs, gaps = [], [], []
    for _ in range(n_merges):
        names = sorted(clusters)
        terms = {s: cluster_term(Z, w, clusters[s], alpha, beta, trace_only) for s in names}
        best, second, pair = np.inf, np.inf, None
        for ia, a in enumerate(names):
            for b in names[ia + 1 :]:
                merged = clusters[a] + clusters[b]
                c = cluster_term(Z, w, merged, alpha, beta, trace_only) - terms[a] - terms[b]
                if c < best:
                    best, second, pair = c, best, (a, b)
                elif c < second:
                    second = c
        a, b = pair
        clusters[a] = clusters[a] + clusters.pop(b)
        merges.append(pair)
        costs.append(best)
        gaps.append(second - best)
    return np.array(merges, dtype=np.int64).reshape(-1, 2), np.array(costs), np.array(gaps)


def compared_prefix(costs, gaps):
    """Steps up to (not including) the first near-tie of the reference."""
    near = gaps <= 1e-7 * (1.0 + np.abs(costs))
    return int(np.argmax(near)) if near.any() else len(costs)


def assert_same_tree(Z, w, alpha, beta, impl):
    m = Z.shape[0]
    ref_merges, ref_costs, gaps = reference_hc(Z, w, alpha, beta, m - 1)
    merges, costs = impl(Z, w, alpha, beta, m - 1)
    upto = compared_prefix(ref_costs, gaps)
    np.testing.assert_array_equal(merges[:upto], ref_merges[:upto])
    np.testing.assert_allclose(costs[:upto], ref_costs[:upto], rtol=1e-8, atol=1e-8)
    return upto


# ------------------------------------------------------------ the criterion
@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=IDS)
@given(
    m=st.integers(2, 14),
    p=st.integers(1, 4),
    weighted=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_bruteforce_reference(impl, m, p, weighted, seed):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(m, p)) * rng.uniform(0.2, 3.0, size=p)
    w = rng.integers(1, 4, size=m).astype(float) if weighted else np.ones(m)
    alpha = hc_alpha(Z, w)
    upto = assert_same_tree(Z, w, alpha, 1.0, impl)
    assume(upto >= 1)  # an example that starts on a near-tie compares nothing


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=IDS)
def test_reference_comparison_exercises_determinants(impl):
    """Two elongated parallel clusters with more rows than dimensions: the
    determinant part of the criterion decides merges, so a trace-only
    (Ward-like) criterion would build a different tree (the comparison above
    is not blind to the det term), and the implementations follow the full one."""
    rng = np.random.default_rng(3)
    half = 12
    Z = np.column_stack([rng.uniform(-6, 6, 2 * half), rng.normal(0, 0.15, 2 * half)])
    Z[half:, 1] += 1.2
    w = np.ones(2 * half)
    alpha = hc_alpha(Z, w)
    upto = assert_same_tree(Z, w, alpha, 1.0, impl)
    assert upto == 2 * half - 1
    full, _, _ = reference_hc(Z, w, alpha, 1.0, 2 * half - 1)
    ward, _, _ = reference_hc(Z, w, alpha, 1.0, 2 * half - 1, trace_only=True)
    assert not np.array_equal(full, ward)


def test_numba_kernel_equals_numpy_on_larger_data():
    if hc_vvv_numba is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(0)
    for m, p in [(400, 2), (300, 6), (150, 12)]:
        Z = rng.normal(size=(m, p)) + rng.integers(0, 4, size=(m, 1)) * 3.0
        w = rng.integers(1, 3, size=m).astype(float)
        alpha = hc_alpha(Z, w)
        merges_np, costs_np = hc_vvv_numpy(Z, w, alpha, 1.0, m - 1)
        merges_nb, costs_nb = hc_vvv_numba(Z, w, alpha, 1.0, m - 1)
        np.testing.assert_array_equal(merges_nb, merges_np)
        np.testing.assert_allclose(costs_nb, costs_np, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=IDS)
def test_singleton_and_pair_costs_are_mclusts(impl):
    """A singleton costs log(alpha beta); two singletons at squared distance
    s2 merge at 2 log(beta (s2/2 + alpha) / 2) - 2 log(alpha beta) (p >= 2)."""
    Z = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0]])
    alpha, beta = 0.7, 1.3
    merges, costs = impl(Z, np.ones(3), alpha, beta, 1)
    assert merges.tolist() == [[0, 1]]
    expected = 2 * math.log(beta * (25 / 2 + alpha) / 2) - 2 * math.log(alpha * beta)
    assert costs[0] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS, ids=IDS)
def test_no_merges_and_one_row(impl):
    merges, costs = impl(np.zeros((1, 3)), np.ones(1), 1.0, 1.0, 0)
    assert merges.shape == (0, 2) and costs.shape == (0,)
    merges, costs = impl(np.eye(3), np.ones(3), 1.0, 1.0, 0)
    assert merges.shape == (0, 2)


# ------------------------------------------------------------ trees and cuts
@given(
    n=st.integers(1, 40),
    d=st.integers(1, 4),
    pool=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_cuts_are_nested_partitions(n, d, pool, seed):
    """Duplicate rows (drawn from a small pool) included: every cut from
    min_clusters to n_leaves is a partition with exactly k labels, each one a
    refinement of the next coarser cut, and duplicates never split."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(pool, d))[rng.integers(0, pool, size=n)]
    tree = hc_tree(X)
    assert tree.min_clusters == 1
    assert np.unique(X, axis=0).shape[0] == tree.n_leaves
    previous = None
    for k in range(1, tree.n_leaves + 1):
        labels = tree.labels(k)
        assert sorted(set(labels.tolist())) == list(range(k))
        if previous is not None:  # each k-cluster lies inside one (k-1)-cluster
            pairs = set(zip(labels.tolist(), previous.tolist(), strict=True))
            assert len(pairs) == k
        previous = labels
    assert (tree.labels(tree.n_leaves) == np.arange(tree.n_leaves)).all()


def test_cut_range_is_checked():
    tree = hc_tree(np.random.default_rng(0).normal(size=(10, 2)), min_clusters=3)
    assert tree.min_clusters == 3
    tree.labels(3)
    with pytest.raises(ValueError, match=r"n_clusters must lie in \[3, 10\]"):
        tree.labels(2)
    with pytest.raises(ValueError, match="n_clusters"):
        tree.labels(11)
    assert set(tree.partitions([3, 5, 10])) == {3, 5, 10}


def test_integer_weights_build_the_tree_of_repeated_rows():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 3))
    w = rng.integers(0, 4, size=60).astype(float)
    weighted = hc_tree(X, w)
    repeated = hc_tree(np.repeat(X, w.astype(int), axis=0))
    np.testing.assert_array_equal(weighted.merges, repeated.merges)
    np.testing.assert_allclose(weighted.costs, repeated.costs, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(weighted.weights, repeated.weights)
    assert (w[weighted.rows] > 0).all()


def test_feature_scale_offset_and_order_do_not_matter():
    """SVD scaling standardises each feature first: rescaling, shifting and
    permuting the features leaves the tree unchanged (unscaled, the feature
    of scale 1e4 would decide every merge)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 3)) + rng.integers(0, 3, size=(120, 1)) * [2.0, -1.0, 0.5]
    base = hc_tree(X)
    scaled = hc_tree((X * [1e4, 1e-3, 1.0] + [5e6, -3.0, 0.0])[:, [2, 0, 1]])
    np.testing.assert_array_equal(base.merges, scaled.merges)
    np.testing.assert_allclose(base.costs, scaled.costs, rtol=1e-6, atol=1e-6)


def test_svd_transform_whitens_partially():
    """mclust's SVD transform: Z = U S^(1/2) of the standardised data, so Z's
    columns are uncorrelated with sums of squares equal to the singular values;
    a constant column is dropped, and a collinear one adds no direction."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 3))
    X = np.column_stack([X, np.full(200, 7.0), X[:, 0] * 2.0 - X[:, 1]])
    Z = svd_transform(X, np.ones(200))
    assert Z.shape == (200, 3)
    standard = (X[:, :3] - X[:, :3].mean(0)) / X[:, :3].std(0)
    s = np.linalg.svd(np.column_stack([standard, (X[:, 4] - X[:, 4].mean()) / X[:, 4].std()]))[1]
    gram = Z.T @ Z
    np.testing.assert_allclose(gram, np.diag(s[:3]), atol=1e-8)
    assert svd_transform(np.ones((5, 2)), np.ones(5)).shape == (5, 1)


def test_subsample_is_deterministic_and_bounded():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 2))
    w = rng.uniform(0.1, 2.0, size=3000)
    a = hc_tree(X, w, max_rows=300, random_state=7)
    b = hc_tree(X, w, max_rows=300, random_state=7)
    c = hc_tree(X, w, max_rows=300, random_state=8)
    np.testing.assert_array_equal(a.rows, b.rows)
    np.testing.assert_array_equal(a.merges, b.merges)
    assert not np.array_equal(a.rows, c.rows)
    assert a.n_leaves <= 300 and a.weights.sum() == 300
    # Unweighted data within the limit: every row, no sampling.
    small = hc_tree(X[:200], random_state=None)
    assert small.n_leaves == 200 and (small.weights == 1).all()


def test_weighted_draws_follow_the_weights():
    """Rows are drawn by inverting the cumulative weights: a row of weight 0
    is never drawn, and the draw frequency follows the weight."""
    X = np.arange(40, dtype=float).reshape(20, 2)
    w = np.zeros(20)
    w[[3, 11]] = [0.25, 0.75]
    tree = hc_tree(X, w, max_rows=2000, random_state=0)
    assert tree.rows.tolist() == [3, 11]
    assert tree.weights[1] / tree.weights.sum() == pytest.approx(0.75, abs=0.03)


def test_implementations_agree_through_hc_tree():
    if hc_vvv_numba is None:
        pytest.skip("numba is not installed")
    X = np.random.default_rng(6).normal(size=(250, 3))
    a = hc_tree(X, implementation="numba")
    b = hc_tree(X, implementation="numpy")
    np.testing.assert_array_equal(a.merges, b.merges)


def test_elongated_clusters_recovered():
    """What model-based HC is for: two long parallel clusters, 1.5 apart
    across and 40 long, are found exactly at K=2 (k-means cuts across them)."""
    rng = np.random.default_rng(7)
    n = 150
    truth = np.repeat([0, 1], n)
    X = np.column_stack([rng.uniform(-20, 20, 2 * n), rng.normal(0, 0.2, 2 * n) + 1.5 * truth])
    labels = hc_tree(X).labels(2)
    assert (labels == truth).all() or (labels == 1 - truth).all()


def test_input_errors():
    with pytest.raises(ValueError, match="NaN"):
        hc_tree(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="sample_weight"):
        hc_tree(np.zeros((3, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="implementation"):
        hc_tree(np.zeros((3, 2)), implementation="fortran")
    with pytest.raises(ValueError, match="2-D"):
        hc_tree(np.zeros(3))


def test_tree_is_a_frozen_value():
    tree = hc_tree(np.random.default_rng(8).normal(size=(6, 2)))
    assert isinstance(tree, HCTree)
    with pytest.raises(AttributeError):
        tree.rows = None


def test_transforms_are_mclusts_hcuse():
    from fastem._hc import hc_transform, svd_transform

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 3)) * [1.0, 100.0, 0.01] + [5.0, -3.0, 0.0]
    w = np.ones(50)
    np.testing.assert_array_equal(hc_transform(X, w, "SVD"), svd_transform(X, w))
    np.testing.assert_array_equal(hc_transform(X, w, "VARS"), X)
    std = hc_transform(X, w, "STD")
    np.testing.assert_allclose(std.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(std.std(axis=0), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="use must be"):
        hc_transform(X, w, "PCS")
    with pytest.raises(ValueError, match="use must be"):
        hc_tree(X, use="svd")


def test_scaled_transforms_ignore_feature_scale_and_raw_does_not():
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(size=(30, 2)), rng.normal(size=(30, 2)) + [4.0, 0.0]])
    scaled = X * [1.0, 1e3]
    for use in ("SVD", "STD"):
        np.testing.assert_array_equal(
            hc_tree(X, use=use).labels(2), hc_tree(scaled, use=use).labels(2)
        )
    # Negative control: unscaled, the large feature decides the merges.
    assert not np.array_equal(
        hc_tree(X, use="VARS").labels(2), hc_tree(scaled, use="VARS").labels(2)
    )
