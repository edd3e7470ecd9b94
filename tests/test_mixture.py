"""GaussianMixture behaviour: closed forms, EM properties, weights, numerics, errors."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES, initial_parameters

from fastem import ConvergenceWarning, GaussianMixture, NotFittedError
from fastem.datasets import make_mixture


def _quiet_fit(model, X, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, **kw)


# ----------------------------------------------------------------- closed forms
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_one_component_is_the_weighted_sample_moments(backend, covariance_type):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 3)) @ np.array([[2.0, 0, 0], [0.5, 1, 0], [0, 0.3, 0.5]])
    w = rng.uniform(0.0, 3.0, size=500)
    gm = GaussianMixture(1, covariance_type=covariance_type, reg_covar=0.0, backend=backend)
    gm.fit(X, sample_weight=w)
    mean = w @ X / w.sum()
    cov = (X - mean).T @ ((X - mean) * w[:, None]) / w.sum()
    expected = {
        "full": cov[None],
        "tied": cov,
        "diag": np.diag(cov)[None],
        "spherical": np.array([np.diag(cov).mean()]),
    }[covariance_type]
    np.testing.assert_allclose(gm.means_[0], mean, rtol=1e-10)
    np.testing.assert_allclose(gm.covariances_, expected, rtol=1e-9)
    np.testing.assert_allclose(gm.weights_, [1.0])
    # The average log-likelihood of a Gaussian at its weighted MLE, in closed form.
    d = X.shape[1]
    if covariance_type in ("full", "tied"):
        logdet, trace = np.linalg.slogdet(cov)[1], d
    elif covariance_type == "diag":
        logdet, trace = np.log(np.diag(cov)).sum(), d
    else:
        s2 = np.diag(cov).mean()
        logdet, trace = d * np.log(s2), np.trace(cov) / s2
    expected_ll = -0.5 * (d * np.log(2 * np.pi) + logdet + trace)
    weighted_ll = (w @ gm.score_samples(X)) / w.sum()
    np.testing.assert_allclose(weighted_ll, expected_ll, rtol=1e-10)


def test_two_separated_clusters_are_recovered(backend):
    rng = np.random.default_rng(1)
    X = np.vstack([rng.normal(-10, 1, size=(300, 2)), rng.normal(10, 1, size=(700, 2))])
    gm = GaussianMixture(2, random_state=0, backend=backend).fit(X)
    order = np.argsort(gm.means_[:, 0])
    np.testing.assert_allclose(gm.weights_[order], [0.3, 0.7], atol=1e-6)
    np.testing.assert_allclose(gm.means_[order], [[-10, -10], [10, 10]], atol=0.15)
    assert gm.converged_
    proba = gm.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (gm.predict(X) == proba.argmax(axis=1)).all()


# --------------------------------------------------------------- EM properties
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_lower_bound_never_decreases(backend, covariance_type, init_params):
    X, _ = make_mixture(800, 3, 4, random_state=2)
    gm = GaussianMixture(
        4,
        covariance_type=covariance_type,
        init_params=init_params,
        tol=0.0,
        max_iter=40,
        random_state=3,
        backend=backend,
    )
    _quiet_fit(gm, X)
    bounds = np.asarray(gm.lower_bounds_)
    assert len(bounds) == gm.n_iter_ == 40
    assert np.isfinite(bounds).all()
    assert (np.diff(bounds) >= -1e-10 * np.abs(bounds[1:])).all()


def test_n_init_keeps_the_best_lower_bound(backend):
    X, _ = make_mixture(600, 2, 5, random_state=4)
    singles = [
        _quiet_fit(
            GaussianMixture(5, init_params="random", random_state=s, max_iter=30, backend=backend),
            X,
        )
        for s in range(3)
    ]
    rng = np.random.RandomState(11)
    multi = _quiet_fit(
        GaussianMixture(
            5, init_params="random", n_init=4, random_state=rng, max_iter=30, backend=backend
        ),
        X,
    )
    assert multi.lower_bound_ >= min(s.lower_bound_ for s in singles) - 1e-12
    # The kept run is the best of its own restarts: rerun them one by one.
    rng = np.random.RandomState(11)
    runs = []
    for _ in range(4):
        one = GaussianMixture(
            5, init_params="random", random_state=rng, max_iter=30, backend=backend
        )
        runs.append(_quiet_fit(one, X).lower_bound_)
    assert multi.lower_bound_ == max(runs)


def test_single_convergence_warning_when_not_converged(backend):
    X, _ = make_mixture(500, 2, 3, random_state=0)
    gm = GaussianMixture(3, max_iter=2, n_init=3, random_state=0, backend=backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gm.fit(X)
    conv = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert len(conv) == 1
    assert not gm.converged_


def test_convergence_warning_is_sklearns():
    sklearn_exceptions = pytest.importorskip("sklearn.exceptions")
    assert issubclass(ConvergenceWarning, sklearn_exceptions.ConvergenceWarning)
    assert issubclass(NotFittedError, sklearn_exceptions.NotFittedError)


def test_max_iter_zero_returns_initial_parameters(backend):
    X, _ = make_mixture(300, 2, 3, random_state=0)
    init = initial_parameters(X, 3, "full")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ConvergenceWarning for max_iter=0
        gm = GaussianMixture(max_iter=0, backend=backend, **init).fit(X)
    assert gm.n_iter_ == 0 and gm.lower_bound_ == -np.inf and not gm.converged_
    np.testing.assert_allclose(gm.means_, init["means_init"])
    np.testing.assert_allclose(gm.precisions_, init["precisions_init"], rtol=1e-12)
    np.testing.assert_allclose(gm.covariances_, np.linalg.inv(init["precisions_init"]), rtol=1e-12)


# -------------------------------------------------------------------- weights
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows(backend, covariance_type):
    X, _ = make_mixture(400, 3, 3, random_state=5)
    reps = np.random.default_rng(6).integers(0, 4, size=400)
    init = initial_parameters(X, 3, covariance_type, seed=1)
    kw = dict(tol=0.0, max_iter=15, backend=backend, **init)
    weighted = _quiet_fit(GaussianMixture(**kw), X, sample_weight=reps)
    repeated = _quiet_fit(GaussianMixture(**kw), np.repeat(X, reps, axis=0))
    for attr in ("weights_", "means_", "covariances_", "lower_bound_"):
        np.testing.assert_allclose(getattr(weighted, attr), getattr(repeated, attr), rtol=1e-9)


def test_zero_weights_equal_dropped_rows(backend):
    X, _ = make_mixture(400, 2, 3, random_state=7)
    keep = np.random.default_rng(8).random(400) < 0.6
    kw = dict(n_components=3, random_state=0, backend=backend)
    weighted = GaussianMixture(**kw).fit(X, sample_weight=keep.astype(float))
    dropped = GaussianMixture(**kw).fit(X[keep])
    for attr in ("weights_", "means_", "covariances_", "lower_bound_"):
        np.testing.assert_allclose(getattr(weighted, attr), getattr(dropped, attr), rtol=1e-9)
    assert weighted.n_iter_ == dropped.n_iter_


def test_kmeans_init_is_repetition_invariant(backend):
    """Default init with integer weights picks the same seeds as the repeated data."""
    X, _ = make_mixture(300, 2, 4, random_state=9)
    reps = np.random.default_rng(10).integers(1, 3, size=300)
    kw = dict(n_components=4, random_state=3, backend=backend)
    weighted = GaussianMixture(**kw).fit(X, sample_weight=reps)
    repeated = GaussianMixture(**kw).fit(np.repeat(X, reps, axis=0))
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-8)


# ------------------------------------------------------------------- numerics
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_large_offset_gives_the_same_covariances(backend, covariance_type):
    X, _ = make_mixture(2000, 3, 3, random_state=11)
    init = initial_parameters(X, 3, covariance_type, seed=12)
    kw = dict(tol=0.0, max_iter=20, backend=backend, **init)
    near = _quiet_fit(GaussianMixture(**kw), X)
    shifted_init = dict(kw, means_init=init["means_init"] + 1e6)
    far = _quiet_fit(GaussianMixture(**shifted_init), X + 1e6)
    np.testing.assert_allclose(far.covariances_, near.covariances_, rtol=1e-6)
    np.testing.assert_allclose(far.means_ - 1e6, near.means_, atol=1e-6)
    np.testing.assert_allclose(far.weights_, near.weights_, rtol=1e-6)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_empty_component_gives_no_nan(backend, covariance_type):
    X, _ = make_mixture(300, 2, 2, random_state=0)
    init = initial_parameters(X, 3, covariance_type)
    init["means_init"][2] = 1e3  # a component far from every row: it gets no mass
    gm = _quiet_fit(GaussianMixture(max_iter=10, backend=backend, **init), X)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert np.isfinite(getattr(gm, attr)).all(), attr
    assert gm.weights_[2] < 1e-10
    assert np.isfinite(gm.score_samples(X)).all()


def test_singular_covariance_names_component_and_reg_covar(backend):
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(50, 2)), np.tile([[5.0, 5.0]], (20, 1))])
    init = {
        "weights_init": [0.5, 0.5],
        "means_init": [[0.0, 0.0], [5.0, 5.0]],
        "precisions_init": [np.eye(2), np.eye(2)],
    }
    gm = GaussianMixture(2, reg_covar=0.0, backend=backend, **init)
    with pytest.raises(ValueError, match=r"component 1 .*reg_covar"):
        gm.fit(X)
    assert not hasattr(gm, "means_")  # nothing half-fitted


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_float32_is_fitted_in_float32(backend, covariance_type):
    X, _ = make_mixture(1000, 3, 3, random_state=1, dtype=np.float32)
    gm = GaussianMixture(3, covariance_type=covariance_type, random_state=0, backend=backend)
    gm.fit(X)
    for attr in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert getattr(gm, attr).dtype == np.float32, attr
    assert gm.predict_proba(X).dtype == np.float32
    ref = GaussianMixture(3, covariance_type=covariance_type, random_state=0, backend=backend)
    ref.fit(X.astype(np.float64))
    np.testing.assert_allclose(gm.lower_bound_, ref.lower_bound_, rtol=1e-4)


def test_same_seed_same_model(backend):
    X, _ = make_mixture(500, 2, 3, random_state=2)
    a = GaussianMixture(3, random_state=5, n_init=2, backend=backend).fit(X)
    b = GaussianMixture(3, random_state=5, n_init=2, backend=backend).fit(X)
    for attr in ("weights_", "means_", "covariances_"):
        np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))


def test_warm_start_continues_from_previous_fit(backend):
    X, _ = make_mixture(500, 2, 3, random_state=2)
    gm = _quiet_fit(GaussianMixture(3, max_iter=3, tol=0.0, random_state=0, backend=backend), X)
    first = gm.lower_bounds_
    gm.set_params(warm_start=True)
    _quiet_fit(gm, X)
    cold = _quiet_fit(GaussianMixture(3, max_iter=6, tol=0.0, random_state=0, backend=backend), X)
    np.testing.assert_allclose(first + gm.lower_bounds_, cold.lower_bounds_, rtol=1e-12)


# ------------------------------------------------------------ predict & sample
def test_sample_shapes_and_labels(backend):
    X, _ = make_mixture(500, 3, 3, random_state=2)
    for ct in COVARIANCE_TYPES:
        gm = GaussianMixture(3, covariance_type=ct, random_state=0, backend=backend).fit(X)
        Xs, ys = gm.sample(400)
        assert Xs.shape == (400, 3) and ys.shape == (400,)
        assert set(np.unique(ys)) <= {0, 1, 2}
        # Each drawn row is most likely under a component near the one it came from.
        assert (gm.predict(Xs) == ys).mean() > 0.7
    with pytest.raises(ValueError, match="n_samples"):
        gm.sample(0)


def test_predict_in_blocks_matches_whole(backend, monkeypatch):
    import fastem.mixture as mixture

    X, _ = make_mixture(3000, 2, 3, random_state=2)
    gm = GaussianMixture(3, random_state=0, backend=backend).fit(X)
    whole = gm.predict_proba(X)
    monkeypatch.setattr(mixture, "_PREDICT_BLOCK_ELEMENTS", 3)  # 1024-row blocks
    np.testing.assert_array_equal(gm.predict_proba(X), whole)
    np.testing.assert_array_equal(gm.predict(X), whole.argmax(axis=1))


def test_pickle_round_trip(backend):
    X, _ = make_mixture(300, 2, 3, random_state=2)
    gm = GaussianMixture(3, random_state=0, backend=backend).fit(X)
    again = pickle.loads(pickle.dumps(gm))
    np.testing.assert_array_equal(again.predict_proba(X), gm.predict_proba(X))


# --------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.ones(10), "Expected 2D array"),
        (np.ones((2, 2, 2)), "Expected 2D array"),
        (np.ones((1, 2)), "1 sample"),
        (np.ones((5, 0)), "0 feature"),
        (np.array([[1.0, np.inf]] * 5), "infinity"),
        (np.array([[1.0, np.nan]] * 5), "NaN"),
        (np.array([[1 + 1j, 0]] * 5), "Complex"),
        (np.array([["a", "b"]] * 5), "must be numeric"),
    ],
)
def test_bad_X_is_rejected_before_work(X, match):
    gm = GaussianMixture(1, backend="numpy")
    with pytest.raises(ValueError, match=match):
        gm.fit(X)
    assert not hasattr(gm, "means_")


def test_too_few_rows_for_components():
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(np.random.default_rng(0).normal(size=(4, 2)))


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_components": 0}, "n_components"),
        ({"n_components": 2.5}, "n_components"),
        ({"covariance_type": "banana"}, "covariance_type"),
        ({"init_params": "kmeans+"}, "init_params"),
        ({"tol": -1.0}, "tol"),
        ({"reg_covar": -1e-6}, "reg_covar"),
        ({"max_iter": -1}, "max_iter"),
        ({"n_init": 0}, "n_init"),
        ({"backend": "fortran"}, "unknown backend 'fortran'"),
        ({"weights_init": [0.5, 0.6]}, "sum to 1"),
        ({"weights_init": [1.5, -0.5]}, r"\[0, 1\]"),
        ({"weights_init": [1.0]}, r"weights_init must have shape \(2,\)"),
        ({"means_init": np.zeros((2, 3))}, r"means_init must have shape \(2, 2\)"),
        ({"precisions_init": np.ones((2, 2, 2))}, "positive definite"),
        ({"precisions_init": -np.ones((2, 2)), "covariance_type": "diag"}, "positive"),
        ({"precisions_init": np.eye(3), "covariance_type": "tied"}, "shape"),
        ({"random_state": "seed"}, "random_state"),
    ],
)
def test_bad_parameters_are_rejected(params, match):
    X = np.random.default_rng(0).normal(size=(20, 2))
    gm = GaussianMixture(**{"n_components": 2, **params})
    with pytest.raises(ValueError, match=match):
        gm.fit(X)
    assert not hasattr(gm, "means_")


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (np.ones(5), "shape"),
        (-np.ones(20), "Negative"),
        (np.zeros(20), "sums to zero"),
        (np.r_[np.nan, np.ones(19)], "NaN"),
        (np.r_[1.0, np.zeros(19)], "positive sample_weight"),
    ],
)
def test_bad_sample_weight(weights, match):
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2).fit(X, sample_weight=weights)


def test_predict_before_fit_and_wrong_feature_count():
    X = np.random.default_rng(0).normal(size=(20, 2))
    gm = GaussianMixture(2, backend="numpy")
    for method in (gm.predict, gm.predict_proba, gm.score_samples, gm.score):
        with pytest.raises(NotFittedError):
            method(X)
    with pytest.raises(NotFittedError):
        gm.sample(3)
    gm.fit(X)
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 2"):
        gm.predict(np.ones((4, 3)))


def test_sparse_input_is_a_type_error():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="sparse"):
        GaussianMixture(1).fit(scipy_sparse.random(10, 2, density=0.5, format="csr"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_score_dtypes_follow_scikit_learn(dtype):
    """score_samples keeps float32 for float32 data and model, and score is a
    Python float, as in scikit-learn; bic/aic stay float64-accurate."""
    sk_mixture = pytest.importorskip("sklearn.mixture")
    X, _ = make_mixture(400, 3, 2, random_state=1)
    X = X.astype(dtype)
    ours = GaussianMixture(2, random_state=0).fit(X)
    theirs = sk_mixture.GaussianMixture(2, random_state=0).fit(X)
    assert ours.score_samples(X).dtype == theirs.score_samples(X).dtype == dtype
    assert type(ours.score(X)) is type(theirs.score(X)) is float
    # score is score_samples' own mean, as scikit-learn's (a float32 mean for float32
    # data): the two agree exactly, which scikit-learn's test_score checks at 7 decimals
    assert ours.score(X) == float(ours.score_samples(X).mean())
    assert theirs.score(X) == float(theirs.score_samples(X).mean())
    assert isinstance(ours.bic(X), float)
    n_params = ours._n_parameters()
    exact = -2 * ours.score_samples(X.astype(np.float64)).sum() + n_params * np.log(len(X))
    np.testing.assert_allclose(ours.bic(X), exact, rtol=1e-6)
