"""Cycled vector extrapolation (RRE / MPE, Smith, Ford & Sidi 1987): ``acceleration="mpe"``.

The same guarantees as SQUAREM, Anderson and quasi-Newton (tests/test_acceleration.py,
tests/test_qn.py): the objective never decreases along the path, an accepted proposal
is never below the EM point it replaces, accepted iterates are feasible (every
covariance type, weights, NaN), the same fixed point as plain EM (in memory, on a
memmap), bit-identical across thread counts, and a negative control (without the
safeguard the path goes down).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES, initial_parameters
from hypothesis import given, settings
from hypothesis import strategies as st
from test_acceleration import (
    _assert_same_fit,
    _check_safeguard,
    _path,
    _poisson,
    _safeguard_run,
    _unsafeguarded_propose,
)

from fastem import GaussianMixture
from fastem._em import fixed_point as fp
from fastem._em.vector import VectorOptions, _contracting, extrapolate
from fastem.backends import available_backends
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning

OPTIONS = (
    {},
    {"kind": "rre", "order": 4},
    {"order": 2, "guard": False},
    {"order": 8, "max_backoff": 1},
)
COMPILED = [b for b in available_backends() if b != "numpy"]


def _linear_chain(rates, n_points, seed=0):
    """Consecutive points of an affine map with the given rates, and its fixed point."""
    rng = np.random.default_rng(seed)
    n = len(rates)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = q @ np.diag(rates) @ q.T
    fixed = rng.normal(size=n)
    xs = [rng.normal(size=n)]
    for _ in range(n_points):
        xs.append(fixed + A @ (xs[-1] - fixed))
    return np.stack(xs[:-1], axis=1), np.stack(xs[1:], axis=1), fixed


@pytest.mark.parametrize("kind", ["rre", "mpe"])
def test_extrapolation_is_exact_on_a_linear_map(kind):
    """Three slow directions (the rest fall to 0 in one step): a chain of 4 points after
    the first step (3 + 1 residuals) lands on the fixed point; 3 points do not."""
    points, images, fixed = _linear_chain([0.99, 0.98, 0.95, 0, 0, 0, 0, 0], 6)
    np.testing.assert_allclose(extrapolate(points[:, 1:5], images[:, 1:5], kind), fixed, atol=1e-7)
    assert np.abs(images[:, 4] - fixed).max() > 0.1  # EM itself is far from it
    assert np.abs(extrapolate(points[:, 1:4], images[:, 1:4], kind) - fixed).max() > 1e-3
    # a chain that has already converged gives no proposal (no residual)
    assert extrapolate(np.ones((3, 3)), np.ones((3, 3)), kind) is None


def test_guard_tells_contracting_from_expanding_chains():
    for rates, expected in (([0.99, 0.9, 0.5, 0.3], True), ([1.2, 0.9, 0.5, 0.3], False)):
        points, images, _ = _linear_chain(rates, 5, seed=1)
        assert _contracting(images - points) is expected


def test_options_checked():
    for bad in ({"order": 0}, {"kind": "eps"}, {"max_backoff": 0}):
        with pytest.raises(ValueError):
            VectorOptions(**bad)
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.warns(ConvergenceWarning):  # tol=0 never converges: all 5 passes run
        assert GaussianMixture(2, acceleration="mpe", max_iter=5, tol=0.0).fit(X).n_iter_ == 5


@pytest.mark.parametrize("options", OPTIONS)
def test_poisson_toy_same_fixed_point_in_far_fewer_passes(options):
    _, plain = _poisson(None)
    _, limit = _poisson(None, tol=0.0, max_passes=10_000)
    problem, res = _poisson("mpe", options=options)
    assert res.converged and res.n_passes * 10 < plain.n_passes
    np.testing.assert_allclose(res.image, limit.image, rtol=2e-4)
    assert res.objective >= plain.objective - 1e-7
    assert res.n_accepted > 0
    assert problem.calls == res.n_passes == len(res.lower_bounds) == len(res.kinds)
    assert res.kinds.count("accepted") == res.n_accepted
    assert np.all(np.diff(res.lower_bounds) >= 0)
    assert np.all(np.diff(_path(res)) >= -1e-12 * abs(res.objective))
    for i, kind in enumerate(res.kinds):
        if kind == "accepted":  # never below the EM pass it replaces (the one before)
            assert res.kinds[i - 1] == "em" and res.objectives[i] >= res.objectives[i - 1]


def test_passes_per_cycle():
    """After an accepted point a cycle is ``order`` EM passes and the proposal."""
    for order in (1, 2, 3):
        _, res = _poisson("mpe", options={"order": order, "guard": False}, max_passes=60)
        k = res.kinds
        accepted = [i for i, kind in enumerate(k) if kind == "accepted"]
        assert len(accepted) > 2
        for a, b in zip(accepted, accepted[1:], strict=False):
            if "rejected" not in k[a:b]:
                assert b - a == order + 1


@pytest.mark.parametrize("budget", [1, 2, 3, 4, 7])
def test_budget_counts_every_pass(budget):
    for options in OPTIONS:
        problem, res = _poisson("mpe", max_passes=budget, options=options)
        assert problem.calls == res.n_passes == budget


def test_negative_control_monotonicity_fails_without_safeguard(monkeypatch):
    """The checks have teeth: without the safeguard the path goes down on a mixture."""
    monkeypatch.setattr(fp.Run, "propose", _unsafeguarded_propose)
    found = False
    for seed in range(20):
        *_, res = _safeguard_run(
            seed, 3, 2, "full", "mpe", False, 0.0, passes=60, options={"guard": False}
        )
        found = np.diff(_path(res)).min() < -1e-9 * abs(res.objective)
        if found:
            break
    assert found


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 4),
    d=st.integers(1, 4),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    options=st.sampled_from(OPTIONS),
    weighted=st.booleans(),
    nan_fraction=st.sampled_from([0.0, 0.0, 0.1]),
)
def test_safeguard_properties(seed, k, d, covariance_type, options, weighted, nan_fraction):
    try:
        run = _safeguard_run(
            seed, k, d, covariance_type, "mpe", weighted, nan_fraction, options=options
        )
    except ValueError as exc:  # a component collapsed under plain EM: the user's error
        assert "ill-defined covariance" in str(exc)
        return
    _check_safeguard(*run)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_safeguard_properties_with_extrapolations(covariance_type):
    """Fixed cases where proposals are kept (so the checks above are not vacuous)."""
    for options in OPTIONS[:2]:
        run = _safeguard_run(3, 3, 3, covariance_type, "mpe", True, 0.1, passes=60, options=options)
        assert _check_safeguard(*run) > 0


def _fit(X, **kwargs):
    kwargs.setdefault("backend", "numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(**kwargs).fit(X)


def test_same_fixed_point_as_plain_em_in_memory_on_a_memmap_and_on_dask(tmp_path):
    X, _ = make_mixture(3000, 2, 4, random_state=5)
    X = X * 2.5  # overlapping: plain EM needs a few hundred passes
    kw = {"n_components": 4, "random_state": 0, "tol": 1e-15, "stopping": "aitken"}
    plain = _fit(X, max_iter=20_000, **kw)
    fast = _fit(X, max_iter=20_000, acceleration="mpe", **kw)
    assert plain.converged_ and fast.converged_
    assert fast.n_iter_ * 3 < plain.n_iter_
    assert fast.n_extrapolations_accepted_ > 0
    _assert_same_fit(plain, fast)
    path = tmp_path / "X.npy"
    np.save(path, X)
    _assert_same_fit(
        plain, _fit(np.load(path, mmap_mode="r"), max_iter=3000, acceleration="mpe", **kw)
    )
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        on_dask = _fit(da.from_array(X, chunks=1000), max_iter=3000, acceleration="mpe", **kw)
    assert on_dask.converged_ and on_dask.n_extrapolations_accepted_ > 0
    _assert_same_fit(plain, on_dask)


@pytest.mark.skipif(not COMPILED, reason="no compiled backend is available")
@pytest.mark.parametrize(("covariance_type", "dtype"), [("full", np.float64), ("diag", np.float32)])
def test_bit_identical_across_thread_counts(covariance_type, dtype):
    X, _ = make_mixture(10_000, 4, 5, random_state=3, dtype=dtype)
    a, b = (
        _fit(
            X,
            n_components=5,
            covariance_type=covariance_type,
            random_state=0,
            tol=1e-8,
            acceleration="mpe",
            backend=COMPILED[0],
            n_threads=n_threads,
        )
        for n_threads in (1, 2)
    )
    assert a.n_extrapolations_accepted_ > 0
    assert a.n_iter_ == b.n_iter_ and a.lower_bounds_ == b.lower_bounds_
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_every_covariance_type_with_weights_nan_float32(covariance_type):
    X, _ = make_mixture(1500, 3, 3, random_state=2, dtype=np.float32)
    X = X * np.float32(2.0)
    X[::17, 1] = np.nan
    sw = np.random.default_rng(0).uniform(0.5, 2.0, size=len(X))
    init = initial_parameters(np.nan_to_num(X), 3, covariance_type, 0)
    kw = {"tol": 1e-9, "max_iter": 5000, "backend": "numpy", **init}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        plain = GaussianMixture(**kw).fit(X, sample_weight=sw)
        fast = GaussianMixture(acceleration="mpe", **kw).fit(X, sample_weight=sw)
    assert fast.means_.dtype == np.float32
    assert fast.lower_bound_ >= plain.lower_bound_ - 1e-6
    _assert_same_fit(plain, fast, rtol=2e-3, bound_rtol=1e-6)


def test_n_init_warm_start_and_structured_models():
    X, _ = make_mixture(600, 3, 3, random_state=3)
    kw = {"n_components": 3, "random_state": 0, "tol": 1e-8, "acceleration": "mpe"}
    X[:, 0] *= 0.4  # overlapping components: extrapolation has work to do
    multi = _fit(X, n_init=3, **kw)
    assert multi.lower_bound_ >= _fit(X, **kw).lower_bound_  # the best of three starts
    gm = GaussianMixture(
        3, max_iter=10, tol=0.0, warm_start=True, backend="numpy", acceleration="mpe"
    )
    bounds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(3):
            bounds.append(gm.fit(X).lower_bound_)
    assert np.all(np.diff(bounds) >= 0) and gm.n_iter_ == 10
    # mclust models: extrapolated points are projected onto the model's structure
    for model in ("VEI", "EVE", "VEV"):
        plain = _fit(X, covariance_type=model, max_iter=300, **{**kw, "acceleration": None})
        fast = _fit(X, covariance_type=model, max_iter=300, **kw)
        assert fast.n_extrapolations_accepted_ + fast.n_extrapolations_rejected_ > 0
        assert fast.lower_bound_ >= plain.lower_bound_ - 1e-5
