"""Claims of the README exercised on small data (helper R6's audit)."""

import pickle
import warnings

import numpy as np
import pytest

import fastem
from fastem.datasets import make_mixture
from fastem.exceptions import NotFittedError
from fastem.impute import GaussianMixtureImputer


def _incomplete(n=300, d=3, k=3, frac=0.1):
    X, _ = make_mixture(n, d, k, random_state=0)
    X[np.random.default_rng(0).random(X.shape) < frac] = np.nan
    return X


@pytest.mark.parametrize("covariance_type", ["full", "VEV"])
def test_imputer_saves_a_model_file(tmp_path, covariance_type):
    # Every estimator kind has a model file: the imputer's is its mixture's,
    # and the loaded mixture imputes as the imputer transforms, bit for bit.
    X = _incomplete()
    imp = GaussianMixtureImputer(
        3, covariance_type=covariance_type, random_state=0, backend="numpy"
    )
    imp.fit(X)
    path = tmp_path / "imputer.npz"
    imp.save(path)
    loaded = fastem.load(path)
    assert np.array_equal(loaded.impute(X), imp.transform(X))
    assert np.array_equal(pickle.loads(pickle.dumps(imp)).transform(X), imp.transform(X))


def test_unfitted_imputer_save_raises(tmp_path):
    with pytest.raises(NotFittedError):
        GaussianMixtureImputer(2).save(tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def _run_cli(capsys, *args: str) -> tuple[int, str]:
    from fastem.cli import main

    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    return code, capsys.readouterr().err


def _refused_and_intact(capsys, path, args) -> None:
    # README: an output that names the command's input exits with status 2 and
    # one 'fastem: error:' line, and the input is left as it was.
    before = path.read_bytes()
    code, err = _run_cli(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastem: error: "), err
    assert "input file itself" in lines[0]
    assert path.read_bytes() == before


@pytest.fixture
def sequences(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    X[:30] += 4.0
    data = tmp_path / "frames.csv"
    np.savetxt(data, X, delimiter=",", header="a,b", comments="")
    lengths = tmp_path / "lengths.csv"
    np.savetxt(lengths, [30, 30], fmt="%d")
    return data, lengths


def test_hmm_fit_refuses_an_output_naming_its_input(tmp_path, capsys, sequences):
    data, lengths = sequences
    base = ["hmm", "fit", "-k", "2", "--backend", "numpy", "--lengths", str(lengths)]
    _refused_and_intact(capsys, data, [*base, str(data), "-o", str(data)])
    _refused_and_intact(capsys, lengths, [*base, str(data), "-o", str(lengths)])


def test_hmm_decode_refuses_an_output_naming_its_input(tmp_path, capsys, sequences):
    data, lengths = sequences
    model = tmp_path / "hmm.npz"
    fit = ["hmm", "fit", str(data), "-k", "2", "--backend", "numpy", "--lengths", str(lengths)]
    assert _run_cli(capsys, *fit, "-o", str(model))[0] == 0
    base = ["hmm", "decode", str(model), str(data), "--lengths", str(lengths)]
    _refused_and_intact(capsys, data, [*base, "-o", str(data)])
    _refused_and_intact(capsys, lengths, [*base, "--proba", "-o", str(lengths)])
    assert _run_cli(capsys, *base, "-o", str(tmp_path / "states.csv"))[0] == 0


def test_impute_refuses_an_output_naming_its_input(tmp_path, capsys):
    X = _incomplete(n=100)
    data = tmp_path / "x.csv"
    np.savetxt(data, X, delimiter=",", header="a,b,c", comments="")
    model = tmp_path / "m.npz"
    fit = ["fit", str(data), "-k", "2", "--backend", "numpy", "--seed", "0", "-q"]
    assert _run_cli(capsys, *fit, "-o", str(model))[0] == 0
    _refused_and_intact(capsys, data, ["impute", str(model), str(data), "-o", str(data)])
    out = tmp_path / "complete.csv"
    assert _run_cli(capsys, "impute", str(model), str(data), "-o", str(out))[0] == 0
    assert out.exists()


def _frame(X, columns="abc"):
    pd = pytest.importorskip("pandas")
    return pd.DataFrame(X, columns=list(columns))


def test_select_model_and_ic_record_a_dataframes_column_names(tmp_path):
    # README (pandas): string column names become feature_names_in_, other names
    # are an error in predict, names on one side a warning; GaussianMixtureIC
    # "behaves as the chosen mixture". Both were fitted without the names.
    X, _ = make_mixture(200, 3, 2, random_state=0)
    df = _frame(X)
    kw = dict(covariance_types=["VVV", "EII"], random_state=0, backend="numpy")
    sel = fastem.select_model(df, [1, 2], **kw)
    assert all(list(m.feature_names_in_) == list("abc") for m in sel.models_.values())
    ic = fastem.GaussianMixtureIC(n_components=[1, 2], **kw).fit(df)
    assert list(ic.feature_names_in_) == list("abc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same names: no warning
        labels = ic.predict(df)
    assert np.array_equal(labels, ic.best_estimator_.predict(df))
    with pytest.raises(ValueError, match="feature names"):
        ic.predict(_frame(X, "zbc"))
    with pytest.warns(UserWarning, match="feature names"):
        ic.predict(X)
    ic.save(tmp_path / "ic.npz")
    assert list(fastem.load(tmp_path / "ic.npz").feature_names_in_) == list("abc")
    ic.fit(X)  # refitted on an array: the names are forgotten
    assert not hasattr(ic, "feature_names_in_")


def test_select_model_reads_nullable_columns_as_missing():
    pd = pytest.importorskip("pandas")
    X = _incomplete(n=150)
    df = pd.DataFrame(X, columns=list("abc")).astype("Float64")
    kw = dict(covariance_types=["VVV"], random_state=0, backend="numpy")
    a = fastem.select_model(df, [2], **kw).best_
    b = fastem.select_model(X, [2], **kw).best_
    assert np.array_equal(a.means_, b.means_)
