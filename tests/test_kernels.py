"""Cross-backend kernel parity: every compiled backend against the NumPy reference.

Each backend in :func:`fastem.backends.available_backends` other than ``numpy``
is compared kernel by kernel with :mod:`fastem.backends._numpy` on the same
inputs. Tolerances are absolute bounds scaled by the size of the terms summed
(so that cancellation in ``sx``, which is near zero at a fixed point, cannot
make a relative comparison fail spuriously):

* float64: ``1e-10`` times the magnitude of the summed terms.
* float32: the Mahalanobis products run in float32 in both implementations but
  in a different order, so a log-density can differ by about
  ``d * eps32 * (1 + maha)``; a responsibility then differs relatively by about
  twice that. The bound used is ``64 * d * eps32 * (1 + max maha)`` (plus the
  float64 one), still tight enough to catch any indexing or weighting error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastem.backends import _numpy as ref
from fastem.backends import available_backends, get_backend

BACKENDS = [name for name in available_backends() if name != "numpy"]

pytestmark = pytest.mark.skipif(not BACKENDS, reason="no compiled backend available")

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
RTOL64 = 1e-10
EPS32 = float(np.finfo(np.float32).eps)


# --------------------------------------------------------------------------- data


def _problem(seed, n, d, k, dtype, cov, zero_frac=0.25, offset=0.0):
    """Random data, parameters and weights (some zero) in the kernels' layout.

    ``cov`` is full/tied (full kernels, tied broadcast to ``(k, d, d)``) or
    diag/spherical (diag kernels, spherical broadcast to ``(k, d)``).
    """
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0) + offset).astype(dtype)
    w = rng.uniform(0.1, 3.0, n)
    w[rng.random(n) < zero_frac] = 0.0
    means = X[rng.integers(0, n, k)].astype(np.float64) + 0.3 * rng.standard_normal((k, d))
    means = means.astype(dtype)
    if cov in ("full", "tied"):
        m = 1 if cov == "tied" else k
        a = np.triu(rng.standard_normal((m, d, d)) * 0.3)
        a[:, np.arange(d), np.arange(d)] = rng.uniform(0.5, 2.0, (m, d))
        prec = np.ascontiguousarray(np.broadcast_to(a, (k, d, d)))
        logdet = np.log(np.diagonal(prec, axis1=1, axis2=2)).sum(axis=1)
    else:
        m = 1 if cov == "spherical" else d
        a = rng.uniform(0.5, 2.0, (k, m))
        prec = np.ascontiguousarray(np.broadcast_to(a, (k, d)))
        logdet = np.log(prec).sum(axis=1)
    weights = rng.dirichlet(np.ones(k))
    comp_const = np.log(weights) + logdet - 0.5 * d * math.log(2 * math.pi)
    return X, w, means, prec.astype(dtype), comp_const


def _is_full(cov):
    return cov in ("full", "tied")


def _em(mod, X, w, means, prec, cc, full):
    k, d = means.shape
    nk = np.full(k, np.nan)  # garbage: kernels must overwrite
    sx = np.full((k, d), np.nan)
    sxx = np.full((k, d, d) if full else (k, d), np.nan)
    f = mod.em_pass_full if full else mod.em_pass_diag
    ll = f(X, w, means, prec, cc, nk, sx, sxx)
    return float(ll), nk, sx, sxx


def _log_prob(mod, X, means, prec, cc, full):
    out = np.full((X.shape[0], means.shape[0]), np.nan)
    (mod.log_prob_full if full else mod.log_prob_diag)(X, means, prec, cc, out)
    return out


def _scales(X, w, means, prec, cc, full):
    """Magnitudes of the summed terms, for absolute tolerances (float64 math)."""
    lp = _log_prob(ref, X, means, prec, cc, full)
    lse = np.logaddexp.reduce(lp, axis=1)
    resp = np.exp(lp - lse[:, None]) * w[:, None]
    xc = np.abs(X.astype(np.float64)[:, None, :] - means.astype(np.float64)[None])  # n,k,d
    s_nk = resp.sum(axis=0)
    s_sx = np.einsum("nk,nkd->kd", resp, xc)
    s_sxx = np.einsum("nk,nki,nkj->kij", resp, xc, xc)
    if not full:
        s_sxx = np.einsum("kii->ki", s_sxx)
    maha = 2.0 * (cc[None, :] - lp)
    s_lp = np.abs(cc)[None, :] + maha
    return float(w @ np.abs(lse)), s_nk, s_sx, s_sxx, s_lp, float(maha.max())


def _rtol(dtype, d, maha_max):
    if dtype == np.float64:
        return RTOL64
    return RTOL64 + 64 * d * EPS32 * (1.0 + maha_max)


def _assert_close(got, want, scale, rtol, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    err = np.abs(got - want)
    bound = rtol * (np.asarray(scale) + 1e-300) + 1e-300
    worst = np.max(err - bound)
    assert worst <= 0, f"{what}: max error {err.max():.3e} exceeds tolerance"


def _check_em(mod, X, w, means, prec, cc, cov):
    full = _is_full(cov)
    want = _em(ref, X, w, means, prec, cc, full)
    got = _em(mod, X, w, means, prec, cc, full)
    s_ll, s_nk, s_sx, s_sxx, s_lp, maha_max = _scales(X, w, means, prec, cc, full)
    rtol = _rtol(X.dtype, X.shape[1], maha_max)
    for name, g, r, s in zip(
        ("loglik", "nk", "sx", "sxx"), got, want, (s_ll, s_nk, s_sx, s_sxx), strict=True
    ):
        _assert_close(g, r, s, rtol, name)
    if full:
        np.testing.assert_array_equal(got[3], np.swapaxes(got[3], 1, 2))  # exactly symmetric
    lp_got = _log_prob(mod, X, means, prec, cc, full)
    lp_want = _log_prob(ref, X, means, prec, cc, full)
    _assert_close(lp_got, lp_want, s_lp, rtol, "log_prob")


# --------------------------------------------------------------------------- tests

shapes = st.tuples(
    st.one_of(st.integers(1, 300), st.integers(2000, 6000)),  # also several chunks
    st.integers(1, 20),
    st.integers(1, 8),
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cov", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), zero_frac=st.sampled_from([0.0, 0.3, 1.0]))
def test_em_pass_and_log_prob_match_reference(backend, cov, dtype, shape, seed, zero_frac):
    n, d, k = shape
    mod = get_backend(backend)
    X, w, means, prec, cc = _problem(seed, n, d, k, dtype, cov, zero_frac)
    _check_em(mod, X, w, means, prec, cc, cov)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(shape=shapes, seed=st.integers(0, 2**32 - 1), with_labels=st.booleans())
def test_kmeans_pass_matches_reference(backend, dtype, shape, seed, with_labels):
    n, d, k = shape
    mod = get_backend(backend)
    X, w, centers, _, _ = _problem(seed, n, d, k, dtype, "diag")
    if k > 1:
        centers[-1] = centers[0]  # duplicated centre: ties go to the lowest index
    out = []
    for m in (ref, mod):
        sums = np.full((k, d), np.nan)
        counts = np.full(k, np.nan)
        labels = np.full(n if with_labels else 0, -1, dtype=np.int64)
        inertia = m.kmeans_pass(X, w, centers, sums, counts, labels)
        out.append((float(inertia), sums, counts, labels))
    (i_r, s_r, c_r, l_r), (i_g, s_g, c_g, l_g) = out
    np.testing.assert_array_equal(l_g, l_r)
    x64 = np.abs(X.astype(np.float64))
    _assert_close(c_g, c_r, c_r, RTOL64, "counts")
    scale = np.broadcast_to(w @ x64, (k, d))  # bounds every |sums[k, j]| term sum
    _assert_close(s_g, s_r, scale, RTOL64, "sums")
    _assert_close(i_g, i_r, abs(i_r), RTOL64, "inertia")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cov", ["full", "diag"])
def test_large_offset_and_far_rows(backend, cov):
    """Data at 1e6 + noise, plus a row far from every component: finite results."""
    mod = get_backend(backend)
    X, w, means, prec, cc = _problem(7, 500, 5, 3, np.float64, cov, offset=1e6)
    X[17] = 1e6 + 1e4  # log-densities around -1e8: every exp underflows but the max
    _check_em(mod, X, w, means, prec, cc, cov)
    ll, nk, sx, sxx = _em(mod, X, w, means, prec, cc, _is_full(cov))
    assert np.isfinite(ll) and np.all(np.isfinite(nk)) and np.all(np.isfinite(sxx))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cov", ["full", "diag"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bit_identical_across_thread_counts(backend, cov, dtype):
    """Fixed chunks, fixed reduction order: 1 thread and 2 threads agree exactly."""
    mod = get_backend(backend)
    n, d, k = 20_011, 7, 5
    X, w, means, prec, cc = _problem(3, n, d, k, dtype, cov)
    full = _is_full(cov)

    def run():
        res = _em(mod, X, w, means, prec, cc, full)
        km = (np.empty((k, d)), np.empty(k), np.empty(n, np.int64))
        inertia = mod.kmeans_pass(X, w, means, *km)
        return (*res, _log_prob(mod, X, means, prec, cc, full), inertia, *km)

    results = []
    if backend == "numba":
        import numba

        old = numba.get_num_threads()
        try:
            for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
                numba.set_num_threads(threads)
                results.append(run())
        finally:
            numba.set_num_threads(old)
    else:  # OpenMP backends
        threadpoolctl = pytest.importorskip("threadpoolctl")
        for threads in (1, 2):
            with threadpoolctl.threadpool_limits(limits=threads, user_api="openmp"):
                results.append(run())
    for a, b in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ------------------------------------------------------------ tied kernels


def _em_tied(mod, X, w, means, U, cc):
    k, d = means.shape
    nk, sx, sxx = np.full(k, np.nan), np.full((k, d), np.nan), np.full((d, d), np.nan)
    ll = mod.em_pass_tied(X, w, means, U, cc, nk, sx, sxx)
    out = np.full((X.shape[0], k), np.nan)
    mod.log_prob_tied(X, means, U, cc, out)
    return float(ll), nk, sx, sxx, out


def _check_tied(mod, X, w, means, prec, cc):
    """The tied kernels against the reference: the full pass under the shared
    factor, with the second moments summed over components."""
    U = np.ascontiguousarray(prec[0])
    got = _em_tied(mod, X, w, means, U, cc)
    want = _em_tied(ref, X, w, means, U, cc)
    # the reference's definition, checked too: pooled = sum of the full pass's moments
    full = _em(ref, X, w, means, prec, cc, True)
    np.testing.assert_allclose(want[3], full[3].sum(axis=0), rtol=0, atol=0)
    s_ll, s_nk, s_sx, s_sxx, s_lp, maha_max = _scales(X, w, means, prec, cc, True)
    # The compiled pass takes moments about the mean of the means and re-centres
    # them (fastem.backends._tied): its terms are bounded by those about it.
    centre = means.astype(np.float64).mean(axis=0)
    far = np.abs(X.astype(np.float64) - centre) + np.abs(means - centre).max(axis=0)
    s_pooled = s_sxx.sum(axis=0) + np.einsum("n,ni,nj->ij", w, far, far)
    s_first = s_sx + np.broadcast_to(w @ far, s_sx.shape)
    rtol = _rtol(X.dtype, X.shape[1], maha_max)
    scales = (s_ll, s_nk, s_first, s_pooled, s_lp)
    names = ("loglik", "nk", "sx", "sxx", "log_prob")
    for name, g, r, sc in zip(names, got, want, scales, strict=True):
        _assert_close(g, r, sc, rtol, f"tied {name}")
    np.testing.assert_array_equal(got[3], got[3].T)  # exactly symmetric


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@SETTINGS
@given(
    shape=shapes,
    seed=st.integers(0, 2**32 - 1),
    zero_frac=st.sampled_from([0.0, 0.3, 1.0]),
    offset=st.sampled_from([0.0, 1e3]),
)
def test_tied_pass_matches_reference(backend, dtype, shape, seed, zero_frac, offset):
    n, d, k = shape
    mod = get_backend(backend)
    X, w, means, prec, cc = _problem(seed, n, d, k, dtype, "tied", zero_frac, offset)
    _check_tied(mod, X, w, means, prec, cc)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tied_pass_large_offset_and_far_rows(backend):
    mod = get_backend(backend)
    X, w, means, prec, cc = _problem(7, 500, 5, 3, np.float64, "tied", offset=1e6)
    X[17] = 1e6 + 1e4
    _check_tied(mod, X, w, means, prec, cc)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tied_pass_bit_identical_across_thread_counts(backend, dtype):
    mod = get_backend(backend)
    X, w, means, prec, cc = _problem(3, 20_011, 7, 5, dtype, "tied")
    U = np.ascontiguousarray(prec[0])
    results = []
    if backend == "numba":
        import numba

        old = numba.get_num_threads()
        try:
            for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
                numba.set_num_threads(threads)
                results.append(_em_tied(mod, X, w, means, U, cc))
        finally:
            numba.set_num_threads(old)
    else:
        threadpoolctl = pytest.importorskip("threadpoolctl")
        for threads in (1, 2):
            with threadpoolctl.threadpool_limits(limits=threads, user_api="openmp"):
                results.append(_em_tied(mod, X, w, means, U, cc))
    for a, b in zip(results[0], results[1], strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif("numba" not in BACKENDS, reason="numba backend not available")
def test_exp64_accuracy():
    """The vectorizable exp is within 2 ulp of np.exp, underflow and overflow included."""
    import numba

    from fastem.backends._numba_exp import exp64

    @numba.njit
    def vexp(x, out):
        for i in range(x.shape[0]):
            out[i] = exp64(x[i])

    rng = np.random.default_rng(0)
    x = np.concatenate(
        [
            rng.uniform(-760.0, 720.0, 200_000),
            rng.uniform(-1.0, 1.0, 100_000),
            np.linspace(-746.0, -700.0, 20_001),  # subnormal results and underflow
            np.linspace(709.0, 710.0, 1001),  # overflow boundary
            [0.0, -0.0, 1e-300, -1e-300, -np.inf, np.inf, 709.78, 709.79, -745.2, -745.1],
        ]
    )
    out = np.empty_like(x)
    vexp(x, out)
    with np.errstate(over="ignore", under="ignore"):
        want = np.exp(x)
    normal = np.isfinite(want) & (want >= np.finfo(np.float64).tiny)
    ulp = np.abs(out[normal] - want[normal]) / np.spacing(want[normal])
    assert ulp.max() <= 2.0
    sub = ~normal & np.isfinite(want)  # subnormal or zero: absolute error of a few ulp there
    assert np.all(np.abs(out[sub] - want[sub]) <= 2 * 2.0**-1074)
    np.testing.assert_array_equal(out[np.isinf(want)], want[np.isinf(want)])
    nan = np.empty(1)
    vexp(np.array([np.nan]), nan)
    assert np.isnan(nan[0])


# ------------------------------------------------------------------ numba's chunk threads
# The numba kernels run their chunks on Python threads (run_chunks), not in a parallel=True
# prange: the split must follow numba's thread setting and prange's static schedule, run
# the first range on the calling thread, re-raise a worker's error, and survive a fork.


def _numba_module():
    if "numba" not in BACKENDS:
        pytest.skip("numba backend not available")
    from fastem.backends import _numba

    return _numba


def _record_ranges(mod, n_iter, threads):
    import threading

    import numba

    calls = []

    def kernel(i0, i1, tag):
        calls.append((i0, i1, threading.get_ident() == tag))

    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        mod.run_chunks(kernel, n_iter, threading.get_ident())
    finally:
        numba.set_num_threads(old)
    return sorted(calls)


def test_run_chunks_splits_like_prange_static_schedule():
    mod = _numba_module()
    import numba

    assert _record_ranges(mod, 24, 1) == [(0, 24, True)]  # one thread: the caller, once
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread only")
    assert _record_ranges(mod, 24, 2) == [(0, 12, True), (12, 24, False)]
    assert _record_ranges(mod, 1, 2) == [(0, 1, True)]  # never more ranges than iterations


def test_run_chunks_reraises_a_workers_error():
    mod = _numba_module()
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one numba thread only")

    def kernel(i0, i1):
        if i0 > 0:
            raise RuntimeError(f"chunk range {i0}:{i1} failed")

    old = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="chunk range 4:8 failed"):
            mod.run_chunks(kernel, 8)
    finally:
        numba.set_num_threads(old)


def test_kernels_run_in_a_forked_child():
    # The worker threads do not survive a fork; the child must start its own.
    _numba_module()
    import os
    import subprocess
    import sys
    import textwrap

    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    code = """
        import os, numpy as np, numba
        from fastem.backends import _numba as nb
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        X = np.random.default_rng(0).normal(size=(40000, 2))
        w = np.ones(len(X))
        def run():
            sums, counts = np.empty((2, 2)), np.empty(2)
            return nb.kmeans_pass(X, w, X[:2].copy(), sums, counts, np.empty(0, np.int64))
        parent = run()
        pid = os.fork()
        if pid == 0:
            os._exit(0 if run() == parent else 3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    """
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tiled_full_block_kernels(dtype):
    """The register-tiled block kernels of the full-covariance pass, for every
    tile remainder (d = 1..13) and short and full blocks: Mahalanobis norms and
    the statistics against float64 NumPy, nothing read past ``nb`` (those
    columns hold NaN), and the strict lower triangle of ``sxx`` left exactly
    zero (the reduction mirrors the upper one onto it). The statistics' block
    sums are checked in float64 and in float32 (what a float32 pass uses)."""
    mod = _numba_module()
    rng = np.random.default_rng(7)
    B = 256
    tol = 1e-12 if dtype == np.float64 else 1e-5
    for d in range(1, 14):
        U = np.triu(rng.standard_normal((d, d)) * 0.3 + 2 * np.eye(d)).astype(dtype)
        mu = rng.standard_normal(d).astype(dtype)
        for nb in (1, 13, B):
            xt = np.full((d, B), np.nan, dtype=dtype)
            xt[:, :nb] = rng.standard_normal((d, nb))
            y = (xt[:, :nb] - mu[:, None]).astype(np.float64)  # subtracted in dtype
            maha = np.full(B, np.nan, dtype=dtype)
            mod._tri_maha_tiled(xt, mu, U, nb, np.empty((4, B), dtype=dtype), maha)
            want = ((y.T @ U.astype(np.float64)) ** 2).sum(axis=1)
            np.testing.assert_allclose(maha[:nb], want, rtol=tol)

            r = rng.uniform(0.0, 1.0, B)
            r[nb:] = np.nan
            # block sums in float64, and (as the pass does for float32 X) in the dtype of X
            for acc_dtype in {np.float64, dtype}:
                sx = np.zeros(d)
                sxx = np.zeros((d, d))
                scratch = np.empty(B, acc_dtype), np.empty((d, B), acc_dtype)
                nk = mod._accum_full_tiled(xt, mu, r, nb, *scratch, sx, sxx)
                ry = r[:nb] * y
                # absolute bounds scaled by the summed magnitudes (off-diagonal terms cancel)
                t = 1e-12 if acc_dtype == np.float64 else 64 * EPS32
                np.testing.assert_allclose(nk, r[:nb].sum(), rtol=1e-12)
                np.testing.assert_array_less(
                    np.abs(sx - ry.sum(axis=1)), t * np.abs(ry).sum(axis=1) + 1e-300
                )
                scale = np.abs(ry) @ np.abs(y).T
                np.testing.assert_array_less(np.abs(sxx - np.triu(ry @ y.T)), t * scale + 1e-300)
                assert not np.tril(sxx, -1).any(), d
