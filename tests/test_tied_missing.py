"""Tied covariance with missing values (NaN): ``em_pass_missing_tied`` and
``log_prob_missing_tied``.

The NumPy reference runs the full-covariance missing-data path with k copies of
the shared precision; it is checked here against a slow per-row computation
from the covariance (SciPy's marginal densities, explicit inverses of
covariance blocks) and against the complete-data tied kernel on data without
NaN. Every compiled backend is checked against the reference (hypothesis over
shapes, patterns, dtypes and weights), against its own full-covariance missing
kernel with k copies of the factor, for bit-identical results on 1 and 2
threads, and inside a fit. Tolerances are absolute bounds scaled by the size of
the summed terms, as in ``test_missing_kernels.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastem import GaussianMixture
from fastem._missing import find_patterns
from fastem._threads import limit_threads
from fastem.backends import _numpy as ref
from fastem.backends import _tied, available_backends, get_backend

COMPILED = [name for name in available_backends() if name != "numpy"]
LOG_2PI = math.log(2.0 * math.pi)
# Both sides widen X, the means and the factor to float64 before any arithmetic
# (the float32 case only rounds the inputs), hence one bound for both dtypes.
RTOL = 1e-9
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _problem(seed, n, d, k, dtype, frac, *, zero_frac=0.3, offset=0.0):
    """Data with NaN (row 0 complete, row 1 one observed value, row 2 nothing
    observed), weights (some zero), and tied kernel arguments."""
    rng = np.random.default_rng(seed)
    means = (rng.standard_normal((k, d)) * 2.0 + offset).astype(dtype)
    X = rng.standard_normal((n, d)) + means[rng.integers(k, size=n)].astype(np.float64)
    X[rng.random((n, d)) < frac] = np.nan
    if n > 0:
        X[0] = rng.standard_normal(d) + offset
    if n > 1:
        X[1] = np.nan
        X[1, rng.integers(d)] = rng.standard_normal() + offset
    if n > 2:
        X[2] = np.nan
    X = X.astype(dtype)
    w = rng.uniform(0.1, 3.0, n)
    w[rng.random(n) < zero_frac] = 0.0
    a = np.triu(rng.standard_normal((d, d)) * 0.3)
    a[np.arange(d), np.arange(d)] = rng.uniform(0.5, 2.0, d)
    pc = a.astype(dtype)
    weights = rng.dirichlet(np.ones(k))
    cc = np.log(weights) + np.log(np.diag(pc.astype(np.float64))).sum() - 0.5 * d * LOG_2PI
    return X, w, means, pc, cc, weights


def _em(fn, X, w, rows, ptr, means, pc, cc):
    k, d = means.shape
    nk = np.full(k, np.nan)  # garbage: kernels must overwrite
    sx = np.full((k, d), np.nan)
    sxx = np.full((d, d), np.nan)
    ll = fn(X, w, rows, ptr, means, pc, cc, nk, sx, sxx)
    return float(ll), nk, sx, sxx


def _lp(fn, X, rows, ptr, means, pc, cc):
    out = np.full((X.shape[0], means.shape[0]), np.nan)
    fn(X, rows, ptr, means, pc, cc, out)
    return out


def _assert_close(got, want, scale, what, rtol=RTOL):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    err = np.abs(got - want)
    bound = rtol * (np.asarray(scale, dtype=np.float64) + 1e-300) + 1e-300
    assert np.all(err <= bound), f"{what}: max error {err.max():.3e} exceeds tolerance"


def _check_em(got, want, ll_scale, rtol=RTOL, symmetric=True):
    ll_g, nk_g, sx_g, sxx_g = got
    ll_w, nk_w, sx_w, sxx_w = want
    var = np.abs(np.diagonal(sxx_w))
    _assert_close(ll_g, ll_w, ll_scale, "loglik", rtol)
    _assert_close(nk_g, nk_w, nk_w, "nk", rtol)
    _assert_close(sx_g, sx_w, np.sqrt(np.abs(nk_w[:, None] * var)), "sx", rtol)
    _assert_close(sxx_g, sxx_w, np.sqrt(var[:, None] * var[None, :]), "sxx", rtol)
    if symmetric:  # the compiled kernels' pooled scatter (the reference sums k matrices)
        np.testing.assert_array_equal(sxx_g, sxx_g.T)


def _ll_scale(X, w, rows, ptr, means, pc, cc):
    lp = _lp(ref.log_prob_missing_tied, X, rows, ptr, means, pc, cc)
    return float(w[rows] @ np.abs(lp[rows]).max(axis=1)) if rows.size else 0.0


def _kernel(backend, name):
    fn = getattr(get_backend(backend), name, None)
    if fn is None:
        pytest.skip(f"backend {backend!r} has no {name}")
    return fn


# --------------------------------------------------------------------------- the reference


def _slow_per_row(X, w, means, pc, weights):
    """Loglik, statistics (pooled sxx) and log-densities row by row from the
    shared covariance ``inv(U U^T)``, with SciPy's marginal densities."""
    stats = pytest.importorskip("scipy.stats")
    n, d = X.shape
    k = means.shape[0]
    u = pc.astype(np.float64)
    S = np.linalg.inv(u @ u.T)
    mu = means.astype(np.float64)
    logp = np.zeros((n, k))
    ys = np.zeros((n, k, d))
    conds = np.zeros((n, d, d))
    for i in range(n):
        x = X[i].astype(np.float64)
        m, o = np.isnan(x), ~np.isnan(x)
        if m.any():
            S_mm = S[np.ix_(m, m)]
            if o.any():
                gain = S[np.ix_(m, o)] @ np.linalg.inv(S[np.ix_(o, o)])
                S_mm = S_mm - gain @ S[np.ix_(o, m)]
            conds[i][np.ix_(m, m)] = S_mm
        for kk in range(k):
            logp[i, kk] = np.log(weights[kk])
            if o.any():
                logp[i, kk] += stats.multivariate_normal(mu[kk, o], S[np.ix_(o, o)]).logpdf(x[o])
                ys[i, kk, o] = x[o] - mu[kk, o]
                if m.any():
                    ys[i, kk, m] = gain @ ys[i, kk, o]
    lse = np.logaddexp.reduce(logp, axis=1)
    resp = np.exp(logp - lse[:, None]) * w[:, None]
    nk = resp.sum(axis=0)
    sx = np.einsum("ik,ikd->kd", resp, ys)
    sxx = np.einsum("ik,ikd,ike->de", resp, ys, ys) + np.einsum("i,ide->de", resp.sum(1), conds)
    return float(w @ lse), nk, sx, sxx, logp


@pytest.mark.parametrize("seed", range(3))
def test_reference_matches_slow_per_row_computation(seed):
    X, w, means, pc, cc, weights = _problem(seed, 60, 5, 3, np.float64, 0.35)
    ll_s, nk_s, sx_s, sxx_s, lp_s = _slow_per_row(X, w, means, pc, weights)
    pat = find_patterns(X, include_empty=True)
    lp = _lp(ref.log_prob_missing_tied, X, pat.rows, pat.pattern_ptr, means, pc, cc)
    np.testing.assert_allclose(lp, lp_s, rtol=1e-9, atol=1e-9)
    got = _em(ref.em_pass_missing_tied, X, w, pat.rows, pat.pattern_ptr, means, pc, cc)
    for g, s, what in zip(got, (ll_s, nk_s, sx_s, sxx_s), ("ll", "nk", "sx", "sxx"), strict=True):
        np.testing.assert_allclose(g, s, rtol=1e-9, atol=1e-9, err_msg=what)


@pytest.mark.parametrize("backend", ["numpy", *COMPILED])
def test_without_nan_equals_the_complete_data_tied_kernel(backend):
    """No NaN: the missing-data pass is the complete-data tied pass (a closed
    check that needs neither the reference nor scikit-learn)."""
    X, w, means, pc, cc, _ = _problem(3, 3003, 6, 4, np.float64, 0.0)
    X, w = X[3:], w[3:]  # rows 1 and 2 have NaN
    pat = find_patterns(X)
    assert pat.n_patterns == 1
    be = get_backend(backend)
    got = _em(_kernel(backend, "em_pass_missing_tied"), X, w, pat.rows, pat.pattern_ptr,
              means, pc, cc)  # fmt: skip
    nk, sx, sxx = np.empty(4), np.empty((4, 6)), np.empty((6, 6))
    ll = be.em_pass_tied(X, w, means, pc, cc, nk, sx, sxx)
    _check_em(got, (ll, nk, sx, sxx), float(np.abs(w).sum() * 50), symmetric=backend != "numpy")
    lp_want = np.empty((3000, 4))
    be.log_prob_tied(X, means, pc, cc, lp_want)
    lp = _lp(_kernel(backend, "log_prob_missing_tied"), X, pat.rows, pat.pattern_ptr,
             means, pc, cc)  # fmt: skip
    _assert_close(lp, lp_want, np.abs(lp_want) + 1.0, "log_prob")


# --------------------------------------------------------------------------- compiled parity

shapes = st.tuples(
    st.one_of(st.integers(1, 200), st.integers(2500, 5000)),  # also several chunks
    st.integers(1, 9),
    st.integers(1, 5),
)


@pytest.mark.skipif(not COMPILED, reason="no compiled backend available")
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), frac=st.sampled_from([0.0, 0.1, 0.3, 0.7]))
def test_em_pass_matches_reference(backend, dtype, shape, seed, frac):
    n, d, k = shape
    X, w, means, pc, cc, _ = _problem(seed, n, d, k, dtype, frac)
    pat = find_patterns(X)  # rows with nothing observed left out, as in a fit
    args = (X, w, pat.rows, pat.pattern_ptr, means, pc, cc)
    want = _em(ref.em_pass_missing_tied, *args)
    got = _em(_kernel(backend, "em_pass_missing_tied"), *args)
    _check_em(got, want, _ll_scale(X, w, pat.rows, pat.pattern_ptr, means, pc, cc))


@pytest.mark.skipif(not COMPILED, reason="no compiled backend available")
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), frac=st.sampled_from([0.0, 0.1, 0.3, 0.7]))
def test_log_prob_matches_reference(backend, dtype, shape, seed, frac):
    n, d, k = shape
    X, _, means, pc, cc, weights = _problem(seed, n, d, k, dtype, frac)
    pat = find_patterns(X, include_empty=True)
    rows, ptr = pat.rows, pat.pattern_ptr
    if pat.n_patterns > 1:  # leave the last pattern out: its rows must stay untouched
        ptr = ptr[:-1]
        rows = rows[: ptr[-1]]
    want = _lp(ref.log_prob_missing_tied, X, rows, ptr, means, pc, cc)
    got = _lp(_kernel(backend, "log_prob_missing_tied"), X, rows, ptr, means, pc, cc)
    listed = np.zeros(n, dtype=bool)
    listed[rows] = True
    assert np.all(np.isnan(got[~listed])), "rows not in `rows` were written"
    _assert_close(got[listed], want[listed], np.abs(want[listed]) + 1.0, "log_prob")
    empty = listed & np.isnan(X).all(axis=1)
    if empty.any():  # nothing observed: the log mixing weights
        np.testing.assert_allclose(got[empty], np.broadcast_to(np.log(weights), got[empty].shape),
                                   rtol=1e-9, atol=1e-9)  # fmt: skip


@pytest.mark.skipif(not COMPILED, reason="no compiled backend available")
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize(
    "n, d, k, frac", [(2000, 24, 16, 0.2), (600, 16, 3, 0.5), (300, 3, 2, 0.9)]
)
def test_equals_the_full_missing_kernel_with_k_copies(backend, n, d, k, frac):
    """The tied pass against the same backend's full-covariance missing pass
    given k copies of the shared factor (k factorizations per pattern there)."""
    X, w, means, pc, cc, _ = _problem(n + d, n, d, k, np.float64, frac, offset=5.0)
    pat = find_patterns(X)
    args = (X, w, pat.rows, pat.pattern_ptr, means)
    be = get_backend(backend)
    pc_k = np.ascontiguousarray(np.broadcast_to(pc, (k, d, d)))
    prec_k = np.ascontiguousarray(np.broadcast_to(pc @ pc.T, (k, d, d)))
    nk, sx, sxx_k = np.empty(k), np.empty((k, d)), np.empty((k, d, d))
    ll = be.em_pass_missing_full(*args, pc_k, prec_k, cc, nk, sx, sxx_k)
    got = _em(be.em_pass_missing_tied, *args, pc, cc)
    _check_em(got, (ll, nk, sx, sxx_k.sum(axis=0)), _ll_scale(*args, pc, cc))
    lp_full = np.empty((n, k))
    be.log_prob_missing_full(X, pat.rows, pat.pattern_ptr, means, pc_k, prec_k, cc, lp_full)
    lp = _lp(be.log_prob_missing_tied, X, pat.rows, pat.pattern_ptr, means, pc, cc)
    _assert_close(lp[pat.rows], lp_full[pat.rows], np.abs(lp_full[pat.rows]) + 1.0, "log_prob")


@pytest.mark.skipif(not COMPILED, reason="no compiled backend available")
@pytest.mark.parametrize("backend", COMPILED)
def test_long_and_wide_patterns_match_reference(backend):
    """The compiled passes factorize a block's patterns together, eight at a
    time padded to the group's largest ``|m|``, and complete rows afterwards:
    patterns of several blocks' worth of rows (cut by block boundaries), of
    ``|m|`` from 0 to d - 1 in one block (groups of very different sizes), a
    pattern whose rows all have weight 0, and ``|m| > 8``."""
    n, d, k = 900, 13, 4
    X, w, means, pc, cc, _ = _problem(17, n, d, k, np.float64, 0.0)
    rng = np.random.default_rng(3)
    masks = np.zeros((d + 2, d), dtype=bool)
    for i in range(d):  # |m| = i, one pattern each
        masks[i, rng.permutation(d)[:i]] = True
    masks[d, :] = masks[d - 1]
    masks[d, 0] = ~masks[d, 0]  # |m| = d - 2 or d, some other pattern
    masks[d + 1, rng.permutation(d)[:9]] = True
    which = rng.integers(0, d + 2, n)
    which[:400] = d + 1  # 400 rows share the |m| = 9 pattern
    which[400:430] = 3
    X[masks[which]] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.5  # keep every row informative
    w[which == 3] = 0.0  # one pattern of weight 0 only
    pat = find_patterns(X)
    args = (X, w, pat.rows, pat.pattern_ptr, means, pc, cc)
    want = _em(ref.em_pass_missing_tied, *args)
    got = _em(_kernel(backend, "em_pass_missing_tied"), *args)
    _check_em(got, want, _ll_scale(*args))
    lp_args = (X, pat.rows, pat.pattern_ptr, means, pc, cc)
    want_lp = _lp(ref.log_prob_missing_tied, *lp_args)[pat.rows]
    got_lp = _lp(_kernel(backend, "log_prob_missing_tied"), *lp_args)[pat.rows]
    _assert_close(got_lp, want_lp, np.abs(want_lp) + 1.0, "log_prob")


@pytest.mark.skipif(not COMPILED, reason="no compiled backend available")
@pytest.mark.parametrize("backend", COMPILED)
def test_parity_check_catches_a_lopsided_cross_term(backend, monkeypatch):
    """Negative control: the kernels accumulate ``G + 2 H^T`` and the finish
    takes its symmetric part; reading one triangle instead (the cross term ``H``
    counted on one side only) must fail the parity checks above."""
    X, w, means, pc, cc, _ = _problem(11, 400, 6, 3, np.float64, 0.3)
    pat = find_patterns(X)
    args = (X, w, pat.rows, pat.pattern_ptr, means, pc, cc)
    want = _em(ref.em_pass_missing_tied, *args)
    monkeypatch.setattr(
        _tied, "missing_finish", lambda e, nk, t, g, sx, sxx: _tied.finish(e, nk, t, g, sx, sxx)
    )
    got = _em(_kernel(backend, "em_pass_missing_tied"), *args)
    with pytest.raises(AssertionError, match="sxx"):
        _check_em(got, want, _ll_scale(*args))


@pytest.mark.skipif(not COMPILED, reason="no compiled backend available")
@pytest.mark.parametrize("backend", COMPILED)
def test_no_rows_gives_zero_statistics(backend):
    X, w, means, pc, cc, _ = _problem(0, 10, 3, 2, np.float64, 0.3)
    ptr = np.zeros(1, dtype=np.int64)
    ll, nk, sx, sxx = _em(_kernel(backend, "em_pass_missing_tied"), X, w,
                          np.empty(0, dtype=np.int64), ptr, means, pc, cc)  # fmt: skip
    assert ll == 0.0
    for a in (nk, sx, sxx):
        np.testing.assert_array_equal(a, 0.0)


# --------------------------------------------------------------------------- determinism


@pytest.mark.skipif(not COMPILED, reason="no compiled backend available")
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bit_identical_on_1_and_2_threads(backend, dtype):
    # many patterns, several chunks, chunk boundaries inside patterns
    X, w, means, pc, cc, _ = _problem(5, 20_000, 7, 4, dtype, 0.15)
    pat = find_patterns(X, include_empty=True)
    em = _kernel(backend, "em_pass_missing_tied")
    lp = _kernel(backend, "log_prob_missing_tied")
    results = []
    for threads in (1, 2):
        with limit_threads(backend, threads):
            results.append((
                _em(em, X, w, pat.rows, pat.pattern_ptr, means, pc, cc),
                _lp(lp, X, pat.rows, pat.pattern_ptr, means, pc, cc),
            ))  # fmt: skip
    (em1, lp1), (em2, lp2) = results
    assert em1[0] == em2[0]
    for a, b in zip(em1[1:], em2[1:], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(lp1, lp2)


# --------------------------------------------------------------------------- in a fit


@pytest.mark.skipif(not COMPILED, reason="no compiled backend available")
@pytest.mark.filterwarnings("ignore:Best performing initialization did not converge")
@pytest.mark.parametrize("backend", COMPILED)
def test_fit_uses_the_tied_kernel_and_matches_numpy(backend, monkeypatch):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.standard_normal((400, 5)) + 3 * i for i in range(3)])
    X[rng.random(X.shape) < 0.2] = np.nan
    w = rng.uniform(0.5, 2.0, X.shape[0])
    kw = dict(n_components=3, covariance_type="tied", max_iter=15, tol=0.0, random_state=0)
    want = GaussianMixture(backend="numpy", **kw).fit(X, sample_weight=w)

    def refuse(*args):
        raise AssertionError("tied + NaN went to the full-covariance missing kernel")

    be = get_backend(backend)
    monkeypatch.setattr(be, "em_pass_missing_full", refuse)
    monkeypatch.setattr(be, "log_prob_missing_full", refuse)
    got = GaussianMixture(backend=backend, **kw).fit(X, sample_weight=w)
    np.testing.assert_allclose(got.lower_bound_, want.lower_bound_, rtol=1e-10)
    np.testing.assert_allclose(got.means_, want.means_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(got.covariances_, want.covariances_, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(got.score_samples(X), want.score_samples(X), rtol=1e-9)
