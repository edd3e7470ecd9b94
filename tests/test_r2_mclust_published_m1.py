"""select_model against mclust's published results on diabetes, and mclust's VVE.

* ``diabetes`` (mclust's data set, 145 x 3: Reaven & Miller's glucose, insulin and
  SSPG areas; the class is left out of the fit), vendored as
  ``tests/data/diabetes_mclust.csv`` from ``cran/mclust`` ``data/diabetes.R`` (the
  values of Rdatasets' ``csv/heplots/Diabetes.csv`` columns glufast, glutest and
  instest, with mclust's typo kept: row 104 has insulin 45 where heplots has 455;
  a later vignette corrects it in code, ``diabetes$glucose[104] <- 455`` after
  renaming the columns; the printed results below are from the data with it).
(MASS's geyser, acidity and thyroid: ``test_r2_mclust_published_m1b.py``.)

The printed values were found with the search tool (find_string ids below).
mclust stops EM at a relative change of the log-likelihood below 1e-5, fastem at
its maximum (Aitken), so on the same optimum fastem's BIC is at least mclust's and
a few hundredths above it at most; stopped as mclust stops it lands on mclust's
printed value.

Where fastem differs: mclust's VVE (Fortran ``mevve``/``msvve``,
``src/mclustaddson.f``) drops the volumes ``lambda_k`` from its orientation update,
so its EM is not monotone and its VVE values are below the maximum (on diabetes by
2.7 log-likelihood units at K = 3). ``test_mclust_vve_orientation_update_omits_the_volumes``
transcribes mclust's algorithm and shows it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fastem import select_model
from fastem._covariance import n_parameters
from fastem._hc import hc_tree

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    path = DATA / "diabetes_mclust.csv"
    X = np.genfromtxt(path, delimiter=",", skip_header=1, usecols=(1, 2, 3))
    cls = np.genfromtxt(path, delimiter=",", skip_header=1, usecols=0, dtype=str)
    assert X.shape == (145, 3) and np.isfinite(X).all()
    assert {c: int((cls == c).sum()) for c in ("Chemical", "Normal", "Overt")} == {
        "Chemical": 36,
        "Normal": 76,
        "Overt": 33,
    }
    return X, cls


def _cell(selection, model: str, k: int) -> dict:
    (row,) = [
        r for r in selection.table if r["covariance_type"] == model and r["n_components"] == k
    ]
    assert row["error"] is None and not row["degenerate"]
    return row


def _bic(row: dict) -> float:
    """mclust's sign: 2 log L - p log n, larger is better."""
    return -row["bic"]


MCLUST_RULE = dict(stopping="relative", tol=1e-5, acceleration=None, max_iter=100_000)


# ---------------------------------------------------------------- diabetes


def test_diabetes_chooses_vvv3_as_mclust(diabetes):
    """``Mclust(diabetes[, -1])`` (mclust 6.0.0's vignette, "A quick tour of
    mclust"): "Mclust VVV ... model with 3 components", "log-likelihood n df BIC:
    -2303.49. 145 29 -4751.316", and clusters of 81, 36 and 28 rows (its
    ``MclustDR`` summary); find_string id 15185007512 and the vignette's page on
    scribd (search tool, pages). mclust's best VVE,4 over three hc trees
    (``mclustBICupdate``) is -4757.091572; fastem's default start reaches it too."""
    X, _ = diabetes
    sel = select_model(X, random_state=0)
    assert sel.best_params_ == {"n_components": 3, "covariance_type": "VVV"}
    row = sel.table[sel.best_index_]
    assert row["n_parameters"] == 29
    assert _bic(row) >= -4751.316 - 1e-3
    assert _bic(row) == pytest.approx(-4751.316, abs=0.01)
    # the printed BIC and df give mclust's log-likelihood, -2303.4955
    assert row["log_likelihood"] == pytest.approx((-4751.316 + 29 * math.log(145)) / 2, abs=5e-3)
    assert sorted(np.bincount(sel.best_.predict(X)).tolist()) == [28, 36, 81]
    assert _bic(_cell(sel, "VVE", 4)) >= -4757.091572 - 1e-3


def test_diabetes_cells_from_mclusts_hc_tree(diabetes):
    """``mclustBIC(X, initialization = list(hcPairs = hc(X, "VVV", use = "SVD")))``,
    the default tree: best VVV,3 -4751.316, VVV,4 -4784.32213, EVE,6 -4785.24591
    (id 15185007512). fastem from its own hc tree (the same one: VVV merges,
    SVD-scaled data) reaches each of them, a few hundredths above at most, and
    lands on them to 0.03 when stopped as mclust stops."""
    X, _ = diabetes
    published = {("VVV", 3): -4751.316, ("VVV", 4): -4784.32213, ("EVE", 6): -4785.24591}
    kw = dict(init_params="hc", random_state=0, refine="all")
    at_max = select_model(X, [3, 4, 6], ["VVV", "EVE"], **kw)
    stopped = select_model(X, [3, 4, 6], ["VVV", "EVE"], **kw, **MCLUST_RULE)
    for (model, k), theirs in published.items():
        ours = _bic(_cell(at_max, model, k))
        assert theirs - 1e-3 <= ours <= theirs + 0.2, (model, k, ours)
        assert _bic(_cell(stopped, model, k)) == pytest.approx(theirs, abs=0.03), (model, k)
    labels = at_max.models_[(3, "VVV")].predict(X)
    assert sorted(np.bincount(labels).tolist()) == [28, 36, 81]


def test_diabetes_vars_tree_as_mclust_5_2(diabetes):
    """mclust 5.1-5.2 built the tree on the unscaled variables (``hcUse = "VARS"``,
    the 5.2 vignette, search tool pages: chipster's mclust.html): "VVV ... 3
    components: log.likelihood -2307.883 n 145 df 29 BIC -4760.091 ICL -4776.086".
    ``select_model(..., hc_use="VARS")`` builds fastem's tree on the same data and
    reaches that optimum; the default tree (SVD) leads to another, higher one."""
    X, _ = diabetes
    kw = dict(init_params="hc", random_state=0)
    row = select_model(X, [3], ["VVV"], hc_use="VARS", **kw).table[0]
    assert row["log_likelihood"] >= -2307.883 - 1e-3
    assert row["log_likelihood"] == pytest.approx(-2307.883, abs=0.05)
    assert _bic(row) == pytest.approx(-4760.091, abs=0.1)
    assert -row["icl"] == pytest.approx(-4776.086, abs=0.1)
    default = select_model(X, [3], ["VVV"], **kw).table[0]
    assert _bic(default) > _bic(row) + 8
    assert select_model(X, [3], ["VVV"], hc_use="SVD", **kw).table[0] == default
    with pytest.raises(ValueError, match="hc_use must be one of"):
        select_model(X, [3], ["VVV"], hc_use="PCS", **kw)


def _mclust_me_vve(X, z, tol_out, tol_in, volumes_in_orientation=False):
    """mclust's EM for VVE (``mevve``, cran/mclust ``src/mclustaddson.f`` at commit
    1056503), transcribed: each M-step iterates Browne & McNicholas's MM1 + MM2
    orientation steps from the previous shape and orientation (identity and ones at
    the start) until the relative change of its target is at most ``tol_in``
    (``emControl``'s ``tol[2]``, sqrt(eps)); EM stops when the relative change of
    the log-likelihood is at most ``tol_out`` (``tol[1]``, 1e-5). mclust weights
    every component's term by ``A_k^-1`` alone; the expected complete-data
    log-likelihood weights it by ``(lambda_k A_k)^-1``
    (``volumes_in_orientation=True``). Returns the log-likelihood of each E-step."""
    n, p = X.shape
    G = z.shape[1]
    shape, D_t, scale, eye = np.ones((p, G)), np.eye(p), np.ones(G), np.eye(p)
    trace, ks = [], range(G)
    while True:
        nk = z.sum(axis=0)
        mu = X.T @ z / nk
        W = np.empty((G, p, p))
        for k in range(G):
            r = (X - mu[:, k]) * np.sqrt(z[:, k])[:, None]
            W[k] = r.T @ r
        omega = np.linalg.eigvalsh(W)[:, -1]
        weight = 1 / scale if volumes_in_orientation else np.ones(G)
        previous = np.finfo(float).max / 2
        while True:
            inv_a = 1 / shape.T  # (G, p)
            F = sum(weight[k] * (D_t * inv_a[k, :, None]) @ (W[k] - omega[k] * eye) for k in ks)
            P, _, Rt = np.linalg.svd(F)
            D = (P @ Rt).T  # MM1
            F = sum(weight[k] * W[k] @ D * (inv_a[k] - inv_a[k].max()) for k in ks)
            P, _, Rt = np.linalg.svd(F)
            D_t = (P @ Rt).T  # MM2
            diag = np.einsum("ij,kjl,il->ki", D_t, W, D_t) / nk[:, None]  # (G, p)
            scale = np.exp(np.log(diag).mean(axis=1))
            shape = (diag / scale[:, None]).T
            weight = 1 / scale if volumes_in_orientation else np.ones(G)
            target = float(np.sum(weight[:, None] * diag * nk[:, None] / shape.T))
            done = abs(target - previous) / (1 + abs(target)) <= tol_in
            previous = target
            if done:
                break
        logd = np.empty((n, G))
        for k in range(G):
            y = (X - mu[:, k]) @ D_t.T / np.sqrt(scale[k] * shape[:, k])
            logd[:, k] = (
                -p / 2 * math.log(2 * math.pi)
                - np.sum(np.log(scale[k] * shape[:, k])) / 2
                - np.sum(y * y, axis=1) / 2
                + math.log(nk[k] / n)
            )
        top = logd.max(axis=1)
        lse = top + np.log(np.exp(logd - top[:, None]).sum(axis=1))
        trace.append(float(lse.sum()))
        z = np.exp(logd - lse[:, None])
        if len(trace) > 1 and abs(trace[-1] - trace[-2]) / (1 + abs(trace[-1])) <= tol_out:
            return np.array(trace)


def test_mclust_vve_orientation_update_omits_the_volumes(diabetes):
    """Why fastem's VVE beats mclust's: mclust's VVE,3 on the VARS tree is printed as
    -4775.53693 (mclust 5.2's vignette: "VVE,3 -4775.53693"; 6.0's hc(use = "VARS")
    run, id 15185007512). The transcription of mclust's EM from that tree's
    partition, with mclust's tolerances, ends within 0.1 of it; run on, its
    log-likelihood falls (a non-monotone EM: its orientation step does not maximize
    the M-step's objective). With the volumes restored the same algorithm is
    monotone and reaches fastem's VVE,3 exactly, 5.8 BIC units above mclust's."""
    X, _ = diabetes
    n, p = X.shape
    count = n_parameters("VVE", 3, p)
    tree = hc_tree(X, np.ones(n), use="VARS", min_clusters=3)
    leaf = dict(zip(map(tuple, X[tree.rows]), tree.labels(3), strict=True))
    z = np.eye(3)[[leaf[tuple(row)] for row in X]]

    mclust = _mclust_me_vve(X, z, 1e-5, math.sqrt(np.finfo(float).eps))
    assert 2 * mclust[-1] - count * math.log(n) == pytest.approx(-4775.53693, abs=0.1)
    mclust_on = _mclust_me_vve(X, z, 1e-12, 1e-14)
    assert np.min(np.diff(mclust_on)) < -1e-3  # the log-likelihood decreases
    assert mclust_on[-1] < mclust[-1]

    fixed = _mclust_me_vve(X, z, 1e-12, 1e-14, volumes_in_orientation=True)
    assert np.min(np.diff(fixed)) > -1e-9
    ours = select_model(X, [3], ["VVE"], init_params="hc", random_state=0).table[0]
    assert ours["log_likelihood"] == pytest.approx(fixed[-1], abs=1e-3)
    assert _bic(ours) > -4775.53693 + 5


def test_diabetes_icl_at_mclusts_stopping_rule(diabetes):
    """``mclustICL(X)`` (6.0 vignette, find_string id 25968866098): best ICL VVV,3
    -4770.169. Stopped as mclust stops, fastem's is within 0.1 (ICL moves more than
    the likelihood along EM's last steps: -4770.34 at the maximum)."""
    X, _ = diabetes
    stopped = select_model(X, [3], ["VVV"], init_params="hc", random_state=0, **MCLUST_RULE)
    assert -stopped.table[0]["icl"] == pytest.approx(-4770.169, abs=0.1)


def test_mclust_vve_transcription_gives_mclusts_banknote_value():
    """The same transcription on banknote (``tests/test_r2_mclust_published.py``):
    from fastem's hc partition with mclust's tolerances it gives mclust's printed
    VVE,3 exactly ("-663.3814 ... BIC -1607.574"); there mclust's EM is monotone but
    converges to a point 0.58 below the maximum (its fixed point is not the M-step's),
    and with the volumes restored it reaches fastem's -662.804. This is the cause
    docs/selection.md had left unconfirmed for banknote's VVE,3."""
    from test_r2_mclust_published import BANKNOTE, _parse

    X = _parse(BANKNOTE, 6)
    n, p = X.shape
    count = n_parameters("VVE", 3, p)
    tree = hc_tree(X, np.ones(n), min_clusters=3)
    leaf = dict(zip(map(tuple, X[tree.rows]), tree.labels(3), strict=True))
    z = np.eye(3)[[leaf[tuple(row)] for row in X]]
    mclust = _mclust_me_vve(X, z, 1e-5, math.sqrt(np.finfo(float).eps))
    assert mclust[-1] == pytest.approx(-663.3814, abs=1e-3)
    assert 2 * mclust[-1] - count * math.log(n) == pytest.approx(-1607.574, abs=2e-3)
    converged = _mclust_me_vve(X, z, 1e-12, 1e-14)
    assert converged[-1] < -663.3  # not a matter of stopping early
    fixed = _mclust_me_vve(X, z, 1e-12, 1e-14, volumes_in_orientation=True)
    ours = select_model(X, [3], ["VVE"], init_params="hc", random_state=0).table[0]
    assert ours["log_likelihood"] == pytest.approx(fixed[-1], abs=1e-3)
    assert ours["log_likelihood"] > converged[-1] + 0.5


def test_gaussian_mixture_ic_passes_hc_use(diabetes):
    """The estimator gives select_model's fit for the same hc_use."""
    from fastem import GaussianMixtureIC

    X, _ = diabetes
    kw = dict(init_params="hc", random_state=0)
    est = GaussianMixtureIC([3], covariance_types=["VVV"], hc_use="VARS", **kw).fit(X)
    sel = select_model(X, [3], ["VVV"], hc_use="VARS", **kw)
    assert est.get_params()["hc_use"] == "VARS"
    np.testing.assert_array_equal(est.best_estimator_.means_, sel.best_.means_)
