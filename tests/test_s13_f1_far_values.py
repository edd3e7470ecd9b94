"""Values far from the rest of the data (session 13, F1).

A 'tied' mixture with one row far from the others (a component of its own):
the compiled tied pass centres every row on one point and pools one scatter
``G`` about it, which loses the digits of the within-component scatter in
proportion to the components' spread (2e-6 relative for a row 1e6 sd out, an
ill-defined covariance at 1e10, ``G = inf`` at 1e155+), where the numpy
reference, one shift per component, fits. Such passes now take the
full-covariance kernels with the shared factor broadcast.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastem import GaussianMixture, _passes
from fastem.backends import _tied
from fastem.datasets import make_mixture


def _with_far_row(far: float, d: int = 2, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(40, d))
    X[5, 0] = far
    return X


def _fit(X, backend, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow in k-means++/the far row's density
        return GaussianMixture(
            2, covariance_type="tied", random_state=0, backend=backend, **kw
        ).fit(X)


@pytest.mark.parametrize("far", [1e6, 1e10, 1e100, 1e160, -1e160])
def test_tied_fit_with_a_far_row_is_its_partition(backend, far):
    """The far row is a component of its own (its responsibilities under the other
    are 0 and theirs under it): the fixed point is the partition's M-step, whose
    tied covariance is the scatter of the other 39 rows over all 40 plus reg_covar.
    numba and cython raised 'ill-defined covariance' from 1e10 on (1e8 for cython)
    and were 2e-6 off at 1e6; scikit-learn 1.9 is 5e-5 off at 1e6 and raises at
    1e160 (its X^T X overflows)."""
    X = _with_far_row(far)
    gm = _fit(X, backend)
    rest = np.delete(X, 5, axis=0)
    centred = rest - rest.mean(axis=0)
    expected = centred.T @ centred / X.shape[0] + 1e-6 * np.eye(2)
    np.testing.assert_allclose(gm.covariances_, expected, rtol=1e-12, atol=1e-15)
    labels = gm.predict(X)
    assert np.sum(labels == labels[5]) == 1
    # the model's log-densities: one shift per component there too (the tied
    # kernels' single centre left the near rows' distances at the far row's scale)
    ref = GaussianMixture(2, covariance_type="tied", backend="numpy")
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        setattr(ref, attr, getattr(gm, attr))
    ref.converged_, ref.n_features_in_ = True, 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(gm.score_samples(X), ref.score_samples(X), rtol=1e-12)


@pytest.mark.parametrize("far", [1e10, 1e160])
def test_tied_fit_with_a_far_row_and_missing_values(backend, far):
    """The same with NaN in other rows (the missing-data tied kernels): every
    backend fits as the numpy reference does."""
    X = _with_far_row(far, d=3, seed=1)
    X[::7, 1] = np.nan
    gm = _fit(X, backend)
    ref = _fit(X, "numpy")
    np.testing.assert_allclose(gm.covariances_, ref.covariances_, rtol=1e-10)
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-10)
    assert gm.lower_bound_ == pytest.approx(ref.lower_bound_, rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    exponent=st.integers(5, 300),
    negative=st.booleans(),
    d=st.integers(1, 3),
    seed=st.integers(0, 3),
)
def test_tied_far_row_compiled_equal_the_numpy_reference(exponent, negative, d, seed):
    """Any distance of the far row, any sign and dimension: numba and cython fit
    as the numpy reference (or all raise alike, as where the covariance itself
    overflows)."""
    from fastem.backends import available_backends

    X = _with_far_row((-1.0 if negative else 1.0) * 10.0**exponent, d, seed)
    results = {}
    for name in available_backends():
        try:
            gm = _fit(X, name)
        except ValueError as err:
            results[name] = str(err).split(".")[0]
        else:
            results[name] = (gm.covariances_, gm.means_, gm.lower_bound_)
    ref = results["numpy"]
    for name, got in results.items():
        if isinstance(ref, str):
            assert got == ref, name
            continue
        assert not isinstance(got, str), (name, got)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(got[1], ref[1], rtol=1e-12, err_msg=name)
        assert got[2] == pytest.approx(ref[2], rel=1e-10)


def test_ordinary_tied_fits_keep_the_tied_kernels():
    """Components a few standard deviations apart (and a far start, whose empty
    component the weighted centre ignores) keep the d^2-per-row tied kernels."""
    X = make_mixture(600, 4, 3, random_state=0)[0]
    gm = GaussianMixture(3, covariance_type="tied", random_state=0).fit(X)
    p = _passes.PassParams.from_model(gm.weights_, gm.means_, gm.precisions_cholesky_, "tied",
                                      X.dtype)  # fmt: skip
    assert p.tied_chol is not None
    means = np.array([[0.0] * 4, X.mean(axis=0) + 1e8])
    weights = np.array([1e-12, 1.0 - 1e-12])
    prec = np.eye(4)
    p = _passes.PassParams.from_model(weights, means, prec, "tied", X.dtype)
    assert p.tied_chol is not None
    assert not _tied.means_too_far_apart(means, prec, np.log(weights))
    assert _tied.means_too_far_apart(means, prec, np.log([0.5, 0.5]))
