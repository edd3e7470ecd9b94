"""fastem: Gaussian mixture models fitted by Expectation-Maximization, fast.

>>> from fastem import GaussianMixture
>>> from fastem.datasets import make_mixture
>>> X, _ = make_mixture(1000, 2, 3, random_state=0)
>>> gm = GaussianMixture(3, random_state=0).fit(X)
"""

# ``import fastem`` stays cheap (no NumPy, Numba or scikit-learn): the public names are
# loaded from their modules on first access (PEP 562).
from __future__ import annotations

import importlib

from ._version import __version__
from .exceptions import ConvergenceWarning, NotFittedError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know it)
if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from typing import Any

    from ._config import show_config
    from .backends import available_backends
    from .mixture import GaussianMixture
    from .mixture_ic import GaussianMixtureIC
    from .persistence import load
    from .selection import ModelSelection, select_model

__all__ = [
    "GaussianMixture",
    "GaussianMixtureIC",
    "load",
    "select_model",
    "ModelSelection",
    "ConvergenceWarning",
    "NotFittedError",
    "available_backends",
    "show_config",
    "__version__",
]

# public name -> the module that defines it
_LAZY = {
    "GaussianMixture": ".mixture",
    "GaussianMixtureIC": ".mixture_ic",
    "load": ".persistence",
    "select_model": ".selection",
    "ModelSelection": ".selection",
    "available_backends": ".backends",
    "show_config": "._config",
}
# Submodules that `import fastem` used to load, so `fastem.backends` etc. keep working.
_SUBMODULES = {
    "backends",
    "dask",
    "datasets",
    "hmm",
    "impute",
    "mixture",
    "mixture_ic",
    "persistence",
    "plotting",
    "selection",
}


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)  # the import binds it here
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
