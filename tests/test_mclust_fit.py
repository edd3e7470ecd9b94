"""GaussianMixture with mclust's 14 covariance models (issue #16): names, aliases bit
for bit, structure of the fitted covariances, monotone EM, every data path."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastem import GaussianMixture
from fastem import _mclust as mc
from fastem._covariance import (
    COVARIANCE_TYPES,
    MCLUST_MODELS,
    SKLEARN_ALIASES,
    check_covariance_type,
    n_parameters,
)
from fastem.datasets import make_mixture

K, D = 3, 3


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    X, _ = make_mixture(600, D, K, random_state=3)
    return X


def fit(X, model, sample_weight=None, **params):
    params.setdefault("random_state", 0)
    params.setdefault("max_iter", 30)
    params.setdefault("tol", 1e-6)
    params.setdefault("n_components", K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(covariance_type=model, **params)
        return gm.fit(X, sample_weight=sample_weight)


# ---------------------------------------------------------------- names
def test_names_are_canonical_and_the_four_sklearn_names_stay():
    assert COVARIANCE_TYPES == ("full", "tied", "diag", "spherical")  # fastem.hmm relies on it
    assert MCLUST_MODELS == mc.MODEL_NAMES and len(MCLUST_MODELS) == 14
    for name in MCLUST_MODELS:
        assert check_covariance_type(name.lower()) == name
        assert check_covariance_type(name.capitalize()) == name
    for name in COVARIANCE_TYPES:
        assert check_covariance_type(name) == name
    for bad in ("FULL", "EIE", "", None, 3, "vvv "):
        with pytest.raises(ValueError, match="covariance_type"):
            check_covariance_type(bad)


def test_invalid_name_is_refused_by_fit(data):
    with pytest.raises(ValueError, match="mclust model name"):
        GaussianMixture(2, covariance_type="XYZ").fit(data)


def test_hmm_still_refuses_mclust_names():
    from fastem.hmm import GaussianHMM

    with pytest.raises(ValueError, match="covariance_type"):
        GaussianHMM(2, covariance_type="EEE").fit(np.random.default_rng(0).normal(size=(50, 2)))


@pytest.mark.parametrize("alias", COVARIANCE_TYPES)
def test_aliases_fit_bit_for_bit(data, alias):
    model = SKLEARN_ALIASES[alias]
    a, b = fit(data, alias), fit(data, model.lower())
    assert a.lower_bounds_ == b.lower_bounds_ and a.n_iter_ == b.n_iter_
    np.testing.assert_array_equal(a.weights_, b.weights_)
    np.testing.assert_array_equal(a.means_, b.means_)
    cov, pc = b.covariances_, b.precisions_cholesky_
    if alias == "tied":
        assert cov.shape == (K, D, D) and (cov == cov[0]).all()
        cov, pc = cov[0], pc[0]
    elif alias == "spherical":
        assert cov.shape == (K, D) and (cov == cov[:, :1]).all()
        cov, pc = cov[:, 0], pc[:, 0]
    np.testing.assert_array_equal(a.covariances_, cov)
    np.testing.assert_array_equal(a.precisions_cholesky_, pc)
    assert a.bic(data) == pytest.approx(b.bic(data), rel=1e-12)
    assert a._n_parameters() == b._n_parameters()
    # the aliases keep scikit-learn's attribute set
    assert not hasattr(a, "orientation_") and hasattr(b, "orientation_")


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_every_model_fits_with_mclust_counts(data, model):
    gm = fit(data, model)
    shape = (K, D) if model in mc.DIAGONAL_MODELS else (K, D, D)
    assert gm.covariances_.shape == gm.precisions_cholesky_.shape == shape
    assert gm.precisions_.shape == shape
    assert gm._n_parameters() == mc.n_parameters(model, K, D) == n_parameters(model, K, D)
    n = data.shape[0]
    ll = gm.score(data) * n
    assert gm.bic(data) == pytest.approx(-2 * ll + gm._n_parameters() * np.log(n), rel=1e-10)
    assert gm.aic(data) == pytest.approx(-2 * ll + 2 * gm._n_parameters(), rel=1e-10)
    assert np.isfinite(gm.score_samples(data)).all()
    proba = gm.predict_proba(data)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    X, y = gm.sample(50)
    assert X.shape == (50, D) and y.shape == (50,)


# ------------------------------------------------------------ structure
def structure_violations(model: str, gm, rtol: float = 1e-8) -> list[str]:
    """The claims of ``model``'s name that the fitted covariances break.

    Checked on ``covariances_`` itself (volumes from determinants, shapes from
    sorted eigenvalues, common orientation as pairwise commuting matrices), and
    ``scale_ D diag(shape_) D^T`` must rebuild it.
    """
    cov = np.asarray(gm.covariances_, dtype=np.float64)
    k, d = cov.shape[0], cov.shape[-1]
    full = cov if cov.ndim == 3 else cov[:, :, None] * np.eye(d)
    bad = []
    values = np.linalg.eigvalsh(full)[:, ::-1]
    volume = np.exp(np.log(values).mean(axis=1))
    shape = values / volume[:, None]
    scale = np.abs(full).max()
    if model[0] == "E" and not np.allclose(volume, volume[0], rtol=rtol, atol=0):
        bad.append("equal volume")
    if model[1] == "E" and not np.allclose(shape, shape[0], rtol=rtol, atol=0):
        bad.append("equal shape")
    if model[1] == "I" and not np.allclose(shape, 1.0, rtol=rtol, atol=0):
        bad.append("identity shape")
    if model[2] == "I" and np.abs(full - full * np.eye(d)).max() > rtol * scale:
        bad.append("identity orientation")
    if model[2] == "E":
        for j in range(1, k):
            commutator = full[0] @ full[j] - full[j] @ full[0]
            if np.abs(commutator).max() > rtol * scale**2:
                bad.append("equal orientation")
                break
    rebuilt = np.einsum(
        "kij,kj,klj->kil", gm.orientation_, gm.scale_[:, None] * gm.shape_, gm.orientation_
    )
    loose = max(10 * rtol, 1e-7)
    if not np.allclose(rebuilt, full, rtol=loose, atol=1e-2 * loose * scale):
        bad.append("decomposition")
    if not np.allclose(np.prod(gm.shape_, axis=1), 1.0, rtol=loose):
        bad.append("shape determinant")
    return bad


@pytest.fixture(scope="module")
def fitted(data):
    return {model: fit(data, model, max_iter=40) for model in MCLUST_MODELS}


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_fitted_covariances_have_their_structure(fitted, model):
    gm = fitted[model]
    assert structure_violations(model, gm) == []
    orient = gm.orientation_
    np.testing.assert_allclose(
        np.swapaxes(orient, 1, 2) @ orient, np.broadcast_to(np.eye(D), (K, D, D)), atol=1e-10
    )
    if model[2] == "I":
        np.testing.assert_array_equal(orient, np.broadcast_to(np.eye(D), (K, D, D)))
    if model[2] == "E":  # one orientation, stored once per component
        assert (orient == orient[0]).all()


def test_structure_check_can_fail(fitted):
    """Negative control: VVV's covariances break every constraint, and each model's
    covariances break the constraints that its name leaves free (V parts vary)."""
    free = fitted["VVV"]
    for model in MCLUST_MODELS[:-1]:
        assert structure_violations(model, free), model
    for model in MCLUST_MODELS:
        wrong = "".join("E" if c == "V" else c for c in model)  # claim equality of V parts
        if wrong != model:
            assert structure_violations(wrong, fitted[model]), model


# ------------------------------------------------------------- monotone EM
def fit_weighted_with_nan(data, model, **params):
    """25 EM iterations (no early stop) on the data with 12% NaN and uneven weights."""
    rng = np.random.default_rng(5)
    X = data.copy()
    X[rng.random(X.shape) < 0.12] = np.nan
    w = rng.uniform(0.2, 3.0, size=X.shape[0])
    gm = fit(X, model, w, max_iter=25, tol=0, **params)
    assert len(gm.lower_bounds_) == 25
    return gm


def largest_decrease(gm) -> float:
    """The largest drop of the log-likelihood between iterations, relative to its size
    (0 or less: monotone; the check allows rounding, 1e-12)."""
    bounds = np.asarray(gm.lower_bounds_)
    return float(-np.diff(bounds).min() / np.abs(bounds).max())


@pytest.mark.parametrize("acceleration", [None, "squarem"])
@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_log_likelihood_never_decreases_with_weights_and_nan(data, model, acceleration):
    """Plain EM, and SQUAREM (select_model's default) whose extrapolations are
    projected onto the structure and kept only if no worse."""
    gm = fit_weighted_with_nan(data, model, acceleration=acceleration)
    assert largest_decrease(gm) <= 1e-12
    assert structure_violations(model, gm) == []


@pytest.mark.parametrize("model,part", [("EVE", "orientation"), ("VVE", "orientation"),
                                        ("VEI", "shape"), ("VEV", "shape")])  # fmt: skip
def test_monotone_check_catches_a_wrong_m_step(data, monkeypatch, model, part):
    """Negative control for the test above: an M-step that keeps the structure but is
    not the maximizer (every other call: the common orientation rotated by 0.4 rad in
    one plane, or the common shape stretched along two axes) makes the log-likelihood
    drop, and the same check fails."""
    import dataclasses

    from fastem._covariance import precision_cholesky

    original = mc.m_step  # _stats.m_step looks it up at each call
    calls = []

    def wrong(stats, m, reg_covar, eps, **options):
        res = original(stats, m, reg_covar, eps, **options)
        calls.append(m)
        if m != model or len(calls) % 2:
            return res
        cov, orientation = res.covariances, res.orientation
        if part == "orientation":  # R Sigma_k R^T: still one common orientation, R D
            rot = np.eye(D)
            rot[:2, :2] = [[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]]
            cov, orientation = rot @ cov @ rot.T, rot @ orientation
        elif cov.ndim == 2:  # diagonal: the common shape times a det-1 stretch
            cov = cov * np.exp([0.4, -0.4, 0.0])
        else:  # D_k A D_k^T -> D_k A S D_k^T: each in its own axes, still equal shapes
            cov = np.stack([o @ np.diag(np.exp([0.4, -0.4, 0.0])) @ o.T for o in res.orientation])
            cov = cov @ res.covariances
            cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
        prec = precision_cholesky(cov, "diag" if cov.ndim == 2 else "full")
        return dataclasses.replace(
            res, covariances=cov, precisions_cholesky=prec, orientation=orientation
        )

    monkeypatch.setattr(mc, "m_step", wrong)
    gm = fit_weighted_with_nan(data, model)
    assert model in calls
    assert largest_decrease(gm) > 1e-6
    assert structure_violations(model, gm) == []  # the bug is not a structure bug


# ------------------------------------------------------------- data paths
ATTRS = ("weights_", "means_", "covariances_", "precisions_cholesky_", "scale_", "shape_")


def family_init(X, model, seed=1):
    """Explicit initial parameters in the model's kernel family (projected by fit)."""
    from fastem.datasets import initial_parameters

    family = "diag" if model in mc.DIAGONAL_MODELS else "full"
    init = initial_parameters(np.nan_to_num(X), K, family, random_state=seed)
    init.pop("covariance_type")
    init.pop("n_components", None)
    return init


def assert_same_fit(a, b, rtol=1e-7):
    np.testing.assert_allclose(b.lower_bounds_, a.lower_bounds_, rtol=rtol, atol=0)
    for attr in ATTRS:
        np.testing.assert_allclose(getattr(b, attr), getattr(a, attr), rtol=rtol, atol=1e-12)
    assert b.n_iter_ == a.n_iter_


@pytest.fixture(scope="module")
def messy(data):
    """The data with 10% NaN, and positive weights."""
    rng = np.random.default_rng(11)
    X = data.copy()
    X[rng.random(X.shape) < 0.1] = np.nan
    return X, rng.uniform(0.5, 2.0, size=X.shape[0])


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_in_memory_out_of_core_and_dask_agree(tmp_path, monkeypatch, messy, model):
    da = pytest.importorskip("dask.array")
    dask = pytest.importorskip("dask")
    import fastem._blocks as blocks

    monkeypatch.setattr(blocks, "BLOCK_BYTES", 8 << 10)  # many blocks
    X, w = messy
    init = family_init(X, model)
    opts = dict(max_iter=6, tol=0, backend="numpy", **init)
    a = fit(X, model, w, **opts)
    np.save(tmp_path / "X.npy", X)
    b = fit(np.load(tmp_path / "X.npy", mmap_mode="r"), model, w, **opts)
    with dask.config.set(scheduler="synchronous"):
        c = fit(da.from_array(X, chunks=(170, 2)), model, da.from_array(w, chunks=250), **opts)
        Xd = da.from_array(X, chunks=(170, 3))
        np.testing.assert_allclose(c.bic(Xd), c.bic(X), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(c.predict_proba(Xd)), c.predict_proba(X), atol=1e-12)
    assert_same_fit(a, b)
    assert_same_fit(a, c)
    assert structure_violations(model, c) == []
    np.testing.assert_allclose(b.score_samples(np.load(tmp_path / "X.npy", mmap_mode="r")),
                               b.score_samples(X), rtol=1e-12)  # fmt: skip


@pytest.mark.parametrize("model", ["EEI", "VEE", "EVE", "VEV"])
def test_float32_n_init_and_warm_start(data, model):
    a = fit(data, model, max_iter=60)
    b = fit(data.astype(np.float32), model, max_iter=60)
    assert b.means_.dtype == b.covariances_.dtype == b.orientation_.dtype == np.float32
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=2e-3, atol=1e-3)
    assert structure_violations(model, b, rtol=1e-5) == []
    best = fit(data, model, n_init=3, max_iter=60)  # its first start is random_state=0's
    assert best.lower_bound_ >= fit(data, model, max_iter=60).lower_bound_ - 1e-9
    assert structure_violations(model, best) == []
    warm = fit(data, model, max_iter=3, tol=0)
    first = warm.lower_bounds_[-1]
    warm.set_params(warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm.fit(data)
    assert warm.lower_bounds_[0] >= first - 1e-12  # continues, does not restart
    assert np.diff(warm.lower_bounds_).min() >= -1e-12
    assert structure_violations(model, warm) == []


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_partial_fit_keeps_the_structure(messy, model):
    X, w = messy
    gm = GaussianMixture(K, covariance_type=model, random_state=0)
    for start in range(0, X.shape[0], 200):
        gm.partial_fit(X[start : start + 200], sample_weight=w[start : start + 200])
    assert gm.n_batches_ == 3
    assert structure_violations(model, gm) == []
    fitted = fit(X, model, w, max_iter=5)
    fitted.partial_fit(X[:200])  # continues a fit
    assert structure_violations(model, fitted) == []


@pytest.mark.parametrize("acceleration", ["squarem", "anderson"])
@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_acceleration_works_for_every_model(data, model, acceleration):
    init = family_init(data, model)
    plain = fit(data, model, max_iter=200, tol=1e-7, **init)
    fast = fit(data, model, max_iter=200, tol=1e-7, acceleration=acceleration, **init)
    assert structure_violations(model, fast) == []
    assert fast.n_extrapolations_accepted_ + fast.n_extrapolations_rejected_ > 0
    # the same maximum (well-separated data), reached no later than by plain EM
    assert fast.lower_bound_ >= plain.lower_bound_ - 1e-5
    assert fast.n_iter_ <= plain.n_iter_ or not plain.converged_
    np.testing.assert_allclose(fast.means_, plain.means_, rtol=1e-2, atol=1e-2)


def test_acceleration_extrapolates_structured_models(data):
    """The projection path runs and is accepted (not every point rejected)."""
    accepted = 0
    for model in ("VEI", "EVE", "VEV"):
        gm = fit(data, model, max_iter=200, tol=1e-9, acceleration="squarem")
        accepted += gm.n_extrapolations_accepted_
    assert accepted > 0


# ------------------------------------------------------------ initial values
@pytest.mark.parametrize("model", ["EII", "VII", "EEI", "EEE", "VEE", "EVE", "EEV", "VEV"])
def test_precisions_init_is_projected_onto_the_structure(data, model):
    from fastem.datasets import initial_parameters

    init = family_init(data, model)
    rng = np.random.default_rng(0)
    prec = init["precisions_init"] * rng.uniform(
        0.5, 2.0, size=(K,) + (1,) * (init["precisions_init"].ndim - 1)
    )  # unequal volumes: no structure
    init["precisions_init"] = prec
    start = fit(data, model, max_iter=0, **init)
    assert structure_violations(model, start) == []
    # a structured start is kept (the projection is idempotent)
    init["precisions_init"] = start.precisions_
    again = fit(data, model, max_iter=0, **init)
    np.testing.assert_allclose(again.covariances_, start.covariances_, rtol=1e-10)
    with pytest.raises(ValueError, match="precisions_init must have shape"):
        GaussianMixture(K, covariance_type=model, precisions_init=np.ones(K)).fit(data)
    del initial_parameters


# -------------------------------------------------------------- persistence
@pytest.mark.parametrize("model", ["VII", "EEE", "EVE", "vei"])
def test_save_and_load(tmp_path, data, model):
    import fastem

    gm = fit(data, model, max_iter=10)
    gm.partial_fit(data[:100])
    path = tmp_path / "m.npz"
    gm.save(path)
    back = fastem.load(path)
    assert back.covariance_type == model
    for attr in ATTRS + ("orientation_", "precisions_"):
        np.testing.assert_array_equal(getattr(back, attr), getattr(gm, attr))
    np.testing.assert_array_equal(back.predict_proba(data), gm.predict_proba(data))
    back.partial_fit(data[100:200])  # the stream continues
    assert structure_violations(model.upper(), back) == []


def test_a_model_file_without_its_decomposition_is_refused(tmp_path, data):
    import fastem
    from fastem.persistence import save_model

    gm = fit(data, "EVE", max_iter=3)
    del gm.orientation_
    path = tmp_path / "m.npz"
    save_model(gm, path)
    with pytest.raises(ValueError, match="orientation_"):
        fastem.load(path)


# ------------------------------------------------- starts: degenerate runs
ALL_NAMES = MCLUST_MODELS + COVARIANCE_TYPES


def _partition_stats(X, labels, k, full):
    from fastem._init import stats_from_partition

    w = np.ones(len(X))
    rng = np.random.RandomState(0)
    return stats_from_partition(X, w, np.arange(len(X)), w, labels, k, rng, full)


def degenerate_reference(stats, model, reg, variances, n_rows, rel_eig=1e-5) -> bool:
    """``_init.degenerate`` from its definition, on (k, d, d) matrices from
    ``_mclust.m_step`` (not the public layouts): too few rows for the structure, or a
    scaled eigenvalue below ``rel_eig``."""
    m = mc.canonical_model(model)
    d = stats.sx.shape[1]
    rows = stats.nk * n_rows / stats.weight_sum
    # a component's covariance is singular with its scatter iff its shape and its
    # orientation are both its own (?VV); else 2 rows give a positive variance
    if rows.min() < (d + 1 if m[1:] == "VV" else 2):
        return True
    cov = mc.m_step(stats, m, reg, EPS_64).covariances
    full = cov if cov.ndim == 3 else np.stack([np.diag(c) for c in cov])
    s = 1.0 / np.sqrt(variances)
    lam = min(np.linalg.eigvalsh(c * np.outer(s, s)).min() for c in full)
    return bool(lam < rel_eig)


EPS_64 = float(np.finfo(np.float64).eps)


@pytest.fixture(scope="module")
def partitions():
    """Three hard partitions of 3-d data with 240 rows: well separated clusters; one
    of 3 rows (fewer than d + 1); one whose 40 rows lie on a line (not along an axis)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=240)
    centres = np.array([[0.0, 0.0, 0.0], [4.0, 0.0, 1.0], [0.0, 5.0, -2.0]])
    X = centres[labels] + rng.normal(size=(240, 3)) * [1.0, 0.5, 2.0]
    small = np.zeros(240, dtype=np.int64)
    small[:3] = 1
    flat = X.copy()
    flat[:40, 1:] = flat[:40, :1] * [2.0, -1.0]
    line = np.zeros(240, dtype=np.int64)
    line[:40] = 1
    return {
        "good": (X, labels, 3),
        "small": (X, small, 2),
        "line": (flat, line, 2),
    }


@pytest.mark.parametrize("case", ["good", "small", "line"])
def test_degenerate_is_right_for_every_layout(partitions, case):
    """Every mclust model and scikit-learn name: ``degenerate`` equals its definition
    evaluated on full matrices, and the cases whose answer the structure decides."""
    from fastem._init import degenerate

    X, labels, k = partitions[case]
    variances = X.var(axis=0)
    flagged = {}
    for name in ALL_NAMES:
        full = name in ("full", "tied") or mc.canonical_model(name) not in mc.DIAGONAL_MODELS
        stats = _partition_stats(X, labels, k, full)
        got = degenerate(stats, name, 1e-9, variances, 240.0)
        assert got == degenerate_reference(stats, name, 1e-9, variances, 240.0), name
        flagged[name] = got
    # an alias answers as its model
    for alias, model in SKLEARN_ALIASES.items():
        assert flagged[alias] == flagged[model], alias
    if case == "good":  # separated clusters: nothing degenerate
        assert not any(flagged.values()), flagged
    elif case == "small":  # 3 rows < d + 1: exactly the models with own shape and axes
        assert {n for n, f in flagged.items() if f} == {"VVV", "EVV", "full"}
    else:  # a component on a line: VVV collapses (EVV's equal volume holds its
        # smallest variance at ~(reg / line variance)^(1/3) of the volume: not here)
        assert flagged["VVV"] and flagged["full"]
        for name in ALL_NAMES:
            m = mc.canonical_model(name)
            if m[1] in "EI":
                assert not flagged[name], name


def test_emem_and_best_starts_run_in_an_mclust_model(data):
    """emEM and 'best' short runs in a structured model: full moments for the eight
    non-diagonal models (before, only 'full'/'tied' got them, and the runs of the
    others failed on diagonal moments), and finite statistics after EM passes."""
    from fastem._init import best_stats, emem_stats
    from fastem.backends import get_backend

    kernels = get_backend("numpy")
    w = np.ones(len(data))
    for model in ("EVE", "VEV", "VEI", "EEE"):
        for strategy in (emem_stats, best_stats):
            stats = strategy(data, w, K, np.random.RandomState(0), kernels, model, 1e-6)
            assert stats.full == (model not in mc.DIAGONAL_MODELS), (model, strategy)
            assert np.isfinite(stats.loglik) and stats.loglik < 0.0  # after EM passes
            res = mc.m_step(stats, model, 1e-6, EPS_64)
            assert np.isfinite(res.covariances).all()
