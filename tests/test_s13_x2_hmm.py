"""HMM follow-ups of session 12 (task X2), each against hmmlearn 0.3.3 where it
applies: an unknown ``implementation`` on the scoring paths, unknown ``params``
letters, spherical ``covars_`` for another feature count, ``aic``/``bic``
types, and a variance of exactly 0 in the numba M-step."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastem import hmm as fh
from fastem.hmm._backend import available_hmm_backends

hl = pytest.importorskip("hmmlearn.hmm")

K = 3
BACKENDS = available_hmm_backends()
SCORING = ["score", "score_samples", "predict_proba", "predict", "decode",
           "score_sequences", "predict_filtered_proba", "aic", "bic"]  # fmt: skip


def _gaussian_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 2))
    X[60:] += 3
    return X, [50, 70]


def _counts_data(n_features=3):
    rng = np.random.default_rng(0)
    return rng.integers(0, 4, size=(120, n_features)), [50, 70]


def _fitted(mod, name, **kw):
    """A fitted model of each kind and its data (fastem's or hmmlearn's)."""
    if name in ("GaussianHMM", "GMMHMM"):
        X, lengths = _gaussian_data()
    elif name == "CategoricalHMM":
        X, lengths = _counts_data(1)
    elif name == "MultinomialHMM":
        X = np.random.default_rng(0).multinomial(4, [0.2, 0.3, 0.5], size=120)
        lengths = [50, 70]
        kw.setdefault("n_trials", 4)
    else:
        X, lengths = _counts_data(2)
    extra = {"n_mix": 2} if name == "GMMHMM" else {}
    model = getattr(mod, name)(2, random_state=0, n_iter=3, **extra, **kw)
    return model.fit(X, lengths), X, lengths


MODELS = ["GaussianHMM", "GMMHMM", "CategoricalHMM", "PoissonHMM", "MultinomialHMM"]


def _call(model, method, X, lengths):
    if method in ("aic", "bic", "score_sequences", "predict_filtered_proba"):
        return getattr(model, method)(X, lengths)
    return getattr(model, method)(X, lengths=lengths)


# ------------------------------------------------------------------ 1. implementation
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("method", SCORING)
def test_unknown_implementation_raises_on_every_scoring_path(backend, method):
    """fit rejected it; the scoring paths of a fitted model used it unchecked.
    hmmlearn's score, score_samples and predict_proba raise (a KeyError from
    its lookup table); its decode and predict ignore the setting."""
    model, X, lengths = _fitted(fh, "GaussianHMM", backend=backend)
    expected = _call(model, method, X, lengths)
    model.implementation = "foo"
    with pytest.raises(ValueError, match="implementation must be one of"):
        _call(model, method, X, lengths)
    model.implementation = "scaling"  # a valid value still scores as before
    got = _call(model, method, X, lengths)
    got, expected = (v if isinstance(v, tuple) else (v,) for v in (got, expected))
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_unknown_implementation_raises_for_every_model(name):
    model, X, lengths = _fitted(fh, name)
    ref, _, _ = _fitted(hl, name)
    model.implementation = ref.implementation = "foo"
    with pytest.raises(KeyError):  # hmmlearn: its score fails too
        ref.score(X, lengths)
    with pytest.raises(ValueError, match="got 'foo'"):
        model.score(X, lengths)


# ------------------------------------------------------------------ 2. params letters
def _fit_outcome(mod, params=None, init_params=None):
    X, lengths = _gaussian_data()
    kw = {}
    if params is not None:
        kw["params"] = params
    if init_params is not None:
        kw["init_params"] = init_params
    model = mod.GaussianHMM(2, random_state=0, n_iter=2, **kw)
    try:
        model.fit(X, lengths)
    except (KeyError, ValueError) as exc:
        return type(exc)
    return model


@given(st.text(alphabet="stmcwelz", max_size=6))
def test_params_with_letters_the_model_lacks_raise_as_hmmlearn(params):
    """hmmlearn 0.3.3 fails on such a letter (KeyError in its count of free
    parameters, before the first pass); fastem ignored it. Now a ValueError."""
    ours = _fit_outcome(fh, params=params)
    theirs = _fit_outcome(hl, params=params)
    assert (ours is ValueError) == (theirs is KeyError)
    if ours is ValueError:
        with pytest.raises(ValueError, match="GaussianHMM has no parameter for"):
            fh.GaussianHMM(2, params=params, n_iter=1).fit(_gaussian_data()[0])
    else:
        np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name,foreign", [("CategoricalHMM", "m"), ("PoissonHMM", "e"),
                                          ("MultinomialHMM", "c"), ("GMMHMM", "l")])  # fmt: skip
def test_params_letters_are_checked_for_every_model(name, foreign):
    with pytest.raises(KeyError):
        _fitted(hl, name, params="st" + foreign)
    with pytest.raises(ValueError, match=f"params holds {foreign!r}"):
        _fitted(fh, name, params="st" + foreign)


def test_unknown_init_params_letters_are_ignored_as_hmmlearn():
    """hmmlearn only asks whether a letter is in init_params: extra letters
    change nothing there, nor here."""
    plain = _fit_outcome(fh, init_params="stmc")
    extra = _fit_outcome(fh, init_params="stmcz")
    assert not isinstance(_fit_outcome(hl, init_params="stmcz"), type)
    for attr in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(plain, attr), getattr(extra, attr))


# ------------------------------------------------------------------ 3. spherical D'
def _spherical(mod, covars, means_first=True, **kw):
    r = np.random.default_rng(1)
    m = mod.GaussianHMM(K, covariance_type="spherical", init_params="", **kw)
    m.startprob_ = np.array([0.5, 0.3, 0.2])
    m.transmat_ = r.dirichlet(np.ones(K) * 3, size=K)
    means = r.normal(size=(K, 2))
    if means_first:
        m.means_ = means
        m.covars_ = covars
    else:
        m.covars_ = covars
        m.means_ = means
    return m


V = np.array([0.7, 1.1, 1.6])
WRONG_D = {"(K, 3)": np.tile(V[:, None], (1, 3)), "(K, 3, 3)": V[:, None, None] * np.eye(3)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("form", sorted(WRONG_D))
@pytest.mark.parametrize("means_first", [True, False])
@pytest.mark.parametrize("method", ["score", "predict", "fit", "sample"])
def test_spherical_covars_for_another_feature_count_raise(backend, form, means_first, method):
    """The setter kept one value per state and dropped the form's feature count:
    3-feature covariances beside 2-feature means scored as if they fitted.
    hmmlearn fails at score (a broadcasting error) or when (K, 3, 3) is set
    (its off-diagonal zeros); a ValueError here."""
    X, lengths = _gaussian_data()
    if method == "score":  # hmmlearn refuses (K, 3, 3) when it is set (zeros)
        with pytest.raises(ValueError):
            _spherical(hl, WRONG_D[form], means_first).score(X, lengths)
    m = _spherical(fh, WRONG_D[form], means_first, backend=backend)
    with pytest.raises(ValueError, match="do not fit means_ with 2 features"):
        if method == "sample":
            m.sample(5, random_state=0)
        elif method == "fit":
            m.set_params(n_iter=1).fit(X, lengths)
        else:
            getattr(m, method)(X, lengths)


@pytest.mark.parametrize("form", ["(K,)", "(K, 1)", "(K, 2)", "(K, 2, 2)", "(K, 1, 1, 1)"])
@pytest.mark.parametrize("means_first", [True, False])
def test_spherical_covars_that_fit_the_means_score_alike(form, means_first):
    X, lengths = _gaussian_data()
    covars = {"(K,)": V, "(K, 1)": V[:, None], "(K, 2)": np.tile(V[:, None], (1, 2)),
              "(K, 1, 1, 1)": V[:, None, None, None],
              "(K, 2, 2)": V[:, None, None] * np.eye(2)}[form]  # fmt: skip
    ref = _spherical(fh, V).score(X, lengths)
    assert _spherical(fh, covars, means_first).score(X, lengths) == ref


def test_wrong_spherical_form_is_fine_once_replaced():
    X, lengths = _gaussian_data()
    m = _spherical(fh, WRONG_D["(K, 3)"])
    with pytest.raises(ValueError):
        m.score(X, lengths)
    with pytest.raises(ValueError):  # it stays refused
        m.score(X, lengths)
    m.means_ = np.zeros((K, 3))  # means of the form's 3 features: consistent
    assert np.isfinite(m.score(np.zeros((4, 3))))
    m = _spherical(fh, WRONG_D["(K, 3)"])
    m.set_params(init_params="c", n_iter=1).fit(X, lengths)  # re-initialized, as hmmlearn
    assert np.isfinite(m.score(X, lengths))


# ------------------------------------------------------------------ 4. aic / bic
@pytest.mark.parametrize("name", MODELS)
def test_aic_bic_types_and_values_are_hmmlearns(name):
    model, X, lengths = _fitted(fh, name)
    ref, _, _ = _fitted(hl, name)
    for crit in ("aic", "bic"):
        ours, theirs = getattr(model, crit)(X, lengths), getattr(ref, crit)(X, lengths)
        assert isinstance(ours, float) and isinstance(theirs, float)
        # aic a Python float and bic NumPy's (log n) as hmmlearn's, except where
        # hmmlearn's parameter count is a NumPy int (CategoricalHMM's n_features
        # from X.max() + 1 makes its aic np.float64): not copied.
        if all(type(v) is int for v in ref._get_n_fit_scalars_per_param().values()):
            assert type(ours) is type(theirs), crit
        assert type(ours) is (float if crit == "aic" else np.float64)
        if name != "GMMHMM":  # GMMHMM counts every state's weights (docs/hmmlearn_suite.md)
            # the same penalty (parameter count) beside each library's own score
            penalty = ours + 2 * model.score(X, lengths)
            assert np.isclose(penalty, theirs + 2 * ref.score(X, lengths), rtol=1e-12)


# ------------------------------------------------------------------ 5. zero variance
def _zero_variance_data():
    """Two far clusters; in the first the second feature is exactly 0, so with
    covars_prior=0 the first M-step gives that state a variance of exactly 0."""
    rng = np.random.default_rng(0)
    n = 150
    a = np.column_stack([rng.normal(size=n) - 100, np.zeros(n)])
    b = np.column_stack([rng.normal(size=n) + 100, rng.normal(size=n)])
    return np.vstack([a, b])


def _fit_zero_variance(backend, acceleration=None):
    m = fh.GaussianHMM(2, covariance_type="diag", covars_prior=0, random_state=0, n_iter=10,
                       backend=backend, acceleration=acceleration)  # fmt: skip
    return m.fit(_zero_variance_data())


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_variance_in_a_plain_fit_raises_the_numpy_paths_error(backend):
    """The numba M-step's log prior divided by the 0 variance with Python's error
    model: ZeroDivisionError, where the NumPy and Cython paths raise their
    ill-defined-covariance ValueError at the next E-step; now every backend
    does. (hmmlearn fits on with a 0 variance in its density; not followed.)"""
    with pytest.raises(ValueError) as expected:
        _fit_zero_variance("numpy")
    assert "ill-defined covariance" in str(expected.value)
    with pytest.raises(ValueError) as got:
        _fit_zero_variance(backend)
    assert str(got.value) == str(expected.value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("acceleration", ["squarem", "qn"])
def test_zero_variance_in_an_accelerated_fit_is_a_value_error_or_a_fit(backend, acceleration):
    """Accelerated, the path near the degenerate point depends on rounding (the
    backends may end differently); either a ValueError (the EM point's
    covariances are checked) or a finished fit, never an arithmetic error."""
    try:
        model = _fit_zero_variance(backend, acceleration)
    except ValueError as exc:
        assert "covar" in str(exc)
    else:
        assert np.isfinite(model.monitor_.history[-1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_same_data_with_the_default_prior_fits_alike_on_every_backend(backend):
    X = _zero_variance_data()
    kw = dict(covariance_type="diag", random_state=0, n_iter=10)
    ref = hl.GaussianHMM(2, **kw).fit(X)
    m = fh.GaussianHMM(2, backend=backend, **kw).fit(X)
    np.testing.assert_allclose(m.score(X), ref.score(X), rtol=1e-10)
