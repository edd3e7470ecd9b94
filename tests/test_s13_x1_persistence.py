"""Session 13, X1 item 2: ``load`` checked the fitted arrays against ``n_components``, so
a model saved after ``set_params(n_components=...)`` did not load (the fitted width is
``weights_``'s)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastem import GaussianMixture, load
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning


def _fitted(backend, covariance_type="full", k=3, n=300, d=2):
    X, _ = make_mixture(n, d, k, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(k, covariance_type=covariance_type, random_state=0)
        return X, model.set_params(backend=backend).fit(X)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied", "VVE", "EEI"])
@pytest.mark.parametrize("new_k", [1, 2, 5])
def test_a_model_saved_after_set_params_loads(backend, covariance_type, new_k, tmp_path):
    X, model = _fitted(backend, covariance_type)
    expected = model.predict_proba(X)
    model.set_params(n_components=new_k)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = load(path)  # 'weights_ must be an array of shape (new_k,)' before
    assert loaded.n_components == new_k
    assert loaded.weights_.shape == (3,)
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)


def test_a_partial_fit_state_saved_after_set_params_loads(backend, tmp_path):
    X, _ = make_mixture(300, 2, 3, random_state=0)
    model = GaussianMixture(3, random_state=0, backend=backend).partial_fit(X)
    model.set_params(n_components=4)
    model.save(tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.sufficient_stats_sx_, model.sufficient_stats_sx_)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_load_still_refuses_fitted_arrays_that_disagree(tmp_path):
    X, model = _fitted(None)
    model.means_ = model.means_[:2]  # the fitted width is weights_'s (3)
    model.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"means_ must be an array of shape \(3, 2\)"):
        load(tmp_path / "m.npz")
