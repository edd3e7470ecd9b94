"""The float32 full-covariance pass's whole-vector helpers (numba).

``_chunks_full32`` runs its tiled loops over the block's rows rounded up to a
multiple of 16 (one AVX-512 float32 vector), so that LLVM emits no remainder
loop: ``_load_block32`` zeroes the block's columns past the last row,
``_tri_maha_tiled32`` computes those rows too (their results are not read),
and ``_accum_full_tiled32v`` gives them zero weight. What must hold:

* the loader transposes exactly, zeroes up to the next multiple of 16 and
  writes nothing beyond;
* each helper matches float64 NumPy on the same float32 values for every tile
  remainder of ``d`` and every remainder of ``nb`` modulo 16, whatever lies
  beyond the rows it must read (NaN there);
* the whole pass matches the NumPy reference for row counts off the 16-row
  and 512-row grids. The padded rows get zero weight, so stale finite rows
  add exact zeros; the zeroing is there for fresh scratch, whose garbage may
  be NaN (0 * NaN): the negative control shows that it would reach the sums.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")
nb = pytest.importorskip("fastem.backends._numba")

from _helpers import float32_full_problem  # noqa: E402

from fastem.backends import _numpy as ref  # noqa: E402

EPS32 = float(np.finfo(np.float32).eps)
B = 512


def _nv(n):
    return (n + 15) // 16 * 16


def _upper(rng, d):
    a = np.triu(rng.standard_normal((d, d)) * 0.3)
    a[np.arange(d), np.arange(d)] = rng.uniform(0.5, 1.5, d)
    return a.astype(np.float32)


def _block(rng, d, rows, fill):
    """A (d, B) float32 block: ``rows`` standard-normal columns, then ``fill``."""
    xt = np.full((d, B), fill, dtype=np.float32)
    xt[:, :rows] = rng.standard_normal((d, rows)) * 1.5 + 0.5
    return xt


@settings(max_examples=30, deadline=None)
@given(d=st.integers(1, 70), rows=st.integers(1, B), start=st.integers(0, 40))
def test_load_block32(d, rows, start):
    rng = np.random.default_rng(d * 1000 + rows)
    X = rng.standard_normal((start + rows + 3, d)).astype(np.float32)
    xt = np.full((d, B), np.nan, dtype=np.float32)
    nb._load_block32(X, start, rows, xt)
    np.testing.assert_array_equal(xt[:, :rows], X[start : start + rows].T)
    assert np.all(xt[:, rows : _nv(rows)] == 0.0)
    assert np.all(np.isnan(xt[:, _nv(rows) :]))


@settings(max_examples=30, deadline=None)
@given(d=st.integers(4, 21), rows=st.integers(1, B))
def test_tri_maha_tiled32(d, rows):
    """Against float64 NumPy on the same float32 differences; rows past
    ``nb`` (NaN) do not reach the first ``nb`` results."""
    rng = np.random.default_rng(d * 1000 + rows)
    xt = _block(rng, d, rows, np.nan)
    mu = rng.standard_normal(d).astype(np.float32)
    U = _upper(rng, d)
    acc = np.empty((4, B), np.float32)
    maha = np.empty(B, np.float32)
    nb._tri_maha_tiled32(xt, mu, U, rows, acc, maha)
    y = (xt[:, :rows] - mu[:, None]).astype(np.float64)  # subtracted in float32
    want = ((y.T @ U.astype(np.float64)) ** 2).sum(axis=1)
    scale = ((np.abs(y.T) @ np.abs(U.astype(np.float64))) ** 2).sum(axis=1)
    assert np.all(np.abs(maha[:rows] - want) <= 16 * d * EPS32 * scale)


@pytest.mark.parametrize("d", list(range(4, 14)) + [16, 64])
@pytest.mark.parametrize("rows", [1, 13, 16, 17, 500, B])
def test_accum_full_tiled32v(d, rows):
    """Against float64 NumPy on the same float32 differences, with the block
    as ``_load_block32`` leaves it (zeros up to the next multiple of 16, NaN
    beyond) and NaN responsibilities past ``nb``; the strict lower triangle of
    ``sxx`` is untouched and the sums are added to what the partials held."""
    rng = np.random.default_rng(d * 1000 + rows)
    xt = _block(rng, d, rows, np.nan)
    xt[:, rows : _nv(rows)] = 0.0
    mu = rng.standard_normal(d).astype(np.float32)
    r = rng.uniform(0.0, 1.0, B)
    r[rows:] = np.nan
    sx0 = rng.standard_normal(d)
    sxx0 = np.triu(rng.standard_normal((d, d)))
    sx, sxx = sx0.copy(), sxx0.copy()
    rc, rd = np.empty(B, np.float32), np.empty((d, B), np.float32)
    nk = nb._accum_full_tiled32v(xt, mu, r, rows, rc, rd, sx, sxx)
    y = (xt[:, :rows] - mu[:, None]).astype(np.float64)
    ry = r[:rows] * y
    np.testing.assert_allclose(nk, r[:rows].sum(), rtol=1e-12)
    t = 64 * EPS32
    assert np.all(np.abs(sx - sx0 - ry.sum(axis=1)) <= t * np.abs(ry).sum(axis=1) + 1e-12)
    scale = np.abs(ry) @ np.abs(y).T
    assert np.all(np.abs(sxx - sxx0 - np.triu(ry @ y.T)) <= t * scale + 1e-12)
    np.testing.assert_array_equal(np.tril(sxx, -1), np.tril(sxx0, -1))


def test_accum_full_tiled32v_reads_the_padding():
    """Negative control for the zeroing in ``_load_block32``: the padded rows
    are read (0 * NaN), so a block left with NaN there poisons the sums."""
    rng = np.random.default_rng(5)
    d, rows = 8, 13
    xt = _block(rng, d, rows, np.nan)
    r = np.full(B, 0.5)
    sx, sxx = np.zeros(d), np.zeros((d, d))
    rc, rd = np.empty(B, np.float32), np.empty((d, B), np.float32)
    nb._accum_full_tiled32v(xt, np.zeros(d, np.float32), r, rows, rc, rd, sx, sxx)
    assert np.isnan(sxx).any()


@pytest.mark.parametrize("d", [4, 7, 64])
@pytest.mark.parametrize("n", [5, 16, 1000, 2 * B + 33])
def test_pass_against_reference(d, n):
    """The whole pass (statistics and log-densities) for row counts off the
    16- and 512-row grids: the padded rows add nothing."""
    X, w, means, prec, cc = float32_full_problem(n, d, 3, seed=d + n)
    k = means.shape[0]
    got = [np.empty(k), np.empty((k, d)), np.empty((k, d, d))]
    want = [np.empty(k), np.empty((k, d)), np.empty((k, d, d))]
    ll = nb.em_pass_full(X, w, means, prec, cc, *got)
    ll_r = ref.em_pass_full(X, w, means, prec, cc, *want)
    np.testing.assert_allclose(ll, ll_r, rtol=1e-6)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4 * np.abs(b).max())
    lp, lp_r = np.empty((n, k)), np.empty((n, k))
    nb.log_prob_full(X, means, prec, cc, lp)
    ref.log_prob_full(X, means, prec, cc, lp_r)
    np.testing.assert_allclose(lp, lp_r, rtol=1e-5, atol=1e-4)
