"""fastem's warnings and errors.

Where scikit-learn is installed they are subclasses of scikit-learn's, so code written for
``sklearn.mixture.GaussianMixture`` catches fastem's too (``except NotFittedError``,
``pytest.warns(ConvergenceWarning)``, warning filters). scikit-learn is not required, and
importing fastem does not import it (it costs most of a second).

How: each class derives from a stand-in defined as scikit-learn defines its class (the same
builtin bases, so the same object layout), and is re-based onto scikit-learn's class
(``cls.__bases__ = (sklearn_class,)``, which drops the stand-in from the MRO) as
soon as ``sklearn.exceptions`` is in ``sys.modules``: at once if scikit-learn was imported
first, else from a one-shot import hook when it is imported later, and again, as a fallback,
whenever an instance is created (every ``raise`` and ``warnings.warn`` creates one before
anything matches it). So there is only ever one class object, whatever the import order.

:class:`InvalidParameterError` (a bad constructor parameter: a ``ValueError`` and a
``TypeError``) is re-based the same way onto scikit-learn's, which lives in the private
``sklearn.utils._param_validation``.

The same hook serves other modules through :func:`when_imported`: ``fastem._base`` re-bases
its estimator base onto ``sklearn.base.BaseEstimator`` that way.
"""

from __future__ import annotations

import sys
from types import ModuleType

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know it)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

__all__ = ["ConvergenceWarning", "InvalidParameterError", "NotFittedError", "when_imported"]

_SKLEARN_MODULE = "sklearn.exceptions"
# scikit-learn's InvalidParameterError lives in a private module (since 1.2)
_PARAM_VALIDATION_MODULE = "sklearn.utils._param_validation"


# Stand-ins with the bases of scikit-learn's classes: ``__bases__`` assignment needs the old
# and the new base to have the same layout, which a builtin base (UserWarning) does not.
class _ConvergenceWarningBase(UserWarning):
    pass


class _NotFittedErrorBase(ValueError, AttributeError):
    pass


class _InvalidParameterErrorBase(ValueError, TypeError):
    pass


class ConvergenceWarning(_ConvergenceWarningBase):
    """EM stopped at ``max_iter`` before the lower bound changed less than ``tol``.

    A subclass of :class:`sklearn.exceptions.ConvergenceWarning` where scikit-learn
    is installed.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> ConvergenceWarning:
        _sync_with_sklearn()
        return super().__new__(cls, *args, **kwargs)


class NotFittedError(_NotFittedErrorBase):
    """A method that needs a fitted model was called before ``fit``.

    A subclass of :class:`sklearn.exceptions.NotFittedError` where scikit-learn is
    installed.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> NotFittedError:
        _sync_with_sklearn()
        return super().__new__(cls, *args, **kwargs)


class InvalidParameterError(_InvalidParameterErrorBase):
    """A constructor parameter fails scikit-learn's constraints (its type or range).

    Both a ``ValueError`` and a ``TypeError``, as scikit-learn's
    ``sklearn.utils._param_validation.InvalidParameterError``, and a subclass of it where
    scikit-learn is installed: code written against either catches it.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> InvalidParameterError:
        module = sys.modules.get(_PARAM_VALIDATION_MODULE)
        if module is not None:
            _adopt_bases(module, (InvalidParameterError,))
        return super().__new__(cls, *args, **kwargs)


_CLASSES: tuple[type, ...] = (ConvergenceWarning, NotFittedError)


def _adopt_bases(module: ModuleType, classes: tuple[type, ...] = _CLASSES) -> None:
    """Re-base each class of ``classes`` onto the same-named class of ``module``
    (idempotent)."""
    for cls in classes:
        base = getattr(module, cls.__name__, None)
        if not isinstance(base, type) or issubclass(cls, base):
            continue
        try:
            cls.__bases__ = (base,)
        except TypeError:  # pragma: no cover - an incompatible future layout: stay standalone
            pass


def _sync_with_sklearn() -> None:
    module = sys.modules.get(_SKLEARN_MODULE)
    if module is not None:
        _adopt_bases(module)


def _adopt_exceptions(module: ModuleType) -> None:
    _adopt_bases(module)


# module name -> callbacks to run (in order) once that module has been executed
_PENDING: dict[str, list[Callable[[ModuleType], None]]] = {_SKLEARN_MODULE: [_adopt_exceptions]}


def when_imported(name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` once module ``name`` has been executed: now if it is
    already in ``sys.modules``, else right after its import (one shot).

    A module that is in ``sys.modules`` but still executing (a circular import) counts as
    imported; callbacks that need a name from it must check that it is there.
    """
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    _PENDING.setdefault(name, []).append(callback)
    if _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def _run_pending(module: ModuleType) -> None:
    for callback in _PENDING.pop(module.__name__, ()):
        callback(module)
    if not _PENDING:
        _remove_hook()


class _AdoptOnImport:
    """A ``sys.meta_path`` entry that runs the callbacks of :func:`when_imported` right
    after their module is executed, and removes itself when none is left.

    It finds nothing itself: it asks the finders behind it for the spec, and wraps
    that spec's loader's ``exec_module`` for this one module.
    """

    # The import system holds the module's lock around find_spec, so one flag serves all
    # threads: it only stops a finder behind us that asks the meta path again.
    _busy = False

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname not in _PENDING or self._busy:
            return None
        self._busy = True
        try:
            spec = _find_spec_behind(self, fullname, path, target)
        finally:
            self._busy = False
        loader = getattr(spec, "loader", None) if spec is not None else None
        if loader is None or isinstance(loader, type) or not hasattr(loader, "__dict__"):
            return spec  # a shared loader (a class): leave it; the fallbacks still sync
        exec_module = loader.exec_module

        def exec_and_adopt(module: ModuleType) -> None:
            try:
                exec_module(module)
            finally:
                loader.__dict__.pop("exec_module", None)  # one shot: restore the method
            if module.__name__ in _PENDING:
                _run_pending(module)

        loader.exec_module = exec_and_adopt
        return spec


def _find_spec_behind(hook: _AdoptOnImport, fullname: str, path, target):
    for finder in list(sys.meta_path):
        if finder is hook:
            continue
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        spec = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


_HOOK = _AdoptOnImport()


def _remove_hook() -> None:
    try:
        sys.meta_path.remove(_HOOK)
    except ValueError:
        pass


if _SKLEARN_MODULE in sys.modules:
    _run_pending(sys.modules[_SKLEARN_MODULE])
else:
    sys.meta_path.insert(0, _HOOK)
when_imported(
    _PARAM_VALIDATION_MODULE, lambda module: _adopt_bases(module, (InvalidParameterError,))
)
