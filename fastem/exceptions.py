"""fastem's warnings and errors.

Where scikit-learn is installed they subclass scikit-learn's, so code written
for ``sklearn.mixture.GaussianMixture`` catches fastem's too; scikit-learn is
not required.
"""

from __future__ import annotations

try:  # optional: make fastem's exceptions catchable as scikit-learn's
    from sklearn.exceptions import ConvergenceWarning as _SkConvergenceWarning
    from sklearn.exceptions import NotFittedError as _SkNotFittedError
except ImportError:  # pragma: no cover - exercised in the no-sklearn CI job
    _SkConvergenceWarning = UserWarning

    class _SkNotFittedError(ValueError, AttributeError):
        pass


__all__ = ["ConvergenceWarning", "NotFittedError"]


class ConvergenceWarning(_SkConvergenceWarning):
    """EM stopped at ``max_iter`` before the lower bound changed less than ``tol``."""


class NotFittedError(_SkNotFittedError):
    """A method that needs a fitted model was called before ``fit``."""
