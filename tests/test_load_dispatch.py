"""``fastem.load`` opens every fastem model file; the CLI sends HMM files to ``fastem hmm``."""

from __future__ import annotations

import numpy as np
import pytest

import fastem
from fastem.cli import main
from fastem.hmm import GaussianHMM


@pytest.fixture
def hmm_file(tmp_path):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(40, 2)), rng.normal(size=(40, 2)) + 4.0])
    model = GaussianHMM(2, n_iter=5, random_state=0, backend="numpy").fit(X)
    path = tmp_path / "hmm.npz"
    model.save(path)
    return path, model, X


def test_fastem_load_opens_an_hmm_file(hmm_file):
    path, model, X = hmm_file
    loaded = fastem.load(path)
    assert type(loaded) is GaussianHMM
    assert loaded.score(X) == model.score(X)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    from fastem.hmm._backend import available_hmm_backends

    if "cython" in available_hmm_backends():  # the optional extension was built
        assert fastem.load(path, backend="cython").backend == "cython"


def test_persistence_knows_every_hmm_estimator():
    from fastem.hmm._persistence import HMM_ESTIMATORS
    from fastem.persistence import _HMM_ESTIMATORS

    assert set(_HMM_ESTIMATORS) == set(HMM_ESTIMATORS)


def test_fastem_load_still_refuses_foreign_estimators(hmm_file, tmp_path):
    path, _, _ = hmm_file
    bad = tmp_path / "bad.npz"
    bad.write_bytes(path.read_bytes().replace(b"GaussianHMM", b"GaussianHMX"))
    with pytest.raises(ValueError, match="cannot load"):
        fastem.load(bad)


def test_cli_predict_on_an_hmm_file_is_one_line_error(hmm_file, tmp_path, capsys):
    path, _, X = hmm_file
    data = tmp_path / "x.csv"
    np.savetxt(data, X, delimiter=",")
    assert main(["predict", str(path), str(data), "-o", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hidden Markov model" in err[0] and "fastem hmm" in err[0]
