"""Backend registry: selection order, environment variable, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from fastem import backends


def test_numpy_reference_is_always_available():
    assert "numpy" in backends.available_backends()
    assert backends.backend_status()["numpy"] is None


def test_automatic_choice_is_first_available(monkeypatch):
    monkeypatch.delenv("FASTEM_BACKEND", raising=False)
    assert backends.resolve_backend_name() == backends.available_backends()[0]
    order = [b for b in backends.AUTO_ORDER if b in backends.available_backends()]
    assert backends.available_backends() == order


def test_environment_variable_selects(monkeypatch):
    monkeypatch.setenv("FASTEM_BACKEND", "numpy")
    assert backends.resolve_backend_name() == "numpy"
    assert backends.resolve_backend_name("numpy") == "numpy"


def test_explicit_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("FASTEM_BACKEND", "no-such-backend")
    assert backends.resolve_backend_name("numpy") == "numpy"
    with pytest.raises(ValueError, match="unknown backend 'no-such-backend'"):
        backends.resolve_backend_name()


def test_unavailable_backend_says_why_and_lists_available(monkeypatch):
    monkeypatch.setitem(backends._MODULES, "broken", "fastem.backends._does_not_exist")
    with pytest.raises(ValueError, match=r"'broken' is not available .*available backends"):
        backends.resolve_backend_name("broken")
    assert "ModuleNotFoundError" in backends.backend_status()["broken"]


def test_fitted_model_records_backend():
    import numpy as np

    from fastem import GaussianMixture

    X = np.random.default_rng(0).normal(size=(50, 2))
    assert GaussianMixture(2, backend="numpy").fit(X).backend_ == "numpy"


def test_read_only_inputs_reuse_the_compiled_kernels():
    """Numba types an array's writability: the entry points pass every input
    read-only, so a memory map or other read-only X (or weights) after a
    writable one compiles nothing new (it cost ~14 s of compiling before)."""
    pytest.importorskip("numba")
    if "numba" not in backends.available_backends():
        pytest.skip("numba backend not available")
    import warnings

    from fastem import GaussianMixture
    from fastem.backends import _numba

    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 4))  # d >= 4: the tiled full kernel (d < 4 has its own)
    # the compiled kernels behind em_pass_full/log_prob_full and kmeans_pass
    kernels = [_numba._chunks_full, _numba._chunks_kmeans]

    def fit(data, weights):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = GaussianMixture(2, max_iter=2, random_state=0, backend="numba")
            return gm.fit(data, sample_weight=weights)

    def fit_and_predict(data, weights):
        fit(data, weights).predict_proba(data)

    gm = fit(X, np.ones(500))
    after_fit = [len(k.signatures) for k in kernels]
    assert min(after_fit) >= 1  # the fit ran these kernels
    gm.predict_proba(X)  # log-densities: the fit's specialization serves them too
    before = [len(k.signatures) for k in kernels]
    assert before == after_fit
    read_only = X.copy()
    read_only.flags.writeable = False
    weights = np.ones(500)
    weights.flags.writeable = False
    fit_and_predict(read_only, weights)
    assert [len(k.signatures) for k in kernels] == before
