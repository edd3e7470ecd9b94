"""Readers and writers of the fastem command (fastem._io)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from fastem._io import (
    InputError,
    atomic_output,
    atomic_outputs,
    check_output_path,
    data_format,
    parse_csv,
    read_data,
    write_table,
)


def test_csv_without_header():
    X, columns = parse_csv("1,2\n3.5,-4e-3\n\n5, 6\n")
    assert columns is None
    np.testing.assert_array_equal(X, [[1, 2], [3.5, -4e-3], [5, 6]])
    assert X.dtype == np.float64


def test_csv_header_is_detected_and_missing_values_become_nan():
    X, columns = parse_csv("x, y,z\n1,,3\nNaN,2,nan\n4,NA,6\n")
    assert columns == ["x", "y", "z"]
    expected = np.array([[1, np.nan, 3], [np.nan, 2, np.nan], [4, np.nan, 6]])
    np.testing.assert_array_equal(X, expected)


def test_csv_first_row_of_missing_values_is_data_not_header():
    X, columns = parse_csv("nan,1\n2,3\n")
    assert columns is None and X.shape == (2, 2) and np.isnan(X[0, 0])


def test_csv_first_row_with_a_number_is_data_even_with_text():
    # Not a header: "1" is a number. The text is then an error, not a silently lost row.
    with pytest.raises(InputError, match=r"column 2 holds the non-numeric value 'abc' on line 1"):
        parse_csv("1,abc\n2,3\n4,5\n6,7\n", source="t.csv")
    with pytest.raises(InputError, match=r"column 1 holds the non-numeric value 'x' on line 1"):
        parse_csv("x,2020\n1,2\n")


def test_csv_header_with_empty_or_missing_looking_names():
    X, columns = parse_csv(",a,b\n0,1,2\n1,3,4\n")  # pandas' unnamed index column
    assert columns == ["", "a", "b"] and X.tolist() == [[0, 1, 2], [1, 3, 4]]
    X, columns = parse_csv("NA,height\n1,2\n")  # a missing-value spelling is no number
    assert columns == ["NA", "height"] and X.tolist() == [[1, 2]]
    X, columns = parse_csv("NA,\n1,2\n")  # nothing but missing values: a row of NaN
    assert columns is None and np.isnan(X[0]).all() and X.shape == (2, 2)


def test_csv_single_column():
    X, _ = parse_csv("v\n1\n2\n3\n")
    assert X.shape == (3, 1)


def test_csv_non_numeric_column_names_the_column_and_line():
    with pytest.raises(InputError, match=r"column 2 \('name'\).*'abc' on line 3"):
        parse_csv("id,name\n1,2\n2,abc\n", source="t.csv")


def test_csv_ragged_rows():
    with pytest.raises(InputError, match="line 3 has 3 fields, expected 2"):
        parse_csv("1,2\n3,4\n5,6,7\n")
    with pytest.raises(InputError, match="line 4 has 1 fields, expected 2"):
        parse_csv("1,2\n\n3,4\n5\n")  # the line in the file: blank lines count


@pytest.mark.parametrize("text", ["", "\n\n", "a,b\n"])
def test_csv_without_data(text):
    with pytest.raises(InputError, match="no data rows"):
        parse_csv(text)


def test_read_csv_file_with_bom_and_stdin(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("\ufeffa,b\n1,2\n", encoding="utf-8")
    X, columns = read_data(path)
    assert columns == ["a", "b"] and X.tolist() == [[1.0, 2.0]]
    X, _ = read_data("-", stdin=io.StringIO("1,2\n3,4\n"))
    assert X.shape == (2, 2)


def test_read_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.int32).reshape(3, 2))
    X, columns = read_data(tmp_path / "a.npy")
    assert X.dtype == np.float64 and X.shape == (3, 2) and columns is None
    np.save(tmp_path / "b.npy", np.arange(4.0))
    assert read_data(tmp_path / "b.npy")[0].shape == (4, 1)  # 1-D: one feature


@pytest.mark.parametrize(
    "array, match",
    [
        (np.array(["a", "b"]), "dtype <U1"),
        (np.zeros((2, 2, 2)), "3-D array"),
    ],
)
def test_read_npy_rejects_non_tables(tmp_path, array, match):
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(InputError, match=match):
        read_data(tmp_path / "a.npy")


def test_read_npy_rejects_garbage_and_pickles(tmp_path):
    (tmp_path / "g.npy").write_text("not numpy")
    with pytest.raises(InputError, match=r"'.*g.npy' is not a NumPy .npy file"):
        read_data(tmp_path / "g.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="cannot read"):
        read_data(tmp_path / "o.npy")


def test_missing_file_directory_and_extension(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_data(tmp_path / "nope.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        read_data(tmp_path / "dir.csv")
    with pytest.raises(InputError, match=r"extension '\.txt'.*\.npy, \.csv, \.parquet"):
        read_data(tmp_path / "d.txt")
    with pytest.raises(InputError, match="no extension"):
        data_format("data")
    assert data_format("-") == ".csv" and data_format("A.PARQUET") == ".parquet"


def test_parquet_round_trip_with_nulls(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"a": [1.0, None, 3.0], "b": pa.array([1, 2, 3], pa.int16())})
    pq.write_table(table, tmp_path / "t.parquet")
    X, columns = read_data(tmp_path / "t.parquet")
    assert columns == ["a", "b"]
    np.testing.assert_array_equal(X, [[1, 1], [np.nan, 2], [3, 3]])

    pq.write_table(pa.table({"a": [1.0], "s": ["x"]}), tmp_path / "s.parquet")
    with pytest.raises(InputError, match="column 's' has type string"):
        read_data(tmp_path / "s.parquet")


@pytest.mark.parametrize("ext", [".csv", ".npy", ".parquet"])
def test_write_table_round_trips(tmp_path, ext):
    if ext == ".parquet":
        pytest.importorskip("pyarrow")
    rng = np.random.default_rng(0)
    data = rng.standard_normal((5, 3))
    path = tmp_path / f"out{ext}"
    write_table(path, data, ["a", "b", "c"])
    X, columns = read_data(path)
    np.testing.assert_array_equal(X, data)  # CSV floats are written exactly (repr)
    assert columns == (None if ext == ".npy" else ["a", "b", "c"])
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left


def test_write_labels_csv_and_stdout(tmp_path):
    labels = np.array([2, 0, 1], dtype=np.int64)
    write_table(tmp_path / "l.csv", labels, ["label"])
    assert (tmp_path / "l.csv").read_text() == "label\n2\n0\n1\n"
    out = io.StringIO()
    write_table("-", labels, ["label"], stdout=out)
    assert out.getvalue() == "label\n2\n0\n1\n"
    write_table(tmp_path / "l.npy", labels)
    assert np.load(tmp_path / "l.npy").dtype == np.int64


def test_atomic_output_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "x.csv"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            assert tmp.endswith(".csv")
            with open(tmp, "w") as f:
                f.write("partial")
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []


def test_atomic_outputs_are_all_written_or_none(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.npz"
    with pytest.raises(OSError, match="disk full"):
        with atomic_outputs(first, second) as (tmp_a, tmp_b):
            assert tmp_a.endswith(".png") and tmp_b.endswith(".npz")
            with open(tmp_a, "w") as f:
                f.write("complete")
            raise OSError("disk full")  # writing the second output fails
    assert os.listdir(tmp_path) == []  # the finished first one was not renamed into place
    with atomic_outputs(first, second) as tmps:
        for tmp, text in zip(tmps, ("a", "b"), strict=True):
            with open(tmp, "w") as f:
                f.write(text)
    assert first.read_text() == "a" and second.read_text() == "b"
    assert sorted(os.listdir(tmp_path)) == ["a.png", "b.npz"]


def test_parquet_error_names_the_file_once(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 not really parquet PAR1")
    with pytest.raises(InputError) as info:
        read_data(path)
    assert str(info.value).startswith(f"cannot read '{path}' as Parquet: ")
    assert str(info.value).count(str(path)) == 1


def test_atomic_output_replaces_existing_file(tmp_path):
    target = tmp_path / "x.csv"
    target.write_text("old")
    with atomic_output(target) as tmp:
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new" and os.listdir(tmp_path) == ["x.csv"]


def test_check_output_path(tmp_path):
    check_output_path(tmp_path / "ok.csv")
    check_output_path("-")
    with pytest.raises(InputError, match="does not exist"):
        check_output_path(tmp_path / "missing" / "x.csv")
    with pytest.raises(InputError, match="is a directory"):
        check_output_path(tmp_path)


def test_outputs_get_the_permissions_of_a_plain_open(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "out.csv") as tmp:
            with open(tmp, "w") as fh:
                fh.write("1\n")
    finally:
        os.umask(old)
    assert (tmp_path / "out.csv").stat().st_mode & 0o777 == 0o644
