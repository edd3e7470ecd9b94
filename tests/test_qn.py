"""Quasi-Newton acceleration (Zhou, Alexander & Lange 2011): ``acceleration="qn"``.

The same guarantees as SQUAREM and Anderson (tests/test_acceleration.py):
the objective never decreases along the path, an accepted proposal is never below the
EM point it replaces, accepted iterates are feasible (every covariance type, weights,
NaN), the same fixed point as plain EM (in memory, on a memmap, on Dask),
bit-identical across thread counts, and a negative control (without the safeguard the
path goes down).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES
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
from fastem._em.qn import QuasiNewtonOptions, _contracting, qn_step
from fastem.backends import available_backends
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning

REFERENCES = (
    {"reference": "x1"},
    {"reference": "x2"},
    {"q": 1, "guard": False},
    {"q": 8, "max_backoff": 2, "restart": True},
)
COMPILED = [b for b in available_backends() if b != "numpy"]


def test_step_is_newton_on_a_linear_map():
    """For an affine map in R^3, three secant pairs determine dF: the step lands on
    the fixed point (Zhou, Alexander & Lange's motivating case); with fewer pairs it
    does not."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    A = q @ np.diag([0.99, 0.9, 0.5]) @ q.T
    b = rng.normal(size=3)
    fixed = np.linalg.solve(np.eye(3) - A, b)
    xs = [rng.normal(size=3)]
    for _ in range(5):
        xs.append(A @ xs[-1] + b)
    U = np.stack([xs[i + 1] - xs[i] for i in range(3)], axis=1)
    V = np.stack([xs[i + 2] - xs[i + 1] for i in range(3)], axis=1)
    np.testing.assert_allclose(qn_step(U, V, xs[3], xs[4]), fixed, rtol=1e-8)
    assert np.linalg.norm(qn_step(U[:, :1], V[:, :1], xs[3], xs[4]) - fixed) > 1e-3
    assert qn_step(np.zeros((3, 1)), V[:, :1], xs[3], xs[4]) is None  # no direction


def test_guard_tells_contracting_from_expanding_pairs():
    """The guard's test: the secant pairs of a contraction pass, those of a map that
    expands along one direction (EM leaving a saddle region) do not."""
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    for rates, expected in (
        ([0.99, 0.9, 0.5, 0.3, 0.2, 0.1], True),
        ([1.2, 0.9, 0.5, 0.3, 0.2, 0.1], False),
    ):
        A = q @ np.diag(rates) @ q.T
        xs = [rng.normal(size=6)]
        for _ in range(5):
            xs.append(A @ xs[-1])
        U = np.stack([xs[i + 1] - xs[i] for i in range(4)], axis=1)
        V = np.stack([xs[i + 2] - xs[i + 1] for i in range(4)], axis=1)
        assert _contracting(U, V) is expected


def test_options_checked():
    for bad in ({"q": 0}, {"reference": "x3"}, {"max_backoff": -1}):
        with pytest.raises(ValueError):
            QuasiNewtonOptions(**bad)
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.warns(ConvergenceWarning):  # tol=0 never converges: all 5 passes run
        assert GaussianMixture(2, acceleration="qn", max_iter=5, tol=0.0).fit(X).n_iter_ == 5
    with pytest.raises(ValueError, match="acceleration"):
        GaussianMixture(2, acceleration="newton").fit(X)


@pytest.mark.parametrize("options", REFERENCES)
def test_poisson_toy_same_fixed_point_in_far_fewer_passes(options):
    _, plain = _poisson(None)
    _, limit = _poisson(None, tol=0.0, max_passes=10_000)
    problem, res = _poisson("qn", options=options)
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
    """``x1``: a cycle after an accepted point is two passes (``F(x)``, ``x'``);
    ``x2``: three (``F(x)``, ``F(F(x))``, ``x'``). (Without the guard, which skips a
    proposal where the pairs do not contract.)"""
    for options, gap in (({"reference": "x1"}, 1), ({"reference": "x2"}, 2)):
        _, res = _poisson("qn", options={**options, "guard": False}, max_passes=60)
        k = res.kinds
        accepted = [i for i, kind in enumerate(k) if kind == "accepted"]
        assert len(accepted) > 3
        # between two consecutive proposals exactly `gap` EM passes (no backoff by default)
        proposals = [i for i, kind in enumerate(k) if kind != "em"]
        assert set(np.diff(proposals)) == {gap + 1}


@pytest.mark.parametrize("budget", [1, 2, 3, 4, 7])
def test_budget_counts_every_pass(budget):
    for options in REFERENCES:
        problem, res = _poisson("qn", max_passes=budget, options=options)
        assert problem.calls == res.n_passes == budget


def test_negative_control_monotonicity_fails_without_safeguard(monkeypatch):
    """The checks have teeth: without the safeguard the path goes down, on the toy and
    on a Gaussian mixture."""
    monkeypatch.setattr(fp.Run, "propose", _unsafeguarded_propose)
    # (with q >= 3 secant pairs the 3-parameter toy converges in ~20 passes, and
    # no proposal goes down even unguarded: one pair there)
    _, unsafe = _poisson("qn", max_passes=3000, options={"q": 1})
    toy = np.diff(_path(unsafe)).min() < -1e-9 * abs(unsafe.objective)
    found = False
    for seed in range(20):
        *_, res = _safeguard_run(seed, 3, 2, "full", "qn", False, 0.0, passes=60)
        found = np.diff(_path(res)).min() < -1e-9 * abs(res.objective)
        if found:
            break
    assert toy and found


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 4),
    d=st.integers(1, 4),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    options=st.sampled_from(REFERENCES),
    weighted=st.booleans(),
    nan_fraction=st.sampled_from([0.0, 0.0, 0.1]),
)
def test_safeguard_properties(seed, k, d, covariance_type, options, weighted, nan_fraction):
    try:
        run = _safeguard_run(
            seed, k, d, covariance_type, "qn", weighted, nan_fraction, options=options
        )
    except ValueError as exc:  # a component collapsed under plain EM: the user's error
        assert "ill-defined covariance" in str(exc)
        return
    _check_safeguard(*run)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_safeguard_properties_with_extrapolations(covariance_type):
    """Fixed cases where proposals are kept (so the checks above are not vacuous)."""
    for options in REFERENCES[:2]:
        run = _safeguard_run(3, 3, 3, covariance_type, "qn", True, 0.1, passes=60, options=options)
        assert _check_safeguard(*run) > 0


def _fit(X, **kwargs):
    kwargs.setdefault("backend", "numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(**kwargs).fit(X)


def test_same_fixed_point_as_plain_em():
    X, _ = make_mixture(3000, 2, 4, random_state=5)
    X = X * 2.5  # overlapping: plain EM needs a few hundred passes
    kw = {"n_components": 4, "random_state": 0, "tol": 1e-15, "stopping": "aitken"}
    plain = _fit(X, max_iter=20_000, **kw)
    fast = _fit(X, max_iter=20_000, acceleration="qn", **kw)
    assert plain.converged_ and fast.converged_
    assert fast.n_iter_ * 3 < plain.n_iter_
    assert fast.n_extrapolations_accepted_ > 0
    _assert_same_fit(plain, fast)


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
            acceleration="qn",
            backend=COMPILED[0],
            n_threads=n_threads,
        )
        for n_threads in (1, 2)
    )
    assert a.n_extrapolations_accepted_ > 0
    assert a.n_iter_ == b.n_iter_ and a.lower_bounds_ == b.lower_bounds_
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)


def test_memmap_and_dask_same_fixed_point(tmp_path):
    X, _ = make_mixture(3000, 2, 4, random_state=5)
    X = X * 2.5
    kw = {"n_components": 4, "random_state": 0, "tol": 1e-15, "stopping": "aitken"}
    plain = _fit(X, max_iter=20_000, **kw)
    path = tmp_path / "X.npy"
    np.save(path, X)
    mm = _fit(np.load(path, mmap_mode="r"), max_iter=3000, acceleration="qn", **kw)
    _assert_same_fit(plain, mm)
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        fast = _fit(da.from_array(X, chunks=1000), max_iter=3000, acceleration="qn", **kw)
    assert fast.converged_
    _assert_same_fit(plain, fast)
