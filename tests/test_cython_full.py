"""The Cython backend's register-tiled full-covariance pass (``_full_tiles.h``).

The pass treats features in 4 x 4 tiles (then the ``d % 4`` last ones) and
rows in blocks of 256 (float32: 512, its statistics summed in float32 on a
grid of such blocks) padded to a multiple of 16, so every tile shape and every
padding case is checked against the NumPy reference here: d from 1 to 17 (each
remainder of d mod 4, one to four tiles) and 33/64, n on both sides of the
block boundaries and over several chunks; and the float32 sums' grid and
scaling. test_kernels.py draws random shapes for every backend; this file pins
the edges.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

try:
    from fastem.backends import _cython as cy
except ImportError as exc:  # built without a compiler/Cython: nothing to test
    if os.environ.get("FASTEM_REQUIRE_CYTHON"):
        raise
    pytest.skip(f"Cython extension not built ({exc})", allow_module_level=True)

from fastem.backends import _numpy as ref


def _problem(rng, n, d, k, dtype, offset=0.0):
    X = (rng.standard_normal((n, d)) + offset).astype(dtype)
    w = rng.uniform(0.1, 2.0, n)
    w[rng.random(n) < 0.2] = 0.0
    means = (X[rng.integers(0, n, k)] + 0.3 * rng.standard_normal((k, d))).astype(dtype)
    U = np.triu(rng.standard_normal((k, d, d)) * 0.3)
    U[:, np.arange(d), np.arange(d)] = rng.uniform(0.5, 2.0, (k, d))
    logdet = np.log(np.diagonal(U, axis1=1, axis2=2)).sum(axis=1)
    cc = np.log(np.full(k, 1.0 / k)) + logdet - 0.5 * d * math.log(2 * math.pi)
    return X, w, means, U.astype(dtype), cc


def _em(mod, X, w, means, U, cc):
    k, d = means.shape
    nk, sx, sxx = np.full(k, np.nan), np.full((k, d), np.nan), np.full((k, d, d), np.nan)
    ll = mod.em_pass_full(X, w, means, U, cc, nk, sx, sxx)
    out = np.full((X.shape[0], k), np.nan)
    mod.log_prob_full(X, means, U, cc, out)
    return [np.array(ll), nk, sx, sxx, out]


def _scales(X, w, means, U, cc):
    """Magnitude of each result's summed terms (float64): the error scale."""
    lp = _em(ref, X, w, means, U, cc)[4]
    lse = np.logaddexp.reduce(lp, axis=1)
    r = np.exp(lp - lse[:, None]) * w[:, None]
    xc = np.abs(X.astype(np.float64)[:, None, :] - means.astype(np.float64)[None])
    return [
        np.array(w @ np.abs(lse)),
        r.sum(axis=0),
        np.einsum("nk,nkd->kd", r, xc),
        np.einsum("nk,nki,nkj->kij", r, xc, xc),
        np.abs(cc)[None, :] + 2.0 * (cc[None, :] - lp),
    ]


def _assert_matches_reference(X, w, means, U, cc, rtol):
    got, want = _em(cy, X, w, means, U, cc), _em(ref, X, w, means, U, cc)
    for name, g, r, s in zip(
        ("loglik", "nk", "sx", "sxx", "log_prob"),
        got,
        want,
        _scales(X, w, means, U, cc),
        strict=True,
    ):
        assert np.all(np.isfinite(g)), name
        err = np.abs(g - r) - rtol * (s + 1e-300)
        assert err.max() <= 1e-300, f"{name}: error {np.abs(g - r).max():.3e}"
    np.testing.assert_array_equal(got[3], np.swapaxes(got[3], 1, 2))  # mirrored exactly


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 16, 17, 33, 64])
@pytest.mark.parametrize("n", [1, 7, 9, 255, 257, 2 * 2048 + 261])
def test_every_tile_shape_and_padding_matches_reference(d, n):
    rng = np.random.default_rng(1000 * d + n)
    X, w, means, U, cc = _problem(rng, n, d, 3, np.float64)
    _assert_matches_reference(X, w, means, U, cc, rtol=1e-10)


@pytest.mark.parametrize("d", [3, 8, 13])
def test_float32_matches_reference(d):
    # distances in float32 (error ~ d eps32 (1 + maha)), statistics in float64
    rng = np.random.default_rng(d)
    X, w, means, U, cc = _problem(rng, 3000, d, 4, np.float32)
    maha_max = float(2.0 * (cc[None, :] - _em(ref, X, w, means, U, cc)[4]).max())
    eps = float(np.finfo(np.float32).eps)
    _assert_matches_reference(X, w, means, U, cc, rtol=1e-10 + 64 * d * eps * (1 + maha_max))


def test_large_offset_is_centred_before_the_products():
    # x - mu is formed before U is applied: 1e6 + O(1) data keeps full accuracy
    rng = np.random.default_rng(7)
    X, w, means, U, cc = _problem(rng, 1000, 9, 3, np.float64, offset=1e6)
    _assert_matches_reference(X, w, means, U, cc, rtol=1e-10)


def test_zero_weight_rows_contribute_nothing():
    # rows of weight 0 at 1e200 (their Mahalanobis distances overflow to inf)
    rng = np.random.default_rng(3)
    X, w, means, U, cc = _problem(rng, 777, 9, 4, np.float64)
    w = np.where(np.arange(777) % 5 == 0, 0.0, w + 0.1)
    X_far = X.copy()
    X_far[w == 0.0] = 1e200
    got = _em(cy, X_far, w, means, U, cc)[:4]
    keep = w > 0
    sub = _em(cy, np.ascontiguousarray(X[keep]), w[keep], means, U, cc)[:4]
    for a, b in zip(got, sub, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


GRID = 512  # rows of the float32 block-sum grid (d <= 128), as in the numba backend


def test_float32_pieces_on_the_grid_add_up_to_the_whole():
    # float32 block sums run on a grid of 512 rows from row 0 that chunk boundaries
    # respect, so a pass over pieces of whole grid blocks (out-of-core blocks) has
    # the same block sums as the whole and differs only in the float64 additions
    rng = np.random.default_rng(5)
    X, w, means, U, cc = _problem(rng, 6 * 2048 + 300, 6, 3, np.float32)
    whole = _em(cy, X, w, means, U, cc)
    cut = 8 * GRID
    a = _em(cy, X[:cut], w[:cut], means, U, cc)
    b = _em(cy, X[cut:], w[cut:], means, U, cc)
    for i in range(4):  # loglik, nk, sx, sxx
        np.testing.assert_allclose(a[i] + b[i], whole[i], rtol=1e-12, atol=1e-12)


def _assert_float32_stats_close(got, want, rtol):
    for g, r in zip(got[1:4], want[1:4], strict=True):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, r, rtol=rtol, atol=rtol * np.abs(r).max())


def test_float32_vanishing_component_neither_underflows_nor_vanishes():
    # responsibilities ~1e-300 (far below float32's range): the block sums are of
    # r / sum(r), scaled back in float64, so the component keeps its statistics
    rng = np.random.default_rng(8)
    X, w, means, U, cc = _problem(rng, 2000, 5, 3, np.float32)
    w[:] = 1.0
    cc = cc.copy()
    cc[2] -= 690.0
    got, want = _em(cy, X, w, means, U, cc), _em(ref, X, w, means, U, cc)
    assert 0.0 < want[1][2] < 1e-290
    for g, r in zip(got[1:4], want[1:4], strict=True):
        np.testing.assert_allclose(g[2], r[2], rtol=1e-4, atol=1e-4 * np.abs(r[2]).max())


def test_float32_huge_weights_do_not_overflow():
    rng = np.random.default_rng(9)
    X, w, means, U, cc = _problem(rng, 2000, 5, 3, np.float32)
    w = np.where(w > 0, 1e37, 0.0)  # r y y^T would pass float32's 3.4e38
    _assert_float32_stats_close(_em(cy, X, w, means, U, cc), _em(ref, X, w, means, U, cc), 1e-4)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bit_identical_across_thread_counts(restore_cython_threads, dtype):
    if not cy.openmp_enabled():
        pytest.skip("built without OpenMP: always one thread")
    rng = np.random.default_rng(11)
    X, w, means, U, cc = _problem(rng, 9 * 2048 + 13, 16, 3, dtype)  # 9 chunks, ragged blocks
    results = []
    for threads in (1, 2, 3):
        cy.set_num_threads(threads)
        results.append(_em(cy, X, w, means, U, cc))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
