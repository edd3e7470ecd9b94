"""GaussianMixtureIC: select_model's choice, as an estimator that behaves as the chosen mixture."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import fastem
from fastem import GaussianMixture, GaussianMixtureIC, NotFittedError, select_model
from fastem.datasets import make_mixture


@pytest.fixture(scope="module")
def three():
    """Three well-separated components in 2-D."""
    return make_mixture(1500, 2, 3, random_state=2)[0]


MODELS = ("VVV", "EEI", "spherical")


@pytest.fixture(scope="module")
def fitted(three):
    return GaussianMixtureIC(
        range(1, 5), covariance_types=MODELS, init_params="hc", random_state=0
    ).fit(three)


def test_fit_is_select_models_choice(three, fitted):
    selection = select_model(three, range(1, 5), MODELS, init_params="hc", random_state=0)
    assert fitted.n_components_ == 3 == selection.best_params_["n_components"]
    assert fitted.covariance_type_ == selection.best_params_["covariance_type"]
    assert fitted.selection_.table == selection.table
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(fitted, name), getattr(selection.best_, name))
    assert fitted.n_features_in_ == 2
    assert fitted.n_iter_ == selection.best_.n_iter_
    assert fitted.lower_bound_ == selection.best_.lower_bound_


def test_methods_are_the_selected_mixtures(three, fitted):
    best = fitted.best_estimator_
    assert isinstance(best, GaussianMixture)
    X = three[:200]
    np.testing.assert_array_equal(fitted.predict(X), best.predict(X))
    np.testing.assert_array_equal(fitted.predict_proba(X), best.predict_proba(X))
    np.testing.assert_array_equal(fitted.score_samples(X), best.score_samples(X))
    assert fitted.score(X) == best.score(X)
    assert fitted.bic(X) == best.bic(X) and fitted.aic(X) == best.aic(X)
    Xs, ys = fitted.sample(50)
    assert Xs.shape == (50, 2) and set(ys) <= set(range(3))
    holes = X.copy()
    holes[::3, 1] = np.nan
    np.testing.assert_array_equal(fitted.impute(holes), best.impute(holes))


def test_fit_predict_equals_fit_then_predict(three):
    model = GaussianMixtureIC([2, 3], covariance_types="full", init_params="hc", random_state=1)
    labels = model.fit_predict(three)
    np.testing.assert_array_equal(labels, model.predict(three))


def test_criterion_is_passed_on(three):
    model = GaussianMixtureIC(
        range(1, 5), covariance_types=MODELS, criterion="aic", init_params="hc", random_state=0
    ).fit(three)
    assert model.selection_.criterion == "aic"
    table = model.selection_.table
    best = min(table, key=lambda row: row["aic"])
    assert (model.n_components_, model.covariance_type_) == (
        best["n_components"],
        best["covariance_type"],
    )


def test_mixture_parameters_reach_every_candidate(three):
    model = GaussianMixtureIC(
        [2, 3], covariance_types=("diag",), max_iter=2, tol=0.0, reg_covar=1e-3,
        init_params="hc", random_state=0,
    )  # fmt: skip
    with pytest.warns(fastem.ConvergenceWarning):
        model.fit(three)
    for candidate in model.selection_.models_.values():
        assert candidate.max_iter == 2 and candidate.reg_covar == 1e-3 and candidate.tol == 0.0
        assert candidate.n_iter_ == 2
    assert model.covariance_type_ == "diag"


def test_missing_values(three):
    rng = np.random.default_rng(0)
    X = three.copy()
    X[rng.random(X.shape) < 0.1] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.0  # keep every row partly observed
    model = GaussianMixtureIC(
        range(2, 5), covariance_types="full", init_params="hc", random_state=0
    ).fit(X)
    assert model.n_components_ == 3
    assert np.isfinite(model.score_samples(X)).all()
    assert not np.isnan(model.impute(X)).any()


def test_integer_weights_equal_repetition(three):
    X = three[:300]
    w = np.random.default_rng(3).integers(0, 3, size=len(X))
    weighted = GaussianMixtureIC([2, 3], covariance_types="diag", init_params="hc", random_state=0)
    weighted.fit(X, sample_weight=w)
    repeated = GaussianMixtureIC([2, 3], covariance_types="diag", init_params="hc", random_state=0)
    repeated.fit(np.repeat(X, w, axis=0))
    assert weighted.n_components_ == repeated.n_components_
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-6)
    bics = [row["bic"] for row in weighted.selection_.table]
    np.testing.assert_allclose(bics, [row["bic"] for row in repeated.selection_.table], rtol=1e-9)


def test_not_fitted():
    model = GaussianMixtureIC()
    for call in (
        lambda: model.predict(np.zeros((2, 2))),
        lambda: model.predict_proba(np.zeros((2, 2))),
        lambda: model.score_samples(np.zeros((2, 2))),
        lambda: model.sample(3),
    ):
        with pytest.raises(NotFittedError, match="not fitted"):
            call()
    assert not hasattr(model, "weights_")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"criterion": "likelihood"}, "Invalid criterion"),
        ({"covariance_types": ("full", "round")}, "Invalid covariance type"),
        ({"n_components": [2, 0]}, "n_components"),
        ({"n_components": [2, 50]}, "exceed n_samples"),
        ({"n_components": []}, "empty"),
    ],
)
def test_bad_parameters_raise_and_leave_it_unfitted(kwargs, match):
    X = np.random.default_rng(0).normal(size=(30, 2))
    model = GaussianMixtureIC(**kwargs)
    with pytest.raises(ValueError, match=match):
        model.fit(X)
    assert not hasattr(model, "best_estimator_")


def test_pickle_round_trip(three, fitted):
    clone = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(clone.predict_proba(three), fitted.predict_proba(three))
    assert clone.selection_.table == fitted.selection_.table


@pytest.mark.parametrize("models", [MODELS, ("VVE",), ("EVE", "VEV")])
def test_save_writes_the_selected_mixture(tmp_path, three, models):
    """``save`` writes the selected GaussianMixture's model file: ``fastem.load``
    gives that mixture back (also for mclust's iterated models), predicting the
    same bits; the search itself is not in the file."""
    model = GaussianMixtureIC([2, 3], covariance_types=models, init_params="hc", random_state=0)
    model.fit(three)
    path = tmp_path / "ic.npz"
    model.save(path)
    loaded = fastem.load(path)
    assert type(loaded) is GaussianMixture
    assert loaded.n_components == model.n_components_
    assert loaded.covariance_type == model.covariance_type_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(model, name))
    np.testing.assert_array_equal(loaded.predict_proba(three), model.predict_proba(three))
    np.testing.assert_array_equal(loaded.score_samples(three), model.score_samples(three))
    assert not hasattr(loaded, "selection_")


def test_save_unfitted_raises(tmp_path):
    path = tmp_path / "ic.npz"
    with pytest.raises(NotFittedError, match="not fitted"):
        GaussianMixtureIC().save(path)
    assert not path.exists()


def test_defaults_are_select_models(three):
    from fastem.selection import DEFAULT_FIT_SETTINGS

    params = GaussianMixtureIC().get_params()
    assert params["covariance_types"] == "all" and params["init_params"] == "hc+emem"
    for name, value in DEFAULT_FIT_SETTINGS.items():
        assert params[name] == value, name
    model = GaussianMixtureIC([2], covariance_types=["vei"], acceleration="anderson",
                              stopping="relative", random_state=0).fit(three[:300])  # fmt: skip
    candidate = model.best_estimator_
    assert candidate.acceleration == "anderson" and candidate.stopping == "relative"
    assert model.covariance_type_ == "VEI" and candidate.init_params in ("hc", "emem")


def test_get_params_and_repr():
    model = GaussianMixtureIC([1, 2], criterion="icl", backend="numpy")
    params = model.get_params()
    assert params["n_components"] == [1, 2] and params["criterion"] == "icl"
    assert "criterion='icl'" in repr(model)
    assert model.set_params(criterion="aic").criterion == "aic"


def test_exported():
    assert "GaussianMixtureIC" in fastem.__all__


def test_in_a_pipeline_with_a_scaler(three):
    sklearn = pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    assert sklearn is not None
    pipe = make_pipeline(
        StandardScaler(),
        GaussianMixtureIC(range(1, 5), covariance_types="VVV", init_params="hc", random_state=0),
    )
    pipe.fit(three * 1000.0)
    assert pipe[-1].n_components_ == 3
    assert pipe.predict(three[:10] * 1000.0).shape == (10,)
    assert clone(pipe)[-1].get_params() == pipe[-1].get_params()


def test_refine_is_passed_on(three, fitted):
    assert fitted.get_params()["refine"] == "contenders"
    screened = [row for row in fitted.selection_.table if not row["refined"]]
    assert screened  # the default two-stage search left some candidates screened
    everything = GaussianMixtureIC(
        range(1, 5), covariance_types=MODELS, init_params="hc", random_state=0, refine="all"
    ).fit(three)
    assert all(row["refined"] for row in everything.selection_.table)
    assert everything.selection_.best_params_ == fitted.selection_.best_params_
    with pytest.raises(ValueError, match="refine must be one of"):
        GaussianMixtureIC([2], covariance_types="VVV", refine="none").fit(three)
