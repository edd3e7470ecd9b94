"""Out-of-core fitting: memory maps and sliced array-likes read block by block."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES, initial_parameters

import fastem._blocks as blocks
import fastem.mixture as mixture
from fastem import GaussianMixture
from fastem._blocks import BlockData, init_sample_size
from fastem.datasets import make_mixture

ATTRS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
# One thread: the model does not depend on it (tested below), and many small
# blocks run faster without a parallel region per block on a busy machine.
ONE = {"n_threads": 1}
pytestmark = pytest.mark.filterwarnings("ignore::fastem.exceptions.ConvergenceWarning")


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few hundred rows, so small test arrays span many blocks."""
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 8 << 10)


def _memmap(tmp_path, X, name="X.npy"):
    path = tmp_path / name
    np.save(path, X)
    return np.load(path, mmap_mode="r")


class SlicedArray:
    """A zarr-like array: shape, dtype and row slicing, nothing else (its module
    name makes the estimator treat it as a zarr array)."""

    __module__ = "zarr.fastem_test"

    def __init__(self, X):
        self._X = X
        self.shape = X.shape
        self.dtype = X.dtype
        self.reads = 0

    def __getitem__(self, key):
        self.reads += 1
        return np.array(self._X[key])


class RowSliceable:
    """The least an out-of-core array needs: ``shape``, a NumPy ``dtype`` and
    ``__getitem__`` (plus ``__len__``, with which ``np.asarray`` would load it
    row by row). Counts the reads."""

    def __init__(self, X):
        self._X = X
        self.shape = X.shape
        self.dtype = X.dtype
        self.reads = 0

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        self.reads += 1
        return np.array(self._X[key])


def _assert_same_model(a, b, rtol=1e-9, atol=1e-12):
    for name in ATTRS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=atol)
    assert a.n_iter_ == b.n_iter_
    assert a.converged_ == b.converged_
    np.testing.assert_allclose(a.lower_bound_, b.lower_bound_, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_memmap_fit_equals_in_memory_fit_from_same_init(tmp_path, small_blocks, covariance_type):
    X, _ = make_mixture(4000, 3, 4, random_state=1)
    M = _memmap(tmp_path, X)
    init = initial_parameters(X, 4, covariance_type)
    data = blocks.block_fit_data(GaussianMixture(**init), M, None)
    assert data.block_rows < 400  # many blocks
    ref = GaussianMixture(**init, **ONE, tol=1e-6, max_iter=40).fit(X)
    got = GaussianMixture(**init, **ONE, tol=1e-6, max_iter=40).fit(M)
    _assert_same_model(got, ref)
    assert got.means_.dtype == np.float64


def test_float32_memmap_fits_in_float32(tmp_path, small_blocks):
    X, _ = make_mixture(5000, 4, 3, random_state=2, dtype=np.float32)
    M = _memmap(tmp_path, X)
    init = initial_parameters(X, 3, "full")
    ref = GaussianMixture(**init, **ONE, max_iter=20).fit(X)
    got = GaussianMixture(**init, **ONE, max_iter=20).fit(M)
    assert got.means_.dtype == np.float32
    _assert_same_model(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_nan_in_memmap_matches_in_memory_fit(tmp_path, small_blocks, covariance_type):
    X, _ = make_mixture(3000, 3, 3, random_state=3)
    rng = np.random.default_rng(0)
    X[rng.random(X.shape) < 0.1] = np.nan
    X[5] = np.nan  # a row with nothing observed
    M = _memmap(tmp_path, X)
    complete = np.nan_to_num(X, nan=0.0)
    init = initial_parameters(complete, 3, covariance_type)
    kw = dict(init, backend="numpy", tol=1e-6, max_iter=30)
    with pytest.warns(UserWarning, match="every value missing"):
        ref = GaussianMixture(**kw).fit(X)
    with pytest.warns(UserWarning, match="every value missing") as record:
        got = GaussianMixture(**kw).fit(M)
    assert record[0].filename == __file__  # the warning points at the caller
    _assert_same_model(got, ref, rtol=1e-8, atol=1e-10)


@pytest.mark.filterwarnings("ignore:.*every value missing:UserWarning")
def test_missingness_patterns_are_kept_between_passes_within_a_budget(
    tmp_path, small_blocks, monkeypatch
):
    X, _ = make_mixture(3000, 3, 3, random_state=3)
    X[np.random.default_rng(0).random(X.shape) < 0.1] = np.nan
    X[:400] = np.nan_to_num(X[:400])  # the first block complete
    X[1000] = np.nan  # a row with nothing observed
    M = _memmap(tmp_path, X)
    init = initial_parameters(np.nan_to_num(X), 3, "full")
    kw = dict(init, backend="numpy", tol=0, max_iter=4)
    calls = []
    real = blocks.find_patterns
    monkeypatch.setattr(blocks, "find_patterns", lambda xb: calls.append(1) or real(xb))
    data = blocks.block_fit_data(GaussianMixture(**kw), M, None)
    n_blocks = len(list(data.blocks()))
    n_nan_blocks = sum(bool(np.isnan(M[a:b]).any()) for a, b in data.blocks())
    assert 1 < n_nan_blocks < n_blocks
    kept = GaussianMixture(**kw).fit(M)
    assert len(calls) == n_nan_blocks  # found on the first pass only
    calls.clear()
    monkeypatch.setattr(blocks, "PATTERN_CACHE_BYTES", 0)  # no budget: found on every pass
    regrouped = GaussianMixture(**kw).fit(M)
    assert len(calls) == 4 * n_nan_blocks
    for name in ATTRS:
        np.testing.assert_array_equal(getattr(kept, name), getattr(regrouped, name))
    _assert_same_model(kept, GaussianMixture(**kw).fit(X), rtol=1e-8, atol=1e-10)


def test_sliced_array_like_with_cast(small_blocks):
    X, _ = make_mixture(4000, 2, 3, random_state=4)
    Xi = np.round(X * 100).astype(np.int32)
    S = SlicedArray(Xi)
    init = initial_parameters(Xi.astype(np.float64), 3, "diag")
    ref = GaussianMixture(**init, **ONE, max_iter=15).fit(Xi)
    got = GaussianMixture(**init, **ONE, max_iter=15).fit(S)
    _assert_same_model(got, ref)
    assert S.reads > 10  # read in blocks, never whole


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_duck_typed_row_sliceable_array_is_read_in_blocks(small_blocks, covariance_type):
    X, _ = make_mixture(5000, 3, 3, random_state=4)
    R = RowSliceable(X)
    init = initial_parameters(X, 3, covariance_type)
    kw = dict(init, **ONE, tol=1e-6, max_iter=15)
    ref = GaussianMixture(**kw).fit(X)
    got = GaussianMixture(**kw).fit(R)
    _assert_same_model(got, ref)
    n_blocks = -(-X.shape[0] // BlockData(X, None, sample=False).block_rows)
    # one read per block per pass (validation + one per iteration), never per row
    assert R.reads == n_blocks * (1 + got.n_iter_) < X.shape[0] // 10
    R.reads = 0
    np.testing.assert_array_equal(got.predict(R), got.predict(X))
    np.testing.assert_allclose(got.predict_proba(R), got.predict_proba(X), rtol=1e-12)
    assert 0 < R.reads < X.shape[0] // 100


def test_what_is_not_read_in_blocks():
    from fastem.mixture import _is_out_of_core

    X, _ = make_mixture(100, 2, 2, random_state=4)
    assert _is_out_of_core(RowSliceable(X)) and _is_out_of_core(SlicedArray(X))
    assert not _is_out_of_core(X) and not _is_out_of_core(X.tolist())
    assert not _is_out_of_core(RowSliceable(X[:, 0]))  # 1-D: check_array's error
    assert not _is_out_of_core(RowSliceable(X.astype(object)[:, :, None]))
    sparse = pytest.importorskip("scipy.sparse")
    for S in (sparse.csr_matrix(X), sparse.csr_array(X)):
        assert not _is_out_of_core(S)
        with pytest.raises(TypeError, match="sparse"):
            GaussianMixture(2).fit(S)


def test_pandas_is_not_read_in_blocks():
    from fastem.mixture import _is_out_of_core

    pd = pytest.importorskip("pandas")
    X, _ = make_mixture(100, 2, 2, random_state=4)
    assert not _is_out_of_core(pd.DataFrame(X))
    assert not _is_out_of_core(pd.DataFrame(X).iloc[:, 0])


def test_sample_weight_blockwise_and_as_memmap(tmp_path, small_blocks):
    X, _ = make_mixture(3000, 2, 3, random_state=5)
    w = np.random.default_rng(1).integers(0, 4, size=X.shape[0]).astype(np.float64)
    M = _memmap(tmp_path, X)
    W = _memmap(tmp_path, w, "w.npy")
    kw = dict(initial_parameters(X, 3, "full"), **ONE, max_iter=10)
    ref = GaussianMixture(**kw).fit(X, sample_weight=w)
    for sw in (w, W, list(w)):
        got = GaussianMixture(**kw).fit(M, sample_weight=sw)
        _assert_same_model(got, ref)
    scalar = GaussianMixture(**kw).fit(M, sample_weight=2.0)
    _assert_same_model(scalar, GaussianMixture(**kw).fit(X), rtol=1e-8)


def test_random_init_from_sample_is_seeded_and_close_to_in_memory(tmp_path):
    X, _ = make_mixture(30_000, 3, 4, random_state=6)
    M = _memmap(tmp_path, X)
    a = GaussianMixture(4, random_state=0, **ONE).fit(M)
    b = GaussianMixture(4, random_state=0, **ONE).fit(M)
    for name in ATTRS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    ref = GaussianMixture(4, random_state=0, **ONE).fit(X)
    assert abs(a.score(X) - ref.score(X)) < 1e-2 * abs(ref.score(X))


def test_init_sample_is_uniform_and_skips_uninformative_rows():
    X = np.arange(40_000, dtype=np.float64).reshape(-1, 2)
    w = np.ones(X.shape[0])
    w[::2] = 0.0  # even rows carry no weight
    data = BlockData(X, w, n_components=2, random_state=0, block_rows=777)
    rows, weights = data.init_arrays()
    assert rows.shape == (init_sample_size(20_000, 2), 2) == (10_000, 2)
    idx = rows[:, 0].astype(np.int64) // 2
    assert np.all(idx % 2 == 1) and np.all(weights == 1.0)
    assert np.all(np.diff(idx) > 0)  # distinct, in row order
    # roughly uniform over the informative rows
    counts = np.histogram(idx, bins=4, range=(0, 20_000))[0]
    assert counts.min() > 0.9 * counts.max()
    small = BlockData(X[:100], None, n_components=2, random_state=0, block_rows=7)
    np.testing.assert_array_equal(small.init_arrays()[0], X[:100])


def test_thread_count_does_not_change_the_model(tmp_path, monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 128 << 10)  # blocks of several kernel chunks
    X, _ = make_mixture(20_000, 3, 4, random_state=7)
    M = _memmap(tmp_path, X)
    fits = [GaussianMixture(4, random_state=0, max_iter=10, n_threads=t).fit(M) for t in (1, 2)]
    for name in ATTRS:
        np.testing.assert_array_equal(getattr(fits[0], name), getattr(fits[1], name))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda X: X.__setitem__((3, 1), np.inf) or X, "infinity"),
        (lambda X: X.__setitem__((slice(None), 1), np.nan) or X, r"Feature\(s\) \[1\]"),
        (lambda X: np.full_like(X, np.nan), "no observed value"),
        (lambda X: X[:2], "n_samples >= n_components"),
        (lambda X: X[:1], "minimum of 2"),
        (lambda X: X.astype(np.complex128), "Complex"),
        (lambda X: X.ravel()[:, None, None], "2D"),
    ],
)
def test_validation_errors(tmp_path, make, match):
    X, _ = make_mixture(100, 2, 3, random_state=8)
    M = _memmap(tmp_path, make(X.copy()))
    with pytest.raises(ValueError, match=match):
        GaussianMixture(3).fit(M)


def test_feature_observed_only_in_rows_of_weight_zero(tmp_path, small_blocks):
    """The same check and message as the in-memory fit: weight 0 drops a row."""
    X, _ = make_mixture(2000, 3, 2, random_state=0)
    X[10:, 2] = np.nan
    w = np.r_[np.zeros(10), np.ones(1990)]
    with pytest.raises(ValueError) as mem:
        GaussianMixture(2, backend="numpy").fit(X, sample_weight=w)
    assert "never observed" in str(mem.value)
    with pytest.raises(ValueError) as ooc:
        GaussianMixture(2, backend="numpy").fit(_memmap(tmp_path, X), sample_weight=w)
    assert str(ooc.value) == str(mem.value)


def test_validation_errors_for_strings_and_weights(tmp_path):
    X, _ = make_mixture(100, 2, 3, random_state=8)
    M = _memmap(tmp_path, X)
    S = _memmap(tmp_path, np.array([["a", "b"]] * 10), "s.npy")
    with pytest.raises(ValueError, match="numeric"):
        GaussianMixture(3).fit(S)
    bad = {
        "Negative": -np.ones(100),
        "NaN or infinity": np.full(100, np.nan),
        "shape": np.ones(99),
        "sums to zero": np.zeros(100),
    }
    for match, w in bad.items():
        with pytest.raises(ValueError, match=match):
            GaussianMixture(3).fit(M, sample_weight=w)
    w = np.zeros(100)
    w[:2] = 1.0
    with pytest.raises(ValueError, match="Only 2 rows"):
        GaussianMixture(3).fit(M, sample_weight=w)


def test_predict_and_score_on_memmap(tmp_path, small_blocks, monkeypatch):
    monkeypatch.setattr(mixture, "_PREDICT_BLOCK_ELEMENTS", 0)  # blocks of 1024 rows
    X, _ = make_mixture(5000, 3, 3, random_state=9)
    M = _memmap(tmp_path, X)
    model = GaussianMixture(3, random_state=0, **ONE).fit(M)
    np.testing.assert_array_equal(model.predict(M), model.predict(X))
    np.testing.assert_array_equal(model.score_samples(M), model.score_samples(X))
    np.testing.assert_array_equal(model.predict_proba(M), model.predict_proba(X))
    assert model.score(M) == model.score(X)


@pytest.mark.filterwarnings("ignore:.*every value missing:UserWarning")
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_predict_proba_and_impute_on_memmap_with_nan(
    tmp_path, small_blocks, monkeypatch, covariance_type
):
    monkeypatch.setattr(mixture, "_PREDICT_BLOCK_ELEMENTS", 0)  # blocks of 1024 rows
    X, _ = make_mixture(5000, 3, 3, random_state=9)
    X[np.random.default_rng(3).random(X.shape) < 0.1] = np.nan
    X[11] = np.nan
    M = _memmap(tmp_path, X)
    model = GaussianMixture(3, covariance_type=covariance_type, random_state=0, **ONE).fit(X)
    np.testing.assert_array_equal(model.predict_proba(M), model.predict_proba(X))
    imputed = model.impute(M)
    np.testing.assert_array_equal(imputed, model.impute(X))
    assert not np.isnan(imputed).any() and np.isnan(M).any()  # M itself is untouched


def test_pages_are_released_after_each_block(tmp_path, monkeypatch):
    calls = []
    X, _ = make_mixture(4000, 2, 2, random_state=10)
    M = _memmap(tmp_path, X)
    data = BlockData(M, None, n_components=2, block_rows=1000, sample=False)
    real = data._release
    monkeypatch.setattr(data, "_release", lambda a, b: (calls.append((a, b)), real(a, b)))
    from fastem import backends
    from fastem._passes import PassParams

    model = GaussianMixture(2, random_state=0, **ONE).fit(X)
    params = PassParams.from_model(
        model.weights_, model.means_, model.precisions_cholesky_, "full", np.float64
    )
    data.em_stats(backends.get_backend("numpy"), params)
    assert calls == [(0, 1000), (1000, 2000), (2000, 3000), (3000, 4000)]
    # a copy-on-write map keeps its (possibly modified) private pages
    assert blocks._page_releaser(M).__name__ == "release"
    C = np.load(tmp_path / "X.npy", mmap_mode="c")
    assert blocks._page_releaser(C).__name__ == "nothing"
    C[0, 0] = 123.0
    BlockData(C, None, n_components=2, block_rows=100)
    assert C[0, 0] == 123.0


def _mapped_rss(path) -> int:
    """Bytes of the file at ``path`` resident in this process's mappings."""
    total, current = 0, None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):
                fields = line.split(maxsplit=5)
                current = fields[5].strip() if len(fields) == 6 else None
            elif line.startswith("Rss:") and current == str(path):
                total += int(line.split()[1]) * 1024
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="needs /proc/self/smaps")
def test_pages_of_x_and_weight_memmaps_are_released(tmp_path, monkeypatch):
    """After a fit, neither the data's nor the weights' file stays mapped in:
    each block's pages are dropped once used."""
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 2 << 20)  # 4 blocks; weights blocks of 1 MiB
    X, _ = make_mixture(500_000, 2, 2, random_state=13)
    w = np.random.default_rng(0).uniform(0.5, 2.0, size=X.shape[0])
    M, W = _memmap(tmp_path, X), _memmap(tmp_path, w, "w.npy")
    del X, w
    GaussianMixture(2, random_state=0, max_iter=2, tol=0, **ONE).fit(M, sample_weight=W)
    # a few fault-around pages may remain; unreleased, the whole file would be resident
    assert _mapped_rss(tmp_path / "X.npy") < 0.25 * M.nbytes
    assert _mapped_rss(tmp_path / "w.npy") < 0.25 * W.nbytes


_CHILD = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from fastem import GaussianMixture

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    path, margin = sys.argv[1], int(sys.argv[2])
    # warm up: imports, compiled kernels, thread pool
    GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(5000, 4)))
    limit = status("VmData") + margin
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    try:
        np.load(path)
    except MemoryError:
        print("load-failed")
    else:
        print("load-succeeded")
    X = np.load(path, mmap_mode="r")
    base_rss = status("VmRSS")
    model = GaussianMixture(4, random_state=0, max_iter=3, tol=0).fit(X)
    assert np.isfinite(model.means_).all()
    print("fit-ok", status("VmHWM") - base_rss)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA/proc are Linux")
def test_fit_of_file_larger_than_memory_limit(tmp_path):
    """A 200 MB memmap fits in a process allowed 100 MB of data above its baseline."""
    rows = 200 * 2**20 // (4 * 8)
    X = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float64,
                                  shape=(rows, 4))  # fmt: skip
    chunk = 1 << 18
    part, _ = make_mixture(chunk, 4, 4, random_state=0)
    for start in range(0, rows, chunk):
        X[start : start + chunk] = part[: rows - start]
    X.flush()
    del X
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "big.npy"), str(100 * 2**20)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert "load-failed" in lines  # the limit is enforced: the file cannot be loaded
    grown = int(next(line for line in lines if line.startswith("fit-ok")).split()[1])
    # pages of each block are released: the resident set grows by about a block
    assert grown < 100 * 2**20, grown


def test_block_rows_are_set_by_shape_only():
    X = np.zeros((10, 16))
    assert BlockData(X, None, sample=False).block_rows == blocks.BLOCK_BYTES // (16 * 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert BlockData(X.astype(np.float32), None, sample=False).dtype == np.float32


def test_fortran_ordered_memmap(tmp_path, small_blocks):
    X, _ = make_mixture(3000, 3, 3, random_state=11)
    F = np.lib.format.open_memmap(tmp_path / "F.npy", mode="w+", dtype=np.float64,
                                  shape=X.shape, fortran_order=True)  # fmt: skip
    F[:] = X
    kw = dict(initial_parameters(X, 3, "full"), **ONE, max_iter=10)
    _assert_same_model(GaussianMixture(**kw).fit(F), GaussianMixture(**kw).fit(X))


def test_block_reader_serves_checked_row_slices(tmp_path):
    X, _ = make_mixture(1000, 3, 2, random_state=12)
    S = SlicedArray(np.round(X * 10).astype(np.int16))
    reader = blocks.BlockReader(S, n_features=3)
    assert reader.shape == (1000, 3) and reader.dtype == np.float64 and len(reader) == 1000
    np.testing.assert_array_equal(reader[100:300], np.round(X[100:300] * 10))
    assert reader[990:2000].shape == (10, 3)
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 4"):
        blocks.BlockReader(S, n_features=4)
    X[500, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        blocks.BlockReader(_memmap(tmp_path, X))[400:600]
    with pytest.raises(TypeError, match="row slices"):
        reader[[1, 2]]
