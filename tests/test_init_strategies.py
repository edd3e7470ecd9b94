"""The 'hc' and 'emem' initializations (fastem._init) through GaussianMixture
and directly: every covariance type, float32, missing values, weights."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import fastem._init as init_module
from fastem import GaussianMixture
from fastem._hc import hc_tree
from fastem._init import INIT_METHODS, emem_stats, initial_stats, stats_from_partition
from fastem._stats import m_step
from fastem.backends import get_backend

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
EPS = float(np.finfo(np.float64).eps)


def blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=n)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 5.0, -2.0]])
    return centres[labels] + rng.normal(size=(n, 3)) * [1.0, 0.5, 2.0], labels


@functools.cache
def reference_bound(covariance_type: str) -> float:
    X, _ = blobs()
    gm = GaussianMixture(3, covariance_type=covariance_type, n_init=5, random_state=0)
    return gm.fit(X).lower_bound_


def test_new_methods_are_registered():
    assert {"hc", "emem"} <= set(INIT_METHODS)


@pytest.mark.parametrize("init_params", ["hc", "emem", "best"])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fits_every_covariance_type_and_dtype(init_params, covariance_type, dtype):
    X, _ = blobs()
    gm = GaussianMixture(
        3, covariance_type=covariance_type, init_params=init_params, random_state=0
    ).fit(X.astype(dtype))
    assert np.isfinite(gm.lower_bound_)
    assert gm.means_.dtype == dtype
    # Three well separated blobs: every start here ends near the same optimum.
    assert gm.lower_bound_ >= reference_bound(covariance_type) - 1e-2


@pytest.mark.parametrize("init_params", ["hc", "emem", "best"])
def test_missing_values_and_weights(init_params):
    X, _ = blobs()
    X[::7, 1] = np.nan
    w = np.random.default_rng(1).uniform(0.5, 2.0, size=X.shape[0])
    gm = GaussianMixture(3, init_params=init_params, random_state=0).fit(X, sample_weight=w)
    assert np.isfinite(gm.lower_bound_) and np.isfinite(gm.means_).all()


def test_hc_integer_weights_equal_repeated_rows():
    X, _ = blobs(90)
    w = np.random.default_rng(2).integers(0, 4, size=90).astype(float)
    kernels = get_backend("numpy")
    rng = np.random.RandomState(0)
    weighted = initial_stats(X, w, 4, "hc", rng, kernels, full=True)
    repeated = initial_stats(
        np.repeat(X, w.astype(int), axis=0), np.ones(int(w.sum())), 4, "hc", rng, kernels, True
    )
    for a, b in zip(
        m_step(weighted, "full", 1e-6, EPS), m_step(repeated, "full", 1e-6, EPS), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_hc_start_is_the_trees_partition():
    """The start is the M-step of the tree's K-cut: weights are the clusters'
    shares, means their weighted means (a direct computation)."""
    X, _ = blobs(150)
    w = np.random.default_rng(3).integers(1, 3, size=150).astype(float)
    stats = initial_stats(X, w, 3, "hc", np.random.RandomState(0), get_backend("numpy"), True)
    weights, means, cov, _ = m_step(stats, "full", 0.0, 0.0)
    labels = hc_tree(X, w).labels(3)
    for g in range(3):
        rows = labels == g
        assert weights[g] == pytest.approx(w[rows].sum() / w.sum(), rel=1e-12)
        np.testing.assert_allclose(means[g], w[rows] @ X[rows] / w[rows].sum(), rtol=1e-10)
        np.testing.assert_allclose(
            cov[g], np.cov(X[rows].T, aweights=w[rows], bias=True), atol=1e-9
        )
    assert stats.weight_sum == pytest.approx(w.sum())


def test_one_tree_serves_every_k():
    X, _ = blobs(150)
    w = np.ones(150)
    kernels = get_backend("numpy")
    shared = init_module.hc_stats_by_k(X, w, [4, 2, 3], np.random.RandomState(0), True)
    assert sorted(shared) == [2, 3, 4]
    for k, stats in shared.items():
        alone = initial_stats(X, w, k, "hc", np.random.RandomState(0), kernels, True)
        np.testing.assert_allclose(stats.sxx, alone.sxx, rtol=1e-12)
        np.testing.assert_allclose(stats.nk, alone.nk, rtol=1e-12)


def test_stats_from_partition_scales_and_fills_missing_components():
    X = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [5.0, 5.0]])
    rows = np.array([0, 1, 2])
    labels = np.array([0, 0, 1])
    stats = stats_from_partition(
        X, np.ones(4), rows, np.ones(3), labels, 3, np.random.RandomState(0), full=False
    )
    # Three leaves stand for four rows: every statistic is scaled by 4/3.
    np.testing.assert_allclose(stats.nk, [8 / 3, 4 / 3, 0.0])
    np.testing.assert_allclose(stats.shift[:2], [[1.0, 0.0], [10.0, 10.0]])
    np.testing.assert_allclose(stats.sxx[0], [4 / 3 * 2, 0.0])
    assert any((stats.shift[2] == row).all() for row in X)  # the extra component: a data row
    assert stats.weight_sum == 4.0


def test_hc_more_components_than_distinct_rows():
    X = np.repeat(np.eye(3), 4, axis=0)
    gm = GaussianMixture(12, covariance_type="spherical", init_params="hc", random_state=0).fit(X)
    assert np.isfinite(gm.lower_bound_)


@pytest.mark.filterwarnings("ignore::fastem.exceptions.ConvergenceWarning")
def test_hc_is_deterministic():
    X, _ = blobs()
    a = GaussianMixture(3, init_params="hc", random_state=0, max_iter=3).fit(X)
    b = GaussianMixture(3, init_params="hc", random_state=1, max_iter=3).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)  # all rows: no sampling, no randomness


def test_hc_finds_elongated_clusters_that_kmeans_splits():
    """Two long parallel clusters: k-means cuts across them and EM stays in
    that local optimum; the hc start is the true partition."""
    rng = np.random.default_rng(7)
    truth = np.repeat([0, 1], 200)
    X = np.column_stack([rng.uniform(-20, 20, 400), rng.normal(0, 0.2, 400) + 1.5 * truth])
    hc = GaussianMixture(2, init_params="hc", random_state=0).fit(X)
    km = GaussianMixture(2, init_params="kmeans", random_state=0).fit(X)
    labels = hc.predict(X)
    assert (labels == truth).all() or (labels == 1 - truth).all()
    assert hc.lower_bound_ > km.lower_bound_ + 0.1


def test_emem_keeps_the_best_short_run():
    """n_starts runs = the same runs one at a time on the same random stream;
    the result is the run of highest log-likelihood (not the last or first)."""
    X, _ = blobs()
    kernels = get_backend("numpy")
    best = emem_stats(X, np.ones(240), 3, np.random.RandomState(4), kernels, "full", 1e-6, 6, 3)
    rng = np.random.RandomState(4)
    runs = [emem_stats(X, np.ones(240), 3, rng, kernels, "full", 1e-6, 1, 3) for _ in range(6)]
    logliks = [r.loglik for r in runs]
    assert len(set(np.round(logliks, 6))) > 1  # the starts differ
    winner = runs[int(np.argmax(logliks))]
    assert best.loglik == max(logliks)
    np.testing.assert_array_equal(best.sxx, winner.sxx)


@pytest.mark.filterwarnings("ignore::fastem.exceptions.ConvergenceWarning")
def test_emem_short_run_is_plain_em():
    """One start, P passes: the statistics of the P-th E-step of EM from the
    k-means++ start, whose M-step is GaussianMixture's P-th iterate from that
    start."""
    X, _ = blobs()
    kernels = get_backend("numpy")
    stats = emem_stats(X, np.ones(240), 3, np.random.RandomState(5), kernels, "diag", 1e-6, 1, 4)
    start = initial_stats(X, np.ones(240), 3, "k-means++", np.random.RandomState(5), kernels, False)
    weights, means, cov, _ = m_step(start, "diag", 1e-6, EPS)
    gm = GaussianMixture(
        3, covariance_type="diag", weights_init=weights, means_init=means,
        precisions_init=1.0 / cov, max_iter=4, tol=0.0, backend="numpy",
    )  # fmt: skip
    gm.fit(X)
    expected = m_step(stats, "diag", 1e-6, EPS)
    np.testing.assert_allclose(gm.weights_, expected[0], rtol=1e-9)
    np.testing.assert_allclose(gm.means_, expected[1], rtol=1e-9, atol=1e-12)


def test_emem_falls_back_to_kmeans_when_every_run_collapses(monkeypatch):
    X, _ = blobs()
    kernels = get_backend("numpy")

    def collapsed(*args, **kwargs):
        raise ValueError("singular covariance")

    monkeypatch.setattr(init_module, "m_step", collapsed)
    rng = np.random.RandomState(6)
    stats = emem_stats(X, np.ones(240), 3, rng, kernels, "full", 1e-6, 2, 2)
    replay = np.random.RandomState(6)
    for _ in range(2):  # the failed starts consumed their seeds
        initial_stats(X, np.ones(240), 3, "k-means++", replay, kernels, True)
    expected = initial_stats(X, np.ones(240), 3, "kmeans", replay, kernels, True)
    np.testing.assert_array_equal(stats.sx, expected.sx)


def test_emem_runs_the_models_covariance_type():
    X, _ = blobs()
    kernels = get_backend("numpy")
    rng = np.random.RandomState(0)
    tied = initial_stats(X, np.ones(240), 3, "emem", rng, kernels, True, covariance_type="tied")
    diag = initial_stats(X, np.ones(240), 3, "emem", rng, kernels, False)
    assert tied.sxx.shape == (3, 3, 3) and diag.sxx.shape == (3, 3)


# --- 'best': several starts, short runs, the best few continued -------------


@pytest.mark.filterwarnings("ignore::fastem.exceptions.ConvergenceWarning")
def test_best_is_registered_and_reproducible():
    assert "best" in INIT_METHODS
    X, _ = blobs()
    a = GaussianMixture(3, init_params="best", random_state=3, max_iter=2, tol=0.0).fit(X)
    b = GaussianMixture(3, init_params="best", random_state=3, max_iter=2, tol=0.0).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)


def test_best_returns_the_best_continued_run():
    """The result is the stage-2 run of highest log-likelihood; every
    deterministic start reaches stage 2, plus the chosen number of random
    ones."""
    X, _ = blobs()
    trace: list = []
    stats = init_module.best_stats(
        X, np.ones(240), 3, np.random.RandomState(0), get_backend("numpy"), "full", 1e-6,
        n_random=4, n_finalists=2, long_passes=5, trace=trace,
    )  # fmt: skip
    names = [t[0] for t in trace]
    fixed = list(init_module.BEST_DETERMINISTIC)
    assert names[: len(fixed)] == fixed and len(names) == len(fixed) + 2
    assert stats.loglik == max(t[2] for t in trace if not t[3])


def test_best_prefers_non_degenerate_runs(monkeypatch):
    """A run judged degenerate loses to a lower non-degenerate one (negative
    control: judged by likelihood alone, it would win)."""
    X, _ = blobs()
    kwargs = dict(n_random=2, n_finalists=2, long_passes=3)
    run = functools.partial(
        init_module.best_stats, X, np.ones(240), 3, backend=get_backend("numpy"),
        covariance_type="full", reg_covar=1e-6, **kwargs,
    )  # fmt: skip
    trace: list = []
    plain = run(rng=np.random.RandomState(1), trace=trace)
    top = max(t[2] for t in trace)
    assert plain.loglik == top
    monkeypatch.setattr(init_module, "degenerate", lambda stats, *a, **k: stats.loglik == top)
    guarded = run(rng=np.random.RandomState(1))
    assert guarded.loglik < top


def test_degenerate_flags_small_and_collapsed_components():
    X, _ = blobs()
    w = np.ones(240)
    variances = X.var(axis=0)
    kernels = get_backend("numpy")
    good = initial_stats(X, w, 3, "hc", np.random.RandomState(0), kernels, True)
    assert not init_module.degenerate(good, "full", 1e-6, variances, 240.0)
    # One component on 3 rows (fewer than d + 1 = 4 for full covariances).
    labels = np.zeros(240, dtype=np.int64)
    labels[:3] = 1
    small = stats_from_partition(X, w, np.arange(240), w, labels, 2, np.random.RandomState(0), True)
    assert init_module.degenerate(small, "full", 1e-6, variances, 240.0)
    small_diag = stats_from_partition(
        X, w, np.arange(240), w, labels, 2, np.random.RandomState(0), False
    )
    assert not init_module.degenerate(small_diag, "diag", 1e-6, variances, 240.0)
    # A component whose rows lie on a line: its covariance collapses.
    flat = X.copy()
    flat[:40, 1:] = flat[:40, :1] * [2.0, -1.0]
    labels[:] = 0
    labels[:40] = 1
    line = stats_from_partition(
        flat, w, np.arange(240), w, labels, 2, np.random.RandomState(0), True
    )
    assert init_module.degenerate(line, "full", 1e-9, flat.var(axis=0), 240.0)


def test_best_with_only_a_deterministic_start_is_that_start_continued():
    """No random starts: the result is EM continued from the standardised-data
    hc start (short passes, then long passes), an exact replay."""
    X, _ = blobs()
    w = np.ones(240)
    kernels = get_backend("numpy")
    stats = init_module.best_stats(
        X, w, 3, np.random.RandomState(0), kernels, "diag", 1e-6,
        deterministic=("hc-std",), n_random=0, short_passes=2, long_passes=3, long_tol=0.0,
    )  # fmt: skip
    start = init_module.hc_stats(X, w, 3, np.random.RandomState(0), False, use="STD")
    replay = init_module._short_run(X, w, start, kernels, "diag", 1e-6, 5)
    np.testing.assert_allclose(stats.sxx, replay.sxx, rtol=1e-12)
    assert stats.loglik == pytest.approx(replay.loglik, rel=1e-12)
