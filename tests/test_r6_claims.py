"""Claims of the README exercised on small data (helper R6's audit)."""

import pickle

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
