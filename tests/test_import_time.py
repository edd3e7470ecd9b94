"""Cheap imports: ``import fastem`` and ``fastem --help`` load no heavy dependency, while
fastem's estimators and exceptions still work with scikit-learn as they did when they derived
from its classes, whichever of the two is imported first, and fastem works without it.

Checks on import are made in fresh subprocesses (``sys.modules`` of this process already
holds everything). Times are not tested here: see ``benchmarks/bench_startup.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import fastem

HEAVY = ("sklearn", "numba", "scipy", "matplotlib", "dask", "pandas", "numpy")


def _run(code: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result


def _heavy_modules_after(code: str) -> list[str]:
    """Heavy top-level packages in ``sys.modules`` after running ``code`` in a new process."""
    result = _run(
        textwrap.dedent(code)
        + "\nimport json, sys\n"
        + f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)"
    )
    return json.loads(result.stderr.strip().splitlines()[-1])


def _have_sklearn() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


needs_sklearn = pytest.mark.skipif(not _have_sklearn(), reason="scikit-learn not installed")


# ------------------------------------------------------------------------ what imports load
def test_import_fastem_loads_no_heavy_dependency():
    assert _heavy_modules_after("import fastem") == []


def test_cli_help_loads_no_heavy_dependency():
    code = """
        import contextlib, io
        from fastem.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(["--help"])
            except SystemExit as exc:
                assert exc.code == 0, exc.code
        assert "predict" in out.getvalue()
    """
    assert _heavy_modules_after(code) == []


def test_the_module_check_sees_an_eager_import():
    # The two tests above would pass vacuously if the check could not see a heavy import.
    assert "numpy" in _heavy_modules_after("import fastem\nimport numpy")
    if _have_sklearn():
        assert "sklearn" in _heavy_modules_after("import fastem\nimport sklearn.base")


def test_public_names_load_on_first_access():
    for name in fastem.__all__:
        assert getattr(fastem, name) is not None
        assert name in dir(fastem)
    assert fastem.GaussianMixture is fastem.mixture.GaussianMixture
    assert fastem.backends.available_backends is fastem.available_backends
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        fastem.no_such_name  # noqa: B018


def test_every_public_submodule_is_an_attribute_of_a_fresh_import():
    # `import fastem; fastem.hmm` raised AttributeError unless the submodule had been
    # imported first (session 10 review); a fresh process shows it, this one may not.
    code = """
        import fastem
        for name in ("backends", "dask", "datasets", "hmm", "impute", "mixture",
                     "mixture_ic", "persistence", "plotting", "selection"):
            module = getattr(fastem, name)
            assert module.__name__ == "fastem." + name, module
    """
    _run(code)
    assert _heavy_modules_after("import fastem\nfastem.datasets") == ["numpy"]


def test_subcommand_parses_its_options_lazily():
    from fastem.cli import build_parser

    args = build_parser(lazy=True).parse_args(["fit", "x.csv", "-k", "3", "-o", "m.npz"])
    assert (args.n_components, args.covariance, args.func.__name__) == (3, "full", "run_fit")
    eager = build_parser().parse_args(["fit", "x.csv", "-k", "3", "-o", "m.npz"])
    assert vars(eager) == vars(args)


# ------------------------------------------------------- exceptions: one class, sklearn's base
_EXCEPTION_CHECKS = """
    import sys, warnings
    import fastem, fastem.exceptions as fe
    import sklearn.exceptions as se
    assert fastem.NotFittedError is fe.NotFittedError is sys.modules["fastem"].NotFittedError
    assert fastem.ConvergenceWarning is fe.ConvergenceWarning
    assert issubclass(fe.NotFittedError, se.NotFittedError)
    assert issubclass(fe.NotFittedError, (ValueError, AttributeError))
    assert issubclass(fe.ConvergenceWarning, se.ConvergenceWarning)
    assert issubclass(fe.ConvergenceWarning, UserWarning)
    try:
        raise fe.NotFittedError("not fitted")
    except se.NotFittedError as exc:
        assert type(exc) is fe.NotFittedError
    with warnings.catch_warnings():
        warnings.simplefilter("error", se.ConvergenceWarning)
        try:
            warnings.warn("slow", fe.ConvergenceWarning)
        except se.ConvergenceWarning:
            pass
        else:
            raise AssertionError("sklearn's warning filter missed fastem's warning")
    # the import hook is gone and left sklearn's module as the import system made it
    assert fe._HOOK not in sys.meta_path
    assert "exec_module" not in vars(se.__loader__)
"""


@needs_sklearn
def test_exceptions_subclass_sklearns_when_sklearn_is_imported_first():
    _run("import sklearn.exceptions\n" + textwrap.dedent(_EXCEPTION_CHECKS))


@needs_sklearn
def test_exceptions_subclass_sklearns_when_sklearn_is_imported_later():
    # The classes are looked up before sklearn exists, and no instance is made until the end.
    code = """
        import sys
        from fastem import ConvergenceWarning, NotFittedError
        assert "sklearn" not in sys.modules
        import sklearn.exceptions as se
        assert issubclass(NotFittedError, se.NotFittedError)
        assert issubclass(ConvergenceWarning, se.ConvergenceWarning)
    """
    _run(textwrap.dedent(code) + textwrap.dedent(_EXCEPTION_CHECKS))


@needs_sklearn
def test_exceptions_follow_a_reloaded_sklearn():
    # A reload makes new sklearn classes; making an instance re-bases fastem's onto them.
    code = """
        import importlib
        import fastem
        import sklearn.exceptions as se
        importlib.reload(se)
        try:
            raise fastem.NotFittedError("x")
        except se.NotFittedError:
            pass
    """
    _run(code)


@needs_sklearn
def test_fastem_errors_and_warnings_caught_as_sklearns():
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning, NotFittedError

    X = np.random.default_rng(0).normal(size=(60, 2))
    with pytest.raises(NotFittedError):
        fastem.GaussianMixture(backend="numpy").predict(X)
    with pytest.warns(ConvergenceWarning):
        fastem.GaussianMixture(2, max_iter=1, tol=0.0, backend="numpy").fit(X)


# ------------------------------------------- estimators: subclasses of sklearn's BaseEstimator
_ESTIMATOR_CHECKS = """
    import sys, warnings
    import sklearn.base as sb
    import fastem._base as fb
    from fastem import GaussianMixture, GaussianMixtureIC
    from fastem.impute import GaussianMixtureImputer
    from fastem.hmm import GaussianHMM, GMMHMM, CategoricalHMM, PoissonHMM
    for cls in (GaussianMixture, GaussianMixtureIC, GaussianMixtureImputer, GaussianHMM,
                GMMHMM, CategoricalHMM, PoissonHMM):
        assert issubclass(cls, sb.BaseEstimator), cls
        assert isinstance(cls(), sb.BaseEstimator), cls
    # one base, in fastem's place in the MRO; fastem's protocol methods still come first
    assert fb.BaseEstimator.__bases__ == (sb.BaseEstimator,)
    mro = GaussianMixture.__mro__
    assert mro.index(fb.BaseEstimator) + 1 == mro.index(sb.BaseEstimator)
    assert fb._SklearnBaseStandIn not in mro
    assert GaussianMixture.get_params is fb.BaseEstimator.get_params
    assert GaussianMixture.__repr__ is fb.BaseEstimator.__repr__
    gm = GaussianMixture(3, backend="numpy")
    assert repr(gm) == "GaussianMixture(backend='numpy', n_components=3)"
    assert sb.clone(gm).get_params() == gm.get_params()
    html = gm._repr_html_()  # notebooks: scikit-learn's HTML repr
    assert "GaussianMixture" in html and "n_components" in html
    from sklearn.utils import get_tags
    assert get_tags(gm).estimator_type == "density_estimator"
    from sklearn.utils.estimator_checks import check_estimator
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_estimator(gm, on_fail=None)
    assert not [w for w in caught if "does not inherit from" in str(w.message)]
    # the transformer keeps sklearn's set_output
    assert GaussianMixtureImputer().set_output(transform="default") is not None
"""


@needs_sklearn
def test_estimators_subclass_sklearns_base_when_sklearn_is_imported_first():
    _run("import sklearn.base\n" + textwrap.dedent(_ESTIMATOR_CHECKS))


@needs_sklearn
def test_estimators_subclass_sklearns_base_when_sklearn_is_imported_later():
    # The estimator modules and an instance exist before scikit-learn does.
    code = """
        import sys
        from fastem import GaussianMixture
        from fastem.hmm import GaussianHMM
        before = GaussianMixture(2)
        assert "sklearn" not in sys.modules
        assert GaussianMixture.__mro__[-2].__name__ == "_SklearnBaseStandIn"
        import sklearn.base as sb
        assert isinstance(before, sb.BaseEstimator)
        assert isinstance(GaussianHMM(), sb.BaseEstimator)
    """
    _run(textwrap.dedent(code) + textwrap.dedent(_ESTIMATOR_CHECKS))


@needs_sklearn
def test_estimator_base_is_rebased_when_only_sklearn_exceptions_came_first():
    # sklearn.exceptions alone (the exceptions' hook has fired) and sklearn.base later
    code = """
        import sklearn.exceptions
        from fastem import GaussianMixture
        import sklearn.base as sb
        assert issubclass(GaussianMixture, sb.BaseEstimator)
    """
    _run(code)


@needs_sklearn
def test_new_estimator_falls_back_to_rebasing():
    # Without the hook (a loader it cannot wrap), creating an estimator re-bases the class.
    code = """
        import sys
        import fastem.exceptions as fe
        from fastem import GaussianMixture
        fe._remove_hook()
        import sklearn.base as sb
        assert not issubclass(GaussianMixture, sb.BaseEstimator)  # the hook was removed
        assert isinstance(GaussianMixture(), sb.BaseEstimator)
    """
    _run(code)


def test_estimator_base_without_sklearn_is_the_stand_in():
    code = """
        import sys
        sys.modules["sklearn"] = None
        from fastem import GaussianMixture
        import fastem._base as fb
        assert fb.BaseEstimator.__bases__ == (fb._SklearnBaseStandIn,)
        assert GaussianMixture(2).get_params()["n_components"] == 2
    """
    _run(code)


# --------------------------------------------------------- estimators: scikit-learn protocols
@needs_sklearn
def test_sklearn_sees_a_density_estimator():
    from sklearn.base import ClassifierMixin, clone, is_classifier, is_regressor
    from sklearn.utils import get_tags

    gm = fastem.GaussianMixture(3, covariance_type="diag", backend="numpy")
    tags = get_tags(gm)
    assert tags.estimator_type == "density_estimator" and tags.input_tags.allow_nan
    assert not is_classifier(gm) and not is_regressor(gm)
    assert get_tags(fastem.GaussianMixtureIC()).estimator_type == "density_estimator"
    twin = clone(gm)
    assert twin is not gm and twin.get_params() == gm.get_params()

    class Classifier(ClassifierMixin, fastem.GaussianMixture):
        pass  # scikit-learn's mixins build on fastem's __sklearn_tags__

    assert is_classifier(Classifier()) and get_tags(Classifier()).input_tags.allow_nan


@needs_sklearn
def test_pipeline_grid_search_and_fitted_checks():
    import numpy as np
    from sklearn.exceptions import NotFittedError
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.utils.validation import check_is_fitted

    X = np.random.default_rng(1).normal(size=(120, 2))
    pipe = Pipeline([("scale", StandardScaler()), ("gm", fastem.GaussianMixture(backend="numpy"))])
    assert pipe.get_params()["gm__n_components"] == 1
    pipe.set_params(gm__n_components=2, gm__random_state=0)
    assert pipe.named_steps["gm"].n_components == 2
    with pytest.raises(NotFittedError):
        check_is_fitted(pipe.named_steps["gm"])
    pipe.fit(X)
    check_is_fitted(pipe.named_steps["gm"])
    # Pipeline exposes a method only where its last step has it (_final_estimator_has)
    assert hasattr(pipe, "predict_proba") and hasattr(pipe, "score_samples")
    assert not hasattr(pipe, "decision_function")
    assert pipe.predict_proba(X).shape == (120, 2) and np.isfinite(pipe.score(X))
    search = GridSearchCV(pipe, {"gm__n_components": [1, 2]}, cv=2).fit(X)
    assert search.best_params_["gm__n_components"] in (1, 2)


def test_params_protocol_and_repr():
    gm = fastem.GaussianMixture(3, covariance_type="diag", backend="numpy")
    params = gm.get_params()
    assert params["n_components"] == 3 and list(params) == sorted(params)
    assert gm.set_params(tol=1e-5, n_init=2) is gm and (gm.tol, gm.n_init) == (1e-5, 2)
    with pytest.raises(ValueError, match="Invalid parameter 'bogus'"):
        gm.set_params(bogus=1)
    assert repr(gm) == (
        "GaussianMixture(backend='numpy', covariance_type='diag', n_components=3, n_init=2, "
        "tol=1e-05)"
    )
    assert repr(fastem.GaussianMixture()) == "GaussianMixture()"


# --------------------------------------------------------------------- without scikit-learn
def test_works_without_sklearn():
    code = """
        import sys, warnings
        sys.modules["sklearn"] = None  # any `import sklearn...` now raises ImportError
        import numpy as np
        import fastem
        from fastem import ConvergenceWarning, GaussianMixture, NotFittedError
        from fastem.impute import GaussianMixtureImputer
        assert issubclass(NotFittedError, (ValueError, AttributeError))
        assert issubclass(ConvergenceWarning, UserWarning)
        X = np.random.default_rng(0).normal(size=(200, 2))
        try:
            GaussianMixture(backend="numpy").predict(X)
        except NotFittedError:
            pass
        else:
            raise AssertionError("no NotFittedError")
        gm = GaussianMixture(2, random_state=0, backend="numpy").fit(X)
        assert gm.predict(X).shape == (200,) and gm.converged_
        twin = type(gm)(**gm.get_params())
        assert twin.get_params() == gm.get_params()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            GaussianMixture(2, max_iter=1, tol=0.0, backend="numpy").fit(X)
        assert any(w.category is ConvergenceWarning for w in caught)
        X[0, 1] = np.nan
        filled = GaussianMixtureImputer(random_state=0, backend="numpy").fit_transform(X)
        assert np.isfinite(filled).all()
        assert sys.modules["sklearn"] is None
    """
    _run(code)


@needs_sklearn
def test_metadata_routing_reaches_fit():
    import numpy as np
    import sklearn
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    assert set(fastem.GaussianMixture.__dict__) >= {"set_fit_request", "set_partial_fit_request"}
    with pytest.raises(RuntimeError, match="enable_metadata_routing"):
        fastem.GaussianMixture().set_fit_request(sample_weight=True)
    rng = np.random.default_rng(0)
    X, w = rng.normal(size=(100, 2)), rng.uniform(0.5, 2.0, 100)
    with sklearn.config_context(enable_metadata_routing=True):
        with pytest.raises(TypeError, match="Unexpected args"):
            fastem.GaussianMixture().set_fit_request(weights=True)
        gm = fastem.GaussianMixture(2, random_state=0, backend="numpy")
        assert gm.set_fit_request(sample_weight=True) is gm
        assert clone(gm).get_metadata_routing().fit.requests == {"sample_weight": True}
        scaler = StandardScaler().set_fit_request(sample_weight=False)
        pipe = Pipeline([("scale", scaler), ("gm", gm)]).fit(X, sample_weight=w)
        unrequested = Pipeline([("scale", clone(scaler)), ("gm", fastem.GaussianMixture(2))])
        with pytest.raises(ValueError, match="sample_weight"):
            unrequested.fit(X, sample_weight=w)
    direct = fastem.GaussianMixture(2, random_state=0, backend="numpy")
    direct.fit(StandardScaler().fit_transform(X), sample_weight=w)
    np.testing.assert_allclose(pipe.named_steps["gm"].means_, direct.means_)
