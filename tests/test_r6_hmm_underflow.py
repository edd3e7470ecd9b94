"""An extrapolated HMM point whose posterior normaliser underflows to 0 gives NaN
on the numba backend, as NumPy does (SQUAREM then rejects the point); the numba
kernel raised ZeroDivisionError where numpy and cython finish the fit (found by R6)."""

import numpy as np
import pytest

from fastem.hmm import GMMHMM


def _fit(backend, lengths):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 2))
    X[::3] += 3
    X[rng.random(X.shape) < 0.05] = np.nan
    model = GMMHMM(3, n_mix=2, init_params="smcw", random_state=0, backend=backend, n_iter=50,
                   acceleration="squarem", stopping="aitken")  # fmt: skip
    model.transmat_ = np.array([[0.7, 0.3, 0.0], [0.0, 0.6, 0.4], [0.2, 0.0, 0.8]])
    return model.fit(X, lengths)


# [100, 200]: an uneven batch runs one sequence at a time (_backward_seq), whose
# normaliser raised too (the session 11 review)
@pytest.mark.parametrize("lengths", [[100, 80, 120], [100, 200]])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_squarem_through_an_underflowed_posterior(backend, lengths):
    if backend == "numba":
        pytest.importorskip("numba")
    model = _fit(backend, lengths)
    assert np.isfinite(model.monitor_.history[-1])
    assert np.all(np.isfinite(model.means_))
    assert np.array_equal(model.transmat_ == 0.0, np.eye(3)[[2, 0, 1]] == 1.0)
