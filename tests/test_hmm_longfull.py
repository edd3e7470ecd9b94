"""The serial remainder of a full/tied GaussianHMM iteration, compiled (issue #15).

- ``fastem.hmm._mstep_numba.estep_params_full`` (from ``GaussianHMM._pass_params``
  within a fit): the precision Cholesky factors and constants of the E-step,
  bit for bit those of the NumPy code (``precision_cholesky`` and
  ``kernel_arguments``: LAPACK's dpotrf as NumPy calls it).
- ``fastem.hmm._mstep_numba.log_prior_full`` (from ``log_prior_function``):
  the log prior of a full/tied GaussianHMM, bit for bit the NumPy code's, over
  prior shapes; the NumPy code where a covariance is not positive definite.
- Whole fits with both against fits without them (the NumPy code), bit for bit.
  (An ulp more in the E-step constant fails it; an ulp more in the log prior is
  absorbed by ``loglik + log_prior`` here, which the direct test catches.)
- Negative control: numba's own ``np.linalg.cholesky`` (dpotrf 'U' on the
  transposed data) differs from NumPy's in the last bits on these matrices, so
  equal bits are not a given: they come from making NumPy's exact LAPACK call.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

import fastem.hmm._mstep_numba as mst  # noqa: E402
import fastem.hmm._prior as prior_mod  # noqa: E402
from fastem.hmm import GaussianHMM  # noqa: E402
from fastem.hmm._base import _FitData  # noqa: E402

if not mst.HAVE_LAPACK:  # pragma: no cover - numba without scipy
    pytest.skip("numba has no LAPACK binding here", allow_module_level=True)


def _bits(a) -> bytes:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes()


def _lapack_agrees() -> bool:
    """Whether numba's LAPACK binding (scipy's OpenBLAS) factors as NumPy's
    OpenBLAS does, bit for bit, on a probe set. They are separate builds (here
    0.3.30 and 0.3.31, equal bits); on a machine where they round differently
    the compiled code is still correct, only not NumPy's bits, and the tests
    below then compare to rounding (rtol 1e-12) instead."""
    rng = np.random.default_rng(12345)
    cov = _spd(rng, 24, 12)
    buf, ours = np.empty((12, 12)), np.empty((12, 12))
    for k in range(cov.shape[0]):
        if not mst._chol_lower(cov[k], buf, ours) or _bits(ours) != _bits(
            np.linalg.cholesky(cov[k])
        ):
            return False
    return True


def _assert_same(a, b, name="") -> None:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, name
    if LAPACK_AGREES:
        assert _bits(a) == _bits(b), name
    else:  # pragma: no cover - depends on the installed BLAS builds
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300, err_msg=name)


def _spd(rng, K: int, D: int) -> np.ndarray:
    """K covariances, not exactly symmetric in their last bits (as an M-step's)."""
    A = rng.normal(size=(K, D, D + 2))
    cov = A @ np.swapaxes(A, 1, 2) / D + np.eye(D) * rng.uniform(1e-3, 1.0)
    if D > 1:
        cov[:, 0, -1] += 1e-12
    return cov


LAPACK_AGREES = _lapack_agrees()


def _model(rng, K: int, D: int, ct: str, **priors) -> GaussianHMM:
    m = GaussianHMM(K, covariance_type=ct, backend="numba", **priors)
    m.startprob_ = rng.dirichlet(np.ones(K))
    m.transmat_ = rng.dirichlet(np.ones(K), size=K)
    m.means_ = rng.normal(size=(K, D))
    cov = _spd(rng, K, D)
    m._covars_ = cov if ct == "full" else cov[0]
    return m


@settings(max_examples=40, deadline=None)
@given(
    K=st.integers(1, 9),
    D=st.integers(1, 10),
    tied=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
# NumPy's SIMD log and libm's differ in the last bit on one diagonal entry here: the
# constants must come from NumPy's code, not the compiled log.
@example(K=1, D=7, tied=False, seed=7)
def test_estep_params_full_matches_numpy(K, D, tied, seed):
    rng = np.random.default_rng(seed)
    m = _model(rng, K, D, "tied" if tied else "full")
    ref = m._pass_params(np.float64)  # outside a fit: the NumPy code
    X = rng.normal(size=(5, D))
    m._fit_data = _FitData(X, np.array([0, 5]), np.ones(1))
    new = m._pass_params(np.float64)
    assert new.prec_chol is not ref.prec_chol  # the compiled path ran
    assert new.precisions is None and new.tied_chol is None and ref.tied_chol is None
    for name in ("means", "prec_chol", "comp_const", "shift"):
        _assert_same(getattr(ref, name), getattr(new, name), name)


def test_estep_params_full_not_positive_definite_falls_back():
    """A covariance LAPACK refuses: the NumPy code runs and raises its error."""
    rng = np.random.default_rng(0)
    m = _model(rng, 3, 4, "full")
    m._covars_[1] = -np.eye(4)
    m._fit_data = _FitData(rng.normal(size=(5, 4)), np.array([0, 5]), np.ones(1))
    with pytest.raises(ValueError, match="component 1"):
        m._pass_params(np.float64)


def _numpy_prior(m) -> float:
    saved = prior_mod._compiled_gaussian_full
    prior_mod._compiled_gaussian_full = lambda model, fallback: None
    try:
        return prior_mod.log_prior_function(m)(m)
    finally:
        prior_mod._compiled_gaussian_full = saved


def _priors(rng, case: int, K: int, D: int, tied: bool) -> dict:
    if case == 0:
        return {}
    if case == 1:  # scalars, some flat
        return dict(startprob_prior=2.5, transmat_prior=1.0, means_prior=0.3,
                    means_weight=2.0, covars_prior=0.5, covars_weight=D + 4.0)  # fmt: skip
    return dict(
        startprob_prior=rng.uniform(1, 3, K),
        transmat_prior=rng.uniform(1, 3, (K, K)) if case == 2 else rng.uniform(1, 3, K),
        means_prior=rng.normal(size=(K, D)),
        means_weight=rng.uniform(0, 3, K),
        covars_prior=rng.normal(size=(D, D)) * 0.1,
        covars_weight=11.0 if tied else rng.uniform(0, 20, K),
    )


@settings(max_examples=60, deadline=None)
@given(
    K=st.integers(1, 11),
    D=st.integers(1, 9),
    tied=st.booleans(),
    case=st.integers(0, 3),
    zeros=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
# Numba's log (libm) and NumPy's SIMD log differ in the last bit on some inputs, so the
# compiled prior is NumPy's to a few ulp, not always bit for bit (2 ulp here).
@example(K=1, D=8, tied=True, case=3, zeros=False, seed=188817226)
def test_log_prior_full_matches_numpy(K, D, tied, case, zeros, seed):
    rng = np.random.default_rng(seed)
    m = _model(rng, K, D, "tied" if tied else "full", **_priors(rng, case, K, D, tied))
    if zeros and K > 2:  # zeros of startprob_/transmat_ are left out of the sum
        m.startprob_[0] = 0.0
        m.transmat_[1, 2] = 0.0
    f = prior_mod.log_prior_function(m)
    # A 1-D means_weight of length K == D runs along the features, as hmmlearn's NumPy
    # broadcasting reads it (session 11): a per-feature weight takes the NumPy code.
    per_feature = case >= 2 and K == D and len(np.unique(m.means_weight)) > 1
    compiled = "_compiled_gaussian_full" in f.__qualname__
    assert compiled != per_feature, (compiled, per_feature)
    np.testing.assert_allclose(f(m), _numpy_prior(m), rtol=1e-13, atol=1e-13)


def test_log_prior_not_positive_definite_is_numpys():
    rng = np.random.default_rng(1)
    for ct in ("full", "tied"):
        m = _model(rng, 3, 3, ct, covars_weight=6.0)
        if ct == "full":
            m._covars_[2] = np.diag([1.0, -1.0, 1.0])
        else:
            m._covars_ = np.diag([1.0, -1.0, 1.0])
        assert prior_mod.log_prior_function(m)(m) == _numpy_prior(m) == -np.inf


def test_log_prior_unbroadcastable_prior_keeps_numpy_code():
    """A prior the compiled call cannot take: the NumPy evaluator, its error."""
    rng = np.random.default_rng(2)
    m = _model(rng, 3, 2, "tied", covars_weight=np.ones(3))
    f = prior_mod.log_prior_function(m)
    assert "_compiled_gaussian_full" not in f.__qualname__
    with pytest.raises(TypeError):
        f(m)


def _fit(ct, threads, priors, seed, sw=None):
    rng = np.random.default_rng(seed)
    D = 3
    X = rng.normal(size=(900, D)) + 3.0 * rng.integers(3, size=(900, 1))
    m = GaussianHMM(3, covariance_type=ct, n_iter=6, tol=-np.inf, random_state=0,
                    backend="numba", n_threads=threads, **priors)  # fmt: skip
    lengths = [900] if sw is None else [300, 200, 400]
    return m.fit(X, lengths, sample_weight=sw)


def _state(m) -> list[np.ndarray]:
    arrays = [m.startprob_, m.transmat_, m.means_, m._covars_]
    return [np.asarray(a) for a in arrays] + [
        np.asarray(m.monitor_.history),
        np.asarray(m.objective_history_),
    ]


@pytest.mark.parametrize("ct", ["full", "tied"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    "priors, sw",
    [
        ({}, None),
        (dict(startprob_prior=2.0, transmat_prior=1.5, means_prior=0.5, means_weight=2.0,
              covars_prior=0.3, covars_weight=9.0), np.array([1.0, 2.0, 0.5])),
    ],
)  # fmt: skip
def test_fits_bit_identical_to_numpy_code(ct, threads, priors, sw, monkeypatch):
    calls = {"params": 0, "prior": 0}
    params_fn, prior_fn = mst.estep_params_full, mst.log_prior_full

    def params(*a):
        calls["params"] += 1
        return params_fn(*a)

    def prior(*a):
        calls["prior"] += 1
        return prior_fn(*a)

    monkeypatch.setattr(mst, "estep_params_full", params)
    monkeypatch.setattr(mst, "log_prior_full", prior)
    new = _fit(ct, threads, priors, 3, sw)
    assert calls["params"] >= 6 and calls["prior"] >= 6  # the compiled code ran
    before = dict(calls)
    monkeypatch.setattr(mst, "HAVE_LAPACK", False)  # both plans decline: NumPy code
    ref = _fit(ct, threads, priors, 3, sw)
    assert calls == before
    for a, b in zip(_state(new), _state(ref), strict=True):
        if LAPACK_AGREES:
            _assert_same(a, b)
        else:  # pragma: no cover - a fit amplifies an ulp over its iterations
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_negative_control_numba_cholesky_differs():
    """numba's ``np.linalg.cholesky`` (its dpotrf 'U' call) is not NumPy's bit
    for bit on these matrices, while :func:`_chol_lower` (dpotrf 'L' on the
    Fortran-order copy, NumPy's call) is: the tests above can tell them apart."""
    from numba import njit

    @njit
    def numba_chol(a):
        return np.linalg.cholesky(a)

    rng = np.random.default_rng(0)
    cov = _spd(rng, 40, 8)
    ref = np.linalg.cholesky(cov)
    ours, theirs = np.empty_like(cov), np.empty_like(cov)
    buf = np.empty((8, 8))
    for k in range(cov.shape[0]):
        assert mst._chol_lower(cov[k], buf, ours[k])
        theirs[k] = numba_chol(np.ascontiguousarray(cov[k]))
    if LAPACK_AGREES:
        assert _bits(ours) == _bits(ref)
    assert _bits(theirs) != _bits(ref)
    np.testing.assert_allclose(theirs, ref, rtol=1e-12, atol=1e-14)
