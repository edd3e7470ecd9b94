"""The numba full-covariance pass on float32 data: float32 block sums that do
not depend on how the rows are split, and the float32 helpers it uses.

The pass sums each block's statistics in float32 (twice the SIMD width) on a
fixed grid of ``B`` rows counted from row 0 (``fastem.backends._numba``,
``_chunks_full``). What must hold:

* thread counts and splits of the rows into pieces of a multiple of ``B``
  (the out-of-core path) give the same statistics up to float64 rounding
  (1e-12), while a split off the grid does not (negative control: the
  comparison can tell);
* the float32 sums stay accurate (against float64 sums of the same terms)
  and the weights may lie outside float32's range;
* ``_exp32`` and ``_log_ge1`` are accurate over the range they are used on.
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


def _pass(mod, X, w, means, prec, cc):
    k, d = means.shape
    nk, sx, sxx = np.empty(k), np.empty((k, d)), np.empty((k, d, d))
    ll = mod.em_pass_full(X, w, means, prec, cc, nk, sx, sxx)
    return np.array([ll]), nk, sx, sxx


def _pieces(X, w, means, prec, cc, size):
    """The pass over consecutive pieces of ``size`` rows, statistics added."""
    total = None
    for start in range(0, X.shape[0], size):
        part = _pass(nb, X[start : start + size], w[start : start + size], means, prec, cc)
        total = part if total is None else [a + b for a, b in zip(total, part, strict=True)]
    return total


def _max_scaled_diff(a, b):
    """Largest difference of each statistic relative to its largest magnitude."""
    return max(
        float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-300)) for x, y in zip(a, b, strict=True)
    )


def test_block_is_the_grid_unit():
    B = nb._block_rows_full(16, 4)
    assert B == 512 == 2 * nb._block_rows_full(16, 8)
    assert nb._block_rows_full(64, 4) == 512


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 100_000), nc=st.sampled_from([1, 8, 16, 64, 128]))
def test_float32_chunks_are_whole_blocks_of_the_grid(n, nc):
    B = 512
    bounds = [nb._chunk_rows(c, n, nc, B, True) for c in range(nc)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (lo, hi), (lo2, _) in zip(bounds, bounds[1:], strict=False):
        assert hi == lo2 and lo <= hi
    for lo, hi in bounds:
        assert lo % B == 0 and (hi % B == 0 or hi == n)
    # float64 keeps the n / nc split
    assert [nb._chunk_rows(c, n, nc, B, False) for c in range(nc)] == [
        (c * n // nc, (c + 1) * n // nc) for c in range(nc)
    ]


def test_pieces_on_the_grid_give_the_in_memory_statistics():
    """Pieces of a multiple of 512 rows (as out-of-core blocks are) agree with
    the whole pass to float64 rounding; a split off the grid does not."""
    X, w, means, prec, cc = float32_full_problem(20_000, 16, 4)
    whole = _pass(nb, X, w, means, prec, cc)
    for size in (512, 1024, 4096, 3 * 2048):
        assert _max_scaled_diff(_pieces(X, w, means, prec, cc, size), whole) < 1e-12, size
    # negative control: pieces of 1000 rows regroup the float32 block sums
    assert _max_scaled_diff(_pieces(X, w, means, prec, cc, 1000), whole) > 1e-10


def test_float32_pass_is_bit_identical_across_thread_counts():
    numba = pytest.importorskip("numba")
    X, w, means, prec, cc = float32_full_problem(30_011, 9, 3, seed=1)
    old = numba.get_num_threads()
    try:
        out = []
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            out.append(_pass(nb, X, w, means, prec, cc))
    finally:
        numba.set_num_threads(old)
    for a, b in zip(*out, strict=True):
        np.testing.assert_array_equal(a, b)


def test_float32_statistics_match_float64_sums():
    """Against the reference's float64 sums of the same float32 data: the
    float32 block sums are accurate to a few float32 ulps of the summed
    magnitudes, over many blocks (no growth with n)."""
    X, w, means, prec, cc = float32_full_problem(60_000, 16, 3, seed=2)
    ll, nk, sx, sxx = _pass(nb, X, w, means, prec, cc)
    ll_r, nk_r, sx_r, sxx_r = _pass(ref, X, w, means, prec, cc)
    np.testing.assert_allclose(nk, nk_r, rtol=1e-5)
    np.testing.assert_allclose(ll, ll_r, rtol=1e-6)
    y = np.abs(X.astype(np.float64)[:, None, :] - means.astype(np.float64)[None])
    lp = np.empty((X.shape[0], means.shape[0]))
    ref.log_prob_full(X, means, prec, cc, lp)
    r = np.exp(lp - np.logaddexp.reduce(lp, axis=1)[:, None]) * w[:, None]
    scale_sx = np.einsum("nk,nkd->kd", r, y)
    scale_sxx = np.einsum("nk,nki,nkj->kij", r, y, y)
    tol = 64 * EPS32
    assert np.all(np.abs(sx - sx_r) <= tol * scale_sx)
    assert np.all(np.abs(sxx - sxx_r) <= tol * scale_sxx)


def test_accum_full_tiled32_block():
    """The float32 block kernel for every tile remainder (d = 4..13) and short
    and full blocks: statistics against float64 NumPy on the same centred
    float32 values, nothing read past ``nb`` rounded up to 16 (the columns
    up to there zero, as ``_load_block32`` leaves them, NaN after them; ``r``
    NaN past ``nb``), strict lower triangle of ``sxx`` untouched, and added
    to what the partials held."""
    rng = np.random.default_rng(7)
    B = 512
    for d in range(4, 14):
        mu = rng.standard_normal(d).astype(np.float32)
        for nb_rows in (1, 13, B):
            xt = np.full((d, B), np.nan, dtype=np.float32)
            xt[:, :nb_rows] = rng.standard_normal((d, nb_rows))
            xt[:, nb_rows : (nb_rows + 15) // 16 * 16] = 0
            y = (xt[:, :nb_rows] - mu[:, None]).astype(np.float64)  # subtracted in float32
            r = rng.uniform(0.0, 1.0, B)
            r[nb_rows:] = np.nan
            sx0 = rng.standard_normal(d)
            sxx0 = np.triu(rng.standard_normal((d, d)))
            sx, sxx = sx0.copy(), sxx0.copy()
            scratch = np.empty(B, np.float32), np.empty((d, B), np.float32)
            nk = nb._accum_full_tiled32v(xt, mu, r, nb_rows, *scratch, sx, sxx)
            ry = r[:nb_rows] * y
            np.testing.assert_allclose(nk, r[:nb_rows].sum(), rtol=1e-12)
            t = 64 * EPS32
            assert np.all(np.abs(sx - sx0 - ry.sum(axis=1)) <= t * np.abs(ry).sum(axis=1) + 1e-12)
            scale = np.abs(ry) @ np.abs(y).T
            assert np.all(np.abs(sxx - sxx0 - np.triu(ry @ y.T)) <= t * scale + 1e-12), d
            np.testing.assert_array_equal(np.tril(sxx, -1), np.tril(sxx0, -1))


@pytest.mark.parametrize("factor", [1e-300, 1e-40, 1e40, 1e300])
def test_weights_outside_float32_range(factor):
    """Block sums are taken of ``r / sum r``: weights that float32 cannot hold
    scale the statistics, nothing underflows to zero or overflows."""
    X, w, means, prec, cc = float32_full_problem(3000, 8, 3, seed=3)
    base = _pass(nb, X, w, means, prec, cc)
    scaled = _pass(nb, X, w * factor, means, prec, cc)
    for a, b in zip(base[1:], scaled[1:], strict=True):
        assert np.all(np.isfinite(b))
        np.testing.assert_allclose(b / factor, a, rtol=1e-6, atol=1e-6 * np.abs(a).max())


def test_exp32_accuracy():
    x = np.concatenate(
        [
            np.linspace(-87.0, 0.0, 400_001, dtype=np.float32),
            -np.geomspace(1e-30, 87.0, 10_001).astype(np.float32),
        ]
    )
    got = np.empty_like(x)
    _vec(nb._exp32, x, got)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 2 * EPS32
    special = np.array([0.0, -0.0, -87.5, -1000.0, -np.inf, np.nan], dtype=np.float32)
    out = np.empty_like(special)
    _vec(nb._exp32, special, out)
    np.testing.assert_array_equal(out[:5], [1.0, 1.0, 0.0, 0.0, 0.0])
    assert np.isnan(out[5])


def test_log_ge1_accuracy():
    s = np.concatenate(
        [
            np.linspace(1.0, 64.0, 200_001),
            np.geomspace(1.0, 1e300, 10_001),
            [np.sqrt(2.0), np.nextafter(np.sqrt(2.0), 0.0), np.nextafter(1.0, 2.0), 2.0],
        ]
    )
    got = np.empty_like(s)
    _vec(nb._log_ge1, s, got)
    want = np.log(s)
    assert np.all(np.abs(got - want) <= 4e-16 * np.maximum(want, 1.0))


@pytest.mark.parametrize("d", [8, 16])
def test_float32_fit_keeps_sklearn_parity(d):
    """The float32 block sums keep scikit-learn's float32 model at the parity
    tolerances of test_sklearn_parity (which fits d = 3, the untiled kernel)."""
    import warnings

    sklearn_mixture = pytest.importorskip("sklearn.mixture")
    from _helpers import initial_parameters

    from fastem import GaussianMixture
    from fastem.datasets import make_mixture

    X, _ = make_mixture(5000, d, 4, random_state=1, dtype=np.float32)
    kw = dict(initial_parameters(X, 4, "full", seed=2), max_iter=25, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = GaussianMixture(backend="numba", **kw).fit(X)
        theirs = sklearn_mixture.GaussianMixture(**kw).fit(X)
    assert ours.means_.dtype == np.float32
    tol = dict(rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, **tol)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(theirs, name), **tol)


def test_out_of_core_float32_fit_with_blocks_off_the_grid(tmp_path, monkeypatch):
    """An out-of-core float32 full fit equals the in-memory one to 1e-12 also
    where BLOCK_BYTES // (d * 4) is not a multiple of 512 (d = 6)."""
    import warnings

    import fastem._blocks as blocks
    from fastem import GaussianMixture
    from fastem.datasets import make_mixture

    monkeypatch.setattr(blocks, "BLOCK_BYTES", 8 << 10)  # 341 rows of 6 float32
    X, _ = make_mixture(6000, 6, 3, random_state=2, dtype=np.float32)
    np.save(tmp_path / "X.npy", X)
    M = np.load(tmp_path / "X.npy", mmap_mode="r")
    kw = dict(n_components=3, n_threads=1, max_iter=10, random_state=0, backend="numba")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        init = GaussianMixture(**kw).fit(X)
        init = dict(means_init=init.means_, weights_init=init.weights_,
                    precisions_init=init.precisions_)  # fmt: skip
        a = GaussianMixture(**kw, **init).fit(X)
        b = GaussianMixture(**kw, **init).fit(M)
    np.testing.assert_allclose(b.lower_bound_, a.lower_bound_, rtol=1e-12)


def _vec(fn, x, out):
    _vec_kernel(fn)(x, out)


_KERNELS = {}


def _vec_kernel(fn):
    """A compiled loop applying the scalar ``fn`` (cached per function)."""
    if fn not in _KERNELS:
        from numba import njit

        @njit
        def apply(x, out):
            for i in range(x.shape[0]):
                out[i] = fn(x[i])

        _KERNELS[fn] = apply
    return _KERNELS[fn]
