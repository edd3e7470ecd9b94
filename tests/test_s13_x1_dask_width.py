"""Session 13, X1 item 1: Dask predictions after ``set_params(n_components=...)`` on a
fitted model declared the new width, not the fitted one (the in-memory path follows the
fitted model since 095a9b4): wrong shape metadata, and a ``could not broadcast`` error
once an empty chunk (a filtered array) produced its declared width."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastem import GaussianMixture
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning

try:
    import dask
    import dask.array as da
except ImportError:
    da = None

needs_dask = pytest.mark.skipif(da is None, reason="dask is not installed")


def _fitted(backend, covariance_type="full", k=3, n=300, d=2):
    X, _ = make_mixture(n, d, k, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(k, covariance_type=covariance_type, random_state=0)
        return X, model.set_params(backend=backend).fit(X)


@needs_dask
@pytest.mark.parametrize("new_k", [2, 5])
def test_dask_predictions_follow_the_fitted_model_after_set_params(backend, new_k):
    X, model = _fitted(backend)
    expected = model.predict_proba(X)
    model.set_params(n_components=new_k)
    dX = da.from_array(X, chunks=(100, -1))
    # an empty chunk first (a filtered array has them): its result has the fitted width too
    dX = da.concatenate([dX[dX[:, 0] > np.inf], dX])
    with dask.config.set(scheduler="synchronous"):
        proba = model.predict_proba(dX)
        assert proba.shape[1] == expected.shape[1]  # rows: unknown after the filter
        assert proba.chunks[1] == (expected.shape[1],)
        got = proba.compute()  # raised 'could not broadcast' with the empty chunk
        np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(proba[:, -1].compute(), expected[:, -1])
        np.testing.assert_array_equal(model.predict(dX).compute(), model.predict(X))
        np.testing.assert_array_equal(model.score_samples(dX).compute(), model.score_samples(X))
