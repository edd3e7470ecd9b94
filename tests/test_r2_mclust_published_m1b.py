"""select_model against mclust's published results on MASS's geyser, acidity and thyroid.

* ``geyser`` (MASS, 299 x 2: waiting time and eruption duration of Old Faithful),
  vendored as ``tests/data/geyser.csv`` from Rdatasets ``csv/MASS/geyser.csv``
  (durations rounded to 7 decimals there).
* ``acidity`` (mclust, 155 x 1) and ``thyroid`` (mclust, 215 x 5), vendored as
  ``tests/data/acidity.csv`` and ``tests/data/thyroid.csv`` from cran/mclust
  ``data/acidity.R`` and ``data/thyroid.R``.

The printed values were found with the search tool (find_string ids below). mclust
stops EM at a relative change of the log-likelihood below 1e-5, fastem at its maximum,
so on the same optimum fastem's BIC is at least mclust's and a few hundredths above it
at most; stopped as mclust stops it lands on mclust's printed value. Diabetes and
mclust's VVE: ``test_r2_mclust_published_m1.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fastem import select_model

DATA = Path(__file__).parent / "data"
MCLUST_RULE = dict(stopping="relative", tol=1e-5, acceleration=None, max_iter=100_000)


@pytest.fixture(scope="module")
def geyser() -> np.ndarray:
    X = np.genfromtxt(DATA / "geyser.csv", delimiter=",", skip_header=1)
    assert X.shape == (299, 2) and np.isfinite(X).all()
    return X


def _bic(row: dict) -> float:
    """mclust's sign: 2 log L - p log n, larger is better."""
    return -row["bic"]


# ---------------------------------------------------------------- geyser


def test_geyser_chooses_vvi4_as_mclust(geyser):
    """``Mclust(geyser)`` (MASS's geyser, all 14 models, G = 1:9; Boehmke &
    Greenwell's "Hands-On Machine Learning with R" code, find_string id 6112595552):
    "Mclust VVI (diagonal, varying volume and shape) model with 4 components:
    -1330.13 299 19 -2768.568 ICL -2798.746; clustering table 90 17 98 94". From
    mclust's start (the hc tree; the default hc + emEM start chooses the same)."""
    sel = select_model(geyser, init_params="hc", random_state=0)
    assert sel.best_params_ == {"n_components": 4, "covariance_type": "VVI"}
    row = sel.table[sel.best_index_]
    assert row["n_parameters"] == 19
    assert _bic(row) >= -2768.568 - 1e-3
    assert _bic(row) == pytest.approx(-2768.568, abs=0.06)
    assert row["log_likelihood"] == pytest.approx(-1330.13, abs=0.03)
    assert sorted(np.bincount(sel.best_.predict(geyser)).tolist()) == [17, 90, 94, 98]
    # stopped as mclust stops, BIC and ICL are mclust's (ICL moves more than the
    # likelihood along EM's last steps: 0.47 above mclust's at the maximum)
    stopped = select_model(
        geyser, [4], ["VVI"], init_params="hc", random_state=0, **MCLUST_RULE
    ).table[0]
    assert _bic(stopped) == pytest.approx(-2768.568, abs=0.005)
    assert -stopped["icl"] == pytest.approx(-2798.746, abs=0.01)


def test_geyser_three_components_chooses_eei(geyser):
    """``Mclust(geyser, G = 3)`` (same source): "Mclust EEI (diagonal, equal volume
    and shape) model with 3 components: -1371.823 299 10 -2800.65 ICL -2814.577;
    clustering table 91 107 101"."""
    sel = select_model(geyser, [3], random_state=0)
    assert sel.best_params_ == {"n_components": 3, "covariance_type": "EEI"}
    row = sel.table[sel.best_index_]
    assert row["n_parameters"] == 10
    assert row["log_likelihood"] == pytest.approx(-1371.823, abs=5e-3)
    assert _bic(row) == pytest.approx(-2800.65, abs=0.01)
    assert -row["icl"] == pytest.approx(-2814.577, abs=0.03)
    assert sorted(np.bincount(sel.best_.predict(geyser)).tolist()) == [91, 101, 107]


# ---------------------------------------------------------------- one feature, five features


def test_acidity_univariate_chooses_e2_as_densitymclust():
    """``densityMclust(acidity)`` (mclust's acidity: log ANC of 155 lakes, vendored
    as ``tests/data/acidity.csv`` from cran/mclust ``data/acidity.R``): "Mclust E
    (univariate, equal variance) model with 2 components: -185.9493 155 4 -392.0723
    ICL -398.5554" (find_string id 56473492877; the same BIC and log-likelihood to 7
    digits, -392.0723108 and -185.9493052, in id 68369277176). With one feature
    select_model searches EII and VII, mclust's E and V."""
    x = np.genfromtxt(DATA / "acidity.csv", skip_header=1)[:, None]
    assert x.shape == (155, 1)
    sel = select_model(x, random_state=0)
    assert sel.best_params_ == {"n_components": 2, "covariance_type": "EII"}
    row = sel.table[sel.best_index_]
    assert row["n_parameters"] == 4
    assert row["log_likelihood"] == pytest.approx(-185.9493052, abs=1e-4)
    assert _bic(row) == pytest.approx(-392.0723108, abs=2e-4)
    assert -row["icl"] == pytest.approx(-398.5554, abs=0.03)
    assert {r["covariance_type"] for r in sel.table} == {"EII", "VII"}
    # mclust's equal variance: one variance for both components
    np.testing.assert_allclose(sel.best_.covariances_[0], sel.best_.covariances_[1])


def test_thyroid_chooses_vvi3_as_mclust():
    """``Mclust(thyroid[, -1])`` (mclust's thyroid, 215 x 5, vendored as
    ``tests/data/thyroid.csv`` from cran/mclust ``data/thyroid.R``): VVI,3 with
    log-likelihood -2303.0232, df 32, BIC -4777.9069 (Scrucca et al. 2023, the
    mclust book, Example 3.2, as cited in find_string id 68369277176)."""
    data = np.genfromtxt(DATA / "thyroid.csv", delimiter=",", skip_header=1, usecols=range(1, 6))
    assert data.shape == (215, 5)
    sel = select_model(data, init_params="hc", random_state=0)
    assert sel.best_params_ == {"n_components": 3, "covariance_type": "VVI"}
    row = sel.table[sel.best_index_]
    assert row["n_parameters"] == 32
    assert row["log_likelihood"] >= -2303.0232 - 1e-4
    assert row["log_likelihood"] == pytest.approx(-2303.0232, abs=5e-3)
    assert _bic(row) == pytest.approx(-4777.9069, abs=0.01)
