"""Backend registry: each backend is a module exposing the same kernel functions.

The kernel contract is documented in :mod:`fastem.backends._numpy`, the
reference implementation. Selection order: an explicit ``backend=`` argument,
else the ``FASTEM_BACKEND`` environment variable, else the first importable of
numba, cython, numpy.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

KERNEL_NAMES = (
    "em_pass_full",
    "em_pass_diag",
    "em_pass_tied",
    "log_prob_full",
    "log_prob_diag",
    "log_prob_tied",
    "kmeans_pass",
    "em_pass_missing_full",
    "em_pass_missing_diag",
    "log_prob_missing_full",
    "log_prob_missing_diag",
    "em_pass_missing_tied",
    "log_prob_missing_tied",
    "impute_missing_full",
)

_MODULES = {
    "numba": "fastem.backends._numba",
    "cython": "fastem.backends._cython",
    "numpy": "fastem.backends._numpy",
}
AUTO_ORDER = ("numba", "cython", "numpy")

_loaded: dict[str, ModuleType] = {}
_failed: dict[str, str] = {}


def _load(name: str) -> ModuleType | None:
    if name in _loaded:
        return _loaded[name]
    if name in _failed:
        return None
    try:
        module = importlib.import_module(_MODULES[name])
    except Exception as exc:  # any import failure makes the backend unavailable
        _failed[name] = f"{type(exc).__name__}: {exc}"
        return None
    missing = [k for k in KERNEL_NAMES if not hasattr(module, k)]
    if missing:
        _failed[name] = f"missing kernels: {', '.join(missing)}"
        return None
    _loaded[name] = module
    return module


def backend_status() -> dict[str, str | None]:
    """Map each backend name to ``None`` if usable, else the reason it is not."""
    status: dict[str, str | None] = {}
    for name in _MODULES:
        status[name] = None if _load(name) is not None else _failed[name]
    return status


def available_backends() -> list[str]:
    """Names of the backends that import, in automatic-selection order."""
    return [name for name in AUTO_ORDER if _load(name) is not None]


def resolve_backend_name(name: str | None = None) -> str:
    """Return the backend name that ``name`` selects (see module docstring)."""
    explicit = name if name is not None else os.environ.get("FASTEM_BACKEND") or None
    if explicit is None:
        for candidate in AUTO_ORDER:
            if _load(candidate) is not None:
                return candidate
        raise RuntimeError("no fastem backend could be imported")  # numpy always can
    if explicit not in _MODULES:
        raise ValueError(
            f"unknown backend {explicit!r}; known backends: {', '.join(_MODULES)} "
            f"(available here: {', '.join(available_backends())})"
        )
    if _load(explicit) is None:
        raise ValueError(
            f"backend {explicit!r} is not available ({_failed[explicit]}); "
            f"available backends: {', '.join(available_backends())}"
        )
    return explicit


def get_backend(name: str | None = None) -> ModuleType:
    """Return the kernel module selected by ``name`` (see module docstring)."""
    return _loaded[resolve_backend_name(name)]
