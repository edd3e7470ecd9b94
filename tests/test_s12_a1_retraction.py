"""The driver steps back over a kept extrapolation from which EM fails (issue #14).

A long step can take a fit into the basin of a collapse: the extrapolated point is
feasible and beats its EM reference, its image is defined, but an M-step a few EM
steps further is singular, where plain EM from the same start fits (a VEE mixture
with ``reg_covar=0`` on iris raised ``ValueError`` with SQUAREM). The driver now
retracts the last kept extrapolation, goes on from the EM point it replaced, and
from then on runs plain EM (:meth:`fastem._em.fixed_point.Run.advance`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastem import GaussianMixture
from fastem._em import Evaluation, make_stopping_rule, run_fixed_point
from fastem._em import fixed_point as fp

SCHEMES = ("squarem", "anderson", "qn", "mpe")
TARGET = np.array([2.0, 2.0])
RATES = np.array([0.9, 0.97])


class CollapseNearFixedPoint:
    """A linear EM map ``F(x) = x* + R (x - x*)`` towards ``x* = (2, 2)`` from below,
    objective ``x_0 + x_1`` (unbounded, as a likelihood near a collapse), whose M-step
    fails once a point of the map has its slow coordinate within ``gap`` of ``x*``'s. Plain EM stops
    (absolute rule, ``tol``) before it gets there; a good extrapolation jumps
    close to ``x*``, beats its EM reference, and its image lands in the failing region.
    """

    def __init__(self, gap: float = 0.27, rates: np.ndarray = RATES):
        self.gap = gap
        self.rates = rates
        self.calls = 0
        self.failures = 0
        self.seen: list[float] = []  # the slow coordinate of the EM points passed

    def evaluate(self, x, extrapolated):
        self.calls += 1
        if not extrapolated:
            self.seen.append(float(x[1]))
        if not extrapolated and x[1] > TARGET[1] - self.gap:
            self.failures += 1
            raise ValueError("singular M-step")
        return Evaluation(x, float(x.sum()), TARGET + self.rates * (x - TARGET))


def _run(method, problem, tol=1e-2):
    return run_fixed_point(
        problem,
        np.zeros(2),
        method=method,
        max_passes=2_000,
        rule=make_stopping_rule("absolute", tol),
    )


def test_plain_em_fits_the_toy():
    problem = CollapseNearFixedPoint()
    res = _run(None, problem)
    assert res.converged and problem.failures == 0
    assert res.image[1] < TARGET[1] - problem.gap


@pytest.mark.parametrize("method", SCHEMES)
def test_retracts_instead_of_raising(method):
    problem = CollapseNearFixedPoint()
    plain = _run(None, CollapseNearFixedPoint())
    res = _run(method, problem)  # raised ValueError before the retraction
    assert problem.failures >= 1, "the toy must reach the failing region"
    assert res.converged
    # every failure is one counted pass, and its extrapolation counts as rejected
    assert problem.calls == res.n_passes == len(res.kinds) == len(res.lower_bounds)
    assert res.kinds.count("accepted") == res.n_accepted
    assert res.kinds.count("abandoned") >= problem.failures
    # the path (em and accepted passes) is still monotone, and ends where plain EM
    # from the reference stops: within tol of plain EM's own end, not below it
    path = [o for o, k in zip(res.objectives, res.kinds, strict=True) if k in ("em", "accepted")]
    assert np.all(np.diff(path) >= 0)
    assert res.objective >= plain.objective - 1e-2
    assert np.all(np.diff(res.lower_bounds) >= 0)


@pytest.mark.parametrize("method", SCHEMES)
def test_negative_control_without_retraction(method, monkeypatch):
    # the driver as before: the next EM pass with no step back
    monkeypatch.setattr(fp.Run, "advance", lambda run, cur: (cur, run.evaluate(cur.image)))
    with pytest.raises(ValueError, match="singular"):
        _run(method, CollapseNearFixedPoint())


@pytest.mark.parametrize("method", SCHEMES)
def test_failure_without_a_kept_step_still_raises(method):
    # gap so wide that plain EM itself fails: the model's error, as without acceleration
    with pytest.raises(ValueError, match="singular"):
        _run(method, CollapseNearFixedPoint(gap=1.5), tol=1e-9)


@pytest.mark.parametrize(
    ("data", "k", "method"),
    [("iris", 7, "squarem"), ("wine", 9, "qn")],
)
def test_vee_without_floor_fits_where_plain_em_fits(data, k, method):
    # Session 11's review case 2: with reg_covar=0 the accelerated fit took a component
    # to a collapse (ValueError: ill-defined covariance) where plain EM fits.
    datasets = pytest.importorskip("sklearn.datasets")
    X = datasets.load_iris().data if data == "iris" else datasets.load_wine().data[:, :5]
    kw = dict(covariance_type="VEE", reg_covar=0.0, random_state=k, init_params="random")
    kw.update(max_iter=500, tol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = GaussianMixture(k, **kw).fit(X)
        fast = GaussianMixture(k, acceleration=method, **kw).fit(X)
    assert plain.converged_ and fast.converged_
    assert fast.lower_bound_ >= plain.lower_bound_ - 1e-5 * (1 + abs(plain.lower_bound_))


def _hmm_data(seed, k, d=2, t=500):
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 2, (k, d))
    trans = np.full((k, k), 0.1 / (k - 1))
    np.fill_diagonal(trans, 0.9)
    state, rows = 0, []
    for _ in range(t):
        rows.append(means[state] + rng.normal(size=d))
        state = rng.choice(k, p=trans[state])
    return np.array(rows)


def test_hmm_extrapolated_point_whose_mstep_divides_by_zero_is_rejected():
    # An extrapolated point where a state lost its mass: the compiled (numba) M-step
    # raised ZeroDivisionError, which the HMM's map did not take for an infeasible
    # point, so the accelerated fit crashed where plain Baum-Welch fits.
    from fastem.hmm import GaussianHMM

    X = _hmm_data(1, 4)
    kw = dict(covariance_type="diag", random_state=1, covars_prior=0, min_covar=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = GaussianHMM(4, n_iter=1000, tol=1e-8, stopping="aitken", **kw)
        fast.set_params(acceleration="squarem").fit(X)
        plain = GaussianHMM(4, n_iter=300, tol=1e-8, stopping="aitken", **kw).fit(X)
    assert fast.monitor_.converged
    assert fast.score(X) >= plain.score(X)


@settings(max_examples=40, deadline=None)
@given(
    method=st.sampled_from(SCHEMES),
    rates=st.tuples(st.floats(0.2, 0.99), st.floats(0.2, 0.99)),
    frac=st.floats(0.05, 0.95),
    tol=st.sampled_from([1e-2, 1e-3, 1e-4]),
)
# an extrapolation that lands 1e-13 past x*: the toy's objective is not maximal at its
# fixed point, so the EM step back loses 4e-15 (rounding of the step, not of the path)
@example(method="mpe", rates=(0.9609375, 0.5), frac=0.5, tol=0.01)
def test_retraction_properties(method, rates, frac, tol):
    # Wherever plain EM fits the toy, every scheme fits it too, with a monotone path,
    # honest pass accounting and an end no lower than plain EM's (less 10 tol).
    rates = np.array(rates)
    # where plain EM's points get in the slow coordinate: fail a fraction short of it
    free = CollapseNearFixedPoint(-np.inf, rates)
    _run(None, free, tol)
    gap = frac * (TARGET[1] - max(free.seen))
    plain = _run(None, CollapseNearFixedPoint(gap, rates), tol)
    problem = CollapseNearFixedPoint(gap, rates)
    res = _run(method, problem, tol)
    assert problem.calls == res.n_passes == len(res.kinds) == len(res.lower_bounds)
    assert res.kinds.count("accepted") == res.n_accepted
    path = [o for o, k in zip(res.objectives, res.kinds, strict=True) if k in ("em", "accepted")]
    # non-decreasing up to rounding: an extrapolation that lands past x* by rounding
    # (~1e-13 here) loses a fraction of that on the toy's linear objective
    noise = 1e-10 * (1 + np.abs(path[:-1]))
    assert np.all(np.diff(path) >= -noise)
    assert np.all(np.diff(res.lower_bounds) >= 0)
    assert res.objective >= plain.objective - 10 * tol
