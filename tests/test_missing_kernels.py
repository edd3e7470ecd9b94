"""Missing-data (NaN) kernels: every compiled backend against the NumPy reference,
and the reference itself against a slow per-row computation with SciPy.

Backends are those of :func:`fastem.backends.available_backends` other than
``numpy``; a backend without a given kernel (say, one still being written) is
skipped for that kernel. Tolerances are absolute bounds scaled by the size of
the summed terms, as in ``test_kernels.py``: ``sx`` can cancel to near zero, so
its bound is ``sqrt(nk * sxx_jj)`` (Cauchy-Schwarz), and ``sxx[i, j]`` is bounded
by ``sqrt(sxx_ii sxx_jj)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastem._missing import find_patterns
from fastem.backends import _numpy as ref
from fastem.backends import available_backends, get_backend

BACKENDS = [name for name in available_backends() if name != "numpy"]
EM_KERNELS = ("em_pass_missing_full", "em_pass_missing_diag")
LP_KERNELS = ("log_prob_missing_full", "log_prob_missing_diag")

pytestmark = pytest.mark.skipif(not BACKENDS, reason="no compiled backend available")

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Both implementations widen to float64 before any arithmetic, but a backend may
# run the float32 Mahalanobis products in float32: hence the looser float32 bound.
RTOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-4}
LOG_2PI = math.log(2.0 * math.pi)


def _kernel(backend, name):
    fn = getattr(get_backend(backend), name, None)
    if fn is None:
        pytest.skip(f"backend {backend!r} has no {name}")
    return fn


# --------------------------------------------------------------------------- data


def _problem(seed, n, d, k, dtype, full, frac, zero_frac=0.3):
    """Data with NaN, weights (some zero) and kernel arguments.

    Row 0 (if any) is complete, row 1 has a single observed value, row 2 has
    nothing observed, and the other entries are NaN with probability ``frac``.
    """
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0)
    X[rng.random((n, d)) < frac] = np.nan
    if n > 0:
        X[0] = rng.standard_normal(d)
    if n > 1:
        X[1] = np.nan
        X[1, rng.integers(d)] = rng.standard_normal()
    if n > 2:
        X[2] = np.nan
    X = X.astype(dtype)
    w = rng.uniform(0.1, 3.0, n)
    w[rng.random(n) < zero_frac] = 0.0
    means = (0.5 * rng.standard_normal((k, d))).astype(dtype)
    weights = rng.dirichlet(np.ones(k))
    if full:
        a = np.triu(rng.standard_normal((k, d, d)) * 0.3)
        a[:, np.arange(d), np.arange(d)] = rng.uniform(0.5, 2.0, (k, d))
        prec_chol = a.astype(dtype)
        pc64 = prec_chol.astype(np.float64)
        precisions = np.ascontiguousarray(pc64 @ np.swapaxes(pc64, 1, 2))
        logdet = np.log(np.diagonal(pc64, axis1=1, axis2=2)).sum(axis=1)
    else:
        prec_chol = rng.uniform(0.5, 2.0, (k, d)).astype(dtype)
        precisions = None
        logdet = np.log(prec_chol.astype(np.float64)).sum(axis=1)
    comp_const = np.log(weights) + logdet - 0.5 * d * LOG_2PI
    return X, w, means, prec_chol, precisions, comp_const, weights


def _em(fn, full, X, w, rows, ptr, means, pc, precisions, cc):
    k, d = means.shape
    nk = np.full(k, np.nan)  # garbage: kernels must overwrite
    sx = np.full((k, d), np.nan)
    sxx = np.full((k, d, d) if full else (k, d), np.nan)
    if full:
        ll = fn(X, w, rows, ptr, means, pc, precisions, cc, nk, sx, sxx)
    else:
        ll = fn(X, w, rows, ptr, means, pc, cc, nk, sx, sxx)
    return float(ll), nk, sx, sxx


def _log_prob(fn, full, X, rows, ptr, means, pc, precisions, cc):
    out = np.full((X.shape[0], means.shape[0]), np.nan)  # garbage where listed
    if full:
        fn(X, rows, ptr, means, pc, precisions, cc, out)
    else:
        fn(X, rows, ptr, means, pc, cc, out)
    return out


def _assert_close(got, want, scale, rtol, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    err = np.abs(got - want)
    bound = rtol * (np.asarray(scale, dtype=np.float64) + 1e-300) + 1e-300
    assert np.all(err <= bound), f"{what}: max error {err.max():.3e} exceeds tolerance"


def _check_em(got, want, full, rtol, ll_scale):
    ll_g, nk_g, sx_g, sxx_g = got
    ll_w, nk_w, sx_w, sxx_w = want
    var = np.einsum("kii->ki", sxx_w) if full else sxx_w
    _assert_close(ll_g, ll_w, ll_scale, rtol, "loglik")
    _assert_close(nk_g, nk_w, nk_w, rtol, "nk")
    _assert_close(sx_g, sx_w, np.sqrt(np.abs(nk_w[:, None] * var)), rtol, "sx")
    if full:
        scale = np.sqrt(np.abs(var[:, :, None] * var[:, None, :]))
        _assert_close(sxx_g, sxx_w, scale, rtol, "sxx")
        np.testing.assert_array_equal(sxx_g, np.swapaxes(sxx_g, 1, 2))  # exactly symmetric
    else:
        _assert_close(sxx_g, sxx_w, var, rtol, "sxx")


def _ll_scale(X, w, rows, ptr, means, pc, precisions, cc, full):
    """``sum_i w_i max_k |logp_ik|``: bounds the terms of the loglik."""
    fn = ref.log_prob_missing_full if full else ref.log_prob_missing_diag
    lp = _log_prob(fn, full, X, rows, ptr, means, pc, precisions, cc)
    return float(w[rows] @ np.abs(lp[rows]).max(axis=1)) if rows.size else 0.0


# --------------------------------------------------------------------------- parity

shapes = st.tuples(
    st.one_of(st.integers(1, 200), st.integers(2500, 5000)),  # also several chunks
    st.integers(1, 8),
    st.integers(1, 5),
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("full", [True, False], ids=["full", "diag"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), frac=st.sampled_from([0.0, 0.1, 0.3, 0.6]))
def test_em_pass_missing_matches_reference(backend, full, dtype, shape, seed, frac):
    n, d, k = shape
    fn = _kernel(backend, EM_KERNELS[not full])
    X, w, means, pc, precisions, cc, _ = _problem(seed, n, d, k, dtype, full, frac)
    pat = find_patterns(X)  # rows with nothing observed left out, as in a fit
    args = (X, w, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    want = _em(getattr(ref, EM_KERNELS[not full]), full, *args)
    got = _em(fn, full, *args)
    ll_scale = _ll_scale(X, w, pat.rows, pat.pattern_ptr, means, pc, precisions, cc, full)
    _check_em(got, want, full, RTOL[np.dtype(dtype)], ll_scale)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("full", [True, False], ids=["full", "diag"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), frac=st.sampled_from([0.0, 0.1, 0.3, 0.6]))
def test_log_prob_missing_matches_reference(backend, full, dtype, shape, seed, frac):
    n, d, k = shape
    fn = _kernel(backend, LP_KERNELS[not full])
    X, _, means, pc, precisions, cc, weights = _problem(seed, n, d, k, dtype, full, frac)
    pat = find_patterns(X, include_empty=True)
    rows, ptr = pat.rows, pat.pattern_ptr
    if pat.n_patterns > 1:  # leave the last pattern out: its rows must stay untouched
        ptr = ptr[:-1]
        rows = rows[: ptr[-1]]
    args = (X, rows, ptr, means, pc, precisions, cc)
    want = _log_prob(getattr(ref, LP_KERNELS[not full]), full, *args)
    got = _log_prob(fn, full, *args)
    listed = np.zeros(n, dtype=bool)
    listed[rows] = True
    assert np.all(np.isnan(got[~listed])), "rows not in `rows` were written"
    scale = np.abs(want[listed]) + np.abs(cc).max() + 1.0
    _assert_close(got[listed], want[listed], scale, RTOL[np.dtype(dtype)], "log_prob")
    empty = listed & np.isnan(X).all(axis=1)
    if empty.any():  # nothing observed: the log mixing weights
        np.testing.assert_allclose(got[empty], np.broadcast_to(np.log(weights), got[empty].shape),
                                   rtol=1e-12, atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("full", [True, False], ids=["full", "diag"])
def test_no_rows_gives_zero_statistics(backend, full):
    fn = _kernel(backend, EM_KERNELS[not full])
    X, w, means, pc, precisions, cc, _ = _problem(0, 10, 3, 2, np.float64, full, 0.3)
    rows = np.empty(0, dtype=np.int64)
    ptr = np.zeros(1, dtype=np.int64)
    ll, nk, sx, sxx = _em(fn, full, X, w, rows, ptr, means, pc, precisions, cc)
    assert ll == 0.0
    for a in (nk, sx, sxx):
        np.testing.assert_array_equal(a, 0.0)


# --------------------------------------------------------------------------- determinism


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba backend not available")
@pytest.mark.parametrize("full", [True, False], ids=["full", "diag"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numba_bit_identical_on_1_and_2_threads(full, dtype):
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba is limited to one thread here")
    em = _kernel("numba", EM_KERNELS[not full])
    lp = _kernel("numba", LP_KERNELS[not full])
    # Many patterns and several chunks, with chunk boundaries inside patterns.
    X, w, means, pc, precisions, cc, _ = _problem(5, 20_000, 6, 4, dtype, full, 0.2)
    pat = find_patterns(X, include_empty=True)
    args = (X, w, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    lp_args = (X, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    before = numba.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            results.append((_em(em, full, *args), _log_prob(lp, full, *lp_args)))
    finally:
        numba.set_num_threads(before)
    (em1, lp1), (em2, lp2) = results
    assert em1[0] == em2[0]
    for a, b in zip(em1[1:], em2[1:], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lp1, lp2)
    want = _em(getattr(ref, EM_KERNELS[not full]), full, *args)
    ll_scale = _ll_scale(X, w, pat.rows, pat.pattern_ptr, means, pc, precisions, cc, full)
    _check_em(em1, want, full, RTOL[np.dtype(dtype)], ll_scale)


# --------------------------------------------------------------------------- the reference


def _slow_per_row(X, w, means, prec_chol, weights, full):
    """Loglik, statistics and log-densities row by row from the covariances,
    with SciPy's marginal densities and explicit inverses of covariance blocks."""
    stats = pytest.importorskip("scipy.stats")
    n, d = X.shape
    k = means.shape[0]
    pc = prec_chol.astype(np.float64)
    if full:
        cov = np.linalg.inv(pc @ np.swapaxes(pc, 1, 2))
    else:
        cov = np.stack([np.diag(1.0 / p**2) for p in pc])
    mu = means.astype(np.float64)
    logp = np.zeros((n, k))
    ys = np.zeros((n, k, d))
    conds = np.zeros((n, k, d, d))
    for i in range(n):
        x = X[i].astype(np.float64)
        m = np.isnan(x)
        o = ~m
        for kk in range(k):
            S = cov[kk]
            logp[i, kk] = np.log(weights[kk])
            y = np.zeros(d)
            if o.any():
                logp[i, kk] += stats.multivariate_normal(mu[kk, o], S[np.ix_(o, o)]).logpdf(x[o])
                y[o] = x[o] - mu[kk, o]
            if m.any():
                S_mm = S[np.ix_(m, m)]
                if o.any():
                    gain = S[np.ix_(m, o)] @ np.linalg.inv(S[np.ix_(o, o)])
                    y[m] = gain @ y[o]
                    S_mm = S_mm - gain @ S[np.ix_(o, m)]
                conds[i, kk][np.ix_(m, m)] = S_mm
            ys[i, kk] = y
    lse = np.logaddexp.reduce(logp, axis=1)
    resp = np.exp(logp - lse[:, None]) * w[:, None]
    nk = resp.sum(axis=0)
    sx = np.einsum("ik,ikd->kd", resp, ys)
    sxx = np.einsum("ik,ikd,ike->kde", resp, ys, ys) + np.einsum("ik,ikde->kde", resp, conds)
    if not full:
        sxx = np.einsum("kii->ki", sxx)
    return float(w @ lse), nk, sx, sxx, logp


@pytest.mark.parametrize("full", [True, False], ids=["full", "diag"])
@pytest.mark.parametrize("seed", range(4))
def test_reference_matches_slow_per_row_computation(full, seed):
    X, w, means, pc, precisions, cc, weights = _problem(seed, 80, 5, 3, np.float64, full, 0.35)
    ll_s, nk_s, sx_s, sxx_s, lp_s = _slow_per_row(X, w, means, pc, weights, full)
    pat = find_patterns(X, include_empty=True)
    args = (X, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    lp = _log_prob(ref.log_prob_missing_full if full else ref.log_prob_missing_diag, full, *args)
    np.testing.assert_allclose(lp, lp_s, rtol=1e-9, atol=1e-9)
    em = ref.em_pass_missing_full if full else ref.em_pass_missing_diag
    got = _em(em, full, X, w, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    for g, s, what in zip(got, (ll_s, nk_s, sx_s, sxx_s), ("loglik", "nk", "sx", "sxx"),
                          strict=True):  # fmt: skip
        np.testing.assert_allclose(g, s, rtol=1e-9, atol=1e-9, err_msg=what)


# --------------------------------------------------------------------------- wider rows

WIDE = [(600, 12, 3, 0.1), (600, 16, 4, 0.3), (300, 24, 2, 0.5)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("full", [True, False], ids=["full", "diag"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n, d, k, frac", WIDE)
def test_wide_rows_match_reference(backend, full, dtype, n, d, k, frac):
    """d > 8: the compiled kernels' paths for many missing/observed coordinates
    (factored regressions, wide blocks) that the hypothesis shapes do not reach."""
    X, w, means, pc, precisions, cc, _ = _problem(d, n, d, k, dtype, full, frac)
    pat = find_patterns(X)
    args = (X, w, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    want = _em(getattr(ref, EM_KERNELS[not full]), full, *args)
    got = _em(_kernel(backend, EM_KERNELS[not full]), full, *args)
    ll_scale = _ll_scale(X, w, pat.rows, pat.pattern_ptr, means, pc, precisions, cc, full)
    _check_em(got, want, full, RTOL[np.dtype(dtype)], ll_scale)
    lp_args = (X, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    lp_want = _log_prob(getattr(ref, LP_KERNELS[not full]), full, *lp_args)
    lp_got = _log_prob(_kernel(backend, LP_KERNELS[not full]), full, *lp_args)
    scale = np.abs(lp_want[pat.rows]) + np.abs(cc).max() + 1.0
    _assert_close(lp_got[pat.rows], lp_want[pat.rows], scale, RTOL[np.dtype(dtype)], "log_prob")


# --------------------------------------------------------------------------- imputation


SENTINEL = -1e30


def _impute(fn, X, rows, ptr, means, precisions, resp):
    out = np.full(X.shape, SENTINEL, dtype=X.dtype)  # only missing entries may be written
    observed = ~np.isnan(X)
    out[observed] = X[observed]
    fn(X, rows, ptr, means.astype(np.float64), precisions, resp, out)
    return out


def _imputation_problem(seed, n, d, k, dtype, frac):
    X, _, means, pc, precisions, cc, _ = _problem(seed, n, d, k, dtype, True, frac)
    resp = np.random.default_rng(seed + 1).dirichlet(np.ones(k), size=n)
    return X, means, precisions, resp


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), frac=st.sampled_from([0.0, 0.1, 0.3, 0.6]))
def test_impute_missing_full_matches_reference(backend, dtype, shape, seed, frac):
    n, d, k = shape
    X, means, precisions, resp = _imputation_problem(seed, n, d, k, dtype, frac)
    pat = find_patterns(X, include_empty=True)
    rows, ptr = pat.rows, pat.pattern_ptr
    if pat.n_patterns > 1:  # leave the last pattern out: its rows must stay untouched
        ptr = ptr[:-1]
        rows = rows[: ptr[-1]]
    args = (X, rows, ptr, means, precisions, resp)
    want = _impute(ref.impute_missing_full, *args)
    got = _impute(_kernel(backend, "impute_missing_full"), *args)
    assert got.dtype == X.dtype
    listed = np.zeros(n, dtype=bool)
    listed[rows] = True
    missing = np.isnan(X)
    observed = ~missing
    np.testing.assert_array_equal(got[observed], X[observed])  # observed values untouched
    untouched = got[missing & ~listed[:, None]] == X.dtype.type(SENTINEL)
    assert np.all(untouched), "rows not in `rows` were written"
    # conditional means are sums of responsibility-weighted regressions: scale by |x| + |mu|
    scale = np.abs(want) + np.abs(means).max() + np.nan_to_num(np.abs(X)).max(initial=0) + 1.0
    hit = missing & listed[:, None]
    _assert_close(got[hit], want[hit], scale[hit], RTOL[np.dtype(dtype)], "impute")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, d, k, frac", WIDE)
def test_impute_wide_rows_match_reference(backend, n, d, k, frac):
    X, means, precisions, resp = _imputation_problem(d, n, d, k, np.float64, frac)
    pat = find_patterns(X, include_empty=True)
    args = (X, pat.rows, pat.pattern_ptr, means, precisions, resp)
    want = _impute(ref.impute_missing_full, *args)
    got = _impute(_kernel(backend, "impute_missing_full"), *args)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("seed", range(3))
def test_reference_imputation_is_the_weighted_conditional_mean(seed):
    """The reference against ``sum_k r_k (mu_k + y_k)[m]`` from the slow per-row
    regression of ``_slow_per_row`` (explicit inverses of covariance blocks)."""
    X, w, means, pc, precisions, cc, weights = _problem(seed, 60, 5, 3, np.float64, True, 0.35)
    *_, lp_s = _slow_per_row(X, w, means, pc, weights, True)
    resp = np.exp(lp_s - np.logaddexp.reduce(lp_s, axis=1)[:, None])
    pat = find_patterns(X, include_empty=True)
    got = _impute(ref.impute_missing_full, X, pat.rows, pat.pattern_ptr, means, precisions, resp)
    cov = np.linalg.inv(precisions)
    for i, x in enumerate(X):
        m, o = np.isnan(x), ~np.isnan(x)
        if not m.any():
            continue
        want = np.zeros(int(m.sum()))
        for kk in range(3):
            cond = means[kk, m].copy()
            if o.any():
                gain = cov[kk][np.ix_(m, o)] @ np.linalg.inv(cov[kk][np.ix_(o, o)])
                cond += gain @ (x[o] - means[kk, o])
            want += resp[i, kk] * cond
        np.testing.assert_allclose(got[i, m], want, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba backend not available")
def test_numba_imputation_bit_identical_on_1_and_2_threads():
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba is limited to one thread here")
    X, means, precisions, resp = _imputation_problem(7, 20_000, 6, 4, np.float64, 0.2)
    pat = find_patterns(X, include_empty=True)
    fn = _kernel("numba", "impute_missing_full")
    before = numba.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            results.append(_impute(fn, X, pat.rows, pat.pattern_ptr, means, precisions, resp))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0], results[1])
