"""The numba tied pass's tiled helpers against plain NumPy, and the whole pass
at shapes with several 4x4 tiles and ragged edges (``d % 4``, ``k % 4``, a
last partial block).

The helpers (``_tri_project``, ``_tied_maha4``, ``_tied_dots``) are checked
term by term on random blocks; the pass is checked against the NumPy reference
with the tolerances of ``tests/test_kernels.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

from test_kernels import _check_tied, _problem  # noqa: E402

from fastem.backends import _numba as nb_mod  # noqa: E402

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
B = 64  # scratch columns; the helpers use the first ``nb``


def _block(rng, d, dtype):
    return np.ascontiguousarray(rng.standard_normal((d, B)).astype(dtype))


@SETTINGS
@given(d=st.integers(1, 13), nb=st.integers(1, B), seed=st.integers(0, 2**32 - 1))
def test_tri_project_matches_numpy(d, nb, seed):
    rng = np.random.default_rng(seed)
    diff = _block(rng, d, np.float64)
    U = np.triu(rng.standard_normal((d, d)))
    z = np.full((d, B), np.nan)
    nb_mod._tri_project(diff, U, nb, z)
    want = (diff[:, :nb].T @ U).T
    np.testing.assert_allclose(z[:, :nb], want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    assert np.isnan(z[:, nb:]).all()  # nothing written past the block


@SETTINGS
@given(d=st.integers(1, 13), nb=st.integers(1, B), seed=st.integers(0, 2**32 - 1))
def test_tied_maha4_matches_numpy(d, nb, seed):
    rng = np.random.default_rng(seed)
    z = _block(rng, d, np.float64)
    m = rng.standard_normal((4, d))
    c = np.full((4, B), np.nan)
    nb_mod._tied_maha4(z, m, nb, c[0], c[1], c[2], c[3])
    want = ((z[None, :, :nb] - m[:, :, None]) ** 2).sum(axis=1)
    np.testing.assert_allclose(c[:, :nb], want, rtol=1e-12)


@SETTINGS
@given(
    d=st.integers(1, 13),
    nb=st.integers(1, B),
    strips=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_tied_dots_adds_dot_products(d, nb, strips, seed):
    """The kernel's per-component sums: ``t += r @ diff.T`` four rows at a time."""
    rng = np.random.default_rng(seed)
    r = rng.uniform(0.0, 1.0, (4 * strips, B))
    diff = _block(rng, d, np.float32)  # float32 block, float64 sums
    start = rng.standard_normal((4 * strips, d))
    t = start.copy()
    nb_mod._tied_dots(r, diff, nb, t, False)
    want = start + r[:, :nb] @ diff[:, :nb].astype(np.float64).T
    scale = np.abs(start) + np.abs(r[:, :nb]) @ np.abs(diff[:, :nb].astype(np.float64)).T
    np.testing.assert_allclose(t, want, rtol=0, atol=1e-13 * scale.max())


@SETTINGS
@given(d=st.integers(1, 13), nb=st.integers(1, B), seed=st.integers(0, 2**32 - 1))
def test_tied_dots_pooled_scatter_fills_the_upper_triangle(d, nb, seed):
    """With ``tri``: the pooled scatter ``G += rd @ diff.T`` on and above the diagonal,
    ``rd`` and ``G`` padded to a multiple of four rows (the padding is ignored)."""
    rng = np.random.default_rng(seed)
    diff = _block(rng, d, np.float64)
    rows = -(-d // 4) * 4
    rd = np.zeros((rows, B))
    rd[:d] = rng.uniform(0.0, 1.0, (d, 1)) * diff  # rd = rsum * (x - c), as the kernel's
    start = rng.standard_normal((rows, d))
    g = start.copy()
    nb_mod._tied_dots(rd, diff, nb, g, True)
    want = start[:d] + rd[:d, :nb] @ diff[:, :nb].T
    upper = np.triu(np.ones((d, d), dtype=bool))
    scale = np.abs(start[:d]) + np.abs(rd[:d, :nb]) @ np.abs(diff[:, :nb]).T
    np.testing.assert_allclose(g[:d][upper], want[upper], rtol=0, atol=1e-13 * scale.max())


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    ("n", "d", "k"),
    [(3001, 24, 16), (1000, 21, 11), (700, 4, 4), (517, 9, 7)],  # W5's d, k; ragged edges
)
def test_tied_pass_tiles_match_reference(dtype, n, d, k):
    X, w, means, prec, cc = _problem(d * 1000 + k, n, d, k, dtype, "tied", 0.2, 10.0)
    _check_tied(nb_mod, X, w, means, prec, cc)
