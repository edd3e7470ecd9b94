"""partial_fit of a fitted model: a small batch is not a far start (session 13 review)."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES

from fastem import GaussianMixture
from fastem._online import step_size
from fastem.datasets import make_mixture

pytestmark = pytest.mark.filterwarnings("ignore::fastem.exceptions.ConvergenceWarning")


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("reg_covar", [1e-6, 0.0])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_one_row_step_blends_the_rows_responsibilities(backend, covariance_type, reg_covar, dtype):
    """A one-row batch has no spread of its own (variance 0), so the far-start check
    (752d22e) took any row more than ~1e4 sqrt(reg_covar) from a mean for a far start
    and re-ran the batch's E-step at means moved onto the row: the step then blended
    other responsibilities than the row's under the model. Online EM's step blends the
    row's responsibilities at the current parameters into the weights:
    ``w' = (1 - eta) w + eta r(x)``."""
    X = (make_mixture(300, 2, 3, random_state=0)[0] * 100.0).astype(dtype)  # ~100 apart
    rtol = 1e-9 if dtype == np.float64 else 1e-5
    gm = GaussianMixture(
        3, covariance_type=covariance_type, reg_covar=reg_covar, random_state=0,
        backend=backend,
    ).fit(X[:200])  # fmt: skip
    eta = step_size(2, gm.learning_offset, gm.learning_decay)  # the fit is batch 1
    for x in X[200:230]:
        w = gm.weights_.astype(np.float64)
        r = gm.predict_proba(x[None, :])[0].astype(np.float64)
        gm.partial_fit(x[None, :])
        np.testing.assert_allclose(
            gm.weights_, (1 - eta) * w + eta * r, rtol=rtol, atol=rtol * 1e-3
        )
        eta = step_size(gm.n_batches_ + 1, gm.learning_offset, gm.learning_decay)
