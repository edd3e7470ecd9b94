"""Hidden Markov models fitted by Baum-Welch on fastem's kernels.

Drop-in replacements for hmmlearn 0.3.3's estimators, with per-sequence
weights, missing values (NaN), restarts, filtered probabilities and parallel,
deterministic kernels::

    from fastem.hmm import GaussianHMM
    model = GaussianHMM(n_components=3, covariance_type="full").fit(X, lengths)
    states = model.predict(X, lengths)

Import this module explicitly: ``import fastem`` does not load it.
"""

from ._backend import available_hmm_backends
from ._base import BaseHMM, ConvergenceMonitor
from ._discrete import CategoricalHMM, MultinomialHMM, PoissonHMM
from ._gaussian import GaussianHMM
from ._gmm import GMMHMM

__all__ = [
    "GaussianHMM",
    "GMMHMM",
    "CategoricalHMM",
    "PoissonHMM",
    "MultinomialHMM",
    "ConvergenceMonitor",
    "BaseHMM",
    "available_hmm_backends",
    "load",
]


def load(path, *, backend: str | None = None):
    """Load an HMM saved by its ``save`` method.

    Parameters
    ----------
    path : str or os.PathLike
        The model file.
    backend : {'numba', 'cython', 'numpy'} or None, default=None
        The loaded model's ``backend`` (None keeps the saved one where available).

    Returns
    -------
    model : GaussianHMM, GMMHMM, CategoricalHMM, PoissonHMM or MultinomialHMM

    Raises
    ------
    ValueError
        One line, ``cannot load PATH: reason``, for anything that is not an HMM
        file this fastem can load.
    """
    from ._persistence import load_hmm

    return load_hmm(path, backend=backend)
