"""GaussianMixture against scikit-learn, a third hunt (session 12, S1): parameter
validation (class, message, order), the user starts' conversions, verbose output,
``max_iter=0`` after a warm start, and predictions after ``set_params(n_components=...)``."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from _helpers import initial_parameters

from fastem import GaussianMixture
from fastem.datasets import make_mixture
from fastem.exceptions import InvalidParameterError

sklearn_mixture = pytest.importorskip("sklearn.mixture")
SkGaussianMixture = sklearn_mixture.GaussianMixture


def _errors_of(kw, X):
    """scikit-learn's and fastem's errors (type and message) of ``fit`` with ``kw``."""
    errors = []
    for cls in (SkGaussianMixture, GaussianMixture):
        with pytest.raises(Exception) as exc:
            cls(**kw).fit(X)
        errors.append(exc.value)
    return errors


# Each of these raised another class or message than scikit-learn's before S1 (verbose was
# not checked at all: -1 and 1.5 were accepted, 'a' raised a TypeError mid-fit).
_BAD_PARAMETERS = [
    {"verbose": -1},
    {"verbose": 1.5},
    {"verbose": "a"},
    {"random_state": "abc"},
    {"random_state": 1.5},
    {"random_state": -1},
    {"random_state": 2**40},
    {"weights_init": "abc"},
    {"weights_init": 1.0},
    {"means_init": 0.0},
    {"precisions_init": 1.0},
]


@pytest.mark.parametrize("params", _BAD_PARAMETERS, ids=lambda p: "-".join(map(str, *p.items())))
def test_parameter_errors_are_scikit_learns(params):
    X = np.random.default_rng(0).normal(size=(20, 3))
    theirs, ours = _errors_of(params, X)
    assert type(theirs).__name__ == "InvalidParameterError"
    assert isinstance(ours, InvalidParameterError)
    assert isinstance(ours, type(theirs))  # fastem's class derives from scikit-learn's
    assert isinstance(ours, ValueError) and isinstance(ours, TypeError)
    # random_state: scikit-learn's message, then that fastem also takes a Generator
    assert str(ours).startswith(str(theirs)), (str(ours), str(theirs))


@pytest.mark.parametrize(
    "params",
    [{"n_components": 0}, {"tol": -1.0}, {"max_iter": 2.0}, {"warm_start": 1},
     {"covariance_type": "banana"}, {"init_params": "magic"}],
    ids=str,
)  # fmt: skip
def test_every_constraint_error_has_scikit_learns_class(params):
    """The errors that had scikit-learn's message already now have its class too:
    ``except TypeError`` catches them, as it catches scikit-learn's."""
    X = np.random.default_rng(0).normal(size=(20, 3))
    theirs, ours = _errors_of(params, X)
    assert isinstance(ours, type(theirs)) and isinstance(ours, TypeError)


def test_scikit_learns_param_validation_check_passes():
    """scikit-learn's own ``check_param_validation`` (its test_common runs it on its
    estimators) with GaussianMixture's ``_parameter_constraints``: a bad type or value of
    each of scikit-learn's parameters raises its error class and message from ``fit``,
    ``fit_predict`` and ``partial_fit``. fastem's partial_fit raised plain ValueErrors in
    fastem's words (n_components, covariance_type) before S1."""
    from sklearn.utils.estimator_checks import check_param_validation

    class GaussianMixtureWithConstraints(GaussianMixture):
        pass

    fastem_only = ("acceleration", "backend", "learning_decay", "learning_offset",
                   "n_threads", "stopping")  # fmt: skip
    GaussianMixtureWithConstraints._parameter_constraints = {
        **SkGaussianMixture._parameter_constraints,
        **dict.fromkeys(fastem_only, "no_validation"),
    }
    GaussianMixtureWithConstraints.__name__ = "GaussianMixture"  # the messages' owner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_param_validation("GaussianMixture", GaussianMixtureWithConstraints())


@pytest.mark.filterwarnings("ignore::UserWarning")  # ConvergenceWarning of max_iter=2
def test_valid_parameters_scikit_learn_takes_are_taken():
    X = np.random.default_rng(0).normal(size=(30, 2))
    valid = [
        {"verbose": np.bool_(False)},
        {"random_state": np.int64(3)},
        {"random_state": 2**32 - 1},
        {"random_state": np.random.RandomState(0)},
    ]
    for params in valid:
        GaussianMixture(2, max_iter=2, tol=0.0, **params).fit(X)
        SkGaussianMixture(2, max_iter=2, **params).fit(X)


def test_a_bad_parameter_is_reported_before_bad_data():
    """scikit-learn validates the parameters before X; fastem read X first, so with both
    wrong the two raised different errors (README/docs/sklearn_suite.md listed it)."""
    X = np.array([[1.0, np.inf], [2.0, 3.0], [0.0, 1.0]])
    for params in ({"n_components": 0}, {"verbose": -1}, {"random_state": "x"}):
        theirs, ours = _errors_of(params, X)
        assert str(ours).startswith(str(theirs)), (str(ours), str(theirs))


@pytest.mark.parametrize(
    "params",
    [
        {"weights_init": np.array([0.5, None], dtype=object)},  # None is NaN there
        {"weights_init": np.array([0.5, 0.5 + 0j])},
        {"means_init": [["a", "b", "c"], ["d", "e", "f"]]},
        {"means_init": np.zeros((2, 3, 1))},
        {"covariance_type": "tied", "precisions_init": np.eye(3)[None]},
        {"covariance_type": "diag", "precisions_init": np.ones((2, 3, 1))},
    ],
    ids=["object-None", "complex", "strings", "means-3d", "tied-3d", "diag-3d"],
)
def test_user_start_errors_start_as_scikit_learns(params):
    X = np.random.default_rng(0).normal(size=(20, 3))
    theirs, ours = _errors_of({"n_components": 2, **params}, X)
    assert isinstance(ours, ValueError)
    assert str(ours).startswith(str(theirs).rstrip()), (str(ours), str(theirs))


def test_object_and_string_user_starts_convert_as_scikit_learns(backend):
    """scikit-learn's check_array converts object and numeric-string arrays; fastem refused
    them ('weights_init must be numeric, got dtype object')."""
    X, _ = make_mixture(200, 2, 2, random_state=0)
    init = initial_parameters(X, 2, "diag", seed=1)
    as_object = {
        **init,
        "weights_init": np.asarray(init["weights_init"], dtype=object),
        "means_init": np.asarray(init["means_init"]).astype(str),
        "precisions_init": np.asarray(init["precisions_init"], dtype=object),
    }
    kw = dict(max_iter=5, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = GaussianMixture(backend=backend, **as_object, **kw).fit(X)
        theirs = SkGaussianMixture(**as_object, **kw).fit(X)
        plain = GaussianMixture(backend=backend, **init, **kw).fit(X)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-7)
    np.testing.assert_array_equal(ours.means_, plain.means_)


def _verbose_output(cls, X, **kw) -> str:
    buf = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
        warnings.simplefilter("ignore")
        cls(**kw).fit(X)
    return re.sub(r"time lapse \d+\.\d+s", "time lapse Ts", buf.getvalue())


@pytest.mark.parametrize("verbose", [1, 2, 3])
@pytest.mark.parametrize("max_iter", [0, 5])
def test_verbose_output_is_scikit_learns(backend, verbose, max_iter):
    """Line for line, times aside. Before S1, verbose >= 2 left out the period after the
    lower bound, and max_iter=0 printed an 'Initialization did not converge.' that
    scikit-learn does not."""
    X, _ = make_mixture(300, 2, 3, random_state=1)
    kw = dict(initial_parameters(X, 3, "full", seed=2), tol=0.0, n_init=2, verbose=verbose)
    kw.update(verbose_interval=2, max_iter=max_iter)
    if max_iter == 0:
        del kw["precisions_init"]  # scikit-learn's max_iter=0 fit of a full start fails
    ours = _verbose_output(GaussianMixture, X, backend=backend, **kw)
    theirs = _verbose_output(SkGaussianMixture, X, **kw)
    assert ours == theirs
    assert ours.count("Initialization") == 2 * (2 if max_iter else 1)


def test_warm_start_with_max_iter_0_has_no_lower_bound(backend):
    """scikit-learn: no iteration, no bound (-inf), after a warm start too; fastem kept
    the previous fit's bound. It matters next: a warm fit from -inf cannot stop at once."""
    X, _ = make_mixture(300, 2, 3, random_state=1)
    kw = dict(initial_parameters(X, 3, "full", seed=2), tol=1e-1, max_iter=5)
    models = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for model in (GaussianMixture(backend=backend, **kw), SkGaussianMixture(**kw)):
            model.fit(X).set_params(warm_start=True, max_iter=0).fit(X)
            assert model.lower_bound_ == -np.inf
            assert (model.n_iter_, model.converged_, model.lower_bounds_) == (0, False, [])
            models.append(model.set_params(max_iter=10).fit(X))
    ours, theirs = models
    assert ours.n_iter_ == theirs.n_iter_ == 2
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_max_iter_0_keeps_the_last_of_n_init_starts(backend, covariance_type):
    """With no iteration there is no bound to choose by: scikit-learn keeps the last
    start, fastem kept the first. 'random_from_data' draws scikit-learn's rows, so the
    starts are the same and the models must be too."""
    X, _ = make_mixture(300, 2, 3, random_state=1)
    kw = dict(n_components=3, covariance_type=covariance_type, random_state=0)
    kw.update(init_params="random_from_data", n_init=3, max_iter=0)
    ours = GaussianMixture(backend=backend, **kw).fit(X)
    theirs = SkGaussianMixture(**kw).fit(X)
    first = GaussianMixture(backend=backend, **{**kw, "n_init": 1}).fit(X)
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-12)
    # one-row components: reg_covar, scikit-learn's plus its E[x^2] - E[x]^2 noise (~1e-14)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, rtol=1e-9, atol=1e-12)
    assert not np.allclose(ours.means_, first.means_)  # the starts differ


@pytest.mark.parametrize("new_k", [2, 5])
def test_predictions_follow_the_fitted_model_after_set_params(backend, new_k):
    """After ``set_params(n_components=...)`` on a fitted model, scikit-learn predicts with
    the fitted parameters. fastem sized its outputs by ``n_components``: numba wrote 3
    columns into 2 (out of bounds) or left 2 of 5 unwritten; cython and numpy raised."""
    X, _ = make_mixture(300, 2, 3, random_state=1)
    kw = dict(initial_parameters(X, 3, "full", seed=2), max_iter=5, tol=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = GaussianMixture(backend=backend, **kw).fit(X)
        theirs = SkGaussianMixture(**kw).fit(X)
    before = {m: getattr(ours, m)(X) for m in ("predict_proba", "score_samples", "impute")}
    ours.set_params(n_components=new_k)
    theirs.set_params(n_components=new_k)
    proba = ours.predict_proba(X)
    assert proba.shape == theirs.predict_proba(X).shape == (300, 3)
    np.testing.assert_allclose(proba, theirs.predict_proba(X), rtol=1e-7, atol=1e-12)
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))
    for method, value in before.items():
        np.testing.assert_array_equal(getattr(ours, method)(X), value)
    # the criteria count the fitted model's parameters (scikit-learn's count follows
    # n_components: a deliberate difference, docs/sklearn_suite.md)
    assert ours._n_parameters() == 3 * 2 + 3 * 3 + 2


def test_invalid_parameter_error_adopts_scikit_learns_class_imported_later():
    """Imported before scikit-learn, fastem's class is re-based onto scikit-learn's when
    its private module is imported (the hook of fastem.exceptions)."""
    code = (
        "import sys, numpy as np\n"
        "from fastem import GaussianMixture\n"
        "from fastem.exceptions import InvalidParameterError\n"
        "assert 'sklearn' not in sys.modules\n"
        "from sklearn.utils._param_validation import InvalidParameterError as Sk\n"
        "assert issubclass(InvalidParameterError, Sk), InvalidParameterError.__mro__\n"
        "try:\n"
        "    GaussianMixture(verbose=-1).fit(np.zeros((3, 1)))\n"
        "except Sk:\n"
        "    print('caught')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "caught"
