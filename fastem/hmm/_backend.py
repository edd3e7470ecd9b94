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

import numpy as np

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


# ------------------------------------------------------------------ optional kernels
# A backend module may add fused kernels to the contract of
# ``fastem.hmm._kernels_numpy``; each has a fallback here composed of the
# contract's kernels, which every backend has, and is tested against it.


def estep_diag(
    kernels: HMMKernels,
    X: np.ndarray,
    offsets: np.ndarray,
    means: np.ndarray,
    prec_chol: np.ndarray,
    comp_const: np.ndarray,
    startprob: np.ndarray,
    transmat: np.ndarray,
    seq_weight: np.ndarray,
    row_weight: np.ndarray,
    shift: np.ndarray,
    loglik: np.ndarray,
    xi: np.ndarray,
    start: np.ndarray,
    nk: np.ndarray,
    sx: np.ndarray,
    sxx: np.ndarray,
    workspace: dict | None = None,
) -> None:
    """One E-step of an HMM with diagonal Gaussian emissions and no missing values.

    Writes what ``forward_backward`` writes (``loglik``, ``xi``, ``start``) for
    the emission log-densities of ``mixture.log_prob_diag(X, means, prec_chol,
    comp_const)``, and what ``moments_diag(X, gamma, row_weight, shift, ...)``
    writes for its posteriors (``nk``, ``sx``, ``sxx``). The backend's fused
    ``estep_diag`` runs where it has one and takes the shape (float64 ``X``):
    same values to rounding, without the (N, K) emission and posterior arrays.
    Otherwise the three contract kernels run in turn (the same bits as before
    the fused kernel existed).

    Parameters
    ----------
    kernels : HMMKernels
    X : ndarray of shape (n_samples, n_features)
    offsets : ndarray of shape (n_sequences + 1,), int64
    means, prec_chol : ndarray of shape (n_components, n_features)
        In ``X``'s dtype; ``prec_chol`` holds diagonal precision factors.
    comp_const : ndarray of shape (n_components,)
        ``log det U_k - D/2 log(2 pi)`` (no mixing weights).
    startprob, transmat, seq_weight, row_weight, shift : ndarray
        As ``forward_backward`` and ``moments_diag`` take them.
    loglik, xi, start, nk, sx, sxx : ndarray
        Outputs, overwritten.
    workspace : dict, optional
        Kept by the caller across calls on the same ``X``, ``offsets``,
        ``seq_weight`` and ``row_weight`` objects (a fit's iterations): a fused
        kernel that takes one (``ESTEP_DIAG_WORKSPACE``) keeps in it what those
        calls share instead of making it each time. Same values either way.
    """
    hmm = kernels.hmm
    fused = getattr(hmm, "estep_diag", None)
    if fused is not None and X.dtype == np.float64:
        extra = (workspace,) if getattr(hmm, "ESTEP_DIAG_WORKSPACE", False) else ()
        if fused(
            X, offsets, means, prec_chol, comp_const, startprob, transmat, seq_weight,
            row_weight, shift, loglik, xi, start, nk, sx, sxx, *extra,
        ):  # fmt: skip
            return
    logB = np.empty((X.shape[0], means.shape[0]))
    kernels.mixture.log_prob_diag(X, means, prec_chol, comp_const, logB)
    gamma = np.empty_like(logB)
    kernels.hmm.forward_backward(
        logB, offsets, startprob, transmat, seq_weight, gamma, loglik, xi, start
    )
    kernels.hmm.moments_diag(X, gamma, row_weight, shift, nk, sx, sxx)
