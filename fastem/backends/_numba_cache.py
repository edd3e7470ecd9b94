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

It also makes a cached kernel run the very code its compiling process ran:
each fastem kernel calls its own, internal, copies of its helpers (see
``_patch_final_optimization``), so results are bit-identical whether a process
compiled the kernels or loaded them from the cache.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from numba.core import caching as _caching
from numba.core import config as _numba_config

__all__ = ["cache_directory", "clear_cache"]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Part of each cache folder's name; changed when the way fastem has Numba
# compile its kernels changes (not the source), so that kernels compiled the
# old way are not loaded. "int1": helpers' copies internalized (see below).
_CODEGEN_TAG = "int1"


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
        # The tag names how fastem compiles (see _CODEGEN_TAG): kernels cached
        # by an older scheme are not loaded.
        subpath = f"{subpath}-{_CODEGEN_TAG}"
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


# ------------------------------------------------------------ determinism
# A kernel's final LLVM module holds a ``linkonce_odr`` copy of every helper it
# calls (Numba links each callee's optimized module in, then optimizes the
# whole again). With ``fastmath`` (reassoc, contract) that second optimization
# may legally compile the copy differently from the helper's own library, e.g.
# another reduction tree. The copies are weak symbols, so the JIT's linker
# runs whichever definition of the name was loaded first: in the process that
# compiles a kernel that is the helper's own library (compiled before its
# caller), in a process that loads the kernel from the cache it is the
# caller's copy, or another kernel's copy loaded earlier. The same call then
# gave different last bits (``_chunks_diag``'s ``_accum_diag``: 1 ulp of
# ``sx``). Making the linked-in copies internal before the final optimization
# binds each kernel to its own copies, the code that is also cached, so a
# fresh compile, a cache load and any order of calls run the same code.


def _is_fastem_module(module) -> bool:
    """Whether a final module defines an exported fastem function (Numba's
    mangled names start with the qualified module name)."""
    for fn in module.functions:
        if (
            not fn.is_declaration
            and fn.linkage == _Linkage.external
            and fn.name.startswith("_ZN6fastem")
        ):
            return True
    return False


def _internalize_linked_copies(module) -> int:
    """Give the ``linkonce_odr``/``weak_odr`` function definitions of
    ``module`` (its callees' linked-in copies) internal linkage; returns how
    many."""
    count = 0
    for fn in module.functions:
        if not fn.is_declaration and fn.linkage in (_Linkage.linkonce_odr, _Linkage.weak_odr):
            fn.linkage = _Linkage.internal
            fn.visibility = "default"
            count += 1
    return count


def _patch_final_optimization() -> bool:
    """Wrap Numba's CPU library final-module optimization so that fastem's
    kernels call their own copies of their helpers (see above); False where
    this Numba's codegen is not the one it was written against."""
    try:
        from llvmlite.binding import Linkage
        from numba.core.codegen import CPUCodeLibrary
    except ImportError:  # pragma: no cover - other Numba layout
        return False
    original = getattr(CPUCodeLibrary, "_optimize_final_module", None)
    if original is None:  # pragma: no cover - other Numba layout
        return False
    if getattr(original, "_fastem_internalizes", False):
        return True
    global _Linkage
    _Linkage = Linkage

    def _optimize_final_module(self):
        module = getattr(self, "_final_module", None)
        if module is not None and _is_fastem_module(module):
            _internalize_linked_copies(module)
        return original(self)

    _optimize_final_module._fastem_internalizes = True
    _optimize_final_module.__wrapped__ = original
    CPUCodeLibrary._optimize_final_module = _optimize_final_module
    return True


_Linkage = None
INTERNALIZED = _patch_final_optimization()
