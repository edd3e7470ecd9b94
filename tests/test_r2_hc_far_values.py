"""The hc start on data with values near the float64 limit (a point at 1e160).

mclust's "SVD" transformation z-scores each column; the squares of a column
holding 1e160 overflow, so its standard deviation was inf, the z-scores 0 (or
NaN), the singular values 0 and the transformed data had no column at all. The
tree built on it then stopped short of one cluster, and ``select_model`` raised
``IndexError`` (the one-cluster cut had two groups). Each column is now rescaled
by a power of two first, which z-scores do not depend on and which is exact.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastem import _hc, select_model
from fastem._hc import hc_transform, hc_tree, svd_transform


def _naive_standardise(X, w):
    """The former code: z-scores computed on the data as given."""
    X = np.asarray(X, dtype=np.float64)
    total = w.sum()
    mean = (w @ X) / total
    centred = X - mean
    sd = np.sqrt((w @ (centred * centred)) / total)
    keep = sd > np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
    return keep, centred[:, keep] / sd[keep]


def _with_far_point(d: int, value: float = 1e160) -> np.ndarray:
    X = np.random.default_rng(0).normal(size=(40, d))
    X[5, 0] = value
    return X


@pytest.mark.parametrize("seed", range(4))
def test_rescaling_leaves_ordinary_data_bit_for_bit(seed):
    """The power-of-two rescaling is exact: on data whose squares do not overflow
    the transformed rows are the former ones, bit for bit."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(30, 4)) * 10.0 ** rng.integers(-8, 9, size=4) + rng.normal(size=4) * 1e3
    X[:, 3] = 7.0  # a constant column is dropped by both
    w = rng.uniform(0.5, 2.0, size=30)
    keep, standard = _hc._standardise(X, w)
    keep0, standard0 = _naive_standardise(X, w)
    np.testing.assert_array_equal(keep, keep0)
    assert standard.tobytes() == standard0.tobytes()


@pytest.mark.parametrize("value", [1e160, -1e160, 1e300])
def test_transforms_of_a_far_point_equal_those_of_scaled_data(value):
    """z-scores do not depend on a column's scale: the data with a point at 1e160
    transform as the same data divided by 1e150 (whose squares do not overflow)."""
    X = _with_far_point(2, value)
    w = np.ones(X.shape[0])
    scaled = X / np.array([abs(value) / 1e10, 1.0])
    for use in ("SVD", "STD"):
        Z = hc_transform(X, w, use)
        assert Z.shape[1] == 2 and np.isfinite(Z).all()
        np.testing.assert_allclose(Z, hc_transform(scaled, w, use), rtol=1e-10, atol=1e-12)
    z1 = svd_transform(X[:, :1], w)
    assert z1.shape == (40, 1) and np.isfinite(z1).all()


def test_the_tree_isolates_a_far_point():
    X = _with_far_point(1)
    tree = hc_tree(X)
    labels = tree.labels(2)
    assert np.bincount(labels).tolist() in ([39, 1], [1, 39])
    assert labels[tree.rows.tolist().index(5)] != labels[0]
    assert tree.labels(1).max() == 0


def _select(X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow in the k = 1 fits, degenerate cells
        return select_model(X, [1, 2, 3], ["EII", "VII"], init_params="hc", random_state=0)


@pytest.mark.parametrize("d", [1, 2])
def test_select_model_with_a_far_point_does_not_raise(d):
    """One row at 1e160: the one-component fits overflow (reported per cell), the
    others put the far row in a component of its own."""
    sel = _select(_with_far_point(d))
    fitted = [row for row in sel.table if row.get("error") is None]
    assert fitted and all(row["n_components"] >= 2 for row in fitted)
    labels = sel.best_.predict(_with_far_point(d))
    assert np.sum(labels == labels[5]) == 1


def test_negative_control_the_former_transform_raises(monkeypatch):
    """With the former z-scores the one-dimensional case fails again: the tree never
    reaches one cluster, and its two-group cut for one component is now a clear
    ValueError from ``stats_from_partition`` (it was an IndexError); or every
    candidate fails first, a ValueError saying so."""
    monkeypatch.setattr(_hc, "_standardise", _naive_standardise)
    pattern = r"index|all 6 candidates failed|groups, more than n_components"
    with pytest.raises((IndexError, ValueError), match=pattern):
        _select(_with_far_point(1))


@pytest.mark.parametrize("d", [1, 2])
def test_numpy_reference_selects_as_the_compiled_backends(d):
    """The numpy reference failed every candidate (``FASTEM_BACKEND=numpy`` failed the
    test above): its diagonal second moments took ``r @ (x * x)``, and the far row's
    square (1e320 = inf) times its responsibility 0 under another component is NaN.
    It now multiplies ``(r x) x`` there, as the compiled kernels do, and its table
    matches theirs (the same candidates fit)."""
    from fastem.backends import available_backends

    X = _with_far_point(d)
    tables = {}
    for name in available_backends():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sel = select_model(
                X, [1, 2, 3], ["EII", "VII"], init_params="hc", random_state=0, backend=name
            )
        tables[name] = [(r["n_components"], r["error"] is None) for r in sel.table]
    assert any(ok for _, ok in tables["numpy"])
    for name, table in tables.items():
        assert table == tables["numpy"], name
