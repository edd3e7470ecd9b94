"""Where Numba caches fastem's compiled kernels: a per-user cache directory,
never the installed package.

Numba's default (``cache=True``) writes ``.nbi``/``.nbc`` files into the
``__pycache__`` folder beside the source, i.e. into ``site-packages/fastem``.
pip does not remove files it did not install, so after ``pip uninstall`` (or
the uninstall that ``pip install -e .`` does first) a ``fastem`` directory
without ``__init__.py`` survives there and shadows the next install as a
namespace package. fastem therefore registers one more Numba cache locator,
first in Numba's list, that claims fastem's own modules only and puts their
cache under :func:`cache_directory`:

* ``FASTEM_CACHE_DIR`` if set, else
* the platform's user cache folder: ``$XDG_CACHE_HOME/fastem`` or
  ``~/.cache/fastem`` on Linux, ``~/Library/Caches/fastem`` on macOS,
  ``%LOCALAPPDATA%\\fastem\\Cache`` on Windows.

Inside it, each installation (each source folder) gets its own subfolder, and
Numba's index checks each source file's content, so installs never load each
other's kernels. A ``NUMBA_CACHE_DIR`` set by the user still wins (Numba's own
rule). If the fastem cache folder cannot be written, Numba's user-wide cache
is used; only if neither can be written does Numba fall back to its own rules.

Importing this module (every ``fastem.backends._numba*`` module does, before
defining kernels) registers the locator once. Clearing the cache is deleting
the folder: :func:`clear_cache`, or ``fastem cache --clear``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from numba.core import caching as _caching
from numba.core import config as _numba_config

__all__ = ["cache_directory", "clear_cache"]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _numba_class(*names: str):
    """The first of ``names`` that numba.core.caching defines (Numba renamed
    some of its private classes between releases), or None."""
    for name in names:
        cls = getattr(_caching, name, None)
        if cls is not None:
            return cls
    return None


_CacheLocator = _numba_class("_CacheLocator", "CacheLocator")
_SourceFileBacked = _numba_class("_SourceFileBackedLocatorMixin", "SourceFileBackedLocatorMixin")
_UserWideLocator = _numba_class("UserWideCacheLocator", "_UserWideCacheLocator")
_CacheImpl = _numba_class("CacheImpl", "_CacheImpl")


def cache_directory() -> Path:
    """The folder that holds fastem's compiled Numba kernels.

    ``FASTEM_CACHE_DIR`` if set, else the platform's per-user cache folder for
    ``fastem``. A ``NUMBA_CACHE_DIR`` set in the environment overrides both
    (Numba then caches everything, fastem included, there).
    """
    override = os.environ.get("FASTEM_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    from numba.misc.appdirs import AppDirs

    return Path(AppDirs(appname="fastem", appauthor=False).user_cache_dir)


def clear_cache() -> Path:
    """Delete fastem's compiled-kernel cache (:func:`cache_directory`).

    The next process compiles the kernels again. Kernels already loaded in
    this process keep working. Returns the folder that was removed.
    """
    folder = cache_directory()
    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _is_fastem_source(py_file: str) -> bool:
    path = os.path.abspath(py_file)
    return os.path.commonpath([path, _PACKAGE_DIR]) == _PACKAGE_DIR


class FastemCacheLocator(*[c for c in (_SourceFileBacked, _CacheLocator) if c]):
    """Numba cache locator for fastem's modules: :func:`cache_directory`."""

    def __init__(self, py_func, py_file: str) -> None:
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        subpath = self.get_suitable_cache_subpath(py_file)  # one per source folder
        self._cache_path = os.path.join(str(cache_directory()), "numba", subpath)

    def get_cache_path(self) -> str:
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file: str):
        if _numba_config.CACHE_DIR or not _is_fastem_source(py_file):
            return None  # the user's NUMBA_CACHE_DIR, or not ours: Numba's own rules
        locator = super().from_function(py_func, py_file)
        if locator is None and _UserWideLocator is not None:
            # Unwritable cache folder: Numba's user-wide cache, never the package.
            locator = _UserWideLocator.from_function(py_func, py_file)
        return locator


def _register() -> bool:
    """Put the locator first in Numba's list; False where this Numba's caching
    internals are not the ones it was written against (Numba's default then)."""
    if None in (_CacheLocator, _SourceFileBacked, _CacheImpl):
        return False
    classes = getattr(_CacheImpl, "_locator_classes", None)
    if not isinstance(classes, list):
        return False
    if not any(c.__name__ == FastemCacheLocator.__name__ for c in classes):
        classes.insert(0, FastemCacheLocator)
    return True


REGISTERED = _register()
