"""Estimator bases that follow scikit-learn's protocols without importing scikit-learn.

Importing scikit-learn costs most of a second, so importing fastem's estimators does not
import it, and :class:`BaseEstimator` implements what scikit-learn asks of an estimator:

- ``get_params``/``set_params`` (nested ``step__param`` keys too), read off ``__init__``'s
  signature, so ``clone``, ``Pipeline`` and ``GridSearchCV`` work;
- ``__sklearn_tags__``, which scikit-learn (>= 1.6) calls for ``check_estimator``,
  ``is_classifier``/``is_regressor``, input validation and pipelines; it imports scikit-learn
  lazily, and only scikit-learn calls it, so scikit-learn is already imported then;
- ``_estimator_type``, the older spelling of the estimator type;
- metadata routing: ``set_fit_request`` (one ``set_{method}_request`` per method with
  metadata such as ``sample_weight``, made for each class as scikit-learn makes them) and
  ``get_metadata_routing``, used where ``sklearn.set_config(enable_metadata_routing=True)``;
- a ``repr`` that shows the parameters changed from their defaults.

scikit-learn's mixins (``ClassifierMixin``, ...) still compose with these bases: they call
``super().__sklearn_tags__()``.

Where scikit-learn is imported, :class:`BaseEstimator` also *is* a subclass of
``sklearn.base.BaseEstimator``: it is re-based onto it (``BaseEstimator.__bases__ =
(sklearn.base.BaseEstimator,)``) as soon as ``sklearn.base`` is in ``sys.modules``, at once if
scikit-learn was imported first, else right after ``sklearn.base`` is imported (the import hook
of :mod:`fastem.exceptions`), and again, as a fallback, whenever an estimator is created. Then
``isinstance(est, sklearn.base.BaseEstimator)`` holds, ``check_estimator`` finds its base, and
notebooks get scikit-learn's HTML repr, whichever of the two packages was imported first; the
methods defined here still come first in the MRO. (A class whose only base is ``object``
cannot be re-based; the empty stand-in base :class:`_SklearnBaseStandIn` makes it possible.)

:data:`TRANSFORMER_BASES` is different: the imputer keeps scikit-learn's ``TransformerMixin``
and ``BaseEstimator`` where scikit-learn is installed (``set_output`` and metadata routing
come with them). It is resolved on first access, so only ``fastem.impute`` pays for it.
"""

from __future__ import annotations

import inspect
import sys
from types import ModuleType
from typing import Any

from .exceptions import when_imported

__all__ = ["BaseEstimator", "DensityEstimator", "ESTIMATOR_BASES", "allow_nan_tags"]


# scikit-learn's methods that can receive metadata (its SIMPLE_METHODS; fit_predict and
# fit_transform route to these), and the parameters that are data, not metadata.
_ROUTED_METHODS = (
    "fit",
    "partial_fit",
    "predict",
    "predict_proba",
    "predict_log_proba",
    "decision_function",
    "score",
    "split",
    "transform",
    "inverse_transform",
)
_DATA_PARAMETERS = frozenset({"X", "y", "Y", "Xt", "yt"})
_UNCHANGED = "$UNCHANGED$"  # the value of sklearn.utils.metadata_routing.UNCHANGED


class _SklearnBaseStandIn:
    """Replaced by ``sklearn.base.BaseEstimator`` in :class:`BaseEstimator`'s bases once
    scikit-learn is imported (same layout: a plain class with ``__dict__``)."""


class BaseEstimator(_SklearnBaseStandIn):
    """scikit-learn's estimator protocol (parameters, tags, metadata routing, repr) without
    importing scikit-learn; a subclass of ``sklearn.base.BaseEstimator`` once scikit-learn is
    imported (see the module docstring)."""

    def __new__(cls, *args: Any, **kwargs: Any):
        if _SklearnBaseStandIn in BaseEstimator.__bases__:
            _sync_with_sklearn()
        return super().__new__(cls)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A set_{method}_request per method that takes metadata, as scikit-learn's base does.
        for method, params in _metadata_parameters(cls).items():
            name = f"set_{method}_request"
            if params and not _defined_by_class(cls, name):
                setattr(cls, name, _request_setter(cls, method, params))

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """The constructor's parameter names, sorted (as scikit-learn's ``BaseEstimator``)."""
        init = getattr(cls.__init__, "deprecated_original", cls.__init__)
        if init is object.__init__:
            return []
        parameters = [
            p
            for p in inspect.signature(init).parameters.values()
            if p.name != "self" and p.kind != p.VAR_KEYWORD
        ]
        for p in parameters:
            if p.kind == p.VAR_POSITIONAL:
                raise RuntimeError(
                    f"{cls.__name__}.__init__ takes *{p.name}: scikit-learn estimators "
                    "must name every parameter in their signature"
                )
        return sorted(p.name for p in parameters)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Get the parameters of this estimator.

        Parameters
        ----------
        deep : bool, default=True
            Also return the parameters of contained estimators, as ``name__param``.

        Returns
        -------
        params : dict
            Parameter names mapped to their values.
        """
        out: dict[str, Any] = {}
        for key in self._get_param_names():
            value = getattr(self, key)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{key}__{k}", v) for k, v in value.get_params().items())
            out[key] = value
        return out

    def set_params(self, **params: Any) -> BaseEstimator:
        """Set the parameters of this estimator.

        Parameters
        ----------
        **params : dict
            Estimator parameters; ``name__param`` sets a parameter of a contained
            estimator.

        Returns
        -------
        self : estimator instance
        """
        if not params:
            return self
        valid = self.get_params(deep=True)
        nested: dict[str, dict[str, Any]] = {}
        for full_key, value in params.items():
            key, delim, sub_key = full_key.partition("__")
            if key not in valid:
                raise ValueError(
                    f"Invalid parameter {key!r} for estimator {self}. "
                    f"Valid parameters are: {self._get_param_names()!r}."
                )
            if delim:
                nested.setdefault(key, {})[sub_key] = value
            else:
                setattr(self, key, value)
                valid[key] = value
        for key, sub_params in nested.items():
            valid[key].set_params(**sub_params)
        return self

    def get_metadata_routing(self):
        """The metadata this estimator requests (scikit-learn's metadata routing).

        Returns
        -------
        routing : sklearn.utils.metadata_routing.MetadataRequest
        """
        requests = self.__dict__.get("_metadata_request")
        if requests is not None:
            return requests
        from sklearn.utils.metadata_routing import MetadataRequest

        requests = MetadataRequest(owner=self)
        for method, params in _metadata_parameters(type(self)).items():
            for param in params:
                getattr(requests, method).add_request(param=param, alias=None)
        return requests

    def __sklearn_tags__(self):
        # Called by scikit-learn only, so importing it here costs nothing extra.
        from sklearn.utils import Tags, TargetTags

        return Tags(
            estimator_type=None,
            target_tags=TargetTags(required=False),
            transformer_tags=None,
            regressor_tags=None,
            classifier_tags=None,
        )

    def __repr__(self) -> str:
        defaults = {
            p.name: p.default for p in inspect.signature(type(self).__init__).parameters.values()
        }
        changed = []
        for name, value in self.get_params(deep=False).items():
            default = defaults.get(name, inspect.Parameter.empty)
            if default is inspect.Parameter.empty or _changed(value, default):
                changed.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(changed)})"


def _metadata_parameters(cls: type) -> dict[str, tuple[str, ...]]:
    """Each routable method of ``cls`` mapped to its metadata parameters (maybe none)."""
    out = {}
    for method in _ROUTED_METHODS:
        func = getattr(cls, method, None)
        if func is None:
            continue
        params = list(inspect.signature(func).parameters.values())[1:]  # without self
        out[method] = tuple(
            p.name
            for p in params
            if p.name not in _DATA_PARAMETERS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
    return out


def _defined_by_class(cls: type, name: str) -> bool:
    """Whether ``name`` is a method written in ``cls`` or a base (not one made here)."""
    for klass in cls.__mro__:
        value = klass.__dict__.get(name)
        if value is not None:
            return not getattr(value, "_fastem_request_setter", False)
    return False


def _request_setter(cls: type, method: str, params: tuple[str, ...]):
    def set_request(self, **requests: Any):
        import sklearn

        if not sklearn.get_config().get("enable_metadata_routing", False):
            raise RuntimeError(
                "This method is only available when metadata routing is enabled. You can "
                "enable it using sklearn.set_config(enable_metadata_routing=True)."
            )
        unexpected = set(requests) - set(params)
        if unexpected:
            raise TypeError(
                f"Unexpected args: {unexpected} in {method}. Accepted arguments are: {set(params)}"
            )
        routing = self.get_metadata_routing()
        for param, alias in requests.items():
            if alias != _UNCHANGED:
                getattr(routing, method).add_request(param=param, alias=alias)
        self._metadata_request = routing
        return self

    set_request.__name__ = f"set_{method}_request"
    set_request.__qualname__ = f"{cls.__qualname__}.set_{method}_request"
    set_request.__doc__ = (
        f"Request metadata passed to ``{method}`` (scikit-learn's metadata routing).\n\n"
        f"Each of {', '.join(params)} takes True (requested), False (not requested), None "
        "(error if passed) or a string (an alias). Returns the estimator."
    )
    keyword = inspect.Parameter.KEYWORD_ONLY
    set_request.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(p, keyword, default=_UNCHANGED) for p in params]
    )
    set_request._fastem_request_setter = True
    return set_request


def _changed(value: Any, default: Any) -> bool:
    """scikit-learn's rule for repr: compare reprs (arrays, estimators), NaN equals NaN."""
    if value is default:
        return False
    if type(value) is not type(default) and hasattr(value, "get_params"):
        return True
    if _is_nan(value) and _is_nan(default):
        return False
    return repr(value) != repr(default)


def _is_nan(x: Any) -> bool:
    return isinstance(x, float) and x != x


class DensityEstimator(BaseEstimator):
    """Base of fastem's density estimators (scikit-learn's ``DensityMixin`` + base)."""

    _estimator_type = "DensityEstimator"  # scikit-learn < 1.6 reads this, not the tags

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.estimator_type = "density_estimator"
        return tags


ESTIMATOR_BASES: tuple[type, ...] = (DensityEstimator,)

_SKLEARN_BASE = "sklearn.base"


def _adopt_sklearn_base(module: ModuleType) -> None:
    """Re-base :class:`BaseEstimator` onto ``module.BaseEstimator`` (idempotent; nothing if
    ``module`` does not define it yet)."""
    base = getattr(module, "BaseEstimator", None)
    if not isinstance(base, type) or issubclass(BaseEstimator, base):
        return
    try:
        BaseEstimator.__bases__ = (base,)
    except TypeError:  # pragma: no cover - an incompatible future layout: stay standalone
        pass


def _sync_with_sklearn() -> None:
    module = sys.modules.get(_SKLEARN_BASE)
    if module is not None:
        _adopt_sklearn_base(module)


when_imported(_SKLEARN_BASE, _adopt_sklearn_base)


def _transformer_bases() -> tuple[type, ...]:
    try:
        from sklearn.base import BaseEstimator as SkBaseEstimator
        from sklearn.base import TransformerMixin
    except ImportError:
        return (_Transformer,)
    return (TransformerMixin, SkBaseEstimator)


class _Transformer(BaseEstimator):
    """The transformer base where scikit-learn is not installed."""

    def fit_transform(self, X, y=None, **fit_params):
        """Fit to X, then transform X."""
        return self.fit(X, y, **fit_params).transform(X)


def __getattr__(name: str) -> Any:
    if name == "TRANSFORMER_BASES":
        bases = _transformer_bases()
        globals()[name] = bases
        return bases
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def allow_nan_tags(tags):
    """scikit-learn estimator tags saying NaN input is accepted (missing values)."""
    tags.input_tags.allow_nan = True
    return tags
