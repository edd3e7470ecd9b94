"""scikit-learn's estimator contract (runs only where scikit-learn is installed)."""

from __future__ import annotations

import pytest

from fastem import GaussianMixture

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402


@parametrize_with_checks([GaussianMixture(backend="numpy"), GaussianMixture()])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_clone_keeps_parameters():
    gm = GaussianMixture(3, covariance_type="diag", backend="numpy", random_state=4)
    assert clone(gm).get_params() == gm.get_params()
