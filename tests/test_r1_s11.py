"""Regression tests for bugs found in session 11's review (helper R1).

Each test failed on the code before its fix (noted per test).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from fastem import GaussianMixture, load
from fastem._io import parse_csv
from fastem.cli import main

NUMPY = ("--backend", "numpy")


def _blobs(n: int = 60, d: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(0, 1, (n // 2, d)), rng.normal(4, 1, (n - n // 2, d))])


# ---------------------------------------------------------------- CSV rows of empty fields
def test_csv_row_of_empty_fields_is_a_row_of_missing_values():
    # Before the fix ',,' was skipped like a blank line: the row vanished, so
    # `fastem predict`/`impute` wrote fewer rows than the input had and every later
    # output row was paired with the wrong input row. pandas.read_csv reads NaN there.
    X, columns = parse_csv("a,b,c\n1,2,3\n,,\n4,5,6\n")
    assert columns == ["a", "b", "c"]
    assert X.shape == (3, 3)
    assert np.isnan(X[1]).all()
    np.testing.assert_array_equal(X[[0, 2]], [[1, 2, 3], [4, 5, 6]])
    # Blank and whitespace-only lines are still skipped, as pandas skips them.
    X, _ = parse_csv("1,2\n\n   \n3,4\n")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])


def test_predict_and_impute_keep_one_output_row_per_input_row(tmp_path, capsys):
    X = _blobs()
    gm = GaussianMixture(2, random_state=0, backend="numpy").fit(X)
    gm.save(tmp_path / "m.npz")
    lines = ["a,b,c"] + [",".join(map(repr, row)) for row in X[:4].tolist()]
    lines.insert(3, ",,")  # the third data row: nothing observed
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    model, data = str(tmp_path / "m.npz"), str(tmp_path / "d.csv")
    assert main(["predict", model, data, "-o", str(tmp_path / "p.npy"), "-q", *NUMPY]) == 0
    assert main(["impute", model, data, "-o", str(tmp_path / "i.npy"), "-q", *NUMPY]) == 0
    labels, filled = np.load(tmp_path / "p.npy"), np.load(tmp_path / "i.npy")
    assert labels.shape == (5,) and filled.shape == (5, 3)
    expected = np.insert(X[:4], 2, np.nan, axis=0)
    np.testing.assert_array_equal(labels, gm.predict(expected))
    np.testing.assert_array_equal(filled[[0, 1, 3, 4]], X[:4])
    np.testing.assert_allclose(filled[2], gm.impute(expected)[2])


# ---------------------------------------------------------------- header names of CLI fits
def _write_named_csv(path, X, names) -> None:
    lines = [",".join(names)] + [",".join(map(repr, row)) for row in X.tolist()]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("command", ["fit", "select"])
def test_a_model_fitted_by_the_command_knows_its_header(tmp_path, capsys, command):
    # Before the fix `fastem fit data.csv` (and `select -o`) saved no column names, so
    # `fastem predict` on a file with the same columns in another order scored them
    # by position: wrong labels, exit 0. Only models fitted on a DataFrame were checked.
    X = _blobs()
    _write_named_csv(tmp_path / "train.csv", X, ["a", "b", "c"])
    _write_named_csv(tmp_path / "swapped.csv", X[:, ::-1], ["c", "b", "a"])
    model = str(tmp_path / "m.npz")
    if command == "fit":
        args = ["fit", str(tmp_path / "train.csv"), "-k", "2", "-o", model]
    else:
        args = ["select", str(tmp_path / "train.csv"), "--k", "1-2", "--covariance", "VVV"]
        args += ["--init", "kmeans", "-o", model]
    assert main([*args, "-q", *NUMPY]) == 0
    assert capsys.readouterr().err == ""  # no warning about names while fitting
    gm = load(model)
    assert list(gm.feature_names_in_) == ["a", "b", "c"]
    out = str(tmp_path / "p.npy")
    assert main(["predict", model, str(tmp_path / "swapped.csv"), "-o", out, *NUMPY]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastem: error: the columns of") and err.count("\n") == 1
    # The same header, or a file without one, is scored as before.
    assert main(["predict", model, str(tmp_path / "train.csv"), "-o", out, "-q", *NUMPY]) == 0
    np.testing.assert_array_equal(np.load(out), _predict_quietly(gm, X))
    np.save(tmp_path / "plain.npy", X)
    assert main(["predict", model, str(tmp_path / "plain.npy"), "-o", out, *NUMPY]) == 0
    assert "warning" not in capsys.readouterr().err


def _predict_quietly(gm, X: np.ndarray) -> np.ndarray:
    """X scored by ``gm`` without its names warning (the data are the fitted columns)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "X does not have valid feature names")
        return gm.predict(X)


# ---------------------------------------------------------------- plot_clusters PCA
@pytest.mark.parametrize("n_complete", [0, 1])
def test_plot_clusters_pca_of_fewer_than_two_complete_rows_is_a_value_error(n_complete):
    # Before the fix one complete row (X of one row, or one row without NaN) gave
    # "IndexError: index 1 is out of bounds" from the variance shares of the SVD.
    pytest.importorskip("matplotlib")
    from fastem.plotting import plot_clusters

    X = _blobs()
    gm = GaussianMixture(2, random_state=0, backend="numpy").fit(X)
    Y = X[:5].copy()
    Y[n_complete:, 0] = np.nan
    with pytest.raises(ValueError, match=f"needs rows without missing values .*got {n_complete}"):
        plot_clusters(gm, Y, projection="pca")
    with pytest.raises(ValueError, match="got 1"):
        plot_clusters(gm, X[:1], projection="pca")
    plot_clusters(gm, X[:2], projection="pca")  # two rows are enough


# ---------------------------------------------------------------- segment --labels to BMP
def test_segment_labels_beyond_256_to_bmp_fail_before_the_fit(tmp_path, capsys):
    # Before the fix the uint16 label map of -k 257 and more was fitted, then Pillow
    # refused to save it ('cannot write mode I;16 as BMP'): the whole fit wasted.
    # Checked with the arguments now, so even a missing image reports this first.
    pytest.importorskip("PIL")
    out = str(tmp_path / "labels.bmp")
    args = ["segment", str(tmp_path / "no-such.png"), "-k", "300", "-o", out, "--labels"]
    assert main([*args, *NUMPY]) == 2
    err = capsys.readouterr().err
    assert "16-bit pixels" in err and ".png, .tif, .tiff" in err and err.count("\n") == 1
    args[3] = "256"  # 256 labels fit in 8 bits: BMP is fine (the image is what is missing)
    assert main([*args, *NUMPY]) == 2
    assert "no such image file" in capsys.readouterr().err


# ---------------------------------------------------------------- out-of-core / Dask starts
def _weighted_incomplete(n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    X = _blobs(n)
    X[::7, 1] = np.nan
    X[5] = np.nan  # a row with nothing observed
    w = np.ones(n)
    w[::11] = 0.0  # rows that count for nothing
    return X, w


@pytest.mark.filterwarnings("ignore::fastem.exceptions.ConvergenceWarning")  # max_iter=5
@pytest.mark.parametrize("init", ["random", "random_from_data"])
def test_memmap_fit_of_small_data_starts_as_in_memory(tmp_path, init):
    # Small data (fewer rows than the initialization sample) is documented to start as
    # the in-memory fit. Before the fix the sample held only the informative rows, so
    # with rows of weight 0 or nothing observed the random inits drew other numbers:
    # another start, another fit (lower bounds 5e-4 apart here).
    X, w = _weighted_incomplete()
    np.save(tmp_path / "X.npy", X)
    M = np.load(tmp_path / "X.npy", mmap_mode="r")
    kw = dict(init_params=init, random_state=0, backend="numpy", max_iter=5)
    with pytest.warns(UserWarning, match="every value missing"):
        a = GaussianMixture(2, **kw).fit(X, sample_weight=w)
    with pytest.warns(UserWarning, match="every value missing"):
        b = GaussianMixture(2, **kw).fit(M, sample_weight=w)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-12, atol=1e-12)
    assert b.lower_bounds_ == pytest.approx(a.lower_bounds_, rel=1e-12)


@pytest.mark.filterwarnings("ignore::fastem.exceptions.ConvergenceWarning")  # max_iter=5
@pytest.mark.parametrize("init", ["random", "random_from_data"])
def test_dask_fit_of_small_data_starts_as_in_memory(init):
    # As above, for a Dask array (dask.py's docs promised the in-memory start).
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    X, w = _weighted_incomplete()
    kw = dict(init_params=init, random_state=0, backend="numpy", max_iter=5)
    with pytest.warns(UserWarning, match="every value missing"):
        a = GaussianMixture(2, **kw).fit(X, sample_weight=w)
    with dask.config.set(scheduler="synchronous"), pytest.warns(UserWarning):
        b = GaussianMixture(2, **kw).fit(da.from_array(X, chunks=(150, 3)), sample_weight=w)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-12, atol=1e-12)
    assert b.lower_bounds_ == pytest.approx(a.lower_bounds_, rel=1e-12)


# ---------------------------------------------------------------- model files
def test_a_model_started_from_pandas_means_can_be_saved(tmp_path):
    # Before the fix save() raised "cannot save parameter 'means_init': values of type
    # DataFrame cannot be stored" for a model fitted from df.groupby(labels).mean(),
    # which fit accepts: the fitted model could not be saved at all.
    pd = pytest.importorskip("pandas")
    X = _blobs()
    labels = (X[:, 0] > 2).astype(int)
    means = pd.DataFrame(X).groupby(labels).mean()
    weights = pd.Series([0.5, 0.5])
    kw = dict(means_init=means, weights_init=weights, random_state=0, backend="numpy")
    gm = GaussianMixture(2, **kw).fit(X)
    gm.save(tmp_path / "m.npz")
    back = load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.means_init, means.to_numpy())
    np.testing.assert_array_equal(back.weights_init, weights.to_numpy())
    np.testing.assert_array_equal(back.predict(X), gm.predict(X))
    refit = GaussianMixture(**back.get_params()).fit(X)  # the same start, the same fit
    np.testing.assert_array_equal(refit.means_, gm.means_)


# ---------------------------------------------------------------- big-endian memory maps
@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("stored", [">f8", ">f4"])
def test_big_endian_memmap_fits_and_predicts_as_in_memory(tmp_path, backend, stored):
    # An .npy file of big-endian floats (written on such a machine, or by a tool that
    # keeps that order) opened with mmap_mode="r". Before the fix its blocks went to
    # the kernels as they were: numba failed ('ill-defined covariance' for >f8, a
    # TypingError for >f4) and the numpy backend fitted '>f8' attributes. The
    # in-memory fit casts to native float64, as the out-of-core one does now.
    if backend == "numba":
        pytest.importorskip("numba")
    X = _blobs(200)
    np.save(tmp_path / "be.npy", X.astype(stored))
    M = np.load(tmp_path / "be.npy", mmap_mode="r")
    kw = dict(random_state=0, backend=backend)
    a = GaussianMixture(2, **kw).fit(np.asarray(M))
    b = GaussianMixture(2, **kw).fit(M)
    assert b.means_.dtype == np.dtype(np.float64) and b.means_.dtype.isnative
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-12)
    assert b.lower_bound_ == pytest.approx(a.lower_bound_, rel=1e-12)
    np.testing.assert_array_equal(a.predict(M), a.predict(np.asarray(M)))
    np.testing.assert_allclose(a.score_samples(M), a.score_samples(np.asarray(M)), rtol=1e-12)


# ---------------------------------------------------------------- .NPY outputs
@pytest.mark.parametrize("name", ["OUT.NPY", "out.Npy"])
def test_npy_output_with_an_upper_case_extension(tmp_path, name):
    # data_format reads the extension in any case, but np.save(name) appends '.npy'
    # to a name not ending in exactly '.npy'. Before the fix `-o OUT.NPY` left OUT.NPY
    # empty (exit 0) and the labels in a stray hidden '.fastem-xxxx.NPY.npy'.
    from fastem._io import write_table

    data = np.arange(6.0).reshape(3, 2)
    write_table(tmp_path / name, data)
    np.testing.assert_array_equal(np.load(tmp_path / name), data)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


# ---------------------------------------------------------------- grey segmentation figure
def test_grey_segmentation_is_drawn_in_grey_on_the_originals_scale():
    # Before the fix the segmentation of a grey image (2-D uint8 grey levels) was drawn
    # as a label map with the tab20 colour map (blue shades), and both panels were
    # stretched to their own darkest and lightest pixels, so the panels' greys differed.
    pytest.importorskip("matplotlib")
    from fastem.plotting import plot_segmentation

    rng = np.random.default_rng(0)
    image = rng.integers(40, 200, size=(6, 8), dtype=np.uint8)
    grey = np.where(image > 120, 170, 80).astype(np.uint8)
    fig = plot_segmentation(image, grey, labels=False)
    for ax in fig.axes:
        (shown,) = ax.get_images()
        assert shown.get_cmap().name == "gray"
        assert (shown.norm.vmin, shown.norm.vmax) == (0, 255)
    label_map = (image > 120).astype(np.uint8)
    for flag in (True, None):  # integers are labels unless told otherwise
        fig = plot_segmentation(image, label_map, labels=flag)
        assert fig.axes[1].get_images()[0].get_cmap().name == "tab20"


def test_segment_command_tells_the_figure_whether_it_drew_labels(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    Image = pytest.importorskip("PIL.Image")
    import fastem.plotting

    calls = []
    original = fastem.plotting.plot_segmentation

    def spy(*args, **kwargs):
        calls.append(kwargs.get("labels"))
        return original(*args, **kwargs)

    monkeypatch.setattr(fastem.plotting, "plot_segmentation", spy)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, size=(12, 10), dtype=np.uint8)).save(tmp_path / "g.png")
    for extra in ([], ["--labels"]):
        args = ["segment", str(tmp_path / "g.png"), "-k", "2", "-o", str(tmp_path / "s.png")]
        assert main([*args, "--plot", str(tmp_path / "f.png"), "-q", *NUMPY, *extra]) == 0
    assert calls == [False, True]


# ---------------------------------------------------------------- CSV read in blocks
def _csv_text(X: np.ndarray, header: str | None = "a,b,c") -> str:
    lines = [] if header is None else [header]
    lines += [",".join(map(repr, row)) for row in X.tolist()]
    return "\n".join(lines) + "\n"


def test_csv_is_converted_in_blocks_with_the_same_values_and_errors(monkeypatch):
    # parse_csv converts rows to numbers a block at a time (it held every field of the
    # file as a Python string: 318 MiB traced for a 25 MB 200k x 16 file, 53 MiB now).
    import fastem._io as fio

    monkeypatch.setattr(fio, "_CSV_BLOCK_ROWS", 4)
    X = _blobs(11)
    X[6, 1] = np.nan  # a missing value in the second block only
    text = _csv_text(X).replace("nan", "NA")
    got, columns = parse_csv(text)
    assert columns == ["a", "b", "c"]
    np.testing.assert_array_equal(got, X)
    got, columns = parse_csv(_csv_text(X, header=None))
    assert columns is None and got.shape == (11, 3)
    lines = text.splitlines()
    bad = "\n".join(lines[:9] + ["1,oops,3"] + lines[10:]) + "\n"  # line 10: third block
    with pytest.raises(fio.InputError, match=r"column 2 \('b'\) .*'oops' on line 10"):
        parse_csv(bad)
    short = "\n".join(lines[:7] + ["1,2"] + lines[8:]) + "\n"
    with pytest.raises(fio.InputError, match="line 8 has 2 fields, expected 3"):
        parse_csv(short)


def test_csv_reading_holds_no_string_per_field_of_the_file(monkeypatch):
    import tracemalloc

    import fastem._io as fio

    monkeypatch.setattr(fio, "_CSV_BLOCK_ROWS", 256)
    X = np.random.default_rng(0).normal(size=(20_000, 8))
    stream = io.StringIO(_csv_text(X, header=None))
    tracemalloc.start()
    try:
        got, _ = parse_csv(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(got, X)
    # The result (1.3 MB) and a copy while the blocks are joined, not 160,000 strings
    # and their lists (about 14 MB before the change).
    assert peak < 4 * X.nbytes, peak


def test_memmap_fit_of_small_data_leaves_a_random_state_object_to_the_init(tmp_path):
    # Before the fix the out-of-core fit drew the sample's seed from a RandomState
    # random_state even when it took every row, so the initialization that followed
    # got other numbers than in memory: another start (lower bounds 9e-3 apart here).
    X = _blobs(300)
    np.save(tmp_path / "X.npy", X)
    M = np.load(tmp_path / "X.npy", mmap_mode="r")
    a = GaussianMixture(3, random_state=np.random.RandomState(0), backend="numpy").fit(X)
    b = GaussianMixture(3, random_state=np.random.RandomState(0), backend="numpy").fit(M)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- -o naming the data
@pytest.mark.parametrize("command", ["fit", "select"])
def test_a_model_is_never_written_over_its_data_file(tmp_path, capsys, command):
    # Before the fix `fastem fit data.csv -k 2 -o data.csv` (a slip of the -o name)
    # fitted, then replaced the data file by the model: the data were lost, exit 0.
    X = _blobs()
    data = tmp_path / "data.csv"
    _write_named_csv(data, X, ["a", "b", "c"])
    before = data.read_bytes()
    if command == "fit":
        args = ["fit", str(data), "-k", "2"]
    else:
        args = ["select", str(data), "--k", "1-2", "--covariance", "VVV", "--init", "kmeans"]
    assert main([*args, "-o", str(tmp_path / "." / "data.csv"), "-q", *NUMPY]) == 2
    err = capsys.readouterr().err
    assert "is the input file itself" in err and err.count("\n") == 1
    assert data.read_bytes() == before


def test_segment_never_writes_over_its_image(tmp_path, capsys):
    # Before the fix `fastem segment photo.png -k 3 -o photo.png` replaced the photo by
    # its segmentation (and --plot photo.png by the figure), exit 0.
    Image = pytest.importorskip("PIL.Image")
    pytest.importorskip("matplotlib")
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, size=(8, 9, 3), dtype=np.uint8)).save(photo)
    before = photo.read_bytes()
    for flags in (["-o", str(photo)], ["-o", str(tmp_path / "s.png"), "--plot", str(photo)]):
        assert main(["segment", str(photo), "-k", "2", *flags, "-q", *NUMPY]) == 2
        err = capsys.readouterr().err
        assert "is the input file itself" in err and err.count("\n") == 1
        assert photo.read_bytes() == before


def test_predict_never_writes_labels_over_its_data(tmp_path, capsys):
    # Before the fix `fastem predict m.npz data.npy -o data.npy` replaced the data by
    # their labels, exit 0.
    X = _blobs()
    GaussianMixture(2, random_state=0, backend="numpy").fit(X).save(tmp_path / "m.npz")
    np.save(tmp_path / "data.npy", X)
    data = str(tmp_path / "data.npy")
    for extra in ([], ["--proba"]):
        assert main(["predict", str(tmp_path / "m.npz"), data, "-o", data, *extra, *NUMPY]) == 2
        assert "is the input file itself" in capsys.readouterr().err
    np.testing.assert_array_equal(np.load(data), X)


def test_plot_lower_bound_of_a_stream_counts_batches():
    # After partial_fit, lower_bounds_ holds one value per batch (each batch's average
    # log-likelihood); before the fix the axis said 'EM iteration' and the title
    # '(not converged)', which converged_=False always says for a stream.
    pytest.importorskip("matplotlib")
    from fastem.plotting import plot_lower_bound

    X = _blobs(90)
    gm = GaussianMixture(2, random_state=0, backend="numpy")
    for batch in np.array_split(X, 3):
        gm.partial_fit(batch)
    ax = plot_lower_bound(gm).axes[0]
    assert ax.get_xlabel() == "batch (partial_fit)" and "converged" not in ax.get_title()
    np.testing.assert_array_equal(ax.lines[0].get_ydata(), gm.lower_bounds_)
    fitted = GaussianMixture(2, random_state=0, backend="numpy").fit(X)
    assert plot_lower_bound(fitted).axes[0].get_xlabel() == "EM iteration"


# ---------------------------------------------------------------- fastem cache --clear
def test_cache_clear_deletes_only_fastems_own_files(tmp_path, monkeypatch, capsys):
    # Before the fix `fastem cache --clear` ran rmtree on the whole FASTEM_CACHE_DIR:
    # FASTEM_CACHE_DIR=~/.cache deleted every other program's cache with it, and a
    # FASTEM_CACHE_DIR naming a file was reported 'removed' (rmtree ignored the error).
    pytest.importorskip("numba")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    from fastem.backends import _numba_cache

    shared = tmp_path / "cache"
    ours = _numba_cache._CacheLocator.get_suitable_cache_subpath(_numba_cache.__file__)
    (shared / "numba" / f"{ours}-tag").mkdir(parents=True)
    (shared / "numba" / f"{ours}-tag" / "k.nbi").write_bytes(b"")
    (shared / "numba" / "otherproj_0123").mkdir()  # Numba's user-wide cache: not ours
    (shared / "other-program").mkdir()
    (shared / "other-program" / "keep.txt").write_text("not fastem's")
    monkeypatch.setenv("FASTEM_CACHE_DIR", str(shared))
    assert main(["cache", "--clear"]) == 0
    out = capsys.readouterr().out
    assert "other-program" in out and "numba/otherproj_0123" in out
    assert [p.name for p in (shared / "numba").iterdir()] == ["otherproj_0123"]
    assert (shared / "other-program" / "keep.txt").read_text() == "not fastem's"
    (shared / "numba" / "otherproj_0123").rmdir()
    # A folder of fastem's cache alone goes as a whole, as before.
    (shared / "other-program" / "keep.txt").unlink()
    (shared / "other-program").rmdir()
    (shared / "numba").mkdir(exist_ok=True)
    assert main(["cache", "--clear"]) == 0 and not shared.exists()
    # A file named as the cache folder is left alone, with an error.
    data = tmp_path / "data.csv"
    data.write_text("1,2\n")
    monkeypatch.setenv("FASTEM_CACHE_DIR", str(data))
    capsys.readouterr()
    assert main(["cache", "--clear"]) == 2
    assert "is not a folder" in capsys.readouterr().err and data.read_text() == "1,2\n"


def test_a_byte_order_mark_on_stdin_is_not_text(capsys):
    # A file is opened as utf-8-sig, which drops its byte-order mark; stdin keeps it as
    # '\ufeff'. Before the fix it became part of the first column's name (so a model
    # fitted on the file refused the same data piped in: '\ufeffa' is not 'a'), or,
    # without a header, made the first number 'non-numeric'.
    from fastem._io import read_data

    X, columns = read_data("-", stdin=io.StringIO("\ufeffa,b\n1,2\n"))
    assert columns == ["a", "b"] and X.tolist() == [[1.0, 2.0]]
    X, columns = read_data("-", stdin=io.StringIO("\ufeff1,2\n3,4\n"))
    assert columns is None and X.tolist() == [[1.0, 2.0], [3.0, 4.0]]
