"""GaussianMixture with mclust's 14 covariance models (issue #16): names, aliases bit
for bit, structure of the fitted covariances, monotone EM, every data path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastem import GaussianMixture
from fastem import _mclust as mc
from fastem._covariance import (
    COVARIANCE_TYPES,
    MCLUST_MODELS,
    SKLEARN_ALIASES,
    check_covariance_type,
    n_parameters,
)
from fastem.datasets import make_mixture

K, D = 3, 3


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    X, _ = make_mixture(600, D, K, random_state=3)
    return X


def fit(X, model, **params):
    params.setdefault("random_state", 0)
    params.setdefault("max_iter", 30)
    params.setdefault("tol", 1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return GaussianMixture(K, covariance_type=model, **params).fit(X)


# ---------------------------------------------------------------- names
def test_names_are_canonical_and_the_four_sklearn_names_stay():
    assert COVARIANCE_TYPES == ("full", "tied", "diag", "spherical")  # fastem.hmm relies on it
    assert MCLUST_MODELS == mc.MODEL_NAMES and len(MCLUST_MODELS) == 14
    for name in MCLUST_MODELS:
        assert check_covariance_type(name.lower()) == name
        assert check_covariance_type(name.capitalize()) == name
    for name in COVARIANCE_TYPES:
        assert check_covariance_type(name) == name
    for bad in ("FULL", "EIE", "", None, 3, "vvv "):
        with pytest.raises(ValueError, match="covariance_type"):
            check_covariance_type(bad)


def test_invalid_name_is_refused_by_fit(data):
    with pytest.raises(ValueError, match="mclust model name"):
        GaussianMixture(2, covariance_type="XYZ").fit(data)


def test_hmm_still_refuses_mclust_names():
    from fastem.hmm import GaussianHMM

    with pytest.raises(ValueError, match="covariance_type"):
        GaussianHMM(2, covariance_type="EEE").fit(np.random.default_rng(0).normal(size=(50, 2)))


@pytest.mark.parametrize("alias", COVARIANCE_TYPES)
def test_aliases_fit_bit_for_bit(data, alias):
    model = SKLEARN_ALIASES[alias]
    a, b = fit(data, alias), fit(data, model.lower())
    assert a.lower_bounds_ == b.lower_bounds_ and a.n_iter_ == b.n_iter_
    np.testing.assert_array_equal(a.weights_, b.weights_)
    np.testing.assert_array_equal(a.means_, b.means_)
    cov, pc = b.covariances_, b.precisions_cholesky_
    if alias == "tied":
        assert cov.shape == (K, D, D) and (cov == cov[0]).all()
        cov, pc = cov[0], pc[0]
    elif alias == "spherical":
        assert cov.shape == (K, D) and (cov == cov[:, :1]).all()
        cov, pc = cov[:, 0], pc[:, 0]
    np.testing.assert_array_equal(a.covariances_, cov)
    np.testing.assert_array_equal(a.precisions_cholesky_, pc)
    assert a.bic(data) == pytest.approx(b.bic(data), rel=1e-12)
    assert a._n_parameters() == b._n_parameters()
    # the aliases keep scikit-learn's attribute set
    assert not hasattr(a, "orientation_") and hasattr(b, "orientation_")


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_every_model_fits_with_mclust_counts(data, model):
    gm = fit(data, model)
    shape = (K, D) if model in mc.DIAGONAL_MODELS else (K, D, D)
    assert gm.covariances_.shape == gm.precisions_cholesky_.shape == shape
    assert gm.precisions_.shape == shape
    assert gm._n_parameters() == mc.n_parameters(model, K, D) == n_parameters(model, K, D)
    n = data.shape[0]
    ll = gm.score(data) * n
    assert gm.bic(data) == pytest.approx(-2 * ll + gm._n_parameters() * np.log(n), rel=1e-10)
    assert gm.aic(data) == pytest.approx(-2 * ll + 2 * gm._n_parameters(), rel=1e-10)
    assert np.isfinite(gm.score_samples(data)).all()
    proba = gm.predict_proba(data)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    X, y = gm.sample(50)
    assert X.shape == (50, D) and y.shape == (50,)
