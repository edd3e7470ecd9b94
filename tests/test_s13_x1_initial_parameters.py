"""Session 13, X1 item 6: ``fastem.datasets.initial_parameters`` raised KeyError for
mclust model names."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastem import GaussianMixture
from fastem._covariance import MCLUST_MODELS, covariance_shape, layout
from fastem.datasets import initial_parameters, make_mixture
from fastem.exceptions import ConvergenceWarning


@pytest.mark.parametrize("name", [*MCLUST_MODELS, "vve", "Eii"])
def test_initial_parameters_takes_mclust_model_names(name):
    X, _ = make_mixture(200, 3, 2, random_state=0)
    init = initial_parameters(X, 2, name, random_state=1)  # KeyError before
    canonical = name.upper()
    assert init["covariance_type"] == canonical
    assert init["precisions_init"].shape == covariance_shape(canonical, 2, 3)
    assert layout(canonical) in ("diag", "full")
    # the start has the model's structure: fastem's projection leaves it as it is
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(**init, max_iter=0).fit(X)
    np.testing.assert_array_equal(model.means_, init["means_init"])
    np.testing.assert_allclose(model.precisions_, init["precisions_init"], rtol=1e-10)


@pytest.mark.parametrize("name", ["FULL", "bogus", "VVX", None])
def test_initial_parameters_names_what_it_accepts(name):
    X, _ = make_mixture(50, 2, 2, random_state=0)
    with pytest.raises(ValueError, match=r"'full', 'tied', 'diag', 'spherical'.*VVE"):
        initial_parameters(X, 2, name)
