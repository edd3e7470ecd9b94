"""Kernel selection for fastem.hmm: numba if it imports, else the Cython/OpenMP
kernels if they were built, else the NumPy reference.

The HMM kernels are not part of :data:`fastem.backends.KERNEL_NAMES`: they live
in their own modules (the Cython ones in the optional extension
``fastem.backends._cython_hmm``); an HMM backend pairs its HMM kernels with the
mixture backend of the same name for the emission log-densities.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from types import ModuleType

from ..backends import get_backend

HMM_BACKENDS = ("numba", "cython", "numpy")
_MODULES = {
    "numba": "fastem.backends._numba_hmm",
    "cython": "fastem.backends._cython_hmm",
    "numpy": "fastem.hmm._kernels_numpy",
}
_loaded: dict[str, HMMKernels] = {}
_failed: dict[str, str] = {}


@dataclass(frozen=True)
class HMMKernels:
    """The HMM kernels (``hmm``) and the mixture kernels for emissions (``mixture``)."""

    name: str
    hmm: ModuleType
    mixture: ModuleType


def _load(name: str) -> HMMKernels | None:
    if name in _loaded:
        return _loaded[name]
    if name in _failed:
        return None
    try:
        hmm = importlib.import_module(_MODULES[name])
        mixture = get_backend(name)
    except Exception as exc:  # an import failure makes the backend unavailable
        _failed[name] = f"{type(exc).__name__}: {exc}"
        return None
    _loaded[name] = HMMKernels(name, hmm, mixture)
    return _loaded[name]


def available_hmm_backends() -> list[str]:
    """HMM backends that import here, in automatic-selection order."""
    return [name for name in HMM_BACKENDS if _load(name) is not None]


def get_hmm_kernels(name: str | None = None) -> HMMKernels:
    """Kernels for ``name``; ``None`` means ``FASTEM_BACKEND`` if it names an HMM
    backend, else the first that imports (numba, then cython, then numpy)."""
    if name is None:
        env = os.environ.get("FASTEM_BACKEND") or None
        if env in HMM_BACKENDS and _load(env) is not None:
            return _load(env)
        for candidate in HMM_BACKENDS:
            kernels = _load(candidate)
            if kernels is not None:
                return kernels
        raise RuntimeError("no fastem.hmm backend could be imported")  # numpy always can
    if name not in HMM_BACKENDS:
        raise ValueError(f"unknown HMM backend {name!r}; known: {', '.join(HMM_BACKENDS)}")
    kernels = _load(name)
    if kernels is None:
        raise ValueError(
            f"HMM backend {name!r} is not available ({_failed[name]}); "
            f"available: {', '.join(available_hmm_backends())}"
        )
    return kernels
