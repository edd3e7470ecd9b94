"""mclust's 14 covariance structures (fastem._mclust): exact M-steps and parameter counts.

The M-steps are checked against a direct numerical maximization (scipy) of the
covariance part of the expected complete-data log-likelihood over an unconstrained
parameterization of each structure, against the structure each model claims, and
against fastem's existing M-step for the four scikit-learn aliases.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastem import _mclust as mc
from fastem._stats import Stats
from fastem._stats import m_step as sk_m_step

EPS = float(np.finfo(np.float64).eps)
FULL_MODELS = tuple(m for m in mc.MODEL_NAMES if m not in mc.DIAGONAL_MODELS)


def make_stats(
    seed: int,
    k: int = 3,
    d: int = 3,
    n: int = 120,
    full: bool = True,
    near_empty: float | None = None,
    offset: float = 0.0,
) -> Stats:
    """Statistics of a random soft assignment of correlated, clustered data.

    ``near_empty`` scales the last component's responsibilities (0 empties it).
    The shift is near, not at, the means, as after any EM iteration.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d)) + offset
    X = np.concatenate(
        [rng.normal(size=(n // k + 1, d)) @ rng.normal(size=(d, d)) + c for c in centres]
    )
    r = rng.dirichlet(np.ones(k), size=len(X))
    if near_empty is not None:
        r[:, -1] *= near_empty
    w = rng.uniform(0.5, 2.0, size=len(X))  # sample weights
    rw = r * w[:, None]
    shift = centres + 0.3 * rng.normal(size=(k, d))
    diff = X[None, :, :] - shift[:, None, :]
    sx = np.einsum("nk,kni->ki", rw, diff)
    if full:
        sxx = np.einsum("nk,kni,knj->kij", rw, diff, diff)
    else:
        sxx = np.einsum("nk,kni->ki", rw, diff**2)
    return Stats(0.0, float(w.sum()), rw.sum(axis=0), sx, sxx, shift)


def regularized_scatter(stats: Stats, reg: float):
    """``n_k`` and ``W_k + n_k reg I``: the scatter the structured fit maximizes against."""
    _, _, nk, w = mc.weights_means_scatter(stats, EPS)
    if w.ndim == 2:
        w = np.einsum("ki,ij->kij", w, np.eye(w.shape[1]))
    return nk, w + reg * nk[:, None, None] * np.eye(w.shape[1])


def as_full(cov: np.ndarray) -> np.ndarray:
    return np.einsum("ki,ij->kij", cov, np.eye(cov.shape[1])) if cov.ndim == 2 else cov


# ----------------------------------------------------------------------------
# An unconstrained parameterization of each structure, for scipy
# ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """These are thousands of tiny LAPACK calls: threads only add contention."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def _cayley(gens: np.ndarray, d: int) -> np.ndarray:
    """Orthogonal ``(I - S)^-1 (I + S)`` from skew-symmetric ``S`` (upper entries ``gens``)."""
    s = np.zeros((len(gens), d, d))
    upper = np.triu_indices(d, 1)
    s[:, upper[0], upper[1]] = gens
    s = s - np.swapaxes(s, 1, 2)
    eye = np.eye(d)
    return np.linalg.solve(eye - s, eye + s)


def structured_covariances(model: str, theta: np.ndarray, k: int, d: int) -> np.ndarray:
    """``lambda_k D_k diag(a_k) D_k^T`` from free parameters: log volumes (1 or k),
    log shapes (d-1 free per shape, the last fixed by det 1), skew-symmetric
    generators of the orientations (Cayley transform). Its length is exactly mclust's
    nVarParams (checked in ``test_parameterization_has_nvarparams_parameters``)."""
    vol, shp, ori = model
    pos = 0

    def take(count: int) -> np.ndarray:
        nonlocal pos
        out = theta[pos : pos + count]
        pos += count
        return out

    log_vol = np.broadcast_to(take(1 if vol == "E" else k), (k,))
    if shp == "I":
        log_shape = np.zeros((k, d))
    else:
        count = 1 if shp == "E" else k
        free = take((d - 1) * count).reshape(count, d - 1)
        log_shape = np.broadcast_to(np.hstack([free, -free.sum(axis=1, keepdims=True)]), (k, d))
    if ori == "I":
        orient = np.broadcast_to(np.eye(d), (k, d, d))
    else:
        count = 1 if ori == "E" else k
        gens = take(d * (d - 1) // 2 * count).reshape(count, d * (d - 1) // 2)
        orient = np.broadcast_to(_cayley(gens, d), (k, d, d))
    assert pos == len(theta)
    var = np.exp(log_vol[:, None] + log_shape)
    return np.einsum("kij,kj,klj->kil", orient, var, orient)


def objective_full(cov: np.ndarray, w: np.ndarray, nk: np.ndarray) -> float:
    """Q for full matrices via eigenvalues (robust for the optimizer)."""
    sign, logdet = np.linalg.slogdet(cov)
    if (sign <= 0).any():
        return -np.inf
    return float(-0.5 * np.sum(nk * logdet + np.trace(np.linalg.solve(cov, w), axis1=1, axis2=2)))


def scipy_optimum(model: str, nk: np.ndarray, w: np.ndarray, starts: list[np.ndarray]):
    """Best of BFGS runs (from each start) maximizing Q over the structure."""
    from scipy.optimize import minimize

    k, d = w.shape[:2]
    scale = float(nk.sum())

    def loss(theta):
        value = objective_full(structured_covariances(model, theta, k, d), w, nk)
        return -value / scale if np.isfinite(value) else 1e300

    best = None
    for x0 in starts:
        res = minimize(loss, x0, method="BFGS", options={"gtol": 1e-8, "maxiter": 20_000})
        if best is None or res.fun < best.fun:
            best = res
    return -best.fun * scale, best.x


def neutral_start(model: str, k: int, d: int, w: np.ndarray, nk: np.ndarray, rng) -> list:
    """A start with unit shapes and identity orientations, and a few random ones."""
    size = mc.n_covariance_parameters(model, k, d)
    vol = np.log(np.trace(w, axis1=1, axis2=2).sum() / (nk.sum() * d))
    x0 = np.zeros(size)
    nvol = 1 if model[0] == "E" else k
    x0[:nvol] = vol
    starts = [x0]
    for _ in range(2):
        x = x0.copy()
        x[nvol:] = rng.normal(scale=0.5, size=size - nvol)
        starts.append(x)
    return starts


def scipy_gap(
    model: str, stats: Stats, reg: float, result, seed: int = 0, covariances: bool = False
):
    """Relative gap ``(Q_scipy - Q_ours) / |Q_ours|`` (positive: scipy found better),
    and, with ``covariances``, scipy's maximizing covariances too."""
    nk, w = regularized_scatter(stats, reg)
    k, d = w.shape[:2]
    ours = objective_full(as_full(result.covariances), w, nk)
    rng = np.random.default_rng(seed)
    best, x = scipy_optimum(model, nk, w, neutral_start(model, k, d, w, nk, rng))
    gap = (best - ours) / abs(ours)
    return (gap, structured_covariances(model, x, k, d)) if covariances else gap


# ----------------------------------------------------------------------------
# Structure checks, from the covariance matrices alone
# ----------------------------------------------------------------------------


def structure_violations(model: str, cov: np.ndarray, rtol: float = 1e-9) -> list[str]:
    """Which of the model's claims (equal volume / shape / orientation, identity
    orientation, spherical) ``cov`` breaks; [] if none."""
    cov = as_full(cov)
    k, d = cov.shape[:2]
    out = []
    values = np.linalg.eigvalsh(cov)[:, ::-1]
    vol = np.exp(np.log(values).mean(axis=1))
    if model[0] == "E" and not np.allclose(vol, vol[0], rtol=rtol, atol=0):
        out.append("equal volume")
    if model[2] == "I":
        off = cov - np.einsum("kii,ij->kij", cov, np.eye(d))
        if np.abs(off).max() > 0:
            out.append("identity orientation")
    if model[1] == "I":
        if not np.allclose(values, values[:, :1], rtol=rtol, atol=0):
            out.append("spherical")
    elif model[1] == "E":
        # equal shape: the same normalized spectrum (sorted; for common orientation the
        # normalized matrices themselves agree, which implies it)
        shape = values / vol[:, None]
        if not np.allclose(shape, shape[0], rtol=rtol, atol=0):
            out.append("equal shape")
    if model[2] == "E":
        scale = np.abs(cov).max()
        for j in range(1, k):
            commutator = cov[0] @ cov[j] - cov[j] @ cov[0]
            if np.abs(commutator).max() > rtol * scale**2:
                out.append("equal orientation")
                break
    return out


# ----------------------------------------------------------------------------
# Parameter counts
# ----------------------------------------------------------------------------


def nvarparams_formula(model: str, d: int, g: int) -> int:
    """mclust's nVarParams, transcribed term by term from cran/mclust R/mclust.R
    (commit 05c4e7726a50197e8365ca956bb24faea898ec24, function ``nVarParams``)."""
    return {
        "EII": 1,
        "VII": g,
        "EEI": d,
        "VEI": g + (d - 1),
        "EVI": 1 + g * (d - 1),
        "VVI": g * d,
        "EEE": d * (d + 1) / 2,
        "EVE": 1 + g * (d - 1) + d * (d - 1) / 2,
        "VEE": g + (d - 1) + d * (d - 1) / 2,
        "VVE": g + g * (d - 1) + d * (d - 1) / 2,
        "EEV": 1 + (d - 1) + g * d * (d - 1) / 2,
        "VEV": g + (d - 1) + g * d * (d - 1) / 2,
        "EVV": 1 - g + g * d * (d + 1) / 2,
        "VVV": g * d * (d + 1) / 2,
    }[model]


@pytest.mark.parametrize("model", mc.MODEL_NAMES)
def test_counts_equal_mclust_formulas(model):
    for d in range(1, 9):
        for g in range(1, 10):
            expected = nvarparams_formula(model, d, g)
            assert mc.n_covariance_parameters(model, g, d) == expected
            # nMclustParams (same file): nVarParams + G d means + G - 1 proportions
            assert mc.n_parameters(model, g, d) == expected + g * d + g - 1


def test_counts_for_the_aliases_equal_sklearn_counts():
    from fastem._covariance import n_parameters as sk_n_parameters

    for alias, model in mc.ALIASES.items():
        for d in range(1, 6):
            for g in range(1, 5):
                assert mc.n_parameters(alias, g, d) == sk_n_parameters(alias, g, d)
                assert mc.n_parameters(model, g, d) == sk_n_parameters(alias, g, d)


# Printed summaries of real mclust fits, (model, G, d, n, loglik, df, BIC): the df
# mclust reports, and its BIC = 2 loglik - df log n, must both follow from our count.
# The data sets' dimensions are those of the data sets named. Found with the search
# tool's find_string (ids are its file ids); the text is mclust's own output.
MCLUST_SUMMARIES = [
    # iris[, 1:4] (d = 4): "Mclust VEV (ellipsoidal, equal shape) model with 2 components:
    #  -215.7259 150 26 -561.7285" (find_string id 61972729360)
    ("VEV", 2, 4, 150, -215.7259, 26, -561.7285),
    # iris[, 1:4], G = 3: "-186.074 150 38 -562.5522" (id 15563306156)
    ("VEV", 3, 4, 150, -186.074, 38, -562.5522),
    # faithful (d = 2): "Mclust EEE ... 3 components: -1126.326 272 11 -2314.316" (id 13565957595)
    ("EEE", 3, 2, 272, -1126.326, 11, -2314.316),
    # densityMclust(faithful, modelNames = "EEE", G = 2): "-1140.187 272 8 -2325.22"
    # (id 32234549334)
    ("EEE", 2, 2, 272, -1140.187, 8, -2325.22),
    # wreath (d = 2), G = 1:20: "Mclust EEV ... 14 components: -5254.513 1000 57 -10902.77"
    # (id 13565957595)
    ("EEV", 14, 2, 1000, -5254.513, 57, -10902.77),
    # diabetes (d = 3: glucose, insulin, sspg): "Mclust VVV ... 3 components:
    #  -169.0908 145 29 -482.5069" (id 70982639906)
    ("VVV", 3, 3, 145, -169.0908, 29, -482.5069),
    # MASS geyser (d = 2): "Mclust VVI ... 4 components: -1330.13 299 19 -2768.568" (id 6112595552)
    ("VVI", 4, 2, 299, -1330.13, 19, -2768.568),
    # scale(USArrests) (d = 4: Murder, Assault, UrbanPop, Rape), G = 1:5: "Mclust VEI
    # (diagonal, equal shape) model with 3 components: -217.3636 50 20 -512.9677"
    # (id 21175779141)
    ("VEI", 3, 4, 50, -217.3636, 20, -512.9677),
    # Kaggle's Prostate_Cancer (its 8 numeric measurements, standardised), G = 2:6:
    # "Mclust VVE (ellipsoidal, equal orientation) model with 2 components: -711.9821
    # 100 61 -1704.88" (id 57403886180)
    ("VVE", 2, 8, 100, -711.9821, 61, -1704.88),
]


@pytest.mark.parametrize("model,g,d,n,loglik,df,bic", MCLUST_SUMMARIES)
def test_counts_reproduce_mclust_printed_df_and_bic(model, g, d, n, loglik, df, bic):
    assert mc.n_parameters(model, g, d) == df
    # the printed values are rounded to 7 significant digits
    assert 2 * loglik - mc.n_parameters(model, g, d) * math.log(n) == pytest.approx(bic, abs=0.01)


@pytest.mark.parametrize("model", mc.MODEL_NAMES)
def test_parameterization_has_nvarparams_parameters(model):
    """The unconstrained parameterization scipy optimizes has exactly nVarParams
    coordinates: the count is the dimension of the structure."""
    rng = np.random.default_rng(0)
    for k, d in [(1, 1), (3, 1), (1, 4), (3, 4)]:
        size = mc.n_covariance_parameters(model, k, d)
        cov = structured_covariances(model, rng.normal(size=size) * 0.3, k, d)
        assert cov.shape == (k, d, d)
        with pytest.raises(AssertionError):
            structured_covariances(model, np.zeros(size + 1), k, d)


def test_canonical_names_and_errors():
    assert mc.canonical_model("vev") == "VEV"
    assert mc.canonical_model("full") == "VVV"
    assert [mc.is_diagonal(m) for m in ("EVI", "EVE", "diag", "tied")] == [True, False, True, False]
    with pytest.raises(ValueError, match="unknown covariance_type 'XYZ'"):
        mc.canonical_model("XYZ")
    with pytest.raises(ValueError, match="needs full second moments"):
        mc.m_step(make_stats(0, full=False), "EEE", 1e-6, EPS)


# ----------------------------------------------------------------------------
# The M-steps equal a direct numerical maximization
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", mc.MODEL_NAMES)
@pytest.mark.parametrize("k,d,seed", [(3, 3, 0), (2, 1, 1)])
def test_m_step_maximizes_the_expected_complete_loglik(model, k, d, seed):
    stats = make_stats(seed, k=k, d=d)
    result = mc.m_step(stats, model, 0.0, EPS)
    gap, theirs = scipy_gap(model, stats, 0.0, result, seed, covariances=True)
    # scipy may find at most 1e-8 (relative) more, and never finds an objective our
    # closed form or converged iteration beats by more than that either
    assert abs(gap) <= 1e-8, gap
    # the covariances are identified: they agree to scipy's accuracy (measured <= 3e-7
    # of the largest entry; the objective gaps are ~1e-15)
    ours = as_full(result.covariances)
    assert np.abs(ours - theirs).max() <= 2e-6 * np.abs(ours).max()


@pytest.mark.parametrize("model", mc.ITERATIVE_MODELS)
def test_iterative_m_steps_maximize_at_a_larger_size(model):
    """K = 4, d = 5 (EVE: 27 free parameters): the iterated M-steps, EVE/VVE on the
    default (compiled, where Numba is installed) sweep, still match scipy to 1e-8."""
    stats = make_stats(3, k=4, d=5, n=400)
    result = mc.m_step(stats, model, 0.0, EPS)
    assert result.converged
    assert abs(scipy_gap(model, stats, 0.0, result, 3)) <= 1e-8


@pytest.mark.parametrize("model", mc.ITERATIVE_MODELS + ("EVV", "EEV"))
def test_m_step_with_regularization_maximizes_the_ridged_objective(model):
    """With ``reg_covar``, the result is the exact maximizer against ``W_k + n_k reg I``."""
    stats = make_stats(5, k=3, d=3)
    result = mc.m_step(stats, model, 0.05, EPS)
    assert abs(scipy_gap(model, stats, 0.05, result, 5)) <= 1e-8


@pytest.mark.parametrize("model", ["EVE", "VVE"])
def test_mm_orientation_step_reaches_the_same_optimum(model):
    """Browne & McNicholas's MM update (slower) converges to the Jacobi result and
    matches scipy too."""
    stats = make_stats(0, k=3, d=3)
    mm = mc.m_step(stats, model, 0.0, EPS, orientation_method="mm")
    jacobi = mc.m_step(stats, model, 0.0, EPS)
    assert mm.converged and jacobi.converged and mm.n_iter > jacobi.n_iter
    np.testing.assert_allclose(mm.covariances, jacobi.covariances, rtol=1e-7, atol=1e-12)
    assert abs(scipy_gap(model, stats, 0.0, mm)) <= 1e-8
    history = np.array(mm.objective)
    assert (np.diff(history) >= -1e-13 * np.abs(history).max()).all()


def test_decompose_false_skips_only_the_decomposition():
    stats = make_stats(0, k=3, d=3)
    for model in ("EEE", "VEE", "EVV", "VVV"):
        a = mc.m_step(stats, model, 1e-6, EPS, decompose=False)
        b = mc.m_step(stats, model, 1e-6, EPS)
        assert a.scale is None and a.shape is None and a.orientation is None
        assert np.array_equal(a.covariances, b.covariances)
        assert np.array_equal(a.precisions_cholesky, b.precisions_cholesky)


@pytest.mark.parametrize("model", mc.MODEL_NAMES)
def test_scipy_cannot_improve_from_our_solution(model):
    """A stationary point: BFGS started at our parameters finds nothing better."""
    stats = make_stats(7, k=3, d=3)
    result = mc.m_step(stats, model, 0.0, EPS)
    nk, w = regularized_scatter(stats, 0.0)
    ours = objective_full(as_full(result.covariances), w, nk)
    start = our_parameters(model, result)
    np.testing.assert_allclose(
        structured_covariances(model, start, 3, 3), as_full(result.covariances), rtol=1e-9
    )
    polished, _ = scipy_optimum(model, nk, w, [start])
    assert polished - ours <= 1e-10 * abs(ours)


def our_parameters(model: str, result) -> np.ndarray:
    """The unconstrained coordinates of an M-step result (inverse of
    ``structured_covariances``), from its reported decomposition."""
    k, d = result.shape.shape
    parts = [np.log(result.scale[:1] if model[0] == "E" else result.scale)]
    if model[1] != "I":
        logs = np.log(result.shape[:1] if model[1] == "E" else result.shape)
        parts.append(logs[:, :-1].ravel())
    if model[2] != "I":
        gens = []
        for o in result.orientation[:1] if model[2] == "E" else result.orientation:
            o = o.copy()  # a column's sign does not change the covariance
            # flip columns until D + I is well conditioned (Cayley's domain)
            for j in range(d):
                if o[j, j] < 0:
                    o[:, j] *= -1
            if np.linalg.det(o) < 0:
                o[:, np.argmin(np.diagonal(o))] *= -1
            eye = np.eye(d)
            skew = np.linalg.solve((o + eye).T, (o - eye).T).T
            gens.append(skew[np.triu_indices(d, 1)])
        parts.append(np.concatenate(gens))
    return np.concatenate(parts)


# ----------------------------------------------------------------------------
# Structure, monotone inner iterations, stationarity
# ----------------------------------------------------------------------------


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(1, 4),
    d=st.integers(1, 4),
    seed=st.integers(0, 2**16),
    near_empty=st.sampled_from([None, 1e-3, 1e-12, 0.0]),
    reg=st.sampled_from([1e-6, 1e-3]),
)
def test_every_model_has_its_structure_and_finite_parameters(k, d, seed, near_empty, reg):
    stats = make_stats(seed, k=k, d=d, near_empty=near_empty)
    diag_stats = make_stats(seed, k=k, d=d, near_empty=near_empty, full=False)
    for model in mc.MODEL_NAMES:
        res = mc.m_step(diag_stats if model in mc.DIAGONAL_MODELS else stats, model, reg, EPS)
        assert res.converged
        for name in ("weights", "means", "covariances", "precisions_cholesky", "scale", "shape"):
            assert np.isfinite(getattr(res, name)).all(), (model, name)
        assert structure_violations(model, res.covariances) == [], model
        # the decomposition reproduces the covariances, with det(A_k) = 1
        full = np.einsum(
            "kij,kj,klj->kil", res.orientation, res.scale[:, None] * res.shape, res.orientation
        )
        np.testing.assert_allclose(full, as_full(res.covariances), rtol=1e-8, atol=1e-12)
        np.testing.assert_allclose(np.log(res.shape).sum(axis=1), 0.0, atol=1e-9)
        # precision factors are those of the covariances
        if res.covariances.ndim == 2:
            np.testing.assert_allclose(res.precisions_cholesky**-2, res.covariances, rtol=1e-10)
        else:
            u = res.precisions_cholesky
            np.testing.assert_allclose(
                np.linalg.inv(u @ np.swapaxes(u, 1, 2)), res.covariances, rtol=1e-7, atol=1e-12
            )


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 4),
    d=st.integers(1, 5),
    seed=st.integers(0, 2**16),
    near_empty=st.sampled_from([None, 1e-6]),
)
def test_inner_iterations_never_decrease_the_objective(k, d, seed, near_empty):
    stats = make_stats(seed, k=k, d=d, near_empty=near_empty)
    nk, w = regularized_scatter(stats, 1e-6)
    for model in mc.ITERATIVE_MODELS:
        res = mc.m_step(stats, model, 1e-6, EPS)
        history = np.array(res.objective)
        assert len(history) == res.n_iter + (1 if model in ("EVE", "VVE") else 0)
        # rounding of Q: its terms are O(n d) even where Q itself is near 0
        slack = 1e-12 * nk.sum() * d
        assert (np.diff(history) >= -slack).all(), model
        # the reported history ends at the objective of the returned covariances
        final = objective_full(as_full(res.covariances), w, nk)
        assert history[-1] == pytest.approx(final, abs=slack * 100)


@pytest.mark.parametrize("model", ["EVE", "VVE", "VEI", "VEE", "VEV"])
@pytest.mark.parametrize("max_iter", [1, 2, 5])
def test_truncated_inner_loop_is_a_generalized_m_step(model, max_iter):
    """Stopped early (a generalized M-step), the objective still beats the start."""
    stats = make_stats(3, k=3, d=4)
    nk, w = regularized_scatter(stats, 1e-6)
    short = mc.m_step(stats, model, 1e-6, EPS, max_iter=max_iter)
    full = mc.m_step(stats, model, 1e-6, EPS)
    q_short = objective_full(as_full(short.covariances), w, nk)
    assert short.objective[0] <= q_short + 1e-12 * abs(q_short)
    assert q_short <= objective_full(as_full(full.covariances), w, nk) + 1e-12 * abs(q_short)


@pytest.mark.parametrize("method", ["jacobi", "mm"])
@pytest.mark.parametrize("model", ["EVE", "VVE"])
def test_common_orientation_is_a_stationary_point(model, method):
    """At convergence the Riemannian gradient of ``sum_k tr(W_k D M_k D^T)`` on the
    orthogonal group vanishes: ``D^T (sum_k W_k D M_k)`` is symmetric."""
    stats = make_stats(11, k=3, d=5)
    nk, w = regularized_scatter(stats, 0.0)
    res = mc.m_step(stats, model, 0.0, EPS, orientation_method=method)
    assert res.converged
    o = res.orientation[0]
    m = 1.0 / (res.scale[:, None] * res.shape)
    x = sum(o.T @ w[j] @ o * m[j] for j in range(3))
    assert np.abs(x - x.T).max() <= 1e-7 * np.abs(x).max()


def test_warm_started_orientation_converges_at_once():
    stats = make_stats(4, k=3, d=4)
    cold = mc.m_step(stats, "EVE", 1e-6, EPS)
    warm = mc.m_step(stats, "EVE", 1e-6, EPS, orientation_init=cold.orientation[0])
    assert warm.n_iter <= 2 < cold.n_iter
    np.testing.assert_allclose(warm.covariances, cold.covariances, rtol=1e-8)


# ----------------------------------------------------------------------------
# The compiled (Numba) orientation sweep equals the NumPy one
# ----------------------------------------------------------------------------


def _random_sweep_inputs(seed: int, k: int, d: int):
    """``G_k = D^T W_k D`` for random SPD ``W_k`` (spread-out spectra) and a random
    orthogonal ``D``, with weights ``n_k``."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(k, d, d)) * rng.uniform(0.1, 3.0, size=(k, 1, d))
    w = a @ np.swapaxes(a, 1, 2) + 0.1 * np.eye(d)
    orient = np.linalg.qr(rng.normal(size=(d, d)))[0]
    nk = rng.uniform(0.5, 50.0, size=k)
    return np.ascontiguousarray(orient.T @ w @ orient), np.ascontiguousarray(orient), nk


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 6),
    d=st.integers(1, 13),
    seed=st.integers(0, 2**16),
    equal_volume=st.booleans(),
)
def test_compiled_sweep_equals_numpy_sweep(k, d, seed, equal_volume):
    """One sweep on random statistics: same orientation and rotated ``G`` to rounding."""
    sweep = pytest.importorskip("fastem.backends._numba_mclust").jacobi_sweep
    g, orient, nk = _random_sweep_inputs(seed, k, d)
    expected = mc._jacobi_sweep(g.copy(), orient, nk, equal_volume, 0.0, mc._round_robin(d))
    g_new, o_new = g.copy(), orient.copy()
    bad = sweep(g_new, o_new, nk, equal_volume, *mc._flat_rounds(d), mc._PLANE_ITERATIONS)
    assert bad == -1
    np.testing.assert_allclose(o_new, expected, rtol=0, atol=1e-11)
    g_expected = expected.T @ (orient @ g @ orient.T) @ expected  # D'^T W_k D'
    np.testing.assert_allclose(g_new, g_expected, rtol=0, atol=1e-10 * np.abs(g).max())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    k=st.integers(1, 5),
    d=st.integers(1, 9),
    seed=st.integers(0, 2**16),
    model=st.sampled_from(["EVE", "VVE"]),
    max_iter=st.sampled_from([1, 2, 3, mc.DEFAULT_MAX_ITER]),
    reg=st.sampled_from([0.0, 1e-6]),
)
def test_compiled_m_step_equals_numpy_m_step(k, d, seed, model, max_iter, reg):
    """The whole EVE/VVE M-step, as a generalized (1-3 sweeps) and as an exact one."""
    pytest.importorskip("numba")
    stats = make_stats(seed, k=k, d=d)
    kw = dict(max_iter=max_iter)
    a = mc.m_step(stats, model, reg, EPS, implementation="numpy", **kw)
    b = mc.m_step(stats, model, reg, EPS, implementation="numba", **kw)
    assert (a.n_iter, a.converged) == (b.n_iter, b.converged)
    # iterated to tol, rounding differences may leave a few 1e-10 in D
    tight = 1e-12 if max_iter < 10 else 1e-8
    scale = np.abs(a.covariances).max()
    np.testing.assert_allclose(b.covariances, a.covariances, rtol=0, atol=tight * scale)
    np.testing.assert_allclose(b.orientation, a.orientation, rtol=0, atol=tight * 10)
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-12)


def test_compiled_sweep_reports_a_singular_component_as_numpy_raises():
    """A zero variance along an axis of component 1: the kernel returns 1, the NumPy
    sweep raises for component 1, and so does ``m_step`` on the compiled path."""
    sweep = pytest.importorskip("fastem.backends._numba_mclust").jacobi_sweep
    for equal_volume in (True, False):
        g, orient, nk = _random_sweep_inputs(3, 3, 4)
        g[1, 2, :] = g[1, :, 2] = 0.0
        with pytest.raises(ValueError, match="component 1 has an ill-defined"):
            mc._jacobi_sweep(g.copy(), orient, nk, equal_volume, 0.0, mc._round_robin(4))
        flat = mc._flat_rounds(4)
        assert sweep(g.copy(), orient.copy(), nk, equal_volume, *flat, 8) == 1


def test_the_numpy_path_is_used_without_numba(monkeypatch):
    """No Numba: 'auto' runs the NumPy sweep (bit for bit), 'numba' is an ImportError,
    and an unknown implementation is refused."""
    import sys

    stats = make_stats(2, k=3, d=5)
    reference = mc.m_step(stats, "VVE", 1e-6, EPS, max_iter=2, implementation="numpy")
    monkeypatch.setitem(sys.modules, "fastem.backends._numba_mclust", None)
    auto = mc.m_step(stats, "VVE", 1e-6, EPS, max_iter=2)
    np.testing.assert_array_equal(auto.covariances, reference.covariances)
    np.testing.assert_array_equal(auto.orientation, reference.orientation)
    with pytest.raises(ImportError):
        mc.m_step(stats, "VVE", 1e-6, EPS, implementation="numba")
    with pytest.raises(ValueError, match="implementation must be"):
        mc.m_step(stats, "VVE", 1e-6, EPS, implementation="cython")


def test_flat_rounds_meet_every_pair_once():
    for d in range(1, 12):
        pair_i, pair_j, start = mc._flat_rounds(d)
        pairs = set(zip(pair_i.tolist(), pair_j.tolist(), strict=True))
        assert pairs == {(i, j) for i in range(d) for j in range(i + 1, d)}
        assert len(pairs) == len(pair_i) and start[-1] == len(pair_i)
        for r in range(len(start) - 1):  # the pairs of a round are disjoint
            idx = np.concatenate([pair_i[start[r] : start[r + 1]], pair_j[start[r] : start[r + 1]]])
            assert len(set(idx.tolist())) == len(idx)


# ----------------------------------------------------------------------------
# The scikit-learn aliases
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("reg", [0.0, 1e-6])
def test_aliases_equal_fastem_m_step_bit_for_bit(seed, reg):
    """VVV/VVI/VII/EEE equal fastem's full/diag/spherical/tied M-step exactly
    (weights, means, covariances and precision factors: array_equal)."""
    full_stats = make_stats(seed, k=3, d=4, near_empty=1e-9, offset=1e6)
    diag_stats = make_stats(seed, k=3, d=4, near_empty=1e-9, offset=1e6, full=False)
    for alias, model in mc.ALIASES.items():
        stats = full_stats if alias in ("full", "tied") else diag_stats
        weights, means, cov, prec = sk_m_step(stats, alias, reg, EPS)
        for name in (alias, model):
            res = mc.m_step(stats, name, reg, EPS)
            assert np.array_equal(res.weights, weights)
            assert np.array_equal(res.means, means)
            assert np.array_equal(mc.alias_covariances(res.covariances, alias), cov)
            assert np.array_equal(mc.alias_covariances(res.precisions_cholesky, alias), prec)


# ----------------------------------------------------------------------------
# Degenerate cases
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", mc.MODEL_NAMES)
def test_one_feature_collapses_to_mclust_e_and_v(model):
    """d = 1: "E..." models are mclust's "E" (one variance), "V..." its "V"."""
    stats = make_stats(2, k=3, d=1)
    res = mc.m_step(stats, model, 0.0, EPS)
    v = as_full(res.covariances)[:, 0, 0]
    ref = mc.m_step(stats, "EII" if model[0] == "E" else "VII", 0.0, EPS)
    np.testing.assert_allclose(v, as_full(ref.covariances)[:, 0, 0], rtol=1e-10)


@pytest.mark.parametrize("model", mc.MODEL_NAMES)
def test_one_component_all_models_of_a_kind_agree(model):
    """K = 1: volume E/V is moot, shape/orientation E/V too: every model is
    XII, XXI or XXX (mclust's single-component names)."""
    stats = make_stats(3, k=1, d=3)
    res = mc.m_step(stats, model, 0.0, EPS)
    ref = "VII" if model[1:] == "II" else "VVI" if model[2] == "I" else "VVV"
    np.testing.assert_allclose(
        as_full(res.covariances), as_full(mc.m_step(stats, ref, 0.0, EPS).covariances), rtol=1e-8
    )


@pytest.mark.parametrize("model", mc.MODEL_NAMES)
def test_empty_component_without_reg_is_finite_or_a_clear_error(model):
    stats = make_stats(6, k=3, d=3, near_empty=0.0)
    stats = Stats(0.0, stats.weight_sum, stats.nk, stats.sx, stats.sxx, stats.shift)
    try:
        res = mc.m_step(stats, model, 0.0, EPS)
    except ValueError as exc:
        assert "ill-defined covariance" in str(exc)
        # only a component-specific volume or shape is undefined for an empty component
        assert "V" in model[:2]
    else:
        assert np.isfinite(res.covariances).all() and np.isfinite(res.precisions_cholesky).all()
        # the empty component's weight is ~0 but its covariance is a valid one
        assert res.weights[-1] < 1e-12


@pytest.mark.parametrize("model", mc.MODEL_NAMES)
def test_empty_component_with_reg_is_finite(model):
    stats = make_stats(6, k=3, d=3, near_empty=0.0, full=model not in mc.DIAGONAL_MODELS)
    res = mc.m_step(stats, model, 1e-6, EPS)
    assert np.isfinite(res.covariances).all() and np.isfinite(res.precisions_cholesky).all()
    assert structure_violations(model, res.covariances) == []


@pytest.mark.parametrize("model", ["VVV", "EVV", "VEV", "VVE", "VEE", "VVI", "VEI"])
def test_singular_scatter_raises_fastem_singular_error(model):
    """Fewer points than features in a component and no reg: the clear error."""
    rng = np.random.default_rng(0)
    d = 4
    X = rng.normal(size=(6, d))
    r = np.zeros((6, 2))
    r[:2, 0] = 1.0
    r[2:, 1] = 1.0
    X[1] = X[0]  # the first component collapses onto one point
    shift = np.stack([X[0], X[2:].mean(axis=0)])  # its moments are exactly 0
    diff = X[None] - shift[:, None]
    sx = np.einsum("nk,kni->ki", r, diff)
    full = model not in mc.DIAGONAL_MODELS
    if full:
        sxx = np.einsum("nk,kni,knj->kij", r, diff, diff)
    else:
        sxx = np.einsum("nk,kni->ki", r, diff**2)
    stats = Stats(0.0, 6.0, r.sum(axis=0), sx, sxx, shift)
    with pytest.raises(ValueError, match="component 0 has an ill-defined covariance"):
        mc.m_step(stats, model, 0.0, EPS)


def test_large_offset_gives_the_same_parameters():
    """Centred moments: data near 1e6 fit like data near 0 (every model)."""
    near = make_stats(8, k=2, d=3)
    far = make_stats(8, k=2, d=3, offset=1e6)
    for model in FULL_MODELS:
        a, b = mc.m_step(near, model, 1e-6, EPS), mc.m_step(far, model, 1e-6, EPS)
        np.testing.assert_allclose(a.covariances, b.covariances, rtol=1e-6)


# ----------------------------------------------------------------------------
# Negative controls: the checks above catch a wrong M-step
# ----------------------------------------------------------------------------


def test_negative_control_one_fixed_point_step_fails_the_scipy_comparison(monkeypatch):
    """Patch VEI's fixed point to a single step: the scipy comparison must fail."""
    stats = make_stats(0, k=3, d=3)
    original = mc._common_shape

    def one_step(omega, nk, reg_covar, tol, max_iter):
        return original(omega, nk, reg_covar, tol, 1)

    monkeypatch.setattr(mc, "_common_shape", one_step)
    wrong = mc.m_step(stats, "VEI", 0.0, EPS)
    assert not wrong.converged
    assert scipy_gap("VEI", stats, 0.0, wrong) > 1e-8


def test_negative_control_adding_reg_after_the_fit_breaks_equal_shapes():
    """The tempting alternative regularization, ``lambda_k D A D^T + reg I``, is no
    longer VEV: the structure check catches it; ours keeps the structure."""
    stats = make_stats(1, k=3, d=3)
    res = mc.m_step(stats, "VEV", 0.0, EPS)
    post_hoc = res.covariances + 0.5 * np.eye(3)
    assert "equal shape" in structure_violations("VEV", post_hoc)
    assert structure_violations("VEV", mc.m_step(stats, "VEV", 0.5, EPS).covariances) == []


def test_negative_control_wrong_orientation_update_fails(monkeypatch):
    """EVE stopped after a single orientation (MM) step is not the optimum."""
    stats = make_stats(0, k=3, d=3)
    original = mc._common_orientation

    def frozen(w, nk, equal_volume, reg_covar, tol, max_iter, init, method, implementation):
        return original(w, nk, equal_volume, reg_covar, tol, 1, init, "mm", implementation)

    monkeypatch.setattr(mc, "_common_orientation", frozen)
    wrong = mc.m_step(stats, "EVE", 0.0, EPS)
    assert scipy_gap("EVE", stats, 0.0, wrong) > 1e-8
