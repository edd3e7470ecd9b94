"""Accelerated EM (SQUAREM, damped Anderson): the generic driver and GaussianMixture.

Properties of the safeguard (objective never decreases along the path, an accepted
extrapolation is never below the EM point it replaces, accepted iterates are feasible),
honest pass accounting, the same fixed point as plain EM in memory, on a memmap and
on Dask, bit-identical results across thread counts, and a negative control showing
that the monotonicity property fails once the safeguard is disabled.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES, initial_parameters
from hypothesis import example, given, settings
from hypothesis import strategies as st

import fastem
from fastem import GaussianMixture
from fastem._covariance import covariances_from_cholesky, precision_cholesky_from_precisions
from fastem._data import ArrayData
from fastem._em import Evaluation, make_stopping_rule, run_fixed_point
from fastem._em import fixed_point as fp
from fastem._em.anderson import damped_coefficients
from fastem._events import fit_listener
from fastem.backends import available_backends, get_backend
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning
from fastem.mixture import _MixtureMap

METHODS = ("squarem", "anderson")
COMPILED = [b for b in available_backends() if b != "numpy"]


# --------------------------------------------------------------- a non-Gaussian toy
class PoissonMixture:
    """Two-component Poisson mixture of SQUAREM's vignette (Hasselblad 1969: deaths
    per day of women over 80 in London, 1910-1912). Parameters ``(p, mu1, mu2)``."""

    y = np.arange(10.0)
    freq = np.array([162, 267, 271, 185, 111, 61, 27, 8, 3, 1.0])
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1.0, 10.0)))])

    def __init__(self):
        self.calls = 0

    def evaluate(self, x, extrapolated):
        p, m1, m2 = x
        if extrapolated and not (0.0 < p < 1.0 and m1 > 0.0 and m2 > 0.0):
            return None
        self.calls += 1
        y = self.y
        l1 = math.log(p) + y * math.log(m1) - m1 - self.log_fact
        l2 = math.log1p(-p) + y * math.log(m2) - m2 - self.log_fact
        top = np.maximum(l1, l2)
        ll = top + np.log(np.exp(l1 - top) + np.exp(l2 - top))
        z = np.exp(l1 - ll)
        f = self.freq
        image = np.array(
            [f @ z / f.sum(), (f * y) @ z / (f @ z), (f * y) @ (1 - z) / (f @ (1 - z))]
        )
        return Evaluation(x, float(f @ ll), image)


def _poisson(method, tol=1e-10, max_passes=20_000, options=None):
    problem = PoissonMixture()
    res = run_fixed_point(
        problem,
        np.array([0.3, 1.0, 2.5]),
        method=method,
        max_passes=max_passes,
        rule=make_stopping_rule("absolute", tol),
        options=options,
    )
    return problem, res


def _path(res):
    """Objectives of the points the scheme moved through (rejected proposals left out)."""
    return np.array([o for o, k in zip(res.objectives, res.kinds, strict=True) if k != "rejected"])


def test_poisson_toy_same_fixed_point_in_far_fewer_passes():
    _, plain = _poisson(None)
    assert plain.converged and plain.n_passes > 1000  # EM crawls on this problem
    _, limit = _poisson(None, tol=0.0, max_passes=10_000)  # the fixed point itself
    for method in METHODS:
        problem, res = _poisson(method)
        assert res.converged
        assert res.n_passes * 10 < plain.n_passes, method
        # the likelihood is flat: 1e-10 from its maximum, the parameters are ~1e-4 away
        np.testing.assert_allclose(res.image, limit.image, rtol=2e-4)
        np.testing.assert_allclose(plain.image, limit.image, rtol=2e-4)
        assert res.objective >= plain.objective - 1e-7
        assert res.n_accepted > 0
        # every pass is one call of the problem, counted once, with one lower bound each
        assert problem.calls == res.n_passes == len(res.lower_bounds) == len(res.kinds)
        assert res.kinds.count("accepted") == res.n_accepted
        assert res.kinds.count("rejected") <= res.n_rejected  # infeasible ones cost no pass
        assert np.all(np.diff(res.lower_bounds) >= 0)
        assert np.all(np.diff(_path(res)) >= -1e-12 * abs(res.objective))


def test_plain_driver_is_plain_em():
    problem, res = _poisson(None, max_passes=50)
    x = np.array([0.3, 1.0, 2.5])
    objectives = []
    for _ in range(50):
        ev = PoissonMixture().evaluate(x, False)
        objectives.append(ev.objective)
        x = ev.image
    assert res.objectives == objectives and res.n_passes == 50 and not res.converged
    assert res.kinds == ["em"] * 50
    np.testing.assert_array_equal(res.image, x)


@pytest.mark.parametrize("method", METHODS)
def test_budget_counts_every_pass(method):
    for budget in (1, 2, 3, 4, 7):
        problem, res = _poisson(method, max_passes=budget)
        assert problem.calls == res.n_passes == budget


def _unsafeguarded_propose(self, x, reference):
    """Run.propose with the safeguard removed: keep any feasible extrapolation."""
    if self.exhausted:
        return None
    ev = self.problem.evaluate(x, True)
    if ev is None or ev.image is None:
        self.result.n_rejected += 1
        return None
    self.result.n_accepted += 1
    if ev.objective >= self.result.objective:
        self._set_best(ev)
    self.rule.reset(ev.objective)
    self._record(ev, "accepted")
    return ev


@pytest.mark.parametrize("method", METHODS)
def test_negative_control_monotonicity_fails_without_safeguard(method, monkeypatch):
    """The monotonicity check has teeth: with the safeguard disabled the path
    goes down (on the toy and on a Gaussian mixture); with it, it never does."""
    _, safe = _poisson(method)
    assert np.all(np.diff(_path(safe)) >= -1e-12 * abs(safe.objective))
    monkeypatch.setattr(fp.Run, "propose", _unsafeguarded_propose)
    _, unsafe = _poisson(method, max_passes=3000)
    drops = np.diff(_path(unsafe))
    assert drops.min() < -1e-9 * abs(unsafe.objective)  # far beyond rounding (1e-13)


class PenalizedPoisson(PoissonMixture):
    """The vignette's mixture with a MAP-style M-step (the rates shrunk towards 8 by a
    Gamma prior) while the objective stays the plain log-likelihood: the map is not an
    ascent map of the objective, as the HMMs' regularized M-step (``reg_covar``,
    ``covars_prior``) is not, and as the mixture's ``reg_covar`` floor is not exactly."""

    def evaluate(self, x, extrapolated):
        ev = super().evaluate(x, extrapolated)
        if ev is None:
            return None
        p, _, _ = x
        y, f = self.y, self.freq
        l1 = math.log(p) + y * math.log(x[1]) - x[1]
        l2 = math.log1p(-p) + y * math.log(x[2]) - x[2]
        z = 1.0 / (1.0 + np.exp(l2 - l1))
        a, b = 40.0, 5.0  # prior: shape a / rate b, i.e. a pull towards 8 worth 5 counts
        rates = [(f * y) @ w / (f @ w + b) + a / (f @ w + b) for w in (z, 1 - z)]
        ev.image = np.array([ev.image[0], *rates])
        return ev


@pytest.mark.parametrize(
    ("method", "options"), [("squarem", None), ("squarem", {"reference": "x1"}), ("anderson", None)]
)
def test_safeguard_does_not_need_an_ascent_map(method, options):
    """Why ``reference='x1'`` broke HMM tests that check ``score >= lower bound``: with
    a regularized M-step a plain EM step can lower the objective (checked here: the
    negative control of the premise), so that check depends on the model. The driver's
    own guarantees do not: one lower bound per pass, non-decreasing, and every accepted
    extrapolation at least the objective of the EM pass it is judged against."""
    _, limit = _poisson(None, tol=0.0, max_passes=10_000)  # the likelihood's maximum
    at_max = PenalizedPoisson().evaluate(limit.image, False)
    assert PenalizedPoisson().evaluate(at_max.image, False).objective < at_max.objective - 1e-3
    toy = PenalizedPoisson()
    res = run_fixed_point(
        toy,
        np.array([0.3, 1.0, 2.5]),
        method=method,
        max_passes=300,
        rule=make_stopping_rule("absolute", 0.0),
        options=options,
    )
    assert toy.calls == res.n_passes == len(res.lower_bounds) == 300
    assert np.all(np.diff(res.lower_bounds) >= 0)
    assert res.objective == max(_path(res))
    accepted = [i for i, k in enumerate(res.kinds) if k == "accepted"]
    assert accepted  # not vacuous
    for i in accepted:
        assert res.kinds[i - 1] == "em" and res.objectives[i] >= res.objectives[i - 1]


# ------------------------------------------------------------ the Gaussian problem
def _problem(X, sw, covariance_type, reg_covar=1e-6, backend="numpy"):
    data = ArrayData(X, sw)
    return _MixtureMap(data, get_backend(backend), covariance_type, reg_covar)


def _start(X, k, covariance_type, seed):
    init = initial_parameters(np.nan_to_num(X, nan=0.0), k, covariance_type, seed)
    pc = precision_cholesky_from_precisions(init["precisions_init"], covariance_type)
    cov = covariances_from_cholesky(pc, covariance_type)
    return init["weights_init"], init["means_init"], cov, pc


def _assert_feasible(problem, x, reg_covar):
    weights, means, pc = problem.unpack(x)
    assert np.isfinite(weights).all() and (weights > 0).all()
    assert abs(weights.sum() - 1.0) < 1e-12
    assert np.isfinite(means).all() and np.isfinite(pc).all()
    cov = covariances_from_cholesky(pc, problem.ct)
    if problem.ct in ("full", "tied"):
        eig = np.linalg.eigvalsh(cov)
    else:
        eig = cov
    assert eig.min() >= reg_covar * (1 - 1e-6)


class Recorder:
    """Wraps a problem: remembers every evaluated point and its evaluation."""

    def __init__(self, problem):
        self.problem = problem
        self.log = []

    def evaluate(self, x, extrapolated):
        ev = self.problem.evaluate(x, extrapolated)
        if ev is not None:
            self.log.append((np.array(x), extrapolated, ev))
        return ev


def _safeguard_run(
    seed,
    k,
    d,
    covariance_type,
    method,
    weighted,
    nan_fraction,
    passes=40,
    options=None,
    reg_covar=1e-6,
):
    """A random problem (overlap, weights, NaN) and one accelerated run, recorded."""
    rng = np.random.default_rng(seed)
    X, labels = make_mixture(300, d, k, random_state=seed)
    centres = np.array(
        [X[labels == j].mean(axis=0) if (labels == j).any() else 0 for j in range(k)]
    )
    X += (rng.uniform(0.3, 1.5) - 1.0) * centres[labels]  # from heavy overlap to separated
    if nan_fraction and d > 1:
        X[rng.random(X.shape) < nan_fraction] = np.nan
        X[np.isnan(X).all(axis=1), 0] = 0.0
    sw = rng.integers(0, 4, size=X.shape[0]).astype(np.float64) if weighted else np.ones(len(X))
    sw[:k] += 1.0  # enough weighted rows
    problem = _problem(X, sw, covariance_type, reg_covar=reg_covar)
    rec = Recorder(problem)
    x0 = problem.start(_start(X, k, covariance_type, seed))
    res = run_fixed_point(
        rec,
        x0,
        method=method,
        max_passes=passes,
        rule=make_stopping_rule("absolute", 0.0),
        options=options,
    )
    return X, sw, problem, rec, res


def _check_safeguard(X, sw, problem, rec, res):
    """The three properties; returns the number of accepted extrapolations checked."""
    assert len(rec.log) == res.n_passes == len(res.lower_bounds)
    scale = 1e-12 * (1.0 + abs(res.objective))
    # 1. the objective never decreases: the recorded lower bounds, always, and the
    #    whole path where EM itself is an ascent map. With reg_covar > 0 the M-step
    #    is not an exact maximizer, so once an extrapolation has passed the map's
    #    fixed point (which is then not the likelihood's maximum) the EM steps after
    #    it may lower the objective slightly (hypothesis found 1e-10 on 300 rows;
    #    test_safeguard_does_not_need_an_ascent_map shows the premise): with
    #    reg_covar = 0 the path must not drop at all.
    assert np.all(np.diff(res.lower_bounds) >= 0)
    if problem.reg_covar == 0:
        assert np.all(np.diff(_path(res)) >= -scale)
    checked = 0
    for i, kind in enumerate(res.kinds):
        if kind != "accepted":
            continue
        # 2. an accepted extrapolation is never below the EM point it replaces (the
        #    pass before it), also by the NumPy reference's score_samples
        x_new, extrapolated, ev = rec.log[i]
        x_em, em_extrapolated, em = rec.log[i - 1]
        assert extrapolated and not em_extrapolated
        assert ev.objective >= em.objective
        assert _score(problem, x_new, X, sw) >= _score(problem, x_em, X, sw) - scale
        # 3. every accepted iterate is feasible
        _assert_feasible(problem, x_new, problem.reg_covar)
        checked += 1
    for _, _, ev in rec.log:
        if ev.image is not None:
            _assert_feasible(problem, ev.image, problem.reg_covar)
    return checked


@settings(max_examples=25)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(2, 4),
    d=st.integers(1, 4),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
    method=st.sampled_from(METHODS),
    weighted=st.booleans(),
    nan_fraction=st.sampled_from([0.0, 0.0, 0.1]),
    reg_covar=st.sampled_from([1e-6, 0.0]),
)
@example(  # EM steps after an accepted extrapolation lower the objective by 1e-10
    seed=0, k=3, d=3, covariance_type="diag", method="squarem", weighted=True,
    nan_fraction=0.1, reg_covar=1e-6,
)  # fmt: skip
@example(  # the same problem with EM an ascent map: the whole path is monotone
    seed=0, k=3, d=3, covariance_type="diag", method="squarem", weighted=True,
    nan_fraction=0.1, reg_covar=0.0,
)  # fmt: skip
def test_safeguard_properties(
    seed, k, d, covariance_type, method, weighted, nan_fraction, reg_covar
):
    try:
        run = _safeguard_run(
            seed, k, d, covariance_type, method, weighted, nan_fraction, reg_covar=reg_covar
        )
    except ValueError as exc:  # a component collapsed under plain EM: the user's error
        assert "ill-defined covariance" in str(exc)
        return
    _check_safeguard(*run)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_safeguard_properties_with_extrapolations(covariance_type, method):
    """Fixed cases where extrapolations are kept (so the checks above are not vacuous)."""
    run = _safeguard_run(3, 3, 3, covariance_type, method, True, 0.1, passes=60)
    assert _check_safeguard(*run) > 0


@pytest.mark.parametrize("method", METHODS)
def test_negative_control_gaussian_mixture(method, monkeypatch):
    monkeypatch.setattr(fp.Run, "propose", _unsafeguarded_propose)
    found = False
    for seed in range(20):
        *_, res = _safeguard_run(seed, 3, 2, "full", method, False, 0.0, passes=60)
        found = found or np.diff(_path(res)).min() < -1e-9 * abs(res.objective)
        if found:
            break
    assert found


def _score(problem, x, X, sw):
    """Weighted average log-likelihood at packed ``x`` by GaussianMixture.score_samples."""
    weights, means, pc = problem.unpack(x)
    gm = GaussianMixture(len(weights), covariance_type=problem.ct, backend="numpy")
    gm.weights_, gm.means_, gm.precisions_cholesky_ = weights, means, pc
    gm.n_features_in_ = means.shape[1]
    gm.covariances_ = covariances_from_cholesky(pc, problem.ct)
    s = gm.score_samples(X)
    keep = ~np.isnan(X).all(axis=1)
    return float(sw[keep] @ s[keep] / sw[keep].sum())


def test_infeasible_extrapolation_costs_no_pass():
    X, _ = make_mixture(200, 2, 2, random_state=1)
    problem = _problem(X, np.ones(len(X)), "full", reg_covar=1e-3)
    x0 = problem.start(_start(X, 2, "full", 0))
    bad = x0.copy()
    bad[4:] = 50.0  # precisions far above 1 / reg_covar: covariances below the floor
    assert problem.evaluate(bad, True) is None
    bad = x0.copy()
    bad[0] = -1e6  # a weight that underflows to 0
    assert problem.evaluate(bad, True) is None
    assert problem.evaluate(x0, True) is not None


def test_damped_coefficients_norm():
    rng = np.random.default_rng(0)
    dF, f = rng.normal(size=(50, 4)), rng.normal(size=50)
    g_ls = np.linalg.lstsq(dF, f, rcond=None)[0]
    np.testing.assert_allclose(damped_coefficients(dF, f, 1.0), g_ls, rtol=1e-10)
    for shrink in (0.1, 0.5, 0.9):
        g = damped_coefficients(dF, f, shrink)
        np.testing.assert_allclose(np.linalg.norm(g), shrink * np.linalg.norm(g_ls), rtol=1e-4)
    assert not damped_coefficients(np.zeros((5, 2)), f[:5], 0.5).any()


def _short_cycles(res):
    """Proposals whose cycle had one EM pass after the previous accepted point."""
    k = res.kinds
    return sum(
        k[i - 2] == "accepted" and k[i - 1] == "em" and k[i] != "em" for i in range(2, len(k))
    )


def test_squarem_reference_x1():
    """``reference='x1'``: an extrapolation is judged against the cycle's first EM
    step, so a cycle after an accepted point is two passes (x1, x'), not three; the
    same fixed point, monotone, and the safeguard still has teeth."""
    _, plain = _poisson(None)
    _, limit = _poisson(None, tol=0.0, max_passes=10_000)
    problem, res = _poisson("squarem", options={"reference": "x1"})
    _, exact = _poisson("squarem")
    assert res.converged and res.n_passes * 10 < plain.n_passes
    np.testing.assert_allclose(res.image, limit.image, rtol=2e-4)
    assert problem.calls == res.n_passes == len(res.kinds)
    assert np.all(np.diff(_path(res)) >= -1e-12 * abs(res.objective))
    assert _short_cycles(res) > 0 and _short_cycles(exact) == 0
    for i, kind in enumerate(res.kinds):
        if kind == "accepted":  # never below the EM pass it is compared with
            assert res.kinds[i - 1] == "em" and res.objectives[i] >= res.objectives[i - 1]
    with pytest.raises(ValueError, match="reference"):
        _poisson("squarem", options={"reference": "x3"})


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_safeguard_properties_reference_x1(covariance_type):
    run = _safeguard_run(
        3, 3, 3, covariance_type, "squarem", True, 0.1, passes=60, options={"reference": "x1"}
    )
    assert _check_safeguard(*run) > 0


def test_negative_control_reference_x1(monkeypatch):
    monkeypatch.setattr(fp.Run, "propose", _unsafeguarded_propose)
    _, unsafe = _poisson("squarem", max_passes=3000, options={"reference": "x1"})
    assert np.diff(_path(unsafe)).min() < -1e-9 * abs(unsafe.objective)


# -------------------------------------------------------------- the estimator
def _fit(X, sample_weight=None, **kwargs):
    kwargs.setdefault("backend", "numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(**kwargs).fit(X, sample_weight=sample_weight)


@pytest.fixture(scope="module")
def slow_problem():
    """Overlapping components: plain EM needs a few hundred passes."""
    X, _ = make_mixture(3000, 2, 4, random_state=5)
    X = X * 2.5
    return X, initial_parameters(X, 4, "full", 0)


def _assert_same_fit(a, b, rtol=1e-5, bound_rtol=1e-11):
    """Same lower bound and parameters, up to a relabelling of the components.

    The likelihood is flat at its maximum: a lower bound within 1e-12 leaves the
    parameters ~1e-6 apart, hence the tolerances."""
    assert abs(a.lower_bound_ - b.lower_bound_) <= bound_rtol * abs(a.lower_bound_)
    k = len(a.weights_)
    perm = min(
        itertools.permutations(range(k)),
        key=lambda p: float(np.abs(a.means_ - b.means_[list(p)]).sum()),
    )
    perm = list(perm)
    for attr in ("weights_", "means_", "covariances_"):
        other = getattr(b, attr)
        if not (attr == "covariances_" and a.covariance_type == "tied"):
            other = other[perm]
        np.testing.assert_allclose(getattr(a, attr), other, rtol=rtol, atol=rtol, err_msg=attr)


@pytest.mark.parametrize("method", METHODS)
def test_same_fixed_point_as_plain_em(slow_problem, method):
    X, init = slow_problem
    plain = _fit(X, tol=1e-15, stopping="aitken", max_iter=20_000, **init)
    fast = _fit(X, tol=1e-15, stopping="aitken", max_iter=20_000, acceleration=method, **init)
    assert plain.converged_ and fast.converged_
    assert fast.n_iter_ * 3 < plain.n_iter_
    assert fast.lower_bound_ >= plain.lower_bound_ - 1e-12
    _assert_same_fit(plain, fast)
    assert fast.n_extrapolations_accepted_ > 0
    assert plain.n_extrapolations_accepted_ == plain.n_extrapolations_rejected_ == 0


def test_n_iter_counts_data_passes(slow_problem, monkeypatch):
    X, init = slow_problem
    calls = []
    original = ArrayData.em_stats

    def counting(self, kernels, params):
        calls.append(1)
        return original(self, kernels, params)

    monkeypatch.setattr(ArrayData, "em_stats", counting)
    events = []
    with fit_listener(lambda e, **kw: events.append(kw) if e == "iteration" else None):
        gm = _fit(X, tol=1e-10, max_iter=500, acceleration="squarem", **init)
    assert len(calls) == gm.n_iter_ == len(gm.lower_bounds_) == len(events)
    assert [e["n_iter"] for e in events] == list(range(1, gm.n_iter_ + 1))
    assert gm.lower_bound_ == gm.lower_bounds_[-1] == max(gm.lower_bounds_)
    calls.clear()
    gm = _fit(X, tol=0.0, max_iter=37, acceleration="anderson", **init)
    assert len(calls) == gm.n_iter_ == 37 and not gm.converged_


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_every_covariance_type_with_weights_nan_float32(covariance_type):
    X, _ = make_mixture(1500, 3, 3, random_state=2, dtype=np.float32)
    X = X * np.float32(2.0)
    X[::17, 1] = np.nan
    sw = np.random.default_rng(0).uniform(0.5, 2.0, size=len(X))
    init = initial_parameters(np.nan_to_num(X), 3, covariance_type, 0)
    plain = _fit(X, sw, tol=1e-9, max_iter=5000, **init)
    for method in METHODS:
        fast = _fit(X, sw, tol=1e-9, max_iter=5000, acceleration=method, **init)
        assert fast.means_.dtype == np.float32
        assert fast.lower_bound_ >= plain.lower_bound_ - 1e-6
        _assert_same_fit(plain, fast, rtol=2e-3, bound_rtol=1e-6)


def test_n_init_and_warm_start(slow_problem):
    X, _ = slow_problem
    multi = _fit(X, n_components=4, n_init=3, random_state=0, tol=1e-8, acceleration="squarem")
    first = _fit(X, n_components=4, random_state=0, tol=1e-8, acceleration="squarem")
    assert multi.lower_bound_ >= first.lower_bound_  # the best of three starts, the first one's
    # a warm start continues where the first fit stopped
    gm = GaussianMixture(
        4, max_iter=10, tol=0.0, acceleration="anderson", warm_start=True, random_state=0,
        backend="numpy",
    )  # fmt: skip
    bounds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(4):
            gm.fit(X)
            bounds.append(gm.lower_bound_)
    assert np.all(np.diff(bounds) >= 0) and gm.n_iter_ == 10
    gm.set_params(tol=1e-3, max_iter=100)
    gm.fit(X)  # converged already: the first EM step gains less than tol
    assert gm.converged_ and gm.n_iter_ <= 3


def test_memmap_same_as_in_memory(slow_problem, tmp_path):
    X, init = slow_problem
    path = tmp_path / "X.npy"
    np.save(path, X)
    mm = np.load(path, mmap_mode="r")
    a = _fit(X, tol=1e-15, stopping="aitken", max_iter=3000, acceleration="squarem", **init)
    b = _fit(mm, tol=1e-15, stopping="aitken", max_iter=3000, acceleration="squarem", **init)
    plain = _fit(X, tol=1e-15, stopping="aitken", max_iter=20_000, **init)
    _assert_same_fit(plain, b)
    _assert_same_fit(a, b, rtol=1e-7)


def test_dask_same_fixed_point(slow_problem):
    distributed = pytest.importorskip("distributed")
    da = pytest.importorskip("dask.array")
    X, init = slow_problem
    plain = _fit(X, tol=1e-15, stopping="aitken", max_iter=20_000, **init)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        fast = _fit(
            da.from_array(X, chunks=1000),
            tol=1e-15,
            stopping="aitken",
            max_iter=3000,
            acceleration="anderson",
            **init,
        )
    assert fast.converged_
    _assert_same_fit(plain, fast)


@pytest.mark.skipif(not COMPILED, reason="no compiled backend is available")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("covariance_type", "dtype"), [("full", np.float64), ("diag", np.float32)])
def test_bit_identical_across_thread_counts(method, covariance_type, dtype):
    X, _ = make_mixture(10_000, 4, 5, random_state=3, dtype=dtype)
    models = []
    for n_threads in (1, 2):
        models.append(
            _fit(
                X,
                n_components=5,
                covariance_type=covariance_type,
                random_state=0,
                n_init=1,
                tol=1e-8,
                acceleration=method,
                backend=COMPILED[0],
                n_threads=n_threads,
            )  # fmt: skip
        )
    a, b = models
    assert a.n_iter_ == b.n_iter_ and a.lower_bounds_ == b.lower_bounds_
    assert a.n_extrapolations_accepted_ == b.n_extrapolations_accepted_
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)


def test_parameters_checked_saved_and_cloned(tmp_path, slow_problem):
    X, _ = slow_problem
    for name, value in (("acceleration", "fast"), ("stopping", "never")):
        with pytest.raises(ValueError, match=name):
            GaussianMixture(2, backend="numpy", **{name: value}).fit(X)
    gm = _fit(X, n_components=2, acceleration="squarem", stopping="aitken", random_state=0)
    gm.save(tmp_path / "m.npz")
    loaded = fastem.load(tmp_path / "m.npz")
    assert loaded.get_params() == gm.get_params()
    assert loaded.n_extrapolations_accepted_ == gm.n_extrapolations_accepted_
    assert loaded.n_extrapolations_rejected_ == gm.n_extrapolations_rejected_
    np.testing.assert_array_equal(loaded.predict_proba(X), gm.predict_proba(X))
    sklearn_base = pytest.importorskip("sklearn.base")
    assert sklearn_base.clone(gm).get_params() == gm.get_params()


def test_verbose_output(slow_problem, capsys):
    X, init = slow_problem
    _fit(X, tol=1e-4, acceleration="squarem", verbose=2, verbose_interval=2, **init)
    out = capsys.readouterr().out
    assert "Initialization 0" in out and "Iteration 2\t time lapse" in out
    assert "Initialization converged" in out


# ------------------------------------------------- the mixture's default coordinates
@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 4),
    d=st.integers(1, 4),
    covariance_type=st.sampled_from(COVARIANCE_TYPES),
)
def test_natural_means_round_trip(seed, k, d, covariance_type):
    """The means are packed as ``U_k^T mu_k`` and unpacked back, for every type."""
    X, _ = make_mixture(60, d, k, random_state=seed)
    problem = _problem(X, np.ones(len(X)), covariance_type)
    weights, means, _, pc = _start(X, k, covariance_type, seed)
    x = problem.start((weights, means, None, pc))
    block = x[k : k + k * d].reshape(k, d)
    if covariance_type == "full":
        expected = np.einsum("kji,kj->ki", pc, means)
    elif covariance_type == "tied":
        expected = means @ pc
    else:
        expected = means * (pc if covariance_type == "diag" else pc[:, None])
    np.testing.assert_allclose(block, expected, rtol=1e-12, atol=1e-12)
    w2, m2, pc2 = problem.unpack(x.copy())  # a copy: not the remembered exact point
    np.testing.assert_allclose(w2, weights, rtol=1e-12)
    np.testing.assert_allclose(m2, means, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(pc2, pc, rtol=1e-12)


def test_singular_factor_is_infeasible_not_an_error():
    """An extrapolated factor whose diagonal underflows to 0 cannot map the natural
    means back: the point is infeasible (no pass), not a LinAlgError."""
    X, _ = make_mixture(200, 2, 2, random_state=1)
    for covariance_type in ("full", "tied"):
        problem = _problem(X, np.ones(len(X)), covariance_type, reg_covar=0.0)
        x = problem.start(_start(X, 2, covariance_type, 0)).copy()
        x[2 + 4] = -1e4  # the first log-diagonal entry of the (first) factor: exp -> 0
        assert problem.evaluate(x, True) is None


def test_estimator_squarem_is_reference_x1(slow_problem, monkeypatch):
    """GaussianMixture's SQUAREM judges against the cycle's first EM step (two passes
    per cycle after an accepted point); the driver's default (the HMMs') stays x2. The
    means' frame: natural for SQUAREM and quasi-Newton, data units for Anderson."""
    import fastem.mixture

    seen = []
    original = fastem.mixture.run_fixed_point

    def spy(problem, *args, **kwargs):
        seen.append((kwargs["method"], kwargs.get("options"), problem.means_frame))
        return original(problem, *args, **kwargs)

    monkeypatch.setattr(fastem.mixture, "run_fixed_point", spy)
    X, init = slow_problem
    _fit(X, max_iter=60, acceleration="squarem", **init)
    _fit(X, max_iter=60, acceleration="anderson", **init)
    _fit(X, max_iter=60, acceleration="qn", **init)
    assert seen == [
        ("squarem", {"reference": "x1"}, "natural"),
        ("anderson", None, "mean"),
        ("qn", None, "natural"),
    ]
    assert fp.run_fixed_point.__kwdefaults__["options"] is None


def test_huge_extrapolated_factor_is_infeasible_not_an_error():
    """A factor entry near the float range (an extrapolation far out) breaks the floor:
    infeasible, no pass; squaring its norm as a Python float raised OverflowError."""
    X, _ = make_mixture(200, 2, 2, random_state=1)
    for covariance_type in COVARIANCE_TYPES:
        problem = _problem(X, np.ones(len(X)), covariance_type, reg_covar=1e-6)
        x = problem.start(_start(X, 2, covariance_type, 0)).copy()
        if covariance_type in ("full", "tied"):
            x[-1] = 1e200  # an off-diagonal entry of the last factor
        else:
            x[-1] = 460.0  # a log-scale: exp(460) ~ 1e200
        assert problem.evaluate(x, True) is None
