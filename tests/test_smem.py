"""Split-and-merge EM (fastem._smem): the criteria against a direct NumPy
computation, the search on a start that plain EM cannot repair (and a broken
merge criterion that cannot either), monotonicity, determinism, and
``init_params='smem'`` through the estimator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastem._smem as smem
from fastem import GaussianMixture
from fastem._covariance import precision_cholesky
from fastem._init import INIT_METHODS, _short_run
from fastem._passes import PassParams, em_stats
from fastem.backends import get_backend
from fastem.selection import check_init

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
NUMPY = get_backend("numpy")


def _full_covariances(cov, covariance_type, k, d):
    """Every layout as (k, d, d) matrices."""
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return np.stack([np.eye(d) * c for c in cov])


def _random_model(rng, covariance_type, k, d):
    weights = rng.dirichlet(np.full(k, 3.0))
    means = rng.normal(scale=2.0, size=(k, d))
    if covariance_type == "full":
        a = rng.normal(size=(k, d, d))
        cov = a @ np.swapaxes(a, 1, 2) / d + np.eye(d)
    elif covariance_type == "tied":
        a = rng.normal(size=(d, d))
        cov = a @ a.T / d + np.eye(d)
    elif covariance_type == "diag":
        cov = rng.uniform(0.5, 2.0, size=(k, d))
    else:
        cov = rng.uniform(0.5, 2.0, size=k)
    return weights, means, cov


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_criteria_match_direct_numpy(covariance_type):
    rng = np.random.default_rng(3)
    k, d, n = 4, 3, 200
    X = rng.normal(scale=2.0, size=(n, d))
    w = rng.uniform(0.2, 3.0, size=n)
    weights, means, cov = _random_model(rng, covariance_type, k, d)
    prec = precision_cholesky(cov, covariance_type)
    j_merge, j_split, scatter = smem.smem_criteria(
        X, w, weights, means, prec, covariance_type, NUMPY
    )
    # Direct: Gaussian log-densities from the covariance matrices.
    full = _full_covariances(cov, covariance_type, k, d)
    log_dens = np.empty((n, k))
    for c in range(k):
        dev = X - means[c]
        sol = np.linalg.solve(full[c], dev.T).T
        _, logdet = np.linalg.slogdet(full[c])
        log_dens[:, c] = -0.5 * (np.sum(dev * sol, 1) + logdet + d * np.log(2 * np.pi))
    joint = log_dens + np.log(weights)
    post = np.exp(joint - np.logaddexp.reduce(joint, axis=1)[:, None])
    np.testing.assert_allclose(j_merge, (post * w[:, None]).T @ post, rtol=1e-10)
    nk = w @ post
    for c in range(k):
        f = post[:, c] / nk[c]  # per copy of a row; a row of weight w is w copies
        expected = np.sum(w * f * (np.log(f) - log_dens[:, c]))
        assert j_split[c] == pytest.approx(expected, rel=1e-9, abs=1e-9)
        dev = X - means[c]
        np.testing.assert_allclose(
            scatter[c], (w * post[:, c] * dev.T) @ dev / nk[c], rtol=1e-10, atol=1e-12
        )


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(60, 2))
    reps = rng.integers(1, 4, size=60)
    weights, means, cov = _random_model(rng, "full", 3, 2)
    prec = precision_cholesky(cov, "full")
    a = smem.smem_criteria(X, reps.astype(float), weights, means, prec, "full", NUMPY)
    b = smem.smem_criteria(
        np.repeat(X, reps, axis=0), np.ones(reps.sum()), weights, means, prec, "full", NUMPY
    )
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-10)


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 7),
    n_candidates=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_candidate_triples_are_valid_and_ordered(k, n_candidates, seed):
    rng = np.random.default_rng(seed)
    m = rng.uniform(size=(k, k))
    j_merge, j_split = m + m.T, rng.normal(size=k)
    triples = smem.candidate_triples(j_merge, j_split, n_candidates)
    total = k * (k - 1) // 2 * (k - 2) if k >= 3 else 0
    assert len(triples) == min(n_candidates, total)
    assert len(set(triples)) == len(triples)
    for i, j, c in triples:
        assert i < j and c not in (i, j)
    if triples:  # the paper's first move: the most overlapping pair, its worst-fitting split
        iu, ju = np.triu_indices(k, 1)
        p = int(np.argmax(j_merge[iu, ju]))
        i, j = int(iu[p]), int(ju[p])
        rest = [c for c in range(k) if c not in (i, j)]
        assert triples[0] == (i, j, max(rest, key=lambda c: j_split[c]))


def three_blobs():
    """Blobs A, B, C on a line, and a start with two means in A, one between B and C."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]])
    X = np.vstack([c + rng.normal(size=(150, 2)) for c in centres])
    start_means = np.array([[-0.5, 0.0], [0.5, 0.0], [15.0, 0.0]])
    return X, centres, start_means


def _start_stats(X, sw, means, covariance_type, backend):
    k, d = means.shape
    cov = {
        "full": np.broadcast_to(np.eye(d), (k, d, d)).copy(),
        "tied": np.eye(d),
        "diag": np.ones((k, d)),
        "spherical": np.ones(k),
    }[covariance_type]
    prec = precision_cholesky(cov, covariance_type)
    params = PassParams.from_model(np.full(k, 1.0 / k), means, prec, covariance_type, X.dtype)
    return em_stats(backend, X, sw, params, check_nan=False)


def _optimum(X, centres, covariance_type):
    gm = GaussianMixture(
        3, covariance_type=covariance_type, means_init=centres, tol=1e-10, max_iter=2000
    )
    return gm.fit(X).lower_bound_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_smem_repairs_two_on_one_and_one_on_two(covariance_type):
    X, centres, start = three_blobs()
    sw = np.ones(X.shape[0])
    backend = get_backend()
    stats = _start_stats(X, sw, start, covariance_type, backend)
    plain = _short_run(X, sw, stats, backend, covariance_type, 1e-6, 1000, 1e-10)
    found = smem.smem_search(X, sw, stats, backend, covariance_type, 1e-6, n_candidates=1)
    best = _optimum(X, centres, covariance_type)
    n = X.shape[0]
    assert plain.loglik / n < best - 0.3  # plain EM stays in the bad optimum
    assert found.loglik / n == pytest.approx(best, abs=1e-6)
    assert found.loglik >= plain.loglik


def test_broken_merge_criterion_fails(monkeypatch):
    """Negative control: merging the least-overlapping pair first does not repair
    the start with one candidate, so the test above depends on J_merge."""
    X, centres, start = three_blobs()
    sw = np.ones(X.shape[0])
    backend = get_backend()
    stats = _start_stats(X, sw, start, "full", backend)
    criteria = smem.smem_criteria

    def least_overlap_first(*args):
        j_merge, j_split, scatter = criteria(*args)
        return -j_merge, j_split, scatter

    monkeypatch.setattr(smem, "smem_criteria", least_overlap_first)
    found = smem.smem_search(X, sw, stats, backend, "full", 1e-6, n_candidates=1)
    assert found.loglik / X.shape[0] < _optimum(X, centres, "full") - 0.3


@settings(max_examples=8, deadline=None)
@given(
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    k=st.integers(3, 5),
    seed=st.integers(0, 2**16),
    weighted=st.booleans(),
)
def test_never_below_the_converged_start(covariance_type, k, seed, weighted):
    rng = np.random.default_rng(seed)
    d = 2
    centres = rng.normal(scale=4.0, size=(k + 1, d))
    X = np.vstack([c + rng.normal(size=(40, d)) for c in centres])
    sw = rng.uniform(0.5, 2.0, size=X.shape[0]) if weighted else np.ones(X.shape[0])
    backend = get_backend()
    start = X[rng.choice(X.shape[0], size=k, replace=False)]
    stats = _start_stats(X, sw, start, covariance_type, backend)
    plain = _short_run(X, sw, stats, backend, covariance_type, 1e-6, 1000, 1e-10)
    if plain is None:  # a start that collapses: nothing to compare
        return
    found = smem.smem_search(X, sw, stats, backend, covariance_type, 1e-6)
    assert found.loglik >= plain.loglik - 1e-9 * abs(plain.loglik)


def test_registered_and_accepted_by_selection():
    assert "smem" in INIT_METHODS
    assert check_init("hc+smem") == ("hc", "smem")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_estimator_is_deterministic_and_not_worse_than_best(covariance_type):
    X, _, _ = three_blobs()
    X = np.vstack([X, [[10.0, 6.0]] + np.random.default_rng(1).normal(size=(60, 2))])
    fits = [
        GaussianMixture(
            4, covariance_type=covariance_type, init_params=init, random_state=0, tol=1e-8
        ).fit(X)
        for init in ("smem", "smem", "best")
    ]
    np.testing.assert_array_equal(fits[0].means_, fits[1].means_)
    assert fits[0].lower_bound_ >= fits[2].lower_bound_ - 1e-6


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_estimator_weights_missing_values_and_dtype(dtype):
    X, _, _ = three_blobs()
    X = X.astype(dtype)
    X[::11, 1] = np.nan
    w = np.random.default_rng(2).uniform(0.5, 2.0, size=X.shape[0])
    gm = GaussianMixture(3, init_params="smem", random_state=0).fit(X, sample_weight=w)
    assert np.isfinite(gm.lower_bound_) and gm.means_.dtype == dtype
    assert sorted(np.round(gm.means_[:, 0] / 10.0)) == [0.0, 1.0, 2.0]


def test_search_from_every_finalist_is_not_worse():
    """start='best-all' searches from each proper finalist of 'best' (which
    best_stats hands back through ``finalists``) and keeps the best."""
    X, _, _ = three_blobs()
    X = np.vstack([X, [[10.0, 6.0]] + np.random.default_rng(1).normal(size=(60, 2))])
    X = np.ascontiguousarray(X[::3])  # the kernels take C-contiguous rows
    sw = np.ones(X.shape[0])
    backend = get_backend()
    one = smem.smem_stats(X, sw, 4, np.random.RandomState(0), backend, "full", 1e-6)
    every = smem.smem_stats(
        X, sw, 4, np.random.RandomState(0), backend, "full", 1e-6, start="best-all"
    )
    assert every.loglik >= one.loglik - 1e-9 * abs(one.loglik)


def _iris_search():
    datasets = pytest.importorskip("sklearn.datasets")
    X = datasets.load_iris().data
    sw = np.ones(X.shape[0])
    backend = get_backend()
    stats = smem.best_stats(X, sw, 4, np.random.RandomState(2), backend, "full", 1e-6)
    found = smem.smem_search(X, sw, stats, backend, "full", 1e-6, n_candidates=10, max_rounds=2)
    return found.loglik / X.shape[0]


def test_degenerate_moves_are_refused(monkeypatch):
    """Iris (discretised measurements), K=4 full: some moves end on a component
    collapsed onto a few rows, with an unbounded likelihood. The guard refuses
    them; without it (negative control) the search takes one."""
    assert _iris_search() < -1.0
    monkeypatch.setattr(smem, "degenerate", lambda *args, **kwargs: False)
    assert _iris_search() > -0.6
