"""fastem against scikit-learn: same initial parameters, same model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from _helpers import COVARIANCE_TYPES, initial_parameters

from fastem import GaussianMixture
from fastem.datasets import make_mixture

sklearn_mixture = pytest.importorskip("sklearn.mixture")

# float64 must agree tightly. In float32 both libraries round differently (fastem
# accumulates its statistics in float64, scikit-learn in float32): measured
# differences are up to ~1.4e-5 relative (tied covariances), so 1e-4.
TOLERANCES = {np.float64: dict(rtol=1e-7, atol=1e-9), np.float32: dict(rtol=1e-4, atol=1e-5)}


def _fit_both(X, init, backend, **extra):
    kw = dict(init, max_iter=extra.pop("max_iter", 25), tol=extra.pop("tol", 0.0), **extra)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = GaussianMixture(backend=backend, **kw).fit(X)
        theirs = sklearn_mixture.GaussianMixture(**kw).fit(X)
    return ours, theirs


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_model_as_sklearn(backend, covariance_type, dtype):
    X, _ = make_mixture(3000, 3, 4, random_state=1, dtype=dtype)
    init = initial_parameters(X, 4, covariance_type, seed=2)
    ours, theirs = _fit_both(X, init, backend)
    tol = TOLERANCES[dtype]
    assert ours.n_iter_ == theirs.n_iter_ == 25
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, **tol)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, **tol)
    np.testing.assert_allclose(ours.weights_, theirs.weights_, **tol)
    np.testing.assert_allclose(ours.means_, theirs.means_, **tol)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, **tol)
    np.testing.assert_allclose(ours.precisions_, theirs.precisions_, rtol=tol["rtol"] * 10)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), **tol)
    np.testing.assert_allclose(ours.score_samples(X), theirs.score_samples(X), **tol)
    np.testing.assert_allclose(ours.bic(X), theirs.bic(X), rtol=tol["rtol"])
    np.testing.assert_allclose(ours.aic(X), theirs.aic(X), rtol=tol["rtol"])
    assert ours.weights_.dtype == ours.means_.dtype == ours.covariances_.dtype == dtype


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_convergence_as_sklearn(backend, covariance_type):
    """With the default tol both stop at the same iteration with the same bound."""
    X, _ = make_mixture(2000, 2, 3, random_state=5)
    init = initial_parameters(X, 3, covariance_type, seed=6)
    ours, theirs = _fit_both(X, init, backend, max_iter=500, tol=1e-6)
    assert ours.converged_ and theirs.converged_
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, rtol=1e-9)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


def test_warm_start_continues_like_sklearn(backend):
    """A warm-started second fit continues from the first fit's parameters."""
    X, _ = make_mixture(1500, 2, 3, random_state=3)
    init = initial_parameters(X, 3, "full", seed=4)
    ours, theirs = _fit_both(X, init, backend, max_iter=5)
    ours.set_params(warm_start=True, max_iter=7)
    theirs.set_params(warm_start=True, max_iter=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours.fit(X)
        theirs.fit(X)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-7)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=1e-7)


def test_sample_matches_sklearn_given_same_seed(backend):
    X, _ = make_mixture(1000, 2, 3, random_state=3)
    init = initial_parameters(X, 3, "full", seed=4)
    ours, theirs = _fit_both(X, init, backend, random_state=7, max_iter=10)
    Xo, yo = ours.sample(50)
    Xt, yt = theirs.sample(50)
    np.testing.assert_array_equal(yo, yt)
    np.testing.assert_allclose(Xo, Xt, rtol=1e-6, atol=1e-8)


def test_n_parameters_match_sklearn():
    X, _ = make_mixture(300, 3, 2, random_state=0)
    for ct in COVARIANCE_TYPES:
        init = initial_parameters(X, 2, ct)
        ours, theirs = _fit_both(X, init, "numpy", max_iter=2)
        assert ours._n_parameters() == theirs._n_parameters()


def _errors_of(kw, X):
    """The ValueError messages of scikit-learn's and fastem's fit with ``kw``."""
    messages = []
    for cls in (sklearn_mixture.GaussianMixture, GaussianMixture):
        with pytest.raises(ValueError) as exc:
            cls(**kw).fit(X)
        messages.append(str(exc.value))
    return messages


_K, _D = 2, 3
_BAD_USER_PARAMETERS = {
    "weights shape": {"weights_init": np.full((_K, 1), 0.5)},
    "weights range": {"weights_init": np.array([1.5, -0.5])},
    "weights sum": {"weights_init": np.array([0.5, 0.4])},
    "weights sum 1e-7 off": {"weights_init": np.array([0.5, 0.5 + 1e-7])},
    "means shape": {"means_init": np.zeros((_K + 1, _D))},
    "means NaN": {"means_init": np.full((_K, _D), np.nan)},
    "weights infinity": {"weights_init": np.array([np.inf, 0.5])},
    "float32 precisions infinity": {
        "covariance_type": "spherical",
        "precisions_init": np.array([np.inf, 1.0], dtype=np.float32),
    },
    **{
        f"{ct} precision shape": {"covariance_type": ct, "precisions_init": np.ones(shape)}
        for ct, shape in {
            "full": (_K + 1, _D, _D),
            "tied": (_D + 1, _D + 1),
            "diag": (_K + 1, _D),
            "spherical": (_K + 1,),
        }.items()
    },
    "full precision not PD": {"precisions_init": np.stack([np.eye(_D), -np.eye(_D)])},
    "tied precision not PD": {"covariance_type": "tied", "precisions_init": -np.eye(_D)},
    "diag precision not positive": {"covariance_type": "diag", "precisions_init": -np.ones((2, 3))},
    "spherical precision not positive": {
        "covariance_type": "spherical",
        "precisions_init": np.array([1.0, 0.0]),
    },
}


@pytest.mark.parametrize("case", list(_BAD_USER_PARAMETERS))
def test_user_parameter_errors_start_with_scikit_learns_message(case):
    """Code that matches scikit-learn's message (its own tests do) keeps working: fastem's
    message is scikit-learn's, word for word, followed by fastem's wording."""
    X = np.random.default_rng(0).normal(size=(20, _D))
    theirs, ours = _errors_of({"n_components": _K, **_BAD_USER_PARAMETERS[case]}, X)
    assert ours.startswith(theirs), (ours, theirs)


def test_sample_error_starts_as_scikit_learns():
    X = np.random.default_rng(0).normal(size=(20, 2))
    for cls in (sklearn_mixture.GaussianMixture, GaussianMixture):
        gm = cls(2, random_state=0).fit(X)
        with pytest.raises(
            ValueError, match=r"^Invalid value for 'n_samples': \d+ \. The sampling"
        ):
            gm.sample(0)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_precisions_init_gives_scikit_learns_initial_factors(covariance_type, dtype):
    """scikit-learn's #26415 through the public API: with ``max_iter=0`` the model is its
    start, so ``precisions_cholesky_`` is the factor of ``precisions_init`` as
    scikit-learn's ``_compute_precision_cholesky_from_precisions`` computes it: the
    upper-triangular ``U`` with ``U U^T = P`` (the square root for 'diag'/'spherical').
    (scikit-learn's own test reaches it through the private
    ``_initialize``; its max_iter=0 fit with a full user start fails, wanting a
    ``covariances_`` that it never set)."""
    X, _ = make_mixture(200, 3, 4, random_state=3, dtype=dtype)
    init = initial_parameters(X, 4, covariance_type, seed=1)
    precisions = np.asarray(init["precisions_init"], dtype=dtype)
    ours = GaussianMixture(**init, max_iter=0).fit(X)
    if covariance_type in ("full", "tied"):  # scikit-learn's: flip, lower Cholesky, flip
        flip = precisions.astype(np.float64)[..., ::-1, ::-1]
        expected = np.linalg.cholesky(flip)[..., ::-1, ::-1]
    else:
        expected = np.sqrt(precisions.astype(np.float64))
    assert ours.precisions_cholesky_.dtype == dtype
    np.testing.assert_allclose(ours.precisions_cholesky_, expected, **TOLERANCES[dtype])
    np.testing.assert_allclose(ours.precisions_, precisions, **TOLERANCES[dtype])
    np.testing.assert_allclose(ours.means_, init["means_init"], **TOLERANCES[dtype])


def test_full_user_start_runs_no_initialization(monkeypatch):
    """scikit-learn's gh-26015 (its test mocks a private function): with weights, means and
    precisions all given, no initialization (k-means or other) runs."""
    import fastem.mixture

    def fail(*args, **kwargs):
        raise AssertionError("the initialization ran")

    monkeypatch.setattr(fastem.mixture, "initial_stats", fail)
    X, _ = make_mixture(200, 2, 2, random_state=0)
    init = initial_parameters(X, 2, "full", seed=0)
    GaussianMixture(**init, max_iter=3).fit(X)
    # negative control: without the precisions the initialization runs (and fails here)
    del init["precisions_init"]
    with pytest.raises(AssertionError, match="the initialization ran"):
        GaussianMixture(**init, max_iter=3).fit(X)


_BAD_HYPER_PARAMETERS = [
    {"n_components": 0},
    {"n_components": 2.5},
    {"tol": -1.0},
    {"reg_covar": -1e-6},
    {"max_iter": -1},
    {"n_init": 0},
    {"verbose_interval": 0},
    {"warm_start": "yes"},
]


@pytest.mark.parametrize(
    "params", _BAD_HYPER_PARAMETERS, ids=lambda p: "-".join(map(str, *p.items()))
)
def test_hyper_parameter_errors_are_scikit_learns(params):
    X = np.random.default_rng(0).normal(size=(20, _D))
    theirs, ours = _errors_of(params, X)
    assert ours == theirs


@pytest.mark.parametrize("params", [{"covariance_type": "banana"}, {"init_params": "magic"}])
def test_choice_errors_start_as_scikit_learns(params):
    """fastem accepts more choices (mclust models, 'hc', ...), so only the start is shared."""
    X = np.random.default_rng(0).normal(size=(20, _D))
    theirs, ours = _errors_of(params, X)
    name = next(iter(params))
    prefix = f"The '{name}' parameter of GaussianMixture must be a str among "
    assert theirs.startswith(prefix) and ours.startswith(prefix), (ours, theirs)
    assert f"Got {params[name]!r} instead." in ours


@pytest.mark.parametrize("model_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("data_dtype", [np.float32, np.float64])
def test_prediction_dtypes_and_types_are_scikit_learns(model_dtype, data_dtype):
    """float32 only for float32 data under a float32 model; bic/aic/score Python floats."""
    X, _ = make_mixture(300, 2, 2, random_state=0)
    ours = GaussianMixture(2, random_state=0).fit(X.astype(model_dtype))
    theirs = sklearn_mixture.GaussianMixture(2, random_state=0).fit(X.astype(model_dtype))
    Xp = X.astype(data_dtype)
    for method in ("predict_proba", "score_samples"):
        assert getattr(ours, method)(Xp).dtype == getattr(theirs, method)(Xp).dtype, method
    for method in ("bic", "aic", "score"):
        assert type(getattr(ours, method)(Xp)) is type(getattr(theirs, method)(Xp)), method


@pytest.mark.parametrize("shape", [(), (6,), (3, 2, 2)])
def test_wrong_dimension_errors_start_as_scikit_learns(shape):
    X = np.arange(float(np.prod(shape))).reshape(shape)
    theirs, ours = _errors_of({"n_components": 1}, X)
    assert ours.startswith(theirs), (ours, theirs)
    fitted = GaussianMixture(1).fit(np.random.default_rng(0).normal(size=(10, 6)))
    reference = sklearn_mixture.GaussianMixture(1).fit(
        np.random.default_rng(0).normal(size=(10, 6))
    )
    messages = []
    for model in (reference, fitted):
        with pytest.raises(ValueError) as exc:
            model.predict(X)
        messages.append(str(exc.value))
    assert messages[1].startswith(messages[0]), messages


def test_out_of_core_wrong_dimension_errors_use_scikit_learns_words(tmp_path):
    """A memory map is read in blocks (never whole), so its message leaves out the values;
    it starts as scikit-learn's (1-D: up to the values; 3-D: word for word)."""
    for shape, start in [((10,), "Expected 2D array, got 1D array instead"),
                         ((4, 2, 2), "Found array with dim 3, while dim <= 2 is required by "
                                     "GaussianMixture.")]:  # fmt: skip
        X = np.memmap(tmp_path / f"x{len(shape)}", dtype=np.float64, mode="w+", shape=shape)
        with pytest.raises(ValueError) as exc:
            GaussianMixture(1).fit(X)
        assert str(exc.value).startswith(start)
