"""select_model's grid parameters: K with gaps, one K, repeated and unsorted K, K
above the number of rows, and bit-identical results across thread counts and
repeated calls with the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from fastem import GaussianMixtureIC, select_model


@pytest.fixture(scope="module")
def two_blobs() -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 2))
    X[40:] += 5.0
    return X


def test_k_with_gaps_fits_exactly_those(two_blobs):
    sel = select_model(two_blobs, [1, 3, 7], ["VVV", "EII"], random_state=0)
    assert sorted({row["n_components"] for row in sel.table}) == [1, 3, 7]
    ks, models, values = sel.grid()
    assert ks == [1, 3, 7] and models == ["VVV", "EII"] and values.shape == (3, 2)
    assert [line.split()[0] for line in sel.to_text().splitlines()[2:5]] == ["1", "3", "7"]


def test_one_k_as_int_and_as_list(two_blobs):
    a = select_model(two_blobs, 2, "VVV", random_state=0)
    b = select_model(two_blobs, [2], ["VVV"], random_state=0)
    assert a.table == b.table and len(a.table) == 1


def test_repeated_and_unsorted_k_fit_once_each(two_blobs):
    sel = select_model(two_blobs, [3, 1, 3], ["EII"], random_state=0)
    assert sorted(row["n_components"] for row in sel.table) == [1, 3]
    assert sel.grid()[0] == [1, 3]


@pytest.mark.parametrize("bad", [[1, 81], [0, 2], [2.0], [True], []])
def test_bad_k_is_rejected_before_fitting(two_blobs, bad):
    with pytest.raises(ValueError, match="n_components"):
        select_model(two_blobs, bad, ["EII"])
    with pytest.raises(ValueError, match="n_components"):
        GaussianMixtureIC(bad).fit(two_blobs)


def test_same_seed_same_result_and_threads_do_not_matter(two_blobs):
    """Default starts (hc + emEM, random short runs): the same seed gives the same
    table, and 1 or 2 threads the same bits in every fitted model."""
    kw = dict(n_components=[1, 2, 3], covariance_types=["VVV", "VEI", "EVE"], random_state=7)
    one = select_model(two_blobs, n_threads=1, **kw)
    again = select_model(two_blobs, n_threads=1, **kw)
    two = select_model(two_blobs, n_threads=2, **kw)
    assert one.table == again.table == two.table
    assert one.models_.keys() == two.models_.keys()
    for key, model in one.models_.items():
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
            assert getattr(model, name).tobytes() == getattr(two.models_[key], name).tobytes()
