"""GaussianMixture against scikit-learn, a third hunt (session 12, S1)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import initial_parameters

from fastem import GaussianMixture
from fastem.datasets import make_mixture

sklearn_mixture = pytest.importorskip("sklearn.mixture")
SkGaussianMixture = sklearn_mixture.GaussianMixture


@pytest.mark.parametrize("new_k", [2, 5])
def test_predictions_follow_the_fitted_model_after_set_params(backend, new_k):
    """After ``set_params(n_components=...)`` on a fitted model, scikit-learn predicts with
    the fitted parameters. fastem sized its outputs by ``n_components``: numba wrote 3
    columns into 2 (out of bounds) or left 2 of 5 unwritten; cython and numpy raised."""
    X, _ = make_mixture(300, 2, 3, random_state=1)
    kw = dict(initial_parameters(X, 3, "full", seed=2), max_iter=5, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = GaussianMixture(backend=backend, **kw).fit(X)
        theirs = SkGaussianMixture(**kw).fit(X)
    before = {m: getattr(ours, m)(X) for m in ("predict_proba", "score_samples", "impute")}
    ours.set_params(n_components=new_k)
    theirs.set_params(n_components=new_k)
    proba = ours.predict_proba(X)
    assert proba.shape == theirs.predict_proba(X).shape == (300, 3)
    np.testing.assert_allclose(proba, theirs.predict_proba(X), rtol=1e-7, atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    for method, value in before.items():
        np.testing.assert_array_equal(getattr(ours, method)(X), value)
    # the criteria count the fitted model's parameters (scikit-learn's count follows
    # n_components: a deliberate difference, docs/sklearn_suite.md)
    assert ours._n_parameters() == 3 * 2 + 3 * 3 + 2
