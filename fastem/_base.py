"""Estimator base: scikit-learn's ``BaseEstimator`` where installed, else a
minimal stand-in with the same parameter protocol (``get_params``,
``set_params``, ``repr``), so scikit-learn stays optional."""

from __future__ import annotations

import inspect

try:
    from sklearn.base import BaseEstimator as _SkBaseEstimator
    from sklearn.base import DensityMixin as _SkDensityMixin
    from sklearn.base import TransformerMixin as _SkTransformerMixin

    ESTIMATOR_BASES: tuple[type, ...] = (_SkDensityMixin, _SkBaseEstimator)
    TRANSFORMER_BASES: tuple[type, ...] = (_SkTransformerMixin, _SkBaseEstimator)
    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised in the no-sklearn CI job

    class _ParamsBase:
        """get_params/set_params by introspection of ``__init__``."""

        _estimator_type = "DensityEstimator"

        @classmethod
        def _get_param_names(cls) -> list[str]:
            sig = inspect.signature(cls.__init__)
            return sorted(p.name for p in sig.parameters.values() if p.name != "self")

        def get_params(self, deep: bool = True) -> dict:
            return {name: getattr(self, name) for name in self._get_param_names()}

        def set_params(self, **params):
            valid = self._get_param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(
                        f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                        f"Valid parameters are: {valid}."
                    )
                setattr(self, name, value)
            return self

        def __repr__(self) -> str:
            signature = inspect.signature(type(self).__init__)
            defaults = {p.name: p.default for p in signature.parameters.values()}
            changed = []
            for name, value in self.get_params().items():
                default = defaults.get(name, inspect.Parameter.empty)
                if value is not default and not _equal(value, default):
                    changed.append(f"{name}={value!r}")
            return f"{type(self).__name__}({', '.join(changed)})"

    def _equal(a, b) -> bool:
        try:
            return bool(a == b)
        except Exception:
            return False

    ESTIMATOR_BASES = (_ParamsBase,)

    class _TransformerBase(_ParamsBase):
        _estimator_type = None

        def fit_transform(self, X, y=None, **fit_params):
            return self.fit(X, y, **fit_params).transform(X)

    TRANSFORMER_BASES = (_TransformerBase,)
    HAVE_SKLEARN = False


def allow_nan_tags(tags):
    """scikit-learn estimator tags saying NaN input is accepted (missing values)."""
    tags.input_tags.allow_nan = True
    return tags
