"""Per-fit invariants computed once (issue #15): same results, fewer scans."""

from __future__ import annotations

import numpy as np
import pytest

import fastem.hmm._base as hmm_base
import fastem.hmm._gaussian as hmm_gaussian
import fastem.hmm._gmm as hmm_gmm
from fastem._missing import has_nan
from fastem.hmm import GMMHMM, GaussianHMM, available_hmm_backends

LENGTHS = [40, 1, 29, 50]
N = sum(LENGTHS)
N_ITER = 4
BACKEND = available_hmm_backends()[0]


def _data(missing: bool) -> np.ndarray:
    rng = np.random.default_rng(3)
    z = (np.arange(N) // 15) % 3
    X = rng.normal(size=(N, 2)) * 0.7 + np.array([-2.0, 0.0, 2.5])[z, None]
    if missing:
        X[rng.random(X.shape) < 0.1] = np.nan
        X[5] = np.nan  # a frame with nothing observed
    return X


def _fit(model, X):
    model.fit(X, LENGTHS, sample_weight=[1.0, 2.0, 0.5, 3.0])
    return {n: np.array(getattr(model, n)) for n in model._param_attrs()}


def _uncached(monkeypatch):
    """Every iteration recomputes the row weights and rescans X (the old code)."""
    for mod in (hmm_gaussian, hmm_gmm):
        monkeypatch.setattr(mod, "_row_weight", lambda m, X, o, w: np.repeat(w, np.diff(o)))
        monkeypatch.setattr(mod, "_x_has_nan", lambda m, X: hmm_base.has_nan(X))


def _count_scans(monkeypatch) -> list[int]:
    calls = [0]

    def counting(X):
        calls[0] += 1
        return has_nan(X)

    monkeypatch.setattr(hmm_base, "has_nan", counting)
    return calls


def _models():
    kw = dict(n_iter=N_ITER, tol=-np.inf, random_state=0, backend=BACKEND)
    return [
        GaussianHMM(3, covariance_type="diag", **kw),
        GaussianHMM(3, covariance_type="full", **kw),
        GMMHMM(2, n_mix=2, covariance_type="diag", **kw),
    ]


@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("index", range(3))
def test_cached_fit_is_bit_identical_and_scans_once(monkeypatch, index, missing):
    X = _data(missing)
    with monkeypatch.context() as mp:
        calls = _count_scans(mp)
        cached = _fit(_models()[index], X)
        assert calls[0] == 1  # one NaN scan for the whole fit, not one per iteration
    with monkeypatch.context() as mp:
        _uncached(mp)
        calls = _count_scans(mp)
        reference = _fit(_models()[index], X)
        # negative control: the counter sees the per-iteration scans when uncached
        assert calls[0] >= N_ITER
    for name, value in reference.items():
        np.testing.assert_array_equal(cached[name], value, err_msg=name)


def test_fit_data_is_released_and_other_arrays_are_not_served_from_it():
    X = _data(False)
    model = GaussianHMM(2, n_iter=2, backend=BACKEND, random_state=0).fit(X, LENGTHS)
    assert not hasattr(model, "_fit_data")
    offsets = hmm_base._offsets(LENGTHS, N)
    w = np.arange(1.0, 5.0)
    model._fit_data = hmm_base._FitData(X, offsets, np.ones(4))
    # another weight vector, or a copy of X with a NaN, is not the fit's data
    np.testing.assert_array_equal(hmm_base._row_weight(model, X, offsets, w), np.repeat(w, LENGTHS))
    Xn = X.copy()
    Xn[0, 0] = np.nan
    assert hmm_base._x_has_nan(model, Xn)
    assert not hmm_base._x_has_nan(model, X)


def test_normalize_rows_fast_path_matches_masked_division():
    rng = np.random.default_rng(0)
    new = rng.random((5, 5))
    old = rng.random((5, 5))
    np.testing.assert_array_equal(
        hmm_base._normalize_rows(new, old), new / new.sum(axis=1, keepdims=True)
    )
    new[2] = 0.0  # a row with no count keeps its previous value
    out = hmm_base._normalize_rows(new, old)
    np.testing.assert_array_equal(out[2], old[2])
    rows = [0, 1, 3, 4]
    np.testing.assert_array_equal(out[rows], new[rows] / new[rows].sum(axis=1, keepdims=True))


@pytest.mark.skipif("numba" not in available_hmm_backends(), reason="needs numba")
def test_small_passes_run_on_the_calling_thread_with_the_same_bits(monkeypatch):
    from fastem.hmm._backend import get_hmm_kernels

    mod = get_hmm_kernels("numba").hmm
    rng = np.random.default_rng(2)
    K, D = 4, 2
    pooled = []
    monkeypatch.setattr(mod, "run_chunks", lambda kernel, n, *args: pooled.append(n))

    def moments(n_rows):
        X = rng.normal(size=(n_rows, D))
        gamma = rng.dirichlet(np.ones(K), size=n_rows)
        nk, sx, sxx = np.empty(K), np.empty((K, D)), np.empty((K, D))
        mod.moments_diag(X, gamma, np.ones(n_rows), np.zeros((K, D)), nk, sx, sxx)
        return X, gamma, (nk, sx, sxx)

    X, gamma, small = moments(3000)  # 3000 * K * D steps: below SMALL_WORK
    assert pooled == []
    np.testing.assert_allclose(small[0], gamma.sum(axis=0))
    moments(mod.SMALL_WORK // (K * D) + 1)
    assert len(pooled) == 1  # a larger pass goes to the pool
    # the same chunks on the pool (forced) give the same bits
    monkeypatch.undo()
    monkeypatch.setattr(mod, "SMALL_WORK", 0)
    nk, sx, sxx = np.empty(K), np.empty((K, D)), np.empty((K, D))
    mod.moments_diag(X, gamma, np.ones(3000), np.zeros((K, D)), nk, sx, sxx)
    for a, b in zip(small, (nk, sx, sxx), strict=True):
        np.testing.assert_array_equal(a, b)
