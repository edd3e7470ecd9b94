"""Values near float64's range in the initialization (session 12, F1)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastem import backends
from fastem._init import kmeans, kmeans_plusplus, stats_from_partition


def _two_far_points() -> np.ndarray:
    X = np.random.default_rng(0).normal(size=(40, 2))
    X[3, 0] = 1e158  # the nearer far point comes first in row order
    X[30, 0] = 1e160
    return X


def test_kmeans_plusplus_draws_as_at_a_scale_where_squares_fit():
    """Squared distances near 1e160 overflowed: both far rows had an infinite
    potential, so k-means++ drew the first of them in row order (row 3) where, in
    exact arithmetic, row 30 (1e4 times the potential) is all but certain. The
    distances are now taken on values scaled by a power of two; the draws equal
    those on the data times 2**-400, where nothing overflows."""
    X = _two_far_points()
    w = np.ones(X.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning either
        for seed in range(3):
            _, got = kmeans_plusplus(X, w, 2, np.random.RandomState(seed))
            _, ref = kmeans_plusplus(X * 2.0**-400, w, 2, np.random.RandomState(seed))
            np.testing.assert_array_equal(got, ref)
            assert got[1] == 30


@pytest.mark.parametrize("name", backends.available_backends())
def test_kmeans_with_far_points_warns_of_no_overflow(name):
    """k-means's variance, tolerance and k-means++ potential overflowed to inf for
    data near 1e160 (RuntimeWarnings reached the user's fit); the Lloyd passes give
    the centres of the scaled run, times the scale, exactly."""
    X = _two_far_points()
    w = np.ones(X.shape[0])
    kernels = backends.get_backend(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        centres, labels = kmeans(X, w, 3, np.random.RandomState(0), kernels)
    ref_centres, ref_labels = kmeans(X * 2.0**-400, w, 3, np.random.RandomState(0), kernels)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(centres, ref_centres * 2.0**400)


def test_ordinary_data_is_not_rescaled():
    """The scale is 1 (no multiplication at all) from 2**-480 to 2**480."""
    from fastem._init import _power_of_two_scale

    rng = np.random.default_rng(1)
    for magnitude in (1e-140, 1.0, 1e6, 1e140):
        assert _power_of_two_scale(rng.normal(size=(10, 2)) * magnitude) == 1.0
    assert _power_of_two_scale(np.full((3, 2), 1e160)) == 2.0**-532
    assert _power_of_two_scale(np.full((3, 2), 1e-160)) == 2.0**531
    assert _power_of_two_scale(np.full((3, 2), 1e30, dtype=np.float32)) == 1.0


def test_a_partition_with_more_groups_than_components_is_a_clear_error():
    """It raised an IndexError from deep inside (``shift[g]`` for ``g >= k``)."""
    X = np.random.default_rng(0).normal(size=(6, 2))
    rows = np.arange(6)
    labels = np.array([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="3 groups, more than n_components=2"):
        stats_from_partition(X, np.ones(6), rows, np.ones(6), labels, 2, None, True)
