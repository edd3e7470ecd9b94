"""Session 12, D1: the command, model files and out-of-core/Dask fits against the
in-memory Python API with the same parameters (regressions found by a parity hunt)."""

from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pytest

import fastem
from fastem import GaussianMixture
from fastem._io import read_data
from fastem.cli import FIT_DEFAULTS, main
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning

ATTRS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
NUMPY = ("--backend", "numpy")


def _main(capsys, *args: str) -> subprocess.CompletedProcess:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors and --help
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def _api_fit(X, k, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(k, random_state=0, backend="numpy", **FIT_DEFAULTS, **params).fit(X)


@pytest.fixture(scope="module")
def X32():
    X, _ = make_mixture(300, 2, 2, random_state=0)
    X = X.astype(np.float32)
    X[::17, 1] = np.nan  # missing values too: impute has work to do
    return X


# --------------------------------------------------- float32 files: fitted in float32
def test_float32_npy_is_fitted_predicted_and_imputed_as_the_api_does(tmp_path, capsys, X32):
    # The command read every file as float64: a float32 .npy was fitted in float64,
    # while GaussianMixture().fit(np.load(path)) fits it in float32 (other model,
    # other n_iter_). Now the model, probabilities and imputed values are the API's bits.
    data = tmp_path / "x.npy"
    np.save(data, X32)
    model = tmp_path / "m.npz"
    assert (
        _main(capsys, "fit", str(data), "-k", "2", "-o", str(model), "-q", *NUMPY).returncode == 0
    )
    ref = _api_fit(np.load(data), 2)
    got = fastem.load(model)
    for name in ATTRS:
        a, b = getattr(ref, name), getattr(got, name)
        assert b.dtype == a.dtype == np.float32, name
        np.testing.assert_array_equal(b, a, err_msg=name)
    assert got.n_iter_ == ref.n_iter_
    proba = tmp_path / "p.npy"
    assert (
        _main(
            capsys, "predict", str(model), str(data), "-o", str(proba), "--proba", "-q"
        ).returncode
        == 0
    )
    np.testing.assert_array_equal(np.load(proba), ref.predict_proba(X32))
    assert np.load(proba).dtype == np.float32
    filled = tmp_path / "i.npy"
    assert _main(capsys, "impute", str(model), str(data), "-o", str(filled), "-q").returncode == 0
    np.testing.assert_array_equal(np.load(filled), ref.impute(X32))


def test_float32_parquet_is_fitted_as_its_dataframe(tmp_path, capsys, X32):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    data = tmp_path / "x.parquet"
    pd.DataFrame(X32, columns=["a", "b"]).to_parquet(data)
    model = tmp_path / "m.npz"
    assert (
        _main(capsys, "fit", str(data), "-k", "2", "-o", str(model), "-q", *NUMPY).returncode == 0
    )
    ref = _api_fit(pd.read_parquet(data), 2)
    got = fastem.load(model)
    for name in ATTRS:
        np.testing.assert_array_equal(getattr(got, name), getattr(ref, name), err_msg=name)
        assert getattr(got, name).dtype == np.float32
    assert list(got.feature_names_in_) == ["a", "b"]


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (np.float32, np.float32),
        (np.dtype(">f4"), np.float64),  # check_array casts big-endian float32 to float64
        (np.float16, np.float64),
        (np.int32, np.float64),
        (np.float64, np.float64),
    ],
)
def test_read_npy_keeps_what_the_api_fits(tmp_path, dtype, expected):
    np.save(tmp_path / "a.npy", np.arange(6).reshape(3, 2).astype(dtype))
    X, _ = read_data(tmp_path / "a.npy")
    assert X.dtype == expected and X.dtype.isnative
    ref = GaussianMixture(1, backend="numpy").fit(np.load(tmp_path / "a.npy"))
    assert ref.means_.dtype == expected


def test_read_parquet_float32_only_when_every_column_is(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"a": np.arange(3, dtype=np.float32), "b": [1.0, None, 3.0]})
    frame["b"] = frame["b"].astype(np.float32)
    frame.to_parquet(tmp_path / "f.parquet")
    X, _ = read_data(tmp_path / "f.parquet")
    assert X.dtype == np.float32 and np.isnan(X[1, 1])
    frame["c"] = np.arange(3)  # an integer column: the frame fits in float64
    frame.to_parquet(tmp_path / "g.parquet")
    assert read_data(tmp_path / "g.parquet")[0].dtype == np.float64


# --------------------------------------------------- demo: errors point at its own help
@pytest.mark.parametrize(
    "args, fragment",
    [
        (("--n-features", "0"), "--n-features must be at least 1"),
        (("--n-samples", "3", "--n-components", "5"), "--n-samples must be at least"),
    ],
)
def test_demo_errors_name_the_demo_help(capsys, args, fragment):
    # They said "(see 'fastem --help')", whose text has no demo option.
    result = _main(capsys, "demo", *args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastem: error: ")
    assert fragment in lines[0] and "(see 'fastem demo --help')" in lines[0]


def test_every_demo_option_is_described_with_its_default(capsys):
    result = _main(capsys, "demo", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for option, default in [
        ("--n-samples N_SAMPLES", "100000"),
        ("--n-features N_FEATURES", "2"),
        ("--n-components N_COMPONENTS", "5"),
        ("--covariance COVARIANCE", "full"),
        ("--seed SEED", "0"),
    ]:
        after = text.split(option + " ", 2)[-1]  # the options list, not the usage line
        assert after.split(" --")[0].endswith(f"(default {default})"), (option, after[:80])
