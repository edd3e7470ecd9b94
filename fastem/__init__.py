"""fastem: Gaussian mixture models fitted by Expectation-Maximization, fast.

>>> from fastem import GaussianMixture
>>> from fastem.datasets import make_mixture
>>> X, _ = make_mixture(1000, 2, 3, random_state=0)
>>> gm = GaussianMixture(3, random_state=0).fit(X)
"""

from ._config import show_config
from ._version import __version__
from .backends import available_backends
from .exceptions import ConvergenceWarning, NotFittedError
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
