"""Readers and writers of data tables for the ``fastem`` command.

Formats are chosen by extension: ``.npy``, ``.csv``, ``.parquet`` (needs
pyarrow), and ``-`` for CSV on stdin/stdout. Every reader returns a 2-D float64
array (float32 for float32 data, which the library fits in float32) with missing
values as NaN, plus the column names when the file has them.
Every writer writes to a temporary file beside the target and renames it into
place only once it is complete, so a failed command leaves no partial output.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

__all__ = [
    "InputError",
    "DATA_FORMATS",
    "data_format",
    "read_data",
    "write_table",
    "atomic_output",
    "atomic_outputs",
    "check_output_path",
    "parse_csv",
]

DATA_FORMATS = (".npy", ".csv", ".parquet")
# Case-insensitive spellings of a missing value in CSV input (besides an empty field).
_MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})


class InputError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it."""


def data_format(path: str | os.PathLike) -> str:
    """Return the format of ``path`` (``'.npy'``, ``'.csv'`` or ``'.parquet'``) or raise.

    ``'-'`` means CSV on stdin/stdout.
    """
    if str(path) == "-":
        return ".csv"
    ext = Path(path).suffix.lower()
    if ext not in DATA_FORMATS:
        shown = f"extension '{ext}'" if ext else "no extension"
        raise InputError(
            f"cannot tell the format of '{path}' ({shown}); use a name ending in "
            f"{', '.join(DATA_FORMATS)}, or - for CSV on stdin/stdout"
        )
    return ext


def _import_pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401 - imported for its side effect on the package
    except ImportError as exc:
        raise InputError(
            'Parquet files need pyarrow, which is not installed: pip install "fastem[parquet]"'
        ) from exc
    return pyarrow


# ----------------------------------------------------------------------------- reading
def _is_missing(field: str) -> bool:
    return field.strip().lower() in _MISSING


def _is_number(field: str) -> bool:
    """A number or a missing value: what a data cell may hold."""
    if _is_missing(field):
        return True
    try:
        float(field)
    except ValueError:
        return False
    return True


def _is_header(row: list[str]) -> bool:
    """No field is a number and at least one is a name; empty fields are unnamed columns."""
    names = [f for f in row if not _is_missing(f)]
    return bool(names) and not any(_is_number(f) for f in names)


def parse_csv(text: str | IO[str], *, source: str = "<csv>") -> tuple[np.ndarray, list[str] | None]:
    """Parse comma-separated numbers into a float64 array.

    The first row is a header when none of its fields is a number and at least
    one is not a missing value (so ``,a,b`` is a header with an unnamed first
    column, and ``nan,1`` or ``1,abc`` is data); a non-numeric field in the
    data is an error naming its column and line. Empty fields and
    ``NaN``/``nan``/``NA`` (also ``N/A``, ``null``, ``none``) are missing values
    (NaN). Blank lines are skipped; a line of empty fields (``,,``) is a row
    with every value missing, as ``pandas.read_csv`` reads it, so each output
    row of a command stays aligned with its input row.

    Rows are converted to numbers in blocks of ``_CSV_BLOCK_ROWS`` as they are
    read, so the text of the whole file is never held as Python strings.

    Parameters
    ----------
    text : str or text file
        The CSV content.
    source : str, default='<csv>'
        Name used in error messages.

    Returns
    -------
    X : ndarray of shape (n_rows, n_columns)
    columns : list of str or None
        The header, when there is one.
    """
    stream = io.StringIO(text) if isinstance(text, str) else text
    reader = csv.reader(stream)
    columns: list[str] | None = None
    width = 0
    blocks: list[np.ndarray] = []
    rows: list[list[str]] = []
    lines: list[int] = []  # the line each row of the block ends on, for error messages
    first = True
    try:
        for row in reader:
            # A blank (or whitespace-only) line is skipped; ',,' is a row of NaN: dropping
            # it would shift every later row of predict's or impute's output.
            if not (len(row) > 1 or (row and row[0].strip())):
                continue
            if first:
                first = False
                if row[0].startswith("\ufeff"):  # a byte-order mark read as text (stdin)
                    row[0] = row[0][1:]
                if _is_header(row):
                    columns = [f.strip() for f in row]
                    width = len(columns)
                    continue
                width = len(row)
            rows.append(row)
            lines.append(reader.line_num)
            if len(rows) == _CSV_BLOCK_ROWS:
                blocks.append(_csv_block(rows, lines, width, columns, source))
                rows, lines = [], []
    except csv.Error as exc:  # a field over csv's size limit, say (another delimiter?)
        raise InputError(
            f"{source}: line {reader.line_num} cannot be read as CSV ({exc}); fastem reads "
            "comma-separated numbers"
        ) from None
    if rows:
        blocks.append(_csv_block(rows, lines, width, columns, source))
    if not blocks:
        if columns is not None:
            raise InputError(f"{source} has a header but no data rows")
        raise InputError(f"{source} holds no data rows; give a CSV file with numeric columns")
    X = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
    return X, columns


#: Rows of a CSV file converted to numbers at a time (bounds the strings held).
_CSV_BLOCK_ROWS = 1 << 14


def _csv_block(
    rows: list[list[str]], lines: list[int], width: int, columns: list[str] | None, source: str
) -> np.ndarray:
    """One block of CSV rows as float64, or an InputError naming the line and column."""
    for row, line in zip(rows, lines, strict=True):
        if len(row) != width:
            raise InputError(
                f"{source}: line {line} has {len(row)} fields, expected {width}; "
                "every row needs the same number of comma-separated fields"
            )
    try:  # numbers (and 'nan') only: the common case, with no pass over the cells
        return np.array(rows, dtype=np.float64).reshape(len(rows), width)
    except ValueError:
        pass
    cells = [[("nan" if _is_missing(f) else f) for f in row] for row in rows]
    try:
        return np.array(cells, dtype=np.float64).reshape(len(rows), width)
    except ValueError:
        pass
    # Slow path only to name the offending cell.
    for row, line in zip(cells, lines, strict=True):
        for j, field in enumerate(row):
            if not _is_number(field):
                name = f" ('{columns[j]}')" if columns else ""
                raise InputError(
                    f"{source}: column {j + 1}{name} holds the non-numeric value {field.strip()!r} "
                    f"on line {line}; fastem reads numbers only, so drop or encode that column"
                ) from None
    raise InputError(f"{source} could not be read as numbers")  # pragma: no cover


def _without_path(message: str, path: str) -> str:
    """``message`` without the quoted ``path`` our own message already names."""
    for quoted in (f" '{path}'", f' "{path}"'):
        message = message.replace(quoted, "")
    return message


def _read_npy(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # np.load tells .npz apart
        raise InputError(
            f"'{path}' is not a NumPy .npy file (it lacks the .npy signature); save arrays "
            "with numpy.save, or give a .csv or .parquet file"
        )
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as exc:  # object arrays, or not an .npy file at all
        raise InputError(f"cannot read '{path}' as a NumPy .npy array: {exc}") from exc
    if isinstance(arr, np.lib.npyio.NpzFile):  # pragma: no cover - .npz renamed to .npy
        arr.close()
        raise InputError(f"'{path}' is an .npz archive, not an .npy array")
    if arr.dtype.kind not in "biuf":
        raise InputError(
            f"'{path}' holds an array of dtype {arr.dtype}; fastem needs a numeric array"
        )
    if arr.ndim == 1:  # one feature
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise InputError(
            f"'{path}' holds a {arr.ndim}-D array of shape {arr.shape}; fastem needs a 2-D "
            "array (rows, features)"
        )
    # float32 stays float32, as GaussianMixture.fit(np.load(path)) fits it in float32;
    # anything else (big-endian float32 included, as check_array casts it) is float64.
    return arr.astype(np.float32 if arr.dtype == np.float32 else np.float64, copy=False)


def _read_parquet(path: str) -> tuple[np.ndarray, list[str]]:
    pa = _import_pyarrow()
    try:
        table = pa.parquet.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        reason = _without_path(str(exc), path)
        raise InputError(f"cannot read '{path}' as Parquet: {reason}") from exc
    # pandas stores a DataFrame's index (other than a plain RangeIndex) as columns that
    # its metadata names ('__index_level_0__' for a filtered frame's): the index, not data.
    pandas_meta = table.schema.pandas_metadata or {}
    index = {name for name in pandas_meta.get("index_columns", []) if isinstance(name, str)}
    if index:
        table = table.select([j for j, name in enumerate(table.column_names) if name not in index])
    # Only float32 columns: float32, as a fit on pandas.read_parquet's DataFrame is.
    dtype = (
        np.float32
        if table.num_columns and all(pa.types.is_float32(t) for t in table.schema.types)
        else np.float64
    )
    columns = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        if not (
            pa.types.is_integer(col.type)
            or pa.types.is_floating(col.type)
            or pa.types.is_boolean(col.type)
            or pa.types.is_null(col.type)
        ):
            raise InputError(
                f"{path}: column '{name}' has type {col.type}; fastem reads numeric columns "
                "only, so drop or encode that column"
            )
        columns.append(col.to_numpy(zero_copy_only=False).astype(dtype))
    if not columns:
        raise InputError(f"'{path}' has no columns")
    return np.column_stack(columns), list(table.column_names)


def read_data(path: str | os.PathLike, *, stdin: IO[str] | None = None):
    """Read a data table as a float64 (or float32) array.

    Parameters
    ----------
    path : str or path-like
        A ``.npy``, ``.csv`` or ``.parquet`` file, or ``'-'`` for CSV on stdin.
    stdin : text file, default=None
        Where ``'-'`` reads from (``sys.stdin`` when None).

    Returns
    -------
    X : ndarray of shape (n_rows, n_columns)
        float64, or float32 for a float32 ``.npy`` or a Parquet file whose columns
        are all float32 (what the library fits in float32); missing values are NaN. A
        Parquet file written by pandas gives its columns without the DataFrame's
        index (as ``pandas.read_parquet`` would).
    columns : list of str or None
        Column names, when the file has them.
    """
    path = str(path)
    fmt = data_format(path)
    if path == "-":
        return parse_csv(stdin if stdin is not None else sys.stdin, source="stdin")
    if not os.path.exists(path):
        raise InputError(f"no such file: '{path}'; check the path")
    if os.path.isdir(path):
        raise InputError(f"'{path}' is a directory; give a data file")
    if fmt == ".npy":
        return _read_npy(path), None
    if fmt == ".parquet":
        return _read_parquet(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return parse_csv(f, source=path)
    except UnicodeDecodeError as exc:
        raise InputError(f"'{path}' is not a text CSV file ({exc.reason})") from exc


# ----------------------------------------------------------------------------- writing
def check_output_path(path: str | os.PathLike, *, what: str = "output") -> None:
    """Raise :class:`InputError` unless ``path`` can be created (its folder exists).

    Called before any work starts, so a typo in ``-o`` fails fast.
    """
    path = str(path)
    if path == "-":
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError(f"cannot write the {what} '{path}': folder '{folder}' does not exist")
    if os.path.isdir(path):
        raise InputError(f"cannot write the {what} '{path}': it is a directory")


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary name keeps ``path``'s extension, so writers that pick a format
    (or append one) from the name behave as they would on ``path``.
    """
    with atomic_outputs(path) as (tmp,):
        yield tmp


@contextmanager
def atomic_outputs(*paths: str | os.PathLike) -> Iterator[list[str]]:
    """Like :func:`atomic_output` for several outputs: all of them or none.

    Yields one temporary path beside each of ``paths`` (keeping its extension).
    Only when the block has written every one are they renamed into place; if
    the block raises, every temporary file is removed and no target is touched.
    """
    targets = [os.fspath(path) for path in paths]
    tmps: list[str] = []
    try:
        for path in targets:
            folder = os.path.dirname(os.path.abspath(path))
            suffix = "".join(Path(path).suffixes[-1:])
            try:
                fd, tmp = tempfile.mkstemp(prefix=".fastem-", suffix=suffix, dir=folder)
            except OSError as exc:  # name the output, not the temporary file
                raise type(exc)(exc.errno, exc.strerror, path) from exc
            os.close(fd)
            tmps.append(tmp)
        yield list(tmps)
        # mkstemp creates 0600; give the outputs the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        for tmp in tmps:
            os.chmod(tmp, 0o666 & ~umask)
        for tmp, path in zip(tmps, targets, strict=True):
            os.replace(tmp, path)
    except BaseException:
        for tmp in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise


def _format_cell(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _write_csv(stream: IO[str], data: np.ndarray, columns: Sequence[str] | None) -> None:
    writer = csv.writer(stream, lineterminator="\n")
    if columns is not None:
        writer.writerow(columns)
    # tolist() gives Python ints/floats: repr of a float is its shortest round-trip form.
    for row in data.tolist():
        stream.write(",".join(map(_format_cell, row)) + "\n")


def _unique_names(names: Sequence[str]) -> list[str]:
    """Column names made unique as pandas' ``read_csv`` does (``a, a.1, a.2``): a CSV
    header may repeat a name, which Parquet readers refuse."""
    taken = set(names)
    seen: set[str] = set()
    unique = []
    for name in names:
        new, n = name, 0
        while new in seen:
            n += 1
            new = f"{name}.{n}"
            if new in taken:  # a later column already has that name: skip it
                new = name
        seen.add(new)
        unique.append(new)
    return unique


def write_table(
    path: str | os.PathLike,
    data: np.ndarray,
    columns: Sequence[str] | None = None,
    *,
    stdout: IO[str] | None = None,
) -> None:
    """Write a 1-D or 2-D array as a table, atomically; the format comes from the extension.

    Parameters
    ----------
    path : str or path-like
        ``.npy``, ``.csv``, ``.parquet``, or ``'-'`` for CSV on stdout.
    data : ndarray of shape (n_rows,) or (n_rows, n_columns)
    columns : sequence of str, default=None
        Column names (the CSV header and the Parquet field names); Parquet
        uses ``c0, c1, ...`` when None, and a repeated name gets a suffix there
        (``a, a.1``; Parquet readers refuse repeats). Ignored for ``.npy``.
    stdout : text file, default=None
        Where ``'-'`` writes to (``sys.stdout`` when None).
    """
    path = str(path)
    fmt = data_format(path)
    data = np.asarray(data)
    table = data.reshape(-1, 1) if data.ndim == 1 else data
    if columns is not None and len(columns) != table.shape[1]:
        raise ValueError(f"{len(columns)} column names for {table.shape[1]} columns")
    if path == "-":
        _write_csv(stdout if stdout is not None else sys.stdout, table, columns)
        return
    if fmt == ".parquet":
        pa = _import_pyarrow()
        names = list(columns) if columns is not None else [f"c{j}" for j in range(table.shape[1])]
        # From arrays, not a dict: a dict keeps one column per repeated name.
        arrow = pa.Table.from_arrays(
            [pa.array(table[:, j]) for j in range(table.shape[1])], names=_unique_names(names)
        )
    with atomic_output(path) as tmp:
        if fmt == ".npy":
            # To an open file: np.save(name) appends '.npy' to a name that does not end
            # in it ('OUT.NPY'), which would leave the output empty and a stray file.
            with open(tmp, "wb") as f:
                np.save(f, data, allow_pickle=False)
        elif fmt == ".parquet":
            pa.parquet.write_table(arrow, tmp)
        else:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                _write_csv(f, table, columns)
