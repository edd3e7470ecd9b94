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
from ._base import ConvergenceMonitor
from ._discrete import CategoricalHMM, PoissonHMM
from ._gaussian import GaussianHMM
from ._gmm import GMMHMM

__all__ = [
    "GaussianHMM",
    "GMMHMM",
    "CategoricalHMM",
    "PoissonHMM",
    "ConvergenceMonitor",
    "available_hmm_backends",
]
