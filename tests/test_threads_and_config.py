"""n_threads caps the compiled kernels and is restored afterwards; show_config reports."""

from __future__ import annotations

import io

import numpy as np
import pytest

import fastem
from fastem import GaussianMixture, show_config
from fastem._threads import get_backend_threads
from fastem.backends import available_backends, get_backend

COMPILED = [b for b in available_backends() if b != "numpy"]


def _spy_on_threads(monkeypatch, backend: str, kernel_name: str) -> list[int]:
    """Record the backend's thread count each time ``kernel_name`` is called."""
    module = get_backend(backend)
    seen: list[int] = []
    original = getattr(module, kernel_name)

    def spy(*args):
        seen.append(get_backend_threads(backend))
        return original(*args)

    monkeypatch.setattr(module, kernel_name, spy)
    return seen


@pytest.mark.parametrize("backend", COMPILED)
def test_n_threads_caps_fit_and_predict_then_restores(backend, monkeypatch):
    X = np.random.default_rng(0).normal(size=(3000, 2))
    before = get_backend_threads(backend)
    fit_seen = _spy_on_threads(monkeypatch, backend, "em_pass_full")
    pred_seen = _spy_on_threads(monkeypatch, backend, "log_prob_full")
    gm = GaussianMixture(2, n_threads=1, random_state=0, backend=backend).fit(X)
    gm.predict_proba(X)
    assert fit_seen and set(fit_seen) == {1}
    assert pred_seen and set(pred_seen) == {1}
    assert get_backend_threads(backend) == before


@pytest.mark.parametrize("backend", COMPILED)
def test_thread_count_is_restored_when_fit_raises(backend, monkeypatch):
    X = np.random.default_rng(0).normal(size=(200, 2))
    before = get_backend_threads(backend)

    def broken(*args):
        assert get_backend_threads(backend) == 1
        raise RuntimeError("kernel failure")

    monkeypatch.setattr(get_backend(backend), "em_pass_full", broken)
    with pytest.raises(RuntimeError, match="kernel failure"):
        GaussianMixture(2, n_threads=1, backend=backend).fit(X)
    assert get_backend_threads(backend) == before


def test_n_threads_is_validated():
    X = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="n_threads"):
        GaussianMixture(2, n_threads=0).fit(X)


def test_show_config_names_backends_threads_and_versions(monkeypatch):
    monkeypatch.delenv("FASTEM_BACKEND", raising=False)
    buf = io.StringIO()
    show_config(file=buf)
    text = buf.getvalue()
    assert f"fastem {fastem.__version__}" in text
    for name in ("numba", "cython", "numpy"):
        assert f"  {name}" in text
    assert f"chosen backend: {available_backends()[0]}" in text
    assert "threads:" in text and "libraries: numpy" in text


def test_show_config_says_why_a_backend_is_unavailable(monkeypatch):
    from fastem import backends

    monkeypatch.setitem(backends._MODULES, "ghost", "fastem.backends._ghost")
    monkeypatch.setenv("FASTEM_BACKEND", "ghost")
    buf = io.StringIO()
    show_config(file=buf)
    text = buf.getvalue()
    assert "ghost   unavailable: ModuleNotFoundError" in text
    assert "chosen backend: none (backend 'ghost' is not available" in text
