"""``fastem select --hc-use`` (task X2): select_model's ``hc_use`` on the command line."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import fastem
from fastem._hc import HC_TRANSFORMS
from fastem.cli import HC_USE, main
from fastem.datasets import make_mixture

NUMPY = ("--backend", "numpy")


def _main(capsys, *args: str) -> subprocess.CompletedProcess:
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's usage errors and --help
        code = exc.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    X = make_mixture(240, 2, 3, random_state=0)[0]
    path = tmp_path_factory.mktemp("x2") / "x.csv"
    np.savetxt(path, X, delimiter=",", header="a,b", comments="")
    return str(path), X


@pytest.fixture
def spy(monkeypatch):
    seen = []
    real = fastem.select_model

    def record(*args, **kwargs):
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(fastem, "select_model", record)
    return seen


def test_the_choices_are_the_librarys():
    assert sorted(HC_USE) == sorted(HC_TRANSFORMS)


@pytest.mark.parametrize("given,expected", [("VARS", "VARS"), ("std", "STD"), ("Svd", "SVD")])
def test_hc_use_reaches_select_model_and_its_table(capsys, data, spy, given, expected):
    path, X = data
    args = ("select", path, "--k", "1-3", "--covariance", "VVV,EII", "--init", "hc", *NUMPY)
    result = _main(capsys, *args, "--hc-use", given)
    assert result.returncode == 0, result.stderr
    assert spy[-1]["hc_use"] == expected
    # the printed grid is the library's for that tree
    ref = fastem.selection.select_model(
        X, n_components=[1, 2, 3], covariance_types="VVV,EII".split(","), init_params="hc",
        hc_use=expected, backend="numpy", **fastem.selection.DEFAULT_FIT_SETTINGS,
    )  # fmt: skip
    assert ref.to_text() in result.stdout


def test_without_hc_use_select_model_keeps_its_default(capsys, data, spy):
    result = _main(capsys, "select", data[0], "--k", "1-2", "--covariance", "EII", *NUMPY)
    assert result.returncode == 0, result.stderr
    assert "hc_use" not in spy[-1]


def test_hc_use_without_an_hc_start_and_unknown_values_are_refused(capsys, data, spy):
    result = _main(capsys, "select", data[0], "--k", "1-2", "--init", "kmeans",
                   "--hc-use", "VARS", *NUMPY)  # fmt: skip
    assert result.returncode == 2 and "--hc-use applies to hc starts" in result.stderr
    result = _main(capsys, "select", data[0], "--hc-use", "foo", *NUMPY)
    assert result.returncode == 2 and "--hc-use" in result.stderr
    assert not spy  # neither reached the library


def test_help_lists_hc_use(capsys):
    result = _main(capsys, "select", "--help")
    assert result.returncode == 0 and "--hc-use {SVD,VARS,STD}" in result.stdout
