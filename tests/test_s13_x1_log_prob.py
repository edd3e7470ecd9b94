"""Session 13, X1 item 3: ``_passes.log_prob`` wrote past a too-narrow ``out`` on numba
(heap corruption) and left a too-wide one partly unwritten; it now raises ValueError."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from fastem import GaussianMixture, backends
from fastem._passes import log_prob
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning


def _fitted(backend, covariance_type="full", k=3, n=300, d=2):
    X, _ = make_mixture(n, d, k, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = GaussianMixture(k, covariance_type=covariance_type, random_state=0)
        return X, model.set_params(backend=backend).fit(X)


def _wrong_shapes(n, k):
    return [(n, k + 1), (n + 1, k), (n, k + 2)]


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical", "VVE", "EEI"])
@pytest.mark.parametrize("with_nan", [False, True])
def test_log_prob_refuses_an_out_of_another_shape(backend, covariance_type, with_nan):
    X, model = _fitted(backend, covariance_type)
    if with_nan:
        X = X.copy()
        X[::5, 0] = np.nan
    kernels = backends.get_backend(backend)
    params = model._pass_params(X.dtype)
    for shape in _wrong_shapes(*X.shape[:1], 3):  # wider or taller: left unwritten before
        out = np.zeros(shape)
        with pytest.raises(ValueError, match=r"out has shape .*expected \(300, 3\)"):
            log_prob(kernels, X, params, out)
    with pytest.raises(ValueError, match="X has shape"):
        log_prob(kernels, np.ascontiguousarray(X[:, :1]), params, np.zeros((300, 3)))
    out = np.zeros((300, 3))
    log_prob(kernels, X, params, out)  # the right shape still works
    assert np.isfinite(out).all()


@pytest.mark.parametrize("shape", [(300, 2), (299, 3), (300, 1)])
def test_log_prob_refuses_a_narrow_out_without_writing_past_it(backend, shape):
    """A too-narrow ``out`` crashed the numba backend (heap corruption, 'double free');
    run in a child so a regression fails this test, not the session."""
    code = f"""
import numpy as np
from fastem import GaussianMixture, backends
from fastem._passes import log_prob
from fastem.datasets import make_mixture
X, _ = make_mixture(300, 2, 3, random_state=0)
for ct in ("full", "tied", "diag"):
    gm = GaussianMixture(3, covariance_type=ct, random_state=0, backend={backend!r}).fit(X)
    params = gm._pass_params(X.dtype)
    for Xi in (X, np.where(np.arange(X.size).reshape(X.shape) % 7 == 0, np.nan, X)):
        for _ in range(20):
            try:
                log_prob(backends.get_backend({backend!r}), Xi, params, np.empty({shape!r}))
            except ValueError as exc:
                assert "out has shape" in str(exc), exc
            else:
                raise SystemExit("no error")
print("refused")
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "refused" in res.stdout, res.stdout + res.stderr
