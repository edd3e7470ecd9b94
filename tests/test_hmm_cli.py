"""``fastem hmm fit|decode|sample``: driven through fastem.cli.main, plus one subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from fastem._io import read_data
from fastem.cli import main
from fastem.hmm import CategoricalHMM, GaussianHMM, load

NUMPY = ("--backend", "numpy")  # no compilation in the CLI tests
LENGTHS = [80, 1, 69]


def _main(capsys, *args: str) -> subprocess.CompletedProcess:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def _error(result) -> str:
    """The one error line of a failed command (exit status 2)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastem: error: "), result.stderr
    return lines[0]


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(sum(LENGTHS), 2))
    X[:40] += 4.0
    seq = np.repeat(np.arange(len(LENGTHS)) + 10, LENGTHS)
    path = tmp_path / "d.csv"
    np.savetxt(path, np.c_[X[:, :1], seq, X[:, 1:]], delimiter=",", header="a,seq,b", comments="")
    lengths = tmp_path / "lengths.csv"
    np.savetxt(lengths, LENGTHS, fmt="%d")
    np.save(tmp_path / "x.npy", X)
    return X, path, lengths


def test_fit_with_sequence_column_equals_the_library(tmp_path, capsys, data):
    X, path, _ = data
    model_path = tmp_path / "m.npz"
    r = _main(capsys, "hmm", "fit", str(path), "-k", "2", "-o", str(model_path),
              "--sequence-column", "seq", "--covariance", "full", "--seed", "3",
              *NUMPY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "2-state GaussianHMM" in r.stdout and "3 sequence(s)" in r.stdout
    fitted = load(model_path)
    ref = GaussianHMM(2, covariance_type="full", n_iter=100, random_state=3, backend="numpy")
    ref.fit(X, LENGTHS)
    np.testing.assert_array_equal(fitted.transmat_, ref.transmat_)
    np.testing.assert_array_equal(fitted.means_, ref.means_)


def test_lengths_file_and_column_index_agree(tmp_path, capsys, data):
    X, path, lengths = data
    np.savetxt(tmp_path / "x.csv", X, delimiter=",")
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert _main(capsys, "hmm", "fit", str(tmp_path / "x.csv"), "-k", "2", "-o", str(a),
                 "--lengths", str(lengths), "-q", *NUMPY).returncode == 0  # fmt: skip
    assert _main(capsys, "hmm", "fit", str(path), "-k", "2", "-o", str(b),
                 "--sequence-column", "1", "-q", *NUMPY).returncode == 0  # fmt: skip
    assert a.read_bytes() == b.read_bytes()


def test_decode_writes_states_and_posteriors(tmp_path, capsys, data):
    X, path, lengths = data
    model_path = tmp_path / "m.npz"
    GaussianHMM(2, n_iter=5, random_state=0, backend="numpy").fit(X, LENGTHS).save(model_path)
    model = load(model_path)
    out = tmp_path / "states.csv"
    r = _main(capsys, "hmm", "decode", str(model_path), str(tmp_path / "x.npy"),
              "--lengths", str(lengths), "-o", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr
    states, columns = read_data(out)
    assert columns == ["state"]
    np.testing.assert_array_equal(states[:, 0], model.predict(X, LENGTHS))
    # --proba to stdout, with the sequence column; --filtered gives the causal ones.
    for flags, expected in [((), model.predict_proba), (("--filtered",), None)]:
        r = _main(capsys, "hmm", "decode", str(model_path), str(path), "--sequence-column",
                  "seq", "--proba", *flags, "-o", "-", "--algorithm", "map")  # fmt: skip
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert lines[0] == "state,proba_0,proba_1" and len(lines) == 1 + X.shape[0]
        table = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
        want = (expected or model.predict_filtered_proba)(X, LENGTHS)
        np.testing.assert_allclose(table[:, 1:], want, rtol=1e-15)
        if not flags:
            np.testing.assert_array_equal(table[:, 0], want.argmax(axis=1))
        assert "Decoded" in r.stderr  # the summary goes to stderr when data is on stdout


def test_sample_round_trips_through_fit(tmp_path, capsys, data):
    X, _, _ = data
    model_path = tmp_path / "m.npz"
    GaussianHMM(2, n_iter=5, random_state=0, backend="numpy").fit(X, LENGTHS).save(model_path)
    out = tmp_path / "s.csv"
    r = _main(capsys, "hmm", "sample", str(model_path), "-n", "30", "--n-sequences", "3",
              "--states", "-o", str(out), "--seed", "5")  # fmt: skip
    assert r.returncode == 0, r.stderr
    table, columns = read_data(out)
    assert columns == ["sequence", "x0", "x1", "state"] and table.shape == (90, 4)
    np.testing.assert_array_equal(table[:, 0], np.repeat([0, 1, 2], 30))
    rs = np.random.RandomState(5)
    first, states = load(model_path).sample(30, random_state=rs)
    np.testing.assert_array_equal(table[:30, 1:3], first)
    np.testing.assert_array_equal(table[:30, 3], states)
    # The sample file feeds `fit` back through its sequence column.
    r = _main(capsys, "hmm", "fit", str(out), "-k", "2", "-o", str(tmp_path / "m2.npz"),
              "--sequence-column", "sequence", "-q", *NUMPY)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_categorical_and_poisson(tmp_path, capsys):
    rng = np.random.default_rng(1)
    symbols = rng.integers(0, 3, size=(120, 1))
    np.savetxt(tmp_path / "c.csv", symbols, fmt="%d", header="sym", comments="")
    r = _main(capsys, "hmm", "fit", str(tmp_path / "c.csv"), "-k", "2", "--kind",
              "categorical", "-o", str(tmp_path / "c.npz"), "-q", *NUMPY)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert isinstance(load(tmp_path / "c.npz"), CategoricalHMM)
    r = _main(capsys, "hmm", "sample", str(tmp_path / "c.npz"), "-n", "4", "-o", "-")
    assert r.stdout.splitlines()[0] == "x0" and all(
        line in ("0", "1", "2") for line in r.stdout.splitlines()[1:]
    )
    counts = rng.poisson(3.0, size=(100, 2))
    np.save(tmp_path / "p.npy", counts)
    r = _main(capsys, "hmm", "fit", str(tmp_path / "p.npy"), "-k", "2", "--kind", "poisson",
              "-o", str(tmp_path / "p.npz"), "--acceleration", "squarem", "-q", *NUMPY)  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, data):
    X, path, lengths = data
    model_path = tmp_path / "m.npz"
    GaussianHMM(2, n_iter=2, random_state=0, backend="numpy").fit(X, LENGTHS).save(model_path)
    bad_lengths = tmp_path / "bad.csv"
    np.savetxt(bad_lengths, [10, 20], fmt="%d")
    shuffled = tmp_path / "shuffled.csv"
    np.savetxt(shuffled, np.c_[[1, 2, 1], np.ones((3, 1))], delimiter=",")
    fit = ("hmm", "fit", str(path), "-k", "2", "-o", str(tmp_path / "o.npz"), *NUMPY)
    cases = [
        ((*fit, "--sequence-column", "nope"), "no column named 'nope'"),
        ((*fit, "--sequence-column", "7"), "out of range"),
        ((*fit, "--lengths", str(bad_lengths)), "sum to 30"),
        ((*fit, "--lengths", str(path)), "one column"),
        ((*fit, "--lengths", str(tmp_path / "missing.csv")), "no such file"),
        ((*fit, "--kind", "poisson"), "whole numbers"),
        (
            (
                "hmm",
                "fit",
                str(shuffled),
                "-k",
                "1",
                "-o",
                str(tmp_path / "o.npz"),
                "--sequence-column",
                "0",
            ),
            "not consecutive",
        ),  # fmt: skip
        (("hmm", "fit", str(path), "-k", "999", "-o", str(tmp_path / "o.npz")), "more states"),
        (("hmm", "decode", str(path), str(path), "-o", "-"), "cannot load"),
        (("hmm", "decode", str(tmp_path / "none.npz"), str(path)), "no such model file"),
        (("hmm", "decode", str(model_path), str(path), "-o", "-"), "fitted on 2 feature"),
        (("hmm", "decode", str(model_path), str(path), "--filtered"), "--filtered goes with"),
        (("hmm", "sample", str(model_path), "-n", "3", "-o", "x.txt"), "cannot tell the format"),
        (("hmm", "fit", str(path), "-k", "2", "-o", "-"), "cannot go to stdout"),
    ]
    for args, message in cases:
        line = _error(_main(capsys, *args))
        assert message in line, (args, line)
    assert not (tmp_path / "o.npz").exists()
    # Usage errors are argparse's, in the same one-line format.
    assert "--kind" in _error(_main(capsys, *fit, "--kind", "weird"))
    assert "not allowed with" in _error(
        _main(capsys, *fit, "--lengths", str(lengths), "--sequence-column", "seq")
    )


def test_subprocess_round_trip(tmp_path, data):
    """The installed entry point end to end: fit, decode to stdout, a bad file."""
    X, path, _ = data
    env = {k: v for k, v in os.environ.items() if k != "FASTEM_TRACEBACK"}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "fastem", "hmm", *args], capture_output=True,
                              text=True, timeout=300, cwd=tmp_path, env=env)  # fmt: skip

    r = run("fit", str(path), "-k", "2", "-o", "m.npz", "--sequence-column", "seq", *NUMPY)
    assert r.returncode == 0, r.stderr
    r = run("decode", "m.npz", str(path), "--sequence-column", "seq", "-q")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.splitlines()[0] == "state" and len(r.stdout.splitlines()) == 1 + len(X)
    r = run("decode", str(path), str(path))
    assert r.returncode == 2 and r.stderr.startswith("fastem: error: cannot load")
    assert len(r.stderr.strip().splitlines()) == 1


def test_help_lists_the_hmm_commands(capsys):
    r = _main(capsys, "--help")
    assert r.returncode == 0 and "hmm" in r.stdout
    r = _main(capsys, "hmm", "--help")
    assert r.returncode == 0 and all(c in r.stdout for c in ("fit", "decode", "sample"))
    r = _main(capsys, "hmm", "fit", "--help")
    assert r.returncode == 0 and "--sequence-column" in r.stdout and "--lengths" in r.stdout
    assert "HMM_COMMAND" in _error(_main(capsys, "hmm"))
