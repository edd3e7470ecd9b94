"""Regression tests for bugs found in session 10's review (helper R1).

Each test failed on the code before its fix (noted per test).
"""

from __future__ import annotations

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
