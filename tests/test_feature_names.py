"""``feature_names_in_`` from pandas DataFrames, as scikit-learn does it: set by
``fit`` from string column names, and checked when predicting (other names are
an error, names on one side only a warning), on the same cases as scikit-learn's
own GaussianMixture."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from fastem import GaussianMixture
from fastem.datasets import make_mixture
from fastem.impute import GaussianMixtureImputer

pd = pytest.importorskip("pandas")
sk_mixture = pytest.importorskip("sklearn.mixture")

X, _ = make_mixture(300, 3, 2, random_state=0)
FRAME = pd.DataFrame(X, columns=["a", "b", "c"])


def _outcome(call):
    """('ok' | 'warning' | 'error', message) of calling ``call()``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except ValueError as exc:
            return "error", str(exc).splitlines()[0]
    names = [w for w in caught if "feature names" in str(w.message)]
    return ("warning", str(names[0].message)) if names else ("ok", "")


CASES = {
    "same names": FRAME,
    "other names": FRAME.rename(columns={"c": "z"}),
    "reordered": FRAME[["b", "a", "c"]],
    "no names": X,
    "integer column names": pd.DataFrame(X),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("fit_on", ["frame", "array"])
def test_predict_checks_names_as_scikit_learn_does(case, fit_on):
    data = FRAME if fit_on == "frame" else X
    ours = GaussianMixture(2, random_state=0).fit(data)
    theirs = sk_mixture.GaussianMixture(2, random_state=0).fit(data)
    if fit_on == "frame":
        np.testing.assert_array_equal(ours.feature_names_in_, ["a", "b", "c"])
        np.testing.assert_array_equal(theirs.feature_names_in_, ours.feature_names_in_)
    else:
        assert not hasattr(ours, "feature_names_in_")
    Xp = CASES[case]
    for method in ("predict", "predict_proba", "score_samples", "score"):
        got = _outcome(lambda m=method: getattr(ours, m)(Xp))
        want = _outcome(lambda m=method: getattr(theirs, m)(Xp))
        assert got[0] == want[0], (method, got, want)
        if got[0] != "ok":
            assert got[1].replace("fastem", "") == want[1], (method, got, want)


def test_refit_on_an_array_forgets_the_names():
    gm = GaussianMixture(2, random_state=0).fit(FRAME)
    gm.fit(X)
    assert not hasattr(gm, "feature_names_in_")


def test_a_failed_fit_does_not_record_names():
    gm = GaussianMixture(2, random_state=0)
    bad = FRAME.copy()
    bad.iloc[0, 0] = np.inf
    with pytest.raises(ValueError):
        gm.fit(bad)
    assert not hasattr(gm, "feature_names_in_")


def test_imputer_checks_names_too():
    Xm = X.copy()
    Xm[::7, 1] = np.nan
    frame = pd.DataFrame(Xm, columns=["a", "b", "c"])
    imp = GaussianMixtureImputer(2, random_state=0).fit(frame)
    np.testing.assert_array_equal(imp.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_array_equal(imp.get_feature_names_out(), ["a", "b", "c"])
    assert _outcome(lambda: imp.transform(frame))[0] == "ok"
    assert _outcome(lambda: imp.transform(Xm))[0] == "warning"
    assert _outcome(lambda: imp.transform(frame.rename(columns={"a": "q"})))[0] == "error"
    np.testing.assert_array_equal(imp.transform(frame), imp.transform(Xm))


def test_names_survive_save_and_load(tmp_path):
    import fastem

    gm = GaussianMixture(2, random_state=0).fit(FRAME)
    gm.save(tmp_path / "m.npz")
    back = fastem.load(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.feature_names_in_, ["a", "b", "c"])
    assert back.feature_names_in_.dtype == object
    assert _outcome(lambda: back.predict(FRAME.rename(columns={"c": "z"})))[0] == "error"
    np.testing.assert_array_equal(back.predict(FRAME), gm.predict(FRAME))
