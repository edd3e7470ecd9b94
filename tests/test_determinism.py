"""Same data and seed give a bit-identical model on 1 thread and on 2."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES

from fastem import GaussianMixture
from fastem.backends import available_backends
from fastem.datasets import make_mixture

COMPILED = [b for b in available_backends() if b != "numpy"]


@pytest.mark.skipif(not COMPILED, reason="no compiled backend is available")
@pytest.mark.parametrize("backend", COMPILED)
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bit_identical_across_thread_counts(backend, covariance_type, dtype):
    X, _ = make_mixture(30_000, 4, 5, random_state=3, dtype=dtype)
    models = []
    for n_threads in (1, 2):
        gm = GaussianMixture(
            5,
            covariance_type=covariance_type,
            random_state=0,
            n_init=2,
            backend=backend,
            n_threads=n_threads,
        )
        models.append(gm.fit(X))
        models[-1].proba_ = gm.predict_proba(X[:2000])
    a, b = models
    assert a.n_iter_ == b.n_iter_
    assert a.lower_bounds_ == b.lower_bounds_
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_", "proba_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr), err_msg=attr)
