"""Saving and loading models: exact round trips, other backends, and every kind of bad file."""

from __future__ import annotations

import json
import os
import pickle
import warnings
import zipfile

import numpy as np
import pytest
from _helpers import BACKENDS, COVARIANCE_TYPES

import fastem
from fastem import ConvergenceWarning, GaussianMixture, NotFittedError
from fastem.datasets import make_mixture
from fastem.persistence import FORMAT_VERSION, _array_digest, _metadata_digest, load, save_model


def _fit(X, covariance_type="full", **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        params.setdefault("random_state", 0)
        return GaussianMixture(3, covariance_type=covariance_type, **params).fit(X)


@pytest.fixture(scope="module")
def data():
    return make_mixture(600, 3, 3, random_state=1)[0]


@pytest.fixture
def saved(tmp_path, data):
    path = tmp_path / "model.npz"
    _fit(data).save(path)
    return path


def _assert_same_model(a: GaussianMixture, b: GaussianMixture) -> None:
    assert set(vars(a)) == set(vars(b))
    for name, value in vars(a).items():
        other = getattr(b, name)
        assert type(other) is type(value), name
        if isinstance(value, np.ndarray):
            assert other.dtype == value.dtype, name
            np.testing.assert_array_equal(other, value, err_msg=name)
        else:
            assert other == value, name


# --------------------------------------------------------------- round trips
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_round_trip_is_exact(tmp_path, data, covariance_type, dtype):
    X = data.astype(dtype)
    gm = _fit(X, covariance_type)
    path = tmp_path / "m.npz"
    gm.save(path)
    loaded = fastem.load(path)
    _assert_same_model(gm, loaded)
    assert loaded.means_.dtype == dtype
    proba = gm.predict_proba(X)
    assert proba.tobytes() == loaded.predict_proba(X).tobytes()  # bit for bit
    assert gm.score_samples(X).tobytes() == loaded.score_samples(X).tobytes()


def test_round_trip_keeps_init_parameters_and_types(tmp_path, data):
    means = [[0, 0, 0], [1.0, 1.0, 1.0], [2.5, 2.0, -1.0]]  # a list stays a list
    precisions = np.stack([np.eye(3, dtype=np.float32)] * 3)  # an array keeps its dtype
    gm = _fit(
        data,
        weights_init=np.array([0.2, 0.3, 0.5]),
        means_init=means,
        precisions_init=precisions,
        random_state=np.int64(7),
        max_iter=0,  # lower_bound_ = -inf and an empty lower_bounds_
        backend="numpy",
        n_threads=2,
    )
    gm.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert loaded.means_init == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [2.5, 2.0, -1.0]]
    assert loaded.precisions_init.dtype == np.float32
    np.testing.assert_array_equal(loaded.precisions_init, precisions)
    np.testing.assert_array_equal(loaded.weights_init, [0.2, 0.3, 0.5])
    assert loaded.random_state == 7 and type(loaded.random_state) is int
    assert loaded.lower_bound_ == -np.inf and loaded.lower_bounds_ == []
    assert (loaded.backend, loaded.n_threads, loaded.max_iter) == ("numpy", 2, 0)
    assert loaded.get_params().keys() == gm.get_params().keys()


def test_numpy_scalar_attributes_keep_their_type(tmp_path, data):
    gm = _fit(data)
    gm.lower_bound_ = np.float64(gm.lower_bound_)
    gm.lower_bounds_ = [np.float64(b) for b in gm.lower_bounds_]
    gm.n_iter_ = np.int32(gm.n_iter_)
    gm.save(tmp_path / "m.npz")
    _assert_same_model(gm, load(tmp_path / "m.npz"))


def test_exact_path_is_written_without_npz_suffix(tmp_path, data):
    gm = _fit(data)
    gm.save(tmp_path / "model.bin")
    save_model(gm, str(tmp_path / "other"))
    assert sorted(os.listdir(tmp_path)) == ["model.bin", "other"]
    assert load(str(tmp_path / "model.bin")).n_components == 3


def test_same_model_gives_the_same_bytes(tmp_path, data):
    gm = _fit(data)
    gm.save(tmp_path / "a")
    gm.save(tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_file_opens_with_numpy_without_pickle(saved):
    with np.load(saved, allow_pickle=False) as npz:
        metadata = json.loads(npz["fastem_metadata"].tobytes())
        assert metadata["format"] == "fastem-model"
        assert metadata["format_version"] == FORMAT_VERSION
        np.testing.assert_array_equal(npz["attr.means_"], load(saved).means_)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != BACKENDS[0]] or ["numpy"])
def test_load_with_another_backend(saved, data, backend):
    default = load(saved)
    other = load(saved, backend=backend)
    assert other.backend == backend
    assert other.backend_ == default.backend_  # the backend that fitted it
    np.testing.assert_allclose(other.predict_proba(data), default.predict_proba(data), atol=1e-12)
    np.testing.assert_allclose(other.score_samples(data), default.score_samples(data), rtol=1e-12)


def test_unavailable_saved_backend_falls_back_to_automatic(tmp_path, data, monkeypatch):
    gm = _fit(data, backend="numpy")
    gm.save(tmp_path / "m")
    monkeypatch.setattr(fastem.backends, "available_backends", lambda: ["numba"])
    with pytest.warns(UserWarning, match="not available here"):
        loaded = load(tmp_path / "m")
    assert loaded.backend is None


def test_unknown_backend_override_is_rejected(saved):
    with pytest.raises(ValueError, match="unknown backend"):
        load(saved, backend="gpu")


def test_random_state_object_is_dropped_with_a_warning(tmp_path, data):
    gm = _fit(data)
    gm.random_state = np.random.RandomState(0)
    with pytest.warns(UserWarning, match="random_state"):
        gm.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    assert loaded.random_state is None
    assert loaded.predict_proba(data).tobytes() == gm.predict_proba(data).tobytes()


def test_pickling_still_works(data):
    gm = _fit(data)
    clone = pickle.loads(pickle.dumps(gm))
    _assert_same_model(gm, clone)
    assert clone.predict_proba(data).tobytes() == gm.predict_proba(data).tobytes()


def test_loaded_model_can_be_refitted_and_resaved(tmp_path, saved, data):
    loaded = load(saved)
    loaded.fit(data)
    loaded.save(tmp_path / "again")
    _assert_same_model(loaded, load(tmp_path / "again"))


def test_partial_fit_stream_survives_a_round_trip(tmp_path, data):
    pytest.importorskip("fastem._online")
    gm = GaussianMixture(3, covariance_type="diag", random_state=0)
    for batch in np.array_split(data, 3):
        gm.partial_fit(batch)
    gm.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    _assert_same_model(gm, loaded)
    more = make_mixture(200, 3, 3, random_state=5)[0]
    gm.partial_fit(more)
    loaded.partial_fit(more)
    _assert_same_model(gm, loaded)


def test_incomplete_stream_state_is_rejected(tmp_path, data):
    gm = _fit(data)
    gm.n_batches_ = 2
    gm.save(tmp_path / "m")
    assert "incomplete partial_fit state" in _load_error(tmp_path / "m")


# --------------------------------------------------------------- save errors
def test_save_unfitted_model_raises(tmp_path):
    with pytest.raises(NotFittedError) as info:
        GaussianMixture(2).save(tmp_path / "m")
    assert isinstance(info.value, ValueError)
    assert not os.listdir(tmp_path)


def test_save_unsafe_attribute_leaves_no_file(tmp_path, data):
    gm = _fit(data)
    gm.means_ = np.array([{"x": 1}] * 3, dtype=object)
    with pytest.raises(ValueError, match="means_"):
        gm.save(tmp_path / "m")
    gm = _fit(data)
    gm.surprise_ = 1.0
    with pytest.raises(ValueError, match="surprise_"):
        gm.save(tmp_path / "m")
    assert not os.listdir(tmp_path)


def test_failed_save_keeps_the_previous_file(tmp_path, data, monkeypatch):
    gm = _fit(data)
    path = tmp_path / "m"
    gm.save(path)
    before = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np.lib.format, "write_array", broken)
    with pytest.raises(OSError, match="disk full"):
        gm.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m"]  # the temporary file is gone


# --------------------------------------------------------------- bad files
def _members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write_members(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)


def _npy(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def _rewrite_metadata(path, edit, *, redigest: bool = True) -> None:
    """Apply ``edit`` to the metadata of ``path`` (re-signing it unless told not to)."""
    members = _members(path)
    with np.load(path, allow_pickle=False) as npz:
        metadata = json.loads(npz["fastem_metadata"].tobytes())
    edit(metadata, members)
    if redigest:
        metadata["metadata_sha256"] = _metadata_digest(metadata)
    raw = np.frombuffer(json.dumps(metadata).encode(), dtype=np.uint8)
    members["fastem_metadata.npy"] = _npy(raw)
    _write_members(path, members)


def _load_error(path) -> str:
    with pytest.raises(ValueError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.npz")


def test_truncated_file(saved):
    blob = saved.read_bytes()
    for size in (len(blob) // 2, len(blob) - 10, 10, 0):
        saved.write_bytes(blob[:size])
        message = _load_error(saved)
        assert "truncated or corrupt" in message or "not an .npz" in message


def test_flipped_byte_is_detected(saved):
    blob = bytearray(saved.read_bytes())
    offset = blob.find(b"attr.means_.npy") + 200  # inside that member's data
    blob[offset] ^= 0xFF
    saved.write_bytes(bytes(blob))
    _load_error(saved)


def test_tampered_array_fails_its_digest(saved):
    members = _members(saved)
    with np.load(saved, allow_pickle=False) as npz:
        means = npz["attr.means_"].copy()
    means[0, 0] += 1.0
    members["attr.means_.npy"] = _npy(means)  # a valid npy with a valid zip CRC
    _write_members(saved, members)
    assert "attr.means_" in _load_error(saved) and "SHA-256" in _load_error(saved)


def test_tampered_metadata_fails_its_digest(saved):
    def edit(metadata, members):
        metadata["attributes"]["n_iter_"]["value"] = 99

    _rewrite_metadata(saved, edit, redigest=False)
    assert "metadata fails its SHA-256" in _load_error(saved)


@pytest.mark.parametrize("version", [0, 2, 99, "1", None])
def test_wrong_format_version(saved, version):
    def edit(metadata, members):
        metadata["format_version"] = version

    _rewrite_metadata(saved, edit)
    assert "format version" in _load_error(saved)


def test_foreign_npz(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, weights=np.ones(3), means=np.zeros((3, 2)))
    assert "not a fastem model file" in _load_error(path)


def test_foreign_npz_with_a_metadata_member(tmp_path):
    path = tmp_path / "foreign.npz"
    np.savez(path, fastem_metadata=np.frombuffer(b'{"format": "other"}', dtype=np.uint8))
    assert "not a fastem model file" in _load_error(path)


def test_text_file(tmp_path):
    path = tmp_path / "model.txt"
    path.write_text("weights: 1 2 3\n")
    assert "not a fastem model file" in _load_error(path)


def test_pickle_file_is_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "model.npz"
    path.write_bytes(pickle.dumps(Boom()))
    assert "not a fastem model file" in _load_error(path)
    # Also a pickle stored as an object array inside an npz.
    np.savez(path, fastem_metadata=np.array([Boom()], dtype=object))
    _load_error(path)
    assert not (tmp_path / "pwned").exists()


def test_plain_npy_file(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(3))
    assert "not a fastem model file" in _load_error(path)


@pytest.mark.parametrize(
    "section,name",
    [
        ("attributes", "evil_"),
        ("attributes", "fit"),
        ("attributes", "__class__"),
        ("params", "evil"),
    ],
)
def test_unknown_names_are_rejected(saved, section, name):
    def edit(metadata, members):
        metadata[section][name] = {"type": "int", "value": 1}

    _rewrite_metadata(saved, edit)
    assert f"unknown {'fitted attribute' if section == 'attributes' else 'parameter'}" in (
        _load_error(saved)
    )


def test_extra_member_is_rejected(saved):
    members = _members(saved)
    members["extra.npy"] = _npy(np.zeros(2))
    _write_members(saved, members)
    assert "members do not match" in _load_error(saved)


def test_missing_attribute_is_rejected(saved):
    def edit(metadata, members):
        del metadata["attributes"]["n_iter_"]

    _rewrite_metadata(saved, edit)
    assert "missing fitted attributes" in _load_error(saved)


def test_inconsistent_shapes_are_rejected(saved):
    # A consistently re-signed file whose means_ has the wrong shape must fail before any kernel.
    bad = np.zeros((2, 3))

    def edit(metadata, members):
        members["attr.means_.npy"] = _npy(bad)
        metadata["arrays"]["attr.means_"] = {
            "dtype": bad.dtype.str,
            "shape": list(bad.shape),
            "sha256": _array_digest(bad),
        }

    _rewrite_metadata(saved, edit)
    assert "means_ must be an array of shape (3, 3)" in _load_error(saved)


@pytest.mark.parametrize(
    "desc",
    [
        {"type": "pickle", "value": "x"},
        {"type": "int", "value": "3"},
        {"type": "float", "value": "NaNaN"},
        {"type": "ndarray", "array": "attr.weights_"},  # someone else's array
        "plain string",
    ],
)
def test_malformed_values_are_rejected(saved, desc):
    def edit(metadata, members):
        metadata["attributes"]["n_iter_"] = desc

    _rewrite_metadata(saved, edit)
    _load_error(saved)


def test_bad_parameter_value_is_rejected(saved):
    def edit(metadata, members):
        metadata["params"]["covariance_type"]["value"] = "banana"

    _rewrite_metadata(saved, edit)
    assert "covariance_type" in _load_error(saved)


def test_compressed_members_are_rejected(saved):
    members = _members(saved)
    with zipfile.ZipFile(saved, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)
    assert "compressed" in _load_error(saved)


def _header_only_npy(dtype: str, shape: tuple[int, ...], data: bytes = b"") -> bytes:
    """An .npy header claiming ``shape`` followed by ``data`` (typically far too little)."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + data


def _central_entry(blob: bytes, name: str) -> int:
    """Offset of ``name``'s central-directory record in a ZIP file."""
    offset = blob.find(b"PK\x01\x02")
    while offset != -1:
        name_len = int.from_bytes(blob[offset + 28 : offset + 30], "little")
        if blob[offset + 46 : offset + 46 + name_len] == name.encode():
            return offset
        offset = blob.find(b"PK\x01\x02", offset + 4)
    raise AssertionError(f"{name} not in the central directory")


def test_encrypted_member_flag_is_rejected(saved):
    blob = bytearray(saved.read_bytes())
    entry = _central_entry(bytes(blob), "fastem_metadata.npy")
    blob[entry + 8] |= 0x1  # general purpose flag bit 0: "encrypted"
    saved.write_bytes(bytes(blob))
    assert "encrypted" in _load_error(saved)


def test_huge_metadata_shape_is_rejected_before_reading(tmp_path):
    path = tmp_path / "tiny.npz"
    _write_members(path, {"fastem_metadata.npy": _header_only_npy("|u1", (10**13,), b"{}")})
    assert path.stat().st_size < 1000
    assert "fastem_metadata.npy" in _load_error(path)  # a ValueError, not a MemoryError


def test_huge_array_shape_is_rejected_before_reading(saved):
    # A consistently re-signed file whose means_ header and description claim 10**13 rows.
    def edit(metadata, members):
        members["attr.means_.npy"] = _header_only_npy("<f8", (10**13, 3), b"\0" * 24)
        metadata["arrays"]["attr.means_"]["shape"] = [10**13, 3]

    _rewrite_metadata(saved, edit)
    assert "attr.means_.npy" in _load_error(saved) and "data bytes" in _load_error(saved)


def test_member_header_must_match_the_metadata(saved):
    with np.load(saved, allow_pickle=False) as npz:
        means = npz["attr.means_"]
    members = _members(saved)
    members["attr.means_.npy"] = _npy(means.astype(np.float32))  # dtype differs from metadata
    _write_members(saved, members)
    assert "attr.means_.npy" in _load_error(saved)
    members["attr.means_.npy"] = _npy(means.ravel())  # shape differs
    _write_members(saved, members)
    assert "attr.means_.npy" in _load_error(saved)
    members["attr.means_.npy"] = _npy(means) + b"\0" * 8  # bytes beyond the header's shape
    _write_members(saved, members)
    assert "data bytes" in _load_error(saved)


@pytest.mark.parametrize("dtype", ["|O", "|V8", "<c16", "<f3", "<U4", 8])
def test_non_numeric_dtypes_in_the_metadata_are_rejected(saved, dtype):
    def edit(metadata, members):
        metadata["arrays"]["attr.means_"]["dtype"] = dtype

    _rewrite_metadata(saved, edit)
    assert "attr.means_" in _load_error(saved)


def test_member_size_beyond_the_file_is_rejected(saved):
    members = _members(saved)
    _write_members(saved, members)  # plain ZIP records, 32-bit sizes
    blob = bytearray(saved.read_bytes())
    entry = _central_entry(bytes(blob), "attr.means_.npy")
    blob[entry + 20 : entry + 28] = (0x7FFFFFFF).to_bytes(4, "little") * 2  # both sizes
    saved.write_bytes(bytes(blob))
    assert "claims more bytes" in _load_error(saved)


def test_directory_is_rejected(tmp_path, monkeypatch):
    assert "directory" in _load_error(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert "directory" in _load_error(".")


def test_any_flipped_byte_or_truncation_gives_a_value_error(tmp_path, data):
    model = _fit(data, backend="numpy")
    path = tmp_path / "m.npz"
    model.save(path)
    blob = path.read_bytes()
    bad = tmp_path / "bad.npz"
    for offset in range(0, len(blob), 3):
        flipped = bytearray(blob)
        flipped[offset] ^= 0xFF
        for content in (bytes(flipped), blob[:offset]):
            bad.write_bytes(content)
            try:
                loaded = load(bad)
            except ValueError as exc:
                assert "\n" not in str(exc)
            else:  # a byte nothing depends on (a ZIP timestamp, say)
                np.testing.assert_array_equal(loaded.predict_proba(data), model.predict_proba(data))
