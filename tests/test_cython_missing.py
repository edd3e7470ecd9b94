"""What is specific to the Cython missing-data (NaN) kernels.

Parity with the NumPy reference on random data is in test_missing_kernels.py
(parameterized over every compiled backend). Here: results do not depend on the
number of OpenMP threads; the cases the Cython design makes special still match
the reference (blocks that pool rows of many patterns and flush early when the
pool of pending conditional covariances fills up, patterns cut by chunk
boundaries, ``pattern_ptr`` not starting at 0, rows with nothing observed); and
bad index arrays or a non positive definite precision give clear errors.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

try:
    from fastem.backends import _cython as cy
except ImportError as exc:  # built without a compiler/Cython: fastem runs on numba/numpy
    if os.environ.get("FASTEM_REQUIRE_CYTHON"):
        raise
    pytest.skip(f"Cython extension not built ({exc})", allow_module_level=True)

if not hasattr(cy, "em_pass_missing_full"):
    pytest.skip("this build of the Cython extension has no missing-data kernels",
                allow_module_level=True)  # fmt: skip

from fastem._missing import find_patterns
from fastem.backends import _numpy as ref

LOG_2PI = math.log(2.0 * math.pi)


def _problem(seed, n, d, k, dtype, full, frac, zero_frac=0.3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)) * 1.5 + 0.5
    X[rng.random((n, d)) < frac] = np.nan
    X = X.astype(dtype)
    w = rng.uniform(0.1, 3.0, n)
    w[rng.random(n) < zero_frac] = 0.0
    means = (0.5 * rng.standard_normal((k, d))).astype(dtype)
    weights = rng.dirichlet(np.ones(k))
    if full:
        a = np.triu(rng.standard_normal((k, d, d)) * 0.3)
        a[:, np.arange(d), np.arange(d)] = rng.uniform(0.5, 2.0, (k, d))
        pc = a.astype(dtype)
        pc64 = pc.astype(np.float64)
        precisions = np.ascontiguousarray(pc64 @ np.swapaxes(pc64, 1, 2))
        logdet = np.log(np.diagonal(pc64, axis1=1, axis2=2)).sum(axis=1)
    else:
        pc = rng.uniform(0.5, 2.0, (k, d)).astype(dtype)
        precisions = None
        logdet = np.log(pc.astype(np.float64)).sum(axis=1)
    cc = np.log(weights) + logdet - 0.5 * d * LOG_2PI
    return X, w, means, pc, precisions, cc, weights


def _em(mod, full, X, w, rows, ptr, means, pc, precisions, cc):
    k, d = means.shape
    nk = np.full(k, np.nan)
    sx = np.full((k, d), np.nan)
    sxx = np.full((k, d, d) if full else (k, d), np.nan)
    if full:
        ll = mod.em_pass_missing_full(X, w, rows, ptr, means, pc, precisions, cc, nk, sx, sxx)
    else:
        ll = mod.em_pass_missing_diag(X, w, rows, ptr, means, pc, cc, nk, sx, sxx)
    return float(ll), nk, sx, sxx


def _log_prob(mod, full, X, rows, ptr, means, pc, precisions, cc):
    out = np.full((X.shape[0], means.shape[0]), np.nan)
    if full:
        mod.log_prob_missing_full(X, rows, ptr, means, pc, precisions, cc, out)
    else:
        mod.log_prob_missing_diag(X, rows, ptr, means, pc, cc, out)
    return out


def _assert_em_close(got, want, rtol):
    """Errors bounded relative to the size of the summed terms (as in test_kernels)."""
    ll_g, nk_g, sx_g, sxx_g = got
    ll_w, nk_w, sx_w, sxx_w = want
    var = np.einsum("kii->ki", sxx_w) if sxx_w.ndim == 3 else sxx_w
    assert abs(ll_g - ll_w) <= rtol * (abs(ll_w) + nk_w.sum() + 1.0)
    np.testing.assert_allclose(nk_g, nk_w, rtol=rtol, atol=rtol)
    assert np.all(np.abs(sx_g - sx_w) <= rtol * (np.sqrt(nk_w[:, None] * var) + 1e-300))
    if sxx_w.ndim == 3:
        scale = np.sqrt(var[:, :, None] * var[:, None, :])
        np.testing.assert_array_equal(sxx_g, np.swapaxes(sxx_g, 1, 2))
    else:
        scale = var
    assert np.all(np.abs(sxx_g - sxx_w) <= rtol * (scale + 1e-300))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("full", [True, False], ids=["full", "diag"])
def test_bit_identical_on_1_and_2_threads(restore_cython_threads, full, dtype):
    if not cy.openmp_enabled():
        pytest.skip("built without OpenMP: always one thread")
    # several chunks, many patterns, chunk boundaries inside patterns
    X, w, means, pc, precisions, cc, _ = _problem(5, 20_000, 7, 4, dtype, full, 0.25)
    pat = find_patterns(X, include_empty=True)
    args = (X, w, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    lp_args = (X, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    results = []
    for threads in (1, 2, 3):
        cy.set_num_threads(threads)
        results.append((_em(cy, full, *args), _log_prob(cy, full, *lp_args)))
    (em1, lp1) = results[0]
    for em2, lp2 in results[1:]:
        assert em1[0] == em2[0]
        for a, b in zip(em1[1:], em2[1:], strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(lp1, lp2)
    _assert_em_close(em1, _em(ref, full, *args), 1e-10 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("full", [True, False], ids=["full", "diag"])
@pytest.mark.parametrize(
    "n, d, k, frac",
    [
        (3000, 12, 3, 0.6),  # nearly every row its own pattern: the pool flushes early
        (6000, 24, 2, 0.45),  # wide patterns, several chunks
        (500, 1, 3, 0.4),  # one feature: complete rows and empty ones only
        (40, 3, 5, 0.0),  # no NaN at all
    ],
)
def test_pooled_blocks_match_reference(full, n, d, k, frac):
    X, w, means, pc, precisions, cc, weights = _problem(n + d, n, d, k, np.float64, full, frac)
    pat = find_patterns(X, include_empty=True)  # rows with nothing observed included
    args = (X, w, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    _assert_em_close(_em(cy, full, *args), _em(ref, full, *args), 1e-10)
    lp_args = (X, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    got = _log_prob(cy, full, *lp_args)
    want = _log_prob(ref, full, *lp_args)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    empty = np.isnan(X).all(axis=1)
    if empty.any():
        np.testing.assert_allclose(got[empty], np.broadcast_to(np.log(weights), got[empty].shape),
                                   rtol=1e-12, atol=1e-12)  # fmt: skip


@pytest.mark.parametrize("full", [True, False], ids=["full", "diag"])
def test_only_the_listed_range_of_rows_is_visited(full):
    X, w, means, pc, precisions, cc, _ = _problem(3, 3000, 5, 3, np.float64, full, 0.3)
    pat = find_patterns(X)
    ptr = pat.pattern_ptr[2:-3]  # does not start at 0 nor end at len(rows)
    args = (X, w, pat.rows, ptr, means, pc, precisions, cc)
    _assert_em_close(_em(cy, full, *args), _em(ref, full, *args), 1e-10)
    got = _log_prob(cy, full, X, pat.rows, ptr, means, pc, precisions, cc)
    want = _log_prob(ref, full, X, pat.rows, ptr, means, pc, precisions, cc)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    listed = ~np.isnan(want[:, 0])
    np.testing.assert_allclose(got[listed], want[listed], rtol=1e-10, atol=1e-10)


def test_float32_and_float64_data_agree():
    X, w, means, pc, precisions, cc, _ = _problem(11, 2000, 6, 3, np.float32, True, 0.2)
    pat = find_patterns(X)
    r32 = _em(cy, True, X, w, pat.rows, pat.pattern_ptr, means, pc, precisions, cc)
    r64 = _em(cy, True, X.astype(np.float64), w, pat.rows, pat.pattern_ptr,
              means.astype(np.float64), pc.astype(np.float64), precisions, cc)  # fmt: skip
    # the kernels widen float32 input to float64 before any arithmetic
    assert r32[0] == r64[0]
    for a, b in zip(r32[1:], r64[1:], strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_positive_definite_block_is_an_error():
    X, w, means, pc, precisions, cc, _ = _problem(0, 50, 3, 2, np.float64, True, 0.4)
    bad = precisions.copy()
    bad[1, 0, 0] = -1.0  # any pattern missing feature 0 has a non-PD L[m, m]
    X[0] = [np.nan, 1.0, 2.0]
    pat = find_patterns(X)
    with pytest.raises(np.linalg.LinAlgError, match="positive definite"):
        _em(cy, True, X, w, pat.rows, pat.pattern_ptr, means, pc, bad, cc)
    with pytest.raises(np.linalg.LinAlgError, match="positive definite"):
        _log_prob(cy, True, X, pat.rows, pat.pattern_ptr, means, pc, bad, cc)


@pytest.mark.parametrize(
    "rows, ptr, match",
    [
        ([0, 1, 50], [0, 3], "rows must index"),
        ([0, -1], [0, 2], "rows must index"),
        ([0, 1], [0, 3], "pattern_ptr"),
        ([0, 1], [1, 0], "pattern_ptr"),
        ([0, 1], [], "pattern_ptr"),
    ],
)
def test_bad_index_arrays_are_rejected(rows, ptr, match):
    X, w, means, pc, precisions, cc, _ = _problem(0, 50, 3, 2, np.float64, True, 0.0)
    rows = np.asarray(rows, dtype=np.int64)
    ptr = np.asarray(ptr, dtype=np.int64)
    with pytest.raises(ValueError, match=match):
        _em(cy, True, X, w, rows, ptr, means, pc, precisions, cc)
    with pytest.raises(ValueError, match=match):
        _log_prob(cy, False, X, rows, ptr, means, pc[:, 0, :].copy(), None, cc)
