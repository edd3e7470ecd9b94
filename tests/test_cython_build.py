"""What is specific to the compiled Cython/OpenMP extension.

Kernel parity with the NumPy reference lives in test_kernels.py (parameterized
over every compiled backend); here: the extension is built and importable, it
has OpenMP, its thread control works, its results do not depend on the number
of threads, and its vectorized ``exp`` is accurate.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

try:
    from fastem.backends import _cython as cy
except ImportError as exc:  # built without a compiler/Cython: fastem runs on numba/numpy
    if os.environ.get("FASTEM_REQUIRE_CYTHON"):
        raise
    pytest.skip(
        f"Cython extension fastem.backends._cython not built ({exc}); "
        "install with a C compiler (pip install -e .) to test it",
        allow_module_level=True,
    )

from fastem.backends import KERNEL_NAMES, available_backends


def test_extension_is_a_backend():
    assert "cython" in available_backends()
    for name in KERNEL_NAMES:
        assert callable(getattr(cy, name))


def test_openmp_enabled():
    if os.environ.get("FASTEM_NO_OPENMP"):
        assert not cy.openmp_enabled()
        assert cy.get_num_threads() == 1
    else:  # gcc on the project's machines supports OpenMP
        assert cy.openmp_enabled()


def test_thread_control_round_trips(restore_cython_threads):
    if not cy.openmp_enabled():
        pytest.skip("built without OpenMP: always one thread")
    for n in (1, 3, 2):
        cy.set_num_threads(n)
        assert cy.get_num_threads() == n
    with pytest.raises(ValueError, match="threads"):
        cy.set_num_threads(0)


def _params(rng, k, d, dtype, full):
    means = rng.normal(size=(k, d)).astype(dtype)
    if full:
        a = rng.normal(size=(k, d, d))
        prec_chol = np.triu(a) + 3.0 * np.eye(d)  # upper triangular, positive diagonal
    else:
        prec_chol = rng.uniform(0.5, 2.0, size=(k, d))
    comp_const = rng.normal(size=k)
    return means, np.ascontiguousarray(prec_chol, dtype=dtype), comp_const


def _run_all(X, sw, means, prec_chol, comp_const, full):
    n, d = X.shape
    k = means.shape[0]
    nk, sx = np.empty(k), np.empty((k, d))
    sxx = np.empty((k, d, d) if full else (k, d))
    em = cy.em_pass_full if full else cy.em_pass_diag
    ll = em(X, sw, means, prec_chol, comp_const, nk, sx, sxx)
    lp = np.empty((n, k))
    (cy.log_prob_full if full else cy.log_prob_diag)(X, means, prec_chol, comp_const, lp)
    sums, counts, labels = np.empty((k, d)), np.empty(k), np.empty(n, dtype=np.int64)
    inertia = cy.kmeans_pass(X, sw, means, sums, counts, labels)
    return [np.array(ll), nk, sx, sxx, lp, np.array(inertia), sums, counts, labels]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("full", [True, False], ids=["full", "diag"])
@pytest.mark.parametrize("n", [1, 1000, 50_001])
def test_bit_identical_across_thread_counts(restore_cython_threads, dtype, full, n):
    if not cy.openmp_enabled():
        pytest.skip("built without OpenMP: always one thread")
    rng = np.random.default_rng(n)
    d, k = 7, 5
    X = rng.normal(size=(n, d)).astype(dtype)
    sw = rng.uniform(0.0, 2.0, size=n)
    params = _params(rng, k, d, dtype, full)
    results = []
    for threads in (1, 2, 3):
        cy.set_num_threads(threads)
        results.append(_run_all(X, sw, *params, full))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)  # bitwise, not approximately


def test_exp_matches_numpy():
    x = np.concatenate(
        [
            -np.logspace(-12, np.log10(708.0), 20_000),
            np.linspace(-708.0, 0.0, 20_001),
            [0.0, -0.0, -1e-300, -np.log(2.0) / 2],
        ]
    )
    got, want = cy._exp_nonpos(x), np.exp(x)
    ulp = np.abs(got - want) / np.spacing(want)
    assert ulp.max() <= 2.0
    assert got[x == 0.0].tolist() == [1.0] * int((x == 0.0).sum())


def test_exp_underflows_to_zero():
    x = np.array([-708.5, -745.2, -1e5, -np.inf])
    np.testing.assert_array_equal(cy._exp_nonpos(x), 0.0)


def test_zero_weight_rows_contribute_nothing():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    sw = rng.uniform(0.5, 1.5, size=300)
    params = _params(rng, 4, 3, np.float64, True)
    keep = np.arange(300) % 3 != 0
    sw_zeroed = np.where(keep, sw, 0.0)
    X_far = X.copy()
    X_far[~keep] = 1e200  # would overflow if zero-weight rows were used
    full = _run_all(X_far, sw_zeroed, *params, True)
    sub = _run_all(np.ascontiguousarray(X[keep]), sw[keep], *params, True)
    for i in (0, 1, 2, 3):  # loglik, nk, sx, sxx
        np.testing.assert_allclose(full[i], sub[i], rtol=1e-12, atol=1e-12)
