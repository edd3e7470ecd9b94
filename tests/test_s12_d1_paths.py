"""Session 12, D1: "a pass is a pass". A fit read block by block from a memory map,
or run chunk by chunk on a Dask array, equals the in-memory fit (to the rounding of
block sums taken in another order) for any mix of the fit's options."""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastem._blocks as blocks
from fastem import GaussianMixture
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning

ATTRS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
COVARIANCES = ("full", "tied", "diag", "spherical", "VVV", "EEE", "EVE", "VVE", "EEI", "VEI")
ACCELERATIONS = (None, "squarem", "anderson", "qn")
STARTS = ("kmeans", "k-means++", "random", "random_from_data", "hc")

try:
    import dask
    import dask.array as da
except ImportError:  # the memory-map half still runs
    da = None


@contextlib.contextmanager
def _small_blocks(nbytes: int):
    """Blocks of a few hundred rows, so a small array spans many blocks."""
    before = blocks.BLOCK_BYTES
    blocks.BLOCK_BYTES = nbytes
    try:
        yield
    finally:
        blocks.BLOCK_BYTES = before


def _fit(X, sample_weight, params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", ".*have every value missing", UserWarning)
        return GaussianMixture(**params).fit(X, sample_weight=sample_weight)


def _assert_same_fit(ref, got, rtol, label):
    if ref.n_init > 1:
        # Restarts whose final bounds tie to rounding (ones that find the same optimum,
        # its components in another order) may be kept differently by the paths: the
        # same model up to the order of its components, traces of another restart.
        np.testing.assert_allclose(got.lower_bound_, ref.lower_bound_, rtol=rtol, err_msg=label)
        a, b = np.lexsort(ref.means_.T), np.lexsort(got.means_.T)
        np.testing.assert_allclose(got.weights_[b], ref.weights_[a], rtol=rtol, atol=rtol)
        np.testing.assert_allclose(got.means_[b], ref.means_[a], rtol=rtol, atol=rtol)
        assert got.n_iter_ == ref.n_iter_, label
        return
    for name in ATTRS:
        a, b = getattr(ref, name), getattr(got, name)
        assert b.dtype == a.dtype, (label, name)
        np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol, err_msg=f"{label} {name}")
    np.testing.assert_allclose(got.lower_bounds_, ref.lower_bounds_, rtol=rtol, err_msg=label)
    assert got.n_iter_ == ref.n_iter_, label
    # The extrapolation counts are not compared: near EM's fixed point (one component
    # after a pass, separated clusters after a few) a step is accepted or not by a
    # comparison at rounding level; the model and its bounds agree either way.


@st.composite
def _problems(draw):
    n = draw(st.integers(120, 400))
    d = draw(st.integers(1, 3))
    k = draw(st.integers(1, 3))
    X, _ = make_mixture(n, d, k, random_state=draw(st.integers(0, 1000)))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    if draw(st.booleans()):  # 10% missing values (with one feature: empty rows)
        X[rng.random(X.shape) < 0.1] = np.nan
    weights = rng.integers(0, 4, n).astype(np.float64) if draw(st.booleans()) else None
    if draw(st.booleans()):
        X = X.astype(np.float32)
    params = dict(
        n_components=k,
        covariance_type=draw(st.sampled_from(COVARIANCES)),
        acceleration=draw(st.sampled_from(ACCELERATIONS)),
        init_params=draw(st.sampled_from(STARTS)),
        n_init=draw(st.integers(1, 2)),
        max_iter=draw(st.integers(0, 8)),
        tol=0.0,  # a fixed number of passes: no threshold decides n_iter_
        random_state=draw(st.integers(0, 2**31 - 1)),
    )
    chunk = draw(st.integers(17, 200))
    return X, weights, params, chunk


@settings(max_examples=min(20, settings().max_examples))  # under 30 s with compiles
@given(_problems())
def test_memmap_and_dask_fits_equal_the_in_memory_fit(problem):
    X, weights, params, chunk = problem
    # float32 blocks sum in float32 kernels in another order; float64: float64 rounding,
    # amplified by up to 8 passes, the extrapolations and the iterated M-steps of
    # mclust's models (VEI: 4e-8 after 6 Anderson passes)
    rtol = 2e-4 if X.dtype == np.float32 else 1e-6
    ref = _fit(X, weights, params)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "X.npy")
        np.save(path, X)
        wpath = os.path.join(tmp, "w.npy")
        if weights is not None:
            np.save(wpath, weights)
        with _small_blocks(chunk * X.shape[1] * X.dtype.itemsize):
            mm = np.load(path, mmap_mode="r")
            w = None if weights is None else np.load(wpath, mmap_mode="r")
            got = _fit(mm, w, params)
            del mm, w
    _assert_same_fit(ref, got, rtol, "memmap")
    if da is None:
        return
    dX = da.from_array(X, chunks=(chunk, -1))
    dw = None if weights is None else da.from_array(weights, chunks=chunk)
    with dask.config.set(scheduler="synchronous"):
        got = _fit(dX, dw, params)
    _assert_same_fit(ref, got, rtol, "dask")


@pytest.mark.parametrize(
    "stopping, tol", [("absolute", 1e-3), ("relative", 1e-6), ("aitken", 1e-8)]
)
@pytest.mark.parametrize("acceleration", ACCELERATIONS)
def test_stopping_rules_stop_every_path_at_the_same_pass(stopping, tol, acceleration):
    X, _ = make_mixture(500, 2, 3, random_state=3)
    X[::7, 1] = np.nan
    params = dict(
        n_components=3,
        stopping=stopping,
        tol=tol,
        acceleration=acceleration,
        max_iter=300,
        random_state=0,
    )
    ref = _fit(X, None, params)
    assert ref.converged_
    with tempfile.TemporaryDirectory() as tmp, _small_blocks(4 << 10):
        path = os.path.join(tmp, "X.npy")
        np.save(path, X)
        mm = np.load(path, mmap_mode="r")
        got = _fit(mm, None, params)
        del mm
    _assert_same_fit(ref, got, 1e-6, "memmap")
    assert got.converged_
    if da is not None:
        with dask.config.set(scheduler="synchronous"):
            got = _fit(da.from_array(X, chunks=(97, -1)), None, params)
        _assert_same_fit(ref, got, 1e-6, "dask")
