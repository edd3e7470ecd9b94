"""Saving and loading fitted models in a versioned, pickle-free file format.

:meth:`GaussianMixture.save <fastem.GaussianMixture.save>` writes a model and
:func:`load` reads it back, on any machine and with any backend. Loading never
unpickles: the file holds numeric arrays and JSON text only, so an untrusted
file can at worst be rejected, never run code.

File format, version 1
----------------------
The file is a ZIP archive in the layout of NumPy's ``.npz`` (every member
stored uncompressed, written with ``allow_pickle=False``), so ``numpy.load(path,
allow_pickle=False)`` opens it. Members:

``fastem_metadata.npy``
    A 1-D ``uint8`` array: UTF-8 JSON (no NaN/Infinity tokens) with the keys

    - ``"format"``: ``"fastem-model"``, the marker of a fastem file;
    - ``"format_version"``: ``1``; a reader rejects versions it does not know;
    - ``"estimator"``: ``"GaussianMixture"``;
    - ``"fastem_version"``, ``"numpy_version"``: the writer's, for information;
    - ``"params"``: constructor parameter name -> value (see below);
    - ``"attributes"``: fitted attribute name (ending in ``_``) -> value;
    - ``"arrays"``: member name (without ``.npy``) -> ``{"dtype", "shape",
      "sha256"}``, the digest being SHA-256 over the JSON text
      ``[dtype.str, shape]``, a zero byte, then the array's bytes in C order;
    - ``"notes"``: list of strings (what the writer dropped, if anything);
    - ``"metadata_sha256"``: SHA-256 of the canonical JSON (sorted keys,
      separators ``","`` and ``":"``) of all the other keys.

``param.<name>.npy``, ``attr.<name>.npy``
    One array per parameter or attribute whose value is array-valued.

A value in ``"params"``/``"attributes"`` is one of ``{"type": "none"}``,
``{"type": "bool"|"int"|"str", "value": ...}``, ``{"type": "float", "value":
number or "nan"/"inf"/"-inf"}``, ``{"type": "ndarray", "array": member}``,
``{"type": "numpy_scalar", "array": member}`` (a 0-d array), or ``{"type":
"list"|"tuple", "array": member, "items": "python"|"numpy"}`` (a numeric
sequence, rebuilt with Python or NumPy scalar items). Arrays have a boolean,
integer or floating dtype. Only the fitted attributes of
:data:`REQUIRED_ATTRIBUTES` and :data:`OPTIONAL_ATTRIBUTES` and the
estimator's own parameters are accepted; anything else is rejected.

The digests detect corrupted or edited files; they are not a signature (whoever
can write the file can recompute them). Safety against hostile files comes from
parsing nothing but arrays and JSON and from checking every name, type and shape
before a model is built: a member's ``.npy`` header must match the dtype and shape
the metadata gives it, and its size the bytes the member holds, before its data is
read, so no file can make :func:`load` allocate more than the file's own size.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import numbers
import os
import re
import secrets
import warnings
import zipfile
from typing import Any

import numpy as np

from . import backends
from ._covariance import COVARIANCE_TYPES, check_covariance_type, covariance_shape, layout
from ._version import __version__
from .mixture import GaussianMixture

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_ATTRIBUTES",
    "OPTIONAL_ATTRIBUTES",
    "save_model",
    "load",
]

FORMAT_NAME = "fastem-model"
FORMAT_VERSION = 1
#: Fitted attributes every version-1 file holds.
REQUIRED_ATTRIBUTES = (
    "weights_",
    "means_",
    "covariances_",
    "precisions_",
    "precisions_cholesky_",
    "converged_",
    "n_iter_",
    "lower_bound_",
    "lower_bounds_",
    "n_features_in_",
    "backend_",
)
_STREAM_ATTRIBUTES = (
    "n_batches_",
    "sufficient_stats_nk_",
    "sufficient_stats_sx_",
    "sufficient_stats_sxx_",
    "sufficient_stats_shift_",
)
_EXTRAPOLATION_ATTRIBUTES = ("n_extrapolations_accepted_", "n_extrapolations_rejected_")
#: mclust's decomposition of the covariances, present for the mclust model names only.
_DECOMPOSITION_ATTRIBUTES = ("scale_", "shape_", "orientation_")
#: Fitted attributes a file may hold: the stream state of ``partial_fit`` (so a loaded
#: model continues its stream), the extrapolation counts of an accelerated fit (files
#: written before they existed lack them) and the column names of a DataFrame fit. A new
#: fitted attribute of the estimator must be listed here, or saving a model that has it
#: fails with a message saying so.
OPTIONAL_ATTRIBUTES: tuple[str, ...] = (
    _STREAM_ATTRIBUTES
    + _EXTRAPOLATION_ATTRIBUTES
    + ("feature_names_in_",)
    + _DECOMPOSITION_ATTRIBUTES
)

_METADATA = "fastem_metadata"
#: fastem.hmm's estimators, whose files :func:`load` hands to fastem.hmm.
_HMM_ESTIMATORS = ("GaussianHMM", "GMMHMM", "CategoricalHMM", "PoissonHMM", "MultinomialHMM")
_MAX_METADATA_BYTES = 16 << 20
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same model, same bytes
_ARRAY_KINDS = "biuf"
# A dtype string an array member may have: byte order, kind (boolean, integer, float), size.
_DTYPE_PATTERN = re.compile(r"[<>|][biuf][0-9]{1,2}")
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


class _UnsafeValue(TypeError):
    """A parameter or attribute value that the format cannot store exactly."""


# ------------------------------------------------------------------ digests
def _array_digest(arr: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([arr.dtype.str, list(arr.shape)]).encode("ascii"))
    h.update(b"\0")
    h.update(arr.tobytes(order="C"))
    return h.hexdigest()


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _metadata_digest(metadata: dict) -> str:
    """SHA-256 of the canonical JSON of ``metadata`` without its own digest."""
    body = {key: value for key, value in metadata.items() if key != "metadata_sha256"}
    return hashlib.sha256(_canonical_json(body)).hexdigest()


# ----------------------------------------------------------------- encoding
def _is_python_scalar(value: Any) -> bool:
    return type(value) in (bool, int, float)


def _leaves(value: Any):
    """Items of nested lists/tuples, depth first."""
    for item in value:
        if type(item) in (list, tuple):
            yield from _leaves(item)
        else:
            yield item


def _numeric_array(value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in _ARRAY_KINDS:
        raise _UnsafeValue(f"arrays must be boolean, integer or float, got dtype {arr.dtype}")
    return arr


def _encode(value: Any, member: str, arrays: dict[str, np.ndarray]) -> dict:
    """JSON descriptor of ``value``; array data goes to ``arrays[member]``."""
    kind = type(value)
    if value is None:
        return {"type": "none"}
    if kind is bool or kind is int or kind is str:
        return {"type": kind.__name__, "value": value}
    if kind is float:
        text = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return {"type": "float", "value": value if math.isfinite(value) else text}
    if isinstance(value, np.ndarray) and value.dtype == object:  # feature_names_in_
        if value.ndim != 1 or not all(type(item) is str for item in value):
            raise _UnsafeValue("only a 1-D array of strings may have dtype object")
        return {"type": "strings", "value": list(value)}
    if isinstance(value, np.ndarray) and kind is np.ndarray:
        arrays[member] = _numeric_array(value)
        return {"type": "ndarray", "array": member}
    if isinstance(value, np.generic):
        arrays[member] = _numeric_array(value)
        return {"type": "numpy_scalar", "array": member}
    if kind is list or kind is tuple:
        try:
            arr = _numeric_array(value)
        except ValueError as exc:  # ragged nesting
            raise _UnsafeValue(f"the sequence is not a numeric array ({exc})") from None
        arrays[member] = arr
        leaves = list(_leaves(value))
        if all(_is_python_scalar(item) for item in leaves):
            return {"type": kind.__name__, "array": member, "items": "python"}
        if arr.ndim == 1 and all(
            isinstance(item, np.generic) and item.dtype == arr.dtype for item in leaves
        ):
            return {"type": kind.__name__, "array": member, "items": "numpy"}
        return {"type": "ndarray", "array": member}  # e.g. a list of arrays: kept as one array
    raise _UnsafeValue(f"values of type {kind.__name__} cannot be stored")


def _decode(desc: Any, member: str, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`_encode`; raises ValueError on anything malformed."""
    if not isinstance(desc, dict) or not isinstance(desc.get("type"), str):
        raise ValueError("a value descriptor is not an object with a 'type'")
    kind = desc["type"]
    expected_keys = {
        "none": {"type"},
        "bool": {"type", "value"},
        "int": {"type", "value"},
        "str": {"type", "value"},
        "float": {"type", "value"},
        "ndarray": {"type", "array"},
        "numpy_scalar": {"type", "array"},
        "list": {"type", "array", "items"},
        "tuple": {"type", "array", "items"},
        "strings": {"type", "value"},
    }.get(kind)
    if expected_keys is None:
        raise ValueError(f"unknown value type {kind!r}")
    if set(desc) != expected_keys:
        raise ValueError(f"a {kind!r} value has keys {sorted(desc)}")
    if kind == "none":
        return None
    if kind in ("bool", "int", "str"):
        value = desc["value"]
        if type(value) is not {"bool": bool, "int": int, "str": str}[kind]:
            raise ValueError(f"a {kind!r} value holds {type(value).__name__}")
        return value
    if kind == "strings":
        value = desc["value"]
        if not isinstance(value, list) or not all(type(item) is str for item in value):
            raise ValueError("a 'strings' value is not a list of strings")
        return np.asarray(value, dtype=object)
    if kind == "float":
        value = desc["value"]
        if type(value) in (int, float):
            return float(value)
        if isinstance(value, str) and value in _NON_FINITE:
            return _NON_FINITE[value]
        raise ValueError(f"a 'float' value holds {value!r}")
    if desc["array"] != member or member not in arrays:
        raise ValueError(f"value {member!r} does not refer to its own array")
    arr = arrays[member]
    if kind == "ndarray":
        return arr
    if kind == "numpy_scalar":
        if arr.ndim != 0:
            raise ValueError(f"scalar {member!r} has shape {arr.shape}")
        return arr[()]
    if desc["items"] == "python":
        items = arr.tolist()
    elif desc["items"] == "numpy" and arr.ndim == 1:
        items = [arr[i] for i in range(arr.shape[0])]
    else:
        raise ValueError(f"sequence {member!r} has unknown items {desc['items']!r}")
    if not isinstance(items, list):  # tolist() of a 0-d array is a scalar
        raise ValueError(f"sequence {member!r} is stored as a 0-d array")
    return items if kind == "list" else tuple(items)


# --------------------------------------------------------------------- save
def _is_foreign_array(value: Any) -> bool:
    """An array-like that is not a NumPy array or a Python sequence (a pandas
    DataFrame or Series, an xarray DataArray, ...): it converts itself with
    ``numpy.asarray``, as the estimator's checks convert it."""
    return (
        value is not None
        and not isinstance(value, (np.ndarray, np.generic, list, tuple, str, bytes))
        and hasattr(value, "__array__")
    )


def _fitted_attributes(model: GaussianMixture) -> dict[str, Any]:
    """Public attributes ending in ``_`` (the fitted state, by scikit-learn's convention)."""
    return {
        name: value
        for name, value in vars(model).items()
        if name.endswith("_") and not name.startswith("_")
    }


def save_model(model: GaussianMixture, path: str | os.PathLike) -> None:
    """Write a fitted model to ``path`` in fastem's model format (see the module docs).

    Parameters
    ----------
    model : GaussianMixture
        A fitted model.
    path : str or os.PathLike
        The file to write, exactly as given: no ``.npz`` suffix is added (unlike
        :func:`numpy.savez`). An existing file is replaced atomically: the model is
        written to a temporary file in the same directory, which then replaces
        ``path``, so an error never leaves a partial file behind.

    Raises
    ------
    NotFittedError
        If the model is not fitted (a subclass of ValueError).
    ValueError
        If a parameter or fitted attribute has a type the format cannot store
        exactly, or a fitted attribute is not one the format knows.
    OSError
        If the file cannot be written.

    Notes
    -----
    ``random_state`` is saved only when it is None or an integer. A
    ``RandomState`` or ``Generator`` is dropped (saved as None, with a note in
    the file and a ``UserWarning``): its state is not part of the fitted model.
    Array-valued parameters (``weights_init``, ``means_init``,
    ``precisions_init``) are saved as arrays: an array comes back with its dtype,
    a list of Python numbers as such a list (mixed ints and floats as floats),
    a list of arrays as one array, and any other array-like (a pandas DataFrame
    of means, say) as the NumPy array it converts to (with a note in the file).
    """
    if not isinstance(model, GaussianMixture):
        raise ValueError(f"save_model expects a GaussianMixture, got {type(model).__name__}.")
    model._check_is_fitted()
    arrays: dict[str, np.ndarray] = {}
    notes: list[str] = []

    params: dict[str, dict] = {}
    for name, value in model.get_params(deep=False).items():
        if name == "random_state" and isinstance(value, numbers.Integral):
            value = int(value)  # a NumPy integer seed is the same seed
        elif name == "random_state" and value is not None:
            notes.append(f"random_state of type {type(value).__name__} was saved as None")
            warnings.warn(
                f"random_state of type {type(value).__name__} is not saved; the loaded "
                "model has random_state=None.",
                UserWarning,
                stacklevel=3,
            )
            value = None
        elif name.endswith("_init") and _is_foreign_array(value):
            # A DataFrame of means (df.groupby(labels).mean()), say: fit took it as
            # the array it holds, and so does the file.
            notes.append(f"{name} of type {type(value).__name__} was saved as an ndarray")
            value = np.asarray(value)
        try:
            params[name] = _encode(value, f"param.{name}", arrays)
        except _UnsafeValue as exc:
            raise ValueError(f"cannot save parameter {name!r}: {exc}.") from None

    attributes: dict[str, dict] = {}
    known = set(REQUIRED_ATTRIBUTES) | set(OPTIONAL_ATTRIBUTES)
    for name, value in sorted(_fitted_attributes(model).items()):
        if name not in known:
            raise ValueError(
                f"cannot save fitted attribute {name!r}: the model format does not know it "
                "(add it to fastem.persistence.OPTIONAL_ATTRIBUTES)."
            )
        try:
            attributes[name] = _encode(value, f"attr.{name}", arrays)
        except _UnsafeValue as exc:
            raise ValueError(f"cannot save fitted attribute {name!r}: {exc}.") from None

    metadata = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "estimator": "GaussianMixture",
        "fastem_version": __version__,
        "numpy_version": np.__version__,
        "params": params,
        "attributes": attributes,
        "arrays": {
            member: {"dtype": arr.dtype.str, "shape": list(arr.shape), "sha256": _array_digest(arr)}
            for member, arr in arrays.items()
        },
        "notes": notes,
    }
    metadata["metadata_sha256"] = _metadata_digest(metadata)
    encoded = np.frombuffer(_canonical_json(metadata), dtype=np.uint8)
    _write_archive(os.fspath(path), {_METADATA: encoded, **arrays})


def _write_archive(path: str, members: dict[str, np.ndarray]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    if not os.path.isdir(directory):  # else the error would name the temporary file
        raise FileNotFoundError(
            errno.ENOENT, f"cannot save the model: folder '{directory}' does not exist", path
        )
    # O_EXCL: never write through someone else's file; mode 0o666 lets the umask decide.
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:  # a read-only folder, say: name the model's path, not tmp's
        raise type(exc)(exc.errno, exc.strerror, path) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as archive:
                for name, arr in members.items():
                    info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                    with archive.open(info, "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, arr, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------- load
class _Invalid(ValueError):
    """Raised inside :func:`load`; turned into one ValueError naming the file."""


def _check_spec(name: str, spec: Any) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape the metadata promises for array ``name``."""
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "sha256"}:
        raise _Invalid(f"array {name!r} has a malformed description in the metadata")
    shape, dtype = spec["shape"], spec["dtype"]
    if (
        not isinstance(shape, list)
        or not all(type(n) is int and n >= 0 for n in shape)
        or not isinstance(dtype, str)
        or not _DTYPE_PATTERN.fullmatch(dtype)
    ):
        raise _Invalid(f"array {name!r} has a malformed description in the metadata")
    try:
        parsed = np.dtype(dtype)
    except TypeError:  # a size that kind does not have, say '<f3'
        raise _Invalid(f"array {name!r} has an invalid dtype {dtype!r}") from None
    if parsed.str != dtype or parsed.kind not in _ARRAY_KINDS:
        raise _Invalid(f"array {name!r} has an invalid dtype {dtype!r}")
    return parsed, tuple(shape)


def _read_member(
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    dtype: np.dtype,
    shape: tuple[int, ...] | None,
) -> np.ndarray:
    """One ``.npy`` member, its header checked against ``dtype``/``shape`` (``shape``
    None: any 1-D length) and against the member's size before any data is read."""
    with archive.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(fh)
        else:
            raise _Invalid(f"member {info.filename!r} has .npy version {version}")
        got_shape, fortran_order, got_dtype = header
        if got_dtype != dtype or got_dtype.str != dtype.str or got_dtype.hasobject:
            raise _Invalid(f"member {info.filename!r} does not match its description")
        if shape is None and len(got_shape) != 1:
            raise _Invalid(f"member {info.filename!r} is not a 1-D array")
        if shape is not None and got_shape != shape:
            raise _Invalid(f"member {info.filename!r} does not match its description")
        # Python ints: a hostile shape cannot overflow, and nothing is allocated yet.
        n_bytes = math.prod(got_shape) * dtype.itemsize
        if info.file_size - fh.tell() != n_bytes:
            raise _Invalid(
                f"member {info.filename!r} holds {info.file_size - fh.tell()} data bytes, "
                f"its header says {n_bytes}"
            )
        data = fh.read(n_bytes)
        if len(data) != n_bytes or fh.read(1):  # reading to the end checks the CRC
            raise _Invalid(f"member {info.filename!r} is truncated")
    arr = np.frombuffer(data, dtype=dtype)
    if fortran_order:
        arr = arr.reshape(got_shape[::-1]).transpose()
    else:
        arr = arr.reshape(got_shape)
    return arr.copy(order="K")  # writable, and not a view of the read buffer


def _read_archive(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Metadata and verified arrays of a fastem file; raise _Invalid otherwise."""
    if os.path.isdir(path):
        raise _Invalid("it is a directory, not a model file")
    with open(path, "rb") as fh:  # FileNotFoundError propagates as is
        magic = fh.read(4)
        file_size = os.fstat(fh.fileno()).st_size
    if magic != b"PK\x03\x04":
        raise _Invalid("not a fastem model file (not an .npz archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            members = {info.filename: info for info in infos}
            if f"{_METADATA}.npy" not in members:
                raise _Invalid("not a fastem model file (no fastem metadata in the archive)")
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED:
                    raise _Invalid("the archive has compressed members, which fastem never writes")
                if info.flag_bits & 0x1:
                    raise _Invalid("the archive has encrypted members, which fastem never writes")
                # Stored members lie inside the file: a size claimed in the directory
                # cannot make us allocate more than the file holds.
                if info.compress_size != info.file_size or (
                    info.header_offset + info.file_size > file_size
                ):
                    raise _Invalid(f"member {info.filename!r} claims more bytes than the file has")
            meta_info = members[f"{_METADATA}.npy"]
            if meta_info.file_size > _MAX_METADATA_BYTES:
                raise _Invalid("the metadata is too large")
            metadata = _parse_metadata(_read_member(archive, meta_info, np.dtype(np.uint8), None))
            expected = {f"{name}.npy" for name in [_METADATA, *metadata["arrays"]]}
            if set(members) != expected or len(infos) != len(expected):
                unexpected = sorted(set(members) - expected)
                missing = sorted(expected - set(members))
                raise _Invalid(
                    "the archive's members do not match its metadata "
                    f"(unexpected: {unexpected}, missing: {missing}, {len(infos)} members)"
                )
            specs = {name: _check_spec(name, spec) for name, spec in metadata["arrays"].items()}
            arrays = {
                name: _read_member(archive, members[f"{name}.npy"], dtype, shape)
                for name, (dtype, shape) in specs.items()
            }
    except _Invalid:
        raise
    except (
        zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
        RuntimeError, NotImplementedError, OverflowError,
    ) as exc:  # fmt: skip
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _Invalid(f"the file is truncated or corrupt ({reason})") from None
    for name, arr in arrays.items():
        if _array_digest(arr) != metadata["arrays"][name]["sha256"]:
            raise _Invalid(f"array {name!r} fails its SHA-256 check (modified or corrupt)")
        if not arr.dtype.isnative:  # written on a machine of the other byte order
            arrays[name] = arr.astype(arr.dtype.newbyteorder("="))
    return metadata, arrays


def _reject_constant(token: str):
    raise ValueError(f"invalid JSON constant {token}")


def _parse_metadata(raw: np.ndarray) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise _Invalid("not a fastem model file (malformed metadata array)")
    try:
        metadata = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _Invalid("not a fastem model file (metadata is not valid JSON)") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT_NAME:
        raise _Invalid("not a fastem model file (wrong format marker)")
    version = metadata.get("format_version")
    if type(version) is not int:
        raise _Invalid(f"invalid format version {version!r}")
    if version != FORMAT_VERSION:
        raise _Invalid(
            f"unsupported format version {version}; fastem {__version__} reads version "
            f"{FORMAT_VERSION} (a newer fastem may read this file)"
        )
    if metadata.get("metadata_sha256") != _metadata_digest(metadata):
        raise _Invalid("the metadata fails its SHA-256 check (modified or corrupt)")
    keys = {
        "format", "format_version", "estimator", "fastem_version", "numpy_version",
        "params", "attributes", "arrays", "notes", "metadata_sha256",
    }  # fmt: skip
    if set(metadata) != keys:
        raise _Invalid(f"the metadata has keys {sorted(metadata)}, expected {sorted(keys)}")
    if metadata["estimator"] not in ("GaussianMixture", *_HMM_ESTIMATORS):
        raise _Invalid(f"unknown estimator {metadata['estimator']!r}")
    for section in ("params", "attributes", "arrays"):
        if not isinstance(metadata[section], dict):
            raise _Invalid(f"the metadata's {section!r} is not an object")
    if any(not isinstance(name, str) or name == _METADATA for name in metadata["arrays"]):
        raise _Invalid("invalid array name in the metadata")
    notes = metadata["notes"]
    if not isinstance(notes, list) or not all(isinstance(note, str) for note in notes):
        raise _Invalid("the metadata's 'notes' is not a list of strings")
    return metadata


def _check_model(model: GaussianMixture) -> None:
    """Shapes, dtypes and types of the fitted state, so a bad file fails here, not in a kernel."""
    model._check_parameters(_checked_int(model.n_features_in_, "n_features_in_"))
    d, ct = model.n_features_in_, model.covariance_type
    # The fitted width, not n_components: set_params(n_components=...) after the fit
    # leaves the fitted arrays (and the predictions) as they are, and save writes them.
    weights = vars(model).get("weights_")
    if not isinstance(weights, np.ndarray) or weights.ndim != 1 or weights.shape[0] < 1:
        got = getattr(weights, "shape", type(weights).__name__)
        raise _Invalid(f"weights_ must be an array of shape (n_components,), got {got}")
    k = weights.shape[0]
    try:  # _check_parameters checks it too; kept explicit
        ct = check_covariance_type(ct)
    except ValueError:
        raise _Invalid(f"unknown covariance_type {ct!r}") from None
    cov_shape = covariance_shape(ct, k, d)
    shapes = {
        "weights_": (k,),
        "means_": (k, d),
        "covariances_": cov_shape,
        "precisions_": cov_shape,
        "precisions_cholesky_": cov_shape,
    }
    decomposition = [name for name in _DECOMPOSITION_ATTRIBUTES if name in vars(model)]
    if ct in COVARIANCE_TYPES and decomposition:
        raise _Invalid(f"{decomposition} belong to mclust models, not covariance_type {ct!r}")
    if ct not in COVARIANCE_TYPES:  # files written before the mclust models never get here
        if len(decomposition) != len(_DECOMPOSITION_ATTRIBUTES):
            raise _Invalid(f"an {ct} model must hold {list(_DECOMPOSITION_ATTRIBUTES)}")
        shapes.update({"scale_": (k,), "shape_": (k, d), "orientation_": (k, d, d)})
    dtypes = set()
    for name, shape in shapes.items():
        value = getattr(model, name)
        if not isinstance(value, np.ndarray) or value.shape != shape:
            got = getattr(value, "shape", type(value).__name__)
            raise _Invalid(f"{name} must be an array of shape {shape}, got {got}")
        if value.dtype not in (np.float32, np.float64) or not np.isfinite(value).all():
            raise _Invalid(f"{name} must hold finite float32/float64 values")
        dtypes.add(value.dtype)
    if len(dtypes) != 1:
        raise _Invalid("the fitted arrays do not share one dtype")
    if type(model.converged_) not in (bool, np.bool_):
        raise _Invalid("converged_ must be a bool")
    _checked_int(model.n_iter_, "n_iter_", minimum=0)
    if not isinstance(model.lower_bound_, (float, np.floating)):
        raise _Invalid("lower_bound_ must be a float")
    bounds = model.lower_bounds_
    if not isinstance(bounds, list) or not all(isinstance(b, (float, np.floating)) for b in bounds):
        raise _Invalid("lower_bounds_ must be a list of floats")
    if not isinstance(model.backend_, str):
        raise _Invalid("backend_ must be a string")
    for name in _EXTRAPOLATION_ATTRIBUTES:
        if name in vars(model):
            _checked_int(getattr(model, name), name, minimum=0)
    names = vars(model).get("feature_names_in_")
    if names is not None and (not isinstance(names, np.ndarray) or names.shape != (d,)):
        raise _Invalid(f"feature_names_in_ must hold {d} names")
    _check_stream_state(model, k, d, ct)


def _check_stream_state(model: GaussianMixture, k: int, d: int, ct: str) -> None:
    """partial_fit's running statistics: all or none, with the model's shapes."""
    present = [name for name in _STREAM_ATTRIBUTES if name in vars(model)]
    if not present:
        return
    if len(present) != len(_STREAM_ATTRIBUTES):
        missing = sorted(set(_STREAM_ATTRIBUTES) - set(present))
        raise _Invalid(f"incomplete partial_fit state: missing {missing}")
    _checked_int(model.n_batches_, "n_batches_")
    full = layout(ct) in ("full", "tied")
    shapes = {
        "sufficient_stats_nk_": (k,),
        "sufficient_stats_sx_": (k, d),
        "sufficient_stats_sxx_": (k, d, d) if full else (k, d),
        "sufficient_stats_shift_": (k, d),
    }
    for name, shape in shapes.items():
        value = getattr(model, name)
        if (
            not isinstance(value, np.ndarray)
            or value.shape != shape
            or value.dtype != np.float64
            or not np.isfinite(value).all()
        ):
            raise _Invalid(f"{name} must be a finite float64 array of shape {shape}")


def _checked_int(value: Any, name: str, minimum: int = 1) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
        raise _Invalid(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def load(path: str | os.PathLike, *, backend: str | None = None) -> GaussianMixture:
    """Load a model written by :meth:`GaussianMixture.save` (or a fastem.hmm model's ``save``).

    The file is read with ``allow_pickle=False`` and checked completely (format
    marker and version, SHA-256 digests, names, types and shapes) before the
    model is built; its predictions are bit-identical to the saved model's on
    the same backend.

    Parameters
    ----------
    path : str or os.PathLike
        The file, exactly as given (no ``.npz`` suffix is added).
    backend : {'numba', 'cython', 'numpy'} or None, default=None
        Sets the loaded model's ``backend`` parameter. None keeps the saved one,
        unless it names a backend not available here: then it becomes None
        (automatic choice) with a ``UserWarning``. ``backend_`` (the backend that
        fitted the model) is kept as saved.

    Returns
    -------
    model : GaussianMixture
        The fitted model, with the saved parameters and fitted attributes (for an
        HMM's file, that fastem.hmm model, as :func:`fastem.hmm.load` gives it).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        One line, ``cannot load PATH: reason``, for anything else that is not a
        model this fastem can load: a directory, a foreign, truncated, corrupt
        or modified file (each member's ``.npy`` header is checked against the
        metadata and the member's size before its data is read), an
        unsupported format version, unknown names or values; and when
        ``backend`` is unknown or unavailable.
    OSError
        If the file exists but cannot be read (permissions, an I/O error).
    """
    path = os.fspath(path)
    if backend is not None:
        backend = backends.resolve_backend_name(backend)  # ValueError names the options
    try:
        metadata, arrays = _read_archive(path)
        if metadata["estimator"] in _HMM_ESTIMATORS:
            from .hmm._persistence import build_hmm, set_loaded_backend

            return set_loaded_backend(build_hmm(metadata, arrays), backend)
        referenced = set()
        params = {}
        valid_params = set(GaussianMixture().get_params(deep=False))
        for name, desc in metadata["params"].items():
            if name not in valid_params:
                raise _Invalid(f"unknown parameter {name!r}")
            params[name] = _decode(desc, f"param.{name}", arrays)
            if "array" in desc:
                referenced.add(desc["array"])
        attributes = {}
        known = set(REQUIRED_ATTRIBUTES) | set(OPTIONAL_ATTRIBUTES)
        for name, desc in metadata["attributes"].items():
            if name not in known:
                raise _Invalid(f"unknown fitted attribute {name!r}")
            attributes[name] = _decode(desc, f"attr.{name}", arrays)
            if "array" in desc:
                referenced.add(desc["array"])
        missing = [name for name in REQUIRED_ATTRIBUTES if name not in attributes]
        if missing:
            raise _Invalid(f"missing fitted attributes {missing}")
        if referenced != set(arrays):
            raise _Invalid(f"unreferenced arrays {sorted(set(arrays) - referenced)}")
        model = GaussianMixture(**params)
        for name, value in attributes.items():
            setattr(model, name, value)
        _check_model(model)
    except ValueError as exc:  # _Invalid, and the estimator's own parameter checks
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot load {path!r}: {message}") from None
    except (TypeError, KeyError, AttributeError, IndexError) as exc:
        raise ValueError(f"cannot load {path!r}: malformed model file ({exc})") from None

    if backend is not None:
        model.backend = backend
    elif model.backend is not None and model.backend not in backends.available_backends():
        warnings.warn(
            f"the saved backend {model.backend!r} is not available here; the loaded model "
            "uses the automatic choice (backend=None).",
            UserWarning,
            stacklevel=2,
        )
        model.backend = None
    return model
