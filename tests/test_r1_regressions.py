"""Regression tests for bugs found in session 10's review (helper R1).

Each test failed on the code before its fix (noted per test).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastem._io import read_data, write_table


# ---------------------------------------------------------------- Parquet output
@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a", "a"], ["a", "a.1"]),
        (["a", "a", "a.1"], ["a", "a.2", "a.1"]),
        (["", "", "c"], ["", ".1", "c"]),
        (["x", "y"], ["x", "y"]),
    ],
)
def test_parquet_output_keeps_every_column_of_a_repeated_header(tmp_path, names, expected):
    # Before the fix the table was built from a dict: one column per repeated name
    # survived, so `fastem impute model.npz data.csv -o out.parquet` lost columns.
    pytest.importorskip("pyarrow")
    data = np.arange(3 * len(names), dtype=np.float64).reshape(3, len(names))
    path = tmp_path / "t.parquet"
    write_table(path, data, names)
    back, columns = read_data(path)
    assert columns == expected
    np.testing.assert_array_equal(back, data)


def test_csv_that_the_csv_module_refuses_is_an_input_error(tmp_path, capsys):
    # A field longer than the csv module's limit (131072 characters: a wide file with
    # another delimiter, say) raised _csv.Error, which the command did not catch: a
    # traceback instead of one 'fastem: error:' line.
    from fastem._io import InputError, parse_csv
    from fastem.cli import main

    text = "a;b\n" + ";".join(["1.2345"] * 30_000) + "\n"
    with pytest.raises(InputError, match="line 2 cannot be read as CSV"):
        parse_csv(text, source="wide.csv")
    (tmp_path / "wide.csv").write_text(text)
    args = ["fit", str(tmp_path / "wide.csv"), "-k", "1", "-o", str(tmp_path / "m.npz")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("fastem: error:") and err.count("\n") == 1


def test_parquet_from_pandas_leaves_out_the_dataframe_index(tmp_path):
    # pandas writes a DataFrame's index (any but a plain RangeIndex: a filtered frame's,
    # a set_index column) as Parquet columns named in its metadata. Before the fix
    # they were read as data: `fastem fit` on df[df.a > 0].to_parquet(...) fitted the
    # row numbers as a third feature.
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    X = _two_blobs(d=2)
    frame = pd.DataFrame(X, columns=["a", "b"])
    kept = frame[frame.a > 0]
    kept.to_parquet(tmp_path / "filtered.parquet")
    frame.set_index("a").to_parquet(tmp_path / "indexed.parquet")
    frame.to_parquet(tmp_path / "plain.parquet")
    values, columns = read_data(tmp_path / "filtered.parquet")
    assert columns == ["a", "b"]
    np.testing.assert_array_equal(values, kept.to_numpy())
    values, columns = read_data(tmp_path / "indexed.parquet")
    assert columns == ["b"]
    np.testing.assert_array_equal(values, X[:, [1]])
    values, columns = read_data(tmp_path / "plain.parquet")
    assert columns == ["a", "b"]
    np.testing.assert_array_equal(values, X)


# ---------------------------------------------------------------- Dask prediction
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_dask_methods_on_a_filtered_array_with_empty_chunks(dtype):
    # Before the fix every lazy method (predict, predict_proba, score_samples, impute,
    # and score/bic through them) raised "Found array with 0 sample(s)" on the empty
    # row chunks that boolean filtering of a Dask array leaves; fit accepted them.
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    from fastem import GaussianMixture

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (60, 3)), rng.normal(4, 1.5, (60, 3))]).astype(dtype)
    X[::9, 1] = np.nan
    gm = GaussianMixture(2, backend="numpy", random_state=0).fit(X)
    dX = da.from_array(X, chunks=(25, 3))
    keep = X[:, 0] > 2
    with dask.config.set(scheduler="synchronous"):
        filtered = dX[dX[:, 0] > 2]  # chunk sizes unknown; the first two chunks empty
        assert 0 in filtered.compute_chunk_sizes().chunks[0]
        for method in ("predict", "predict_proba", "score_samples", "impute"):
            lazy = getattr(gm, method)(filtered)
            got = lazy.compute()
            want = getattr(gm, method)(X[keep])
            assert got.dtype == want.dtype == lazy.dtype, method
            np.testing.assert_array_equal(got, want, err_msg=method)
        rel = 1e-12 if dtype == np.float64 else 1e-6  # float32 sums in another order
        assert gm.score(filtered) == pytest.approx(gm.score(X[keep]), rel=rel)
        assert gm.bic(filtered) == pytest.approx(gm.bic(X[keep]), rel=rel)


# ---------------------------------------------------------------- partial_fit
def _two_blobs(n=60, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(0, 1, (n, d)), rng.normal(4, 1.5, (n, d))])


def test_partial_fit_follows_the_feature_names_protocol():
    # Before the fix partial_fit ignored column names: a stream of DataFrames left no
    # feature_names_in_ (so predict on a DataFrame warned "fitted without feature
    # names"), and a batch with other column names was blended in silently.
    pd = pytest.importorskip("pandas")
    import warnings

    from fastem import GaussianMixture

    X = _two_blobs()
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    gm = GaussianMixture(2, backend="numpy", random_state=0).partial_fit(frame)
    np.testing.assert_array_equal(gm.feature_names_in_, ["a", "b", "c"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "fitted without feature names" warning
        gm.predict(frame)
        gm.partial_fit(frame)
    means = gm.means_.copy()
    with pytest.raises(ValueError, match="feature names should match"):
        gm.partial_fit(pd.DataFrame(X, columns=["x", "y", "z"]))
    assert gm.n_batches_ == 2
    np.testing.assert_array_equal(gm.means_, means)  # unchanged on error
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        gm.partial_fit(X)
    # A stream started on a plain array has no names, as fit's.
    assert not hasattr(GaussianMixture(2, backend="numpy").partial_fit(X), "feature_names_in_")
    # After fit(frame), a batch with other names is refused too.
    fitted = GaussianMixture(2, backend="numpy", random_state=0).fit(frame)
    with pytest.raises(ValueError, match="feature names should match"):
        fitted.partial_fit(pd.DataFrame(X, columns=["a", "c", "b"]))


def test_partial_fit_gives_lower_bounds_a_new_list():
    # Before the fix the previous lower_bounds_ list was appended to in place: a
    # reference the caller kept (or a copy.copy of the estimator) grew with the stream.
    import copy

    from fastem import GaussianMixture

    X = _two_blobs()
    gm = GaussianMixture(2, backend="numpy", random_state=0).partial_fit(X)
    kept = gm.lower_bounds_
    snapshot = copy.copy(gm)
    gm.partial_fit(X)
    assert len(kept) == 1 and len(snapshot.lower_bounds_) == snapshot.n_batches_ == 1
    assert len(gm.lower_bounds_) == gm.n_batches_ == 2
    assert gm.lower_bounds_[0] == kept[0] and gm.lower_bounds_[-1] == gm.lower_bound_


# ---------------------------------------------------------------- the imputer
def test_imputer_get_feature_names_out_checks_like_scikit_learn():
    # Before the fix: unfitted gave AttributeError (not NotFittedError), and
    # input_features of the wrong length or other names than feature_names_in_
    # were returned as given instead of raising, as scikit-learn's transformers do.
    from fastem.exceptions import NotFittedError
    from fastem.impute import GaussianMixtureImputer

    X = _two_blobs()
    X[::5, 1] = np.nan
    with pytest.raises(NotFittedError):
        GaussianMixtureImputer(backend="numpy").get_feature_names_out()
    imp = GaussianMixtureImputer(2, backend="numpy", random_state=0).fit(X)
    np.testing.assert_array_equal(imp.get_feature_names_out(), ["x0", "x1", "x2"])
    assert imp.get_feature_names_out(["p", "q", "r"]).tolist() == ["p", "q", "r"]
    with pytest.raises(ValueError, match="input_features should have length equal"):
        imp.get_feature_names_out(["p", "q"])
    imp.feature_names_in_ = np.array(["a", "b", "c"], dtype=object)  # as fit(DataFrame) sets
    assert imp.get_feature_names_out(["a", "b", "c"]).dtype == object
    with pytest.raises(ValueError, match="input_features is not equal to feature_names_in_"):
        imp.get_feature_names_out(["a", "c", "b"])


def test_imputer_passes_scikit_learns_feature_names_out_check():
    pytest.importorskip("sklearn")
    from sklearn.utils.estimator_checks import check_transformer_get_feature_names_out

    from fastem.impute import GaussianMixtureImputer

    check_transformer_get_feature_names_out(
        "GaussianMixtureImputer", GaussianMixtureImputer(backend="numpy")
    )


# ---------------------------------------------------------------- plot_clusters
def _drawn_rows(fig) -> int:
    points = fig.axes[0].collections[0].get_offsets()
    return int(np.isfinite(np.asarray(points, dtype=float)).all(axis=1).sum())


def test_plot_clusters_with_missing_values():
    # Before the fix: projection="pca" on X with NaN raised LinAlgError ("SVD did not
    # converge"), and with dims a row with NaN in an unplotted feature was not drawn.
    pytest.importorskip("matplotlib")
    from fastem import GaussianMixture
    from fastem.plotting import plot_clusters

    X = _two_blobs()
    X[::7, 2] = np.nan  # not a plotted feature with dims=(0, 1)
    X[3, 0] = np.nan  # a plotted one: that row cannot be drawn
    gm = GaussianMixture(2, backend="numpy", random_state=0).fit(X)
    assert _drawn_rows(plot_clusters(gm, X)) == X.shape[0] - 1
    fig = plot_clusters(gm, X, projection="pca")
    complete = ~np.isnan(X).any(axis=1)
    assert _drawn_rows(fig) == int(complete.sum())
    assert sum(p.get_gid().startswith("component-") for p in fig.axes[0].patches) == 2
    with pytest.raises(ValueError, match="needs rows without missing values"):
        plot_clusters(
            gm, np.where(np.isnan(X).any(axis=1, keepdims=True), X, np.nan), projection="pca"
        )


def test_plot_clusters_feature_names_fitted_check_and_gaussian_mixture_ic():
    # Before the fix: a DataFrame (the one the model was fitted on) gave a spurious
    # "X does not have valid feature names" warning, an unfitted model an
    # AttributeError, and a GaussianMixtureIC an AttributeError (covariance_type).
    pytest.importorskip("matplotlib")
    pd = pytest.importorskip("pandas")
    import warnings

    from fastem import GaussianMixture, GaussianMixtureIC
    from fastem.exceptions import NotFittedError
    from fastem.plotting import plot_clusters

    frame = pd.DataFrame(_two_blobs(d=2), columns=["a", "b"])
    gm = GaussianMixture(2, backend="numpy", random_state=0).fit(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_clusters(gm, frame)
    with pytest.raises(ValueError, match="feature names should match"):
        plot_clusters(gm, frame.rename(columns={"a": "z"}))
    with pytest.raises(NotFittedError):
        plot_clusters(GaussianMixture(2), frame)
    ic = GaussianMixtureIC((1, 2), covariance_types=("VVV", "EII"), random_state=0)
    ic.set_params(backend="numpy").fit(frame.to_numpy())
    fig = plot_clusters(ic, frame.to_numpy())
    assert len(fig.axes[0].patches) == ic.n_components_


# ---------------------------------------------------------------- model files
def test_save_into_a_missing_folder_names_the_path_not_a_temporary_file(tmp_path):
    # Before the fix the FileNotFoundError named '.x.npz.<random>.tmp', a file the
    # user never asked for.
    from fastem import GaussianMixture

    gm = GaussianMixture(1, backend="numpy").fit(_two_blobs(n=10, d=2))
    target = tmp_path / "no_such_folder" / "x.npz"
    with pytest.raises(FileNotFoundError) as info:
        gm.save(target)
    assert info.value.filename == str(target)
    assert ".tmp" not in str(info.value) and "does not exist" in str(info.value)
    assert not target.parent.exists()


# ---------------------------------------------------------------- the command
def test_cli_scores_a_dataframe_model_by_its_column_names(tmp_path, capsys):
    # A model fitted on a DataFrame knows its column names. Before the fix `fastem
    # predict`/`impute` scored a CSV whose header had the columns in another order by
    # position (wrong labels, exit 0), and printed scikit-learn's raw name warning,
    # with a source line, for every file (also with --quiet).
    pd = pytest.importorskip("pandas")
    import warnings

    from fastem import GaussianMixture
    from fastem.cli import main

    X = _two_blobs(d=2)
    gm = GaussianMixture(2, backend="numpy", random_state=0).fit(
        pd.DataFrame(X, columns=["a", "b"])
    )
    gm.save(tmp_path / "m.npz")
    pd.DataFrame(X, columns=["a", "b"]).to_csv(tmp_path / "ab.csv", index=False)
    pd.DataFrame(X[:, ::-1], columns=["b", "a"]).to_csv(tmp_path / "ba.csv", index=False)
    np.save(tmp_path / "x.npy", X)  # no names: read by position
    m = str(tmp_path / "m.npz")
    for command in ("predict", "impute"):
        for data in ("ab.csv", "x.npy"):
            out = tmp_path / f"{command}-{data}.csv"
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                assert main([command, m, str(tmp_path / data), "-o", str(out), "-q"]) == 0
            assert capsys.readouterr().err == "" and not caught
        capsys.readouterr()
        out = tmp_path / f"{command}-ba.csv"
        assert main([command, m, str(tmp_path / "ba.csv"), "-o", str(out), "-q"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "(b, a)" in err and "(a, b)" in err
        assert not out.exists()
    labels = pd.read_csv(tmp_path / "predict-ab.csv.csv")["label"].to_numpy()
    np.testing.assert_array_equal(labels, gm.predict(pd.DataFrame(X, columns=["a", "b"])))


def test_demo_matching_skips_components_that_drew_no_row(capsys):
    # With few rows a true component may draw none: its mean is NaN, and NaN won
    # np.argmin, so the greedy matching paired it first and mismatched the others
    # (demo --n-samples 5 --n-components 5 reported 40% agreement, 60% matched right),
    # after a raw "invalid value in divide" RuntimeWarning.
    import warnings

    from fastem.cli import _import_command_modules, _match_components, main

    _import_command_modules()
    true = np.array([[np.nan, np.nan], [0.0, 0.0], [5.0, 5.0]])
    found = np.array([[5.1, 5.0], [9.0, 9.0], [0.1, 0.0]])
    np.testing.assert_array_equal(_match_components(true, found), [1, 2, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args = ["demo", "--n-samples", "5", "--n-components", "5", "--no-plot", "--backend"]
        assert main([*args, "numpy", "-q"]) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "(no row drawn)" in out


def test_imputer_takes_pandas_nullable_columns_with_pd_na():
    # pandas' nullable dtypes mark missing values with pd.NA; before the fix the imputer
    # raised "TypeError: X could not be converted to float64 ... 'NAType'" on them
    # (scikit-learn's IterativeImputer takes them, as NaN).
    pd = pytest.importorskip("pandas")
    from fastem.impute import GaussianMixtureImputer

    X = _two_blobs()
    X[::4, 1] = np.nan
    X[::5, 0] = np.round(X[::5, 0])  # still float; the Int64 column below has whole numbers
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).astype("Float64")
    frame["c"] = pd.array(np.where(np.arange(X.shape[0]) % 6 == 0, np.nan, np.round(X[:, 2])))
    frame["c"] = frame["c"].astype("Int64")
    assert frame.isna().sum().tolist() == [0, 30, 20]
    values = frame.to_numpy(dtype=np.float64, na_value=np.nan)
    want = GaussianMixtureImputer(2, backend="numpy", random_state=0).fit_transform(values)
    imp = GaussianMixtureImputer(2, backend="numpy", random_state=0).fit(frame)
    np.testing.assert_array_equal(imp.transform(frame), want)
    np.testing.assert_array_equal(imp.get_feature_names_out(), ["a", "b", "c"])


def test_an_unwritable_folder_is_reported_with_the_output_path(tmp_path, monkeypatch, capsys):
    # Before the fix the PermissionError of a read-only folder named the hidden
    # temporary file ('.fastem-xxxx.csv', '.m.npz.<hex>.tmp'). Simulated (tests may
    # run as root, who may write anywhere): creating the temporary file fails.
    import errno
    import tempfile

    from fastem import GaussianMixture
    from fastem._io import write_table
    from fastem.cli import main

    def refuse_mkstemp(prefix="", suffix="", dir=None):
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}tmp{suffix}")

    real_open = os.open

    def refuse_tmp(path, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    target = tmp_path / "labels.csv"
    monkeypatch.setattr(tempfile, "mkstemp", refuse_mkstemp)
    with pytest.raises(PermissionError) as info:
        write_table(target, np.arange(3))
    assert info.value.filename == str(target)
    gm = GaussianMixture(1, backend="numpy").fit(_two_blobs(n=10, d=2))
    gm.save(tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", _two_blobs(n=10, d=2))
    assert (
        main(["predict", str(tmp_path / "m.npz"), str(tmp_path / "x.npy"), "-o", str(target)]) == 2
    )
    assert capsys.readouterr().err == f"fastem: error: Permission denied: '{target}'\n"
    monkeypatch.setattr(os, "open", refuse_tmp)
    with pytest.raises(PermissionError) as info:
        gm.save(tmp_path / "m2.npz")
    assert info.value.filename == str(tmp_path / "m2.npz")


def test_plot_selection_of_a_gaussian_mixture_ic():
    # Before the fix plot_selection(ic) raised "TypeError: 'GaussianMixtureIC' object
    # is not iterable"; it plots the estimator's search (ic.selection_).
    pytest.importorskip("matplotlib")
    from fastem import GaussianMixtureIC
    from fastem.exceptions import NotFittedError
    from fastem.plotting import plot_selection

    ic = GaussianMixtureIC((1, 2), covariance_types=("VVV", "EII"), random_state=0)
    with pytest.raises(NotFittedError):
        plot_selection(ic)
    ic.set_params(backend="numpy").fit(_two_blobs(d=2))
    fig = plot_selection(ic)
    want = plot_selection(ic.selection_)
    assert [line.get_label() for line in fig.axes[0].lines] == ["VVV", "EII"]
    for got, ref in zip(fig.axes[0].lines, want.axes[0].lines, strict=True):
        np.testing.assert_array_equal(got.get_ydata(), ref.get_ydata())


def test_cli_warns_when_the_first_csv_column_looks_like_a_pandas_index(tmp_path, capsys):
    # df.to_csv(path) writes the index as an unnamed first column, which fastem (as
    # pandas.read_csv) reads as data: before, `fastem fit` then silently fitted the row
    # numbers as a feature. Now one warning line says so (none with -q, none for data
    # saved with index=False).
    pd = pytest.importorskip("pandas")
    from fastem.cli import main

    frame = pd.DataFrame(_two_blobs(d=2), columns=["a", "b"])
    frame[frame.a > 0].to_csv(tmp_path / "with_index.csv")
    frame.to_csv(tmp_path / "plain.csv", index=False)
    out = str(tmp_path / "m.npz")
    fit = ["fit", "-k", "2", "-o", out, "--backend", "numpy"]
    assert main([*fit, str(tmp_path / "with_index.csv")]) == 0
    err = capsys.readouterr().err
    assert err.count("fastem: warning:") == 1 and "index=False" in err and err.count("\n") == 1
    assert main([*fit, str(tmp_path / "with_index.csv"), "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert main([*fit, str(tmp_path / "plain.csv")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_dask_methods_warn_about_missing_names_once_on_the_client():
    # A model fitted on a DataFrame, asked about a Dask array (no column names): before
    # the fix nothing was said at the call, and every chunk's task warned on its worker
    # when computed (10 warnings for 10 chunks, in the workers' logs on a cluster).
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    pd = pytest.importorskip("pandas")
    import warnings

    from fastem import GaussianMixture

    X = _two_blobs(d=2)
    named = GaussianMixture(2, backend="numpy", random_state=0).fit(
        pd.DataFrame(X, columns=["a", "b"])
    )
    plain = GaussianMixture(2, backend="numpy", random_state=0).fit(X)
    dX = da.from_array(X, chunks=(12, 2))  # 10 chunks
    with dask.config.set(scheduler="synchronous"):
        for method in ("predict", "predict_proba", "score_samples", "impute"):
            for model, expected in ((named, 1), (plain, 0)):
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    lazy = getattr(model, method)(dX)
                    assert len(caught) == expected, method  # at the call, not at compute
                    lazy.compute()
                assert len(caught) == expected, method
                assert all("valid feature names" in str(w.message) for w in caught)


# ------------------------------------------- pandas protocols in every estimator
def test_gaussian_mixture_takes_pandas_nullable_columns_as_nan():
    # pandas' nullable columns hold pd.NA; scikit-learn's check_array turns them into NaN.
    # Before the fix GaussianMixture.fit raised "TypeError: ... NAType" (the imputer
    # alone converted them).
    pd = pytest.importorskip("pandas")
    from fastem import GaussianMixture

    X = _two_blobs(d=2)
    X[::7, 0] = np.nan
    df = pd.DataFrame({"a": pd.array(X[:, 0], dtype="Float64"), "b": pd.array(X[:, 1])})
    df.loc[3, "a"] = pd.NA
    X[3, 0] = np.nan
    nullable = GaussianMixture(2, backend="numpy", random_state=0).fit(df)
    plain = GaussianMixture(2, backend="numpy", random_state=0).fit(X)
    np.testing.assert_array_equal(nullable.means_, plain.means_)
    np.testing.assert_array_equal(nullable.predict_proba(df), plain.predict_proba(X))


def test_feature_name_mismatch_message_is_scikit_learns():
    # scikit-learn's check_dataframe_column_names_consistency matches the message word
    # for word; before the fix fastem's one-line lists failed it.
    pytest.importorskip("pandas")
    checks = pytest.importorskip("sklearn.utils.estimator_checks")
    from fastem import GaussianMixture

    checks.check_dataframe_column_names_consistency(
        "GaussianMixture", GaussianMixture(2, backend="numpy", max_iter=5)
    )


def test_a_pandas_series_gets_scikit_learns_1d_error():
    # A Series has one dtype, and a NumPy dtype has __len__: nullable_to_nan iterated
    # it (TypeError) instead of letting check_array say "Expected 2D array".
    pd = pytest.importorskip("pandas")
    from fastem import GaussianMixture

    for series in (pd.Series(np.arange(10.0)), pd.Series(pd.array([1.0, None] * 5))):
        with pytest.raises(ValueError, match="Expected 2D array"):
            GaussianMixture(2, backend="numpy").fit(series)
