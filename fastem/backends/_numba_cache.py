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

Last, :func:`helper` compiles the functions that kernels call without the
wrappers that only a call from Python needs, and keeps those that run once per
block of rows out of line in their callers (:class:`Helper`); their own
libraries are optimized for linking but never emitted as machine code, and
fastem's compiler (:class:`Compiler`) remembers the call types it resolves: a
first fit with an empty cache compiles less (issue #13; ``docs/cold_start.md``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from numba.core import caching as _caching
from numba.core import config as _numba_config

__all__ = ["cache_directory", "clear_cache"]

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Part of each cache folder's name; changed when the way fastem has Numba
# compile its kernels changes (not the source), so that kernels compiled the
# old way are not loaded. "int2": helpers' copies internalized and renamed
# (see below; "int1" kept their names); "ool1": block helpers kept out of
# line, helpers without wrappers (Helper).
# "on1": the copies of out-of-line helpers skip the kernel's module
# optimization (optnone, see _mark_out_of_line).
_CODEGEN_TAG = "int2-ool1-on1"


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
    this process keep working. Only fastem's own entries (in the folder's
    ``numba`` subfolder, one per fastem source folder, any codegen tag) are
    deleted, then ``numba`` and the folder themselves if nothing else is left
    in them: a ``FASTEM_CACHE_DIR`` shared with other programs (``~/.cache``,
    whose ``numba`` subfolder is Numba's own user-wide cache) keeps their files.
    Returns the cache folder.
    """
    folder = cache_directory()
    kernels = folder / "numba"
    if kernels.is_dir():
        for entry in _fastem_entries(kernels):
            shutil.rmtree(entry, ignore_errors=True)
        for empty in (kernels, folder):
            with contextlib.suppress(OSError):  # not empty: other programs' files stay
                empty.rmdir()
    elif folder.is_dir():
        with contextlib.suppress(OSError):
            folder.rmdir()
    return folder


def _fastem_entries(kernels: Path) -> list[Path]:
    """The entries of ``kernels`` that :class:`FastemCacheLocator` names: Numba's
    subpath of one of fastem's source folders, a dash, a codegen tag."""
    prefixes = set()
    for root, dirs, _ in os.walk(_PACKAGE_DIR):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        prefixes.add(_CacheLocator.get_suitable_cache_subpath(os.path.join(root, "x.py")) + "-")
    return [p for p in kernels.iterdir() if any(p.name.startswith(x) for x in prefixes)]


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
#
# The copies are also renamed (``COPY_SUFFIX``). Numba's JIT (MCJIT's
# RuntimeDyld) puts a loaded object's symbols, internal ones included, in one
# process-wide table by name, the last one loaded winning. An internal copy
# that kept the helper's name then replaced the helper's own definition for
# every later lookup of that name: a function compiled afterwards that calls
# the helper (its linked-in copy is a weak definition, resolved through the
# table) ran the kernel's copy. That copy is private to the kernel, so LLVM
# may change its calling convention (fastcc, dead arguments removed); with
# the out-of-line helpers (``noinline``) such copies survive, and a jitted
# function calling ``_responsibilities`` after a missing-data kernel had been
# compiled in the same process jumped into it with the wrong arguments and
# crashed (the CI segfault of issue #13; docs/cold_start.md). Only the
# process that compiles the kernel is exposed (a cache-loading one loads the
# helper's own library after the kernel): CI's fresh clone, not a warm run.
# Renamed, no copy shares a name with anything another module references.


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


# Appended to the name of every internalized copy: a name no other module
# declares or defines, so the JIT never resolves another module's reference
# to a kernel's private copy (see above).
COPY_SUFFIX = ".fastem_copy"


def _internalize_linked_copies(module) -> int:
    """Give the ``linkonce_odr``/``weak_odr`` function definitions of
    ``module`` (its callees' linked-in copies) internal linkage and a name of
    their own (``COPY_SUFFIX``); returns how many."""
    count = 0
    for fn in module.functions:
        if not fn.is_declaration and fn.linkage in (_Linkage.linkonce_odr, _Linkage.weak_odr):
            fn.linkage = _Linkage.internal
            fn.visibility = "default"
            fn.name = fn.name + COPY_SUFFIX
            count += 1
    return count


def _mark_out_of_line(module) -> int:
    """Give the linked-in copies of out-of-line helpers (see :class:`Helper`)
    in ``module`` the ``noinline`` and ``optnone`` attributes; returns how many.

    ``optnone`` keeps the caller's module optimization off the copies: each is
    its helper's library code, optimized there already, and optimizing it a
    second time inside the kernel's module was most of a fused kernel's O3.
    :func:`_without_optnone` removes the attribute again before machine code
    is emitted (LLVM would otherwise use its -O0 code generator for them).
    """
    count = 0
    if not _OUT_OF_LINE:
        return count
    prefixes = tuple(_OUT_OF_LINE)
    for fn in module.functions:
        if (
            not fn.is_declaration
            and fn.linkage == _Linkage.internal
            and fn.name.startswith(prefixes)
        ):
            fn.add_function_attribute("noinline")
            fn.add_function_attribute("optnone")
            count += 1
    return count


# ``optnone`` in an attribute group line of a printed module (``attributes #3 =
# { noinline optnone ... }``): function names and strings are left alone.
_OPTNONE = re.compile(r"^(attributes #\d+ = \{[^\n]*?)\boptnone\b ?", re.M)


def _without_optnone(module):
    """``module`` without its ``optnone`` attributes (llvmlite cannot remove an
    attribute: printed, edited and parsed again)."""
    from llvmlite import binding

    text = str(module)
    edited = _OPTNONE.sub(r"\1", text)
    if edited == text:
        return module
    fresh = binding.parse_assembly(edited)
    fresh.name = module.name
    return fresh


def _patch_final_optimization() -> bool:
    """Wrap Numba's CPU library final-module optimization so that fastem's
    kernels call their own copies of their helpers (see above) and keep the
    out-of-line helpers' calls (see :class:`Helper`); False where this
    Numba's codegen is not the one it was written against."""
    try:
        from llvmlite.binding import Linkage
        from numba.core.codegen import CPUCodeLibrary
    except ImportError:  # pragma: no cover - other Numba layout
        return False
    original = getattr(CPUCodeLibrary, "_optimize_final_module", None)
    if original is None:  # pragma: no cover - other Numba layout
        return False
    if getattr(original, "_fastem_out_of_line", False):
        return True
    global _Linkage
    _Linkage = Linkage

    def _optimize_final_module(self):
        module = getattr(self, "_final_module", None)
        if module is None or not _is_fastem_module(module):
            return original(self)
        _internalize_linked_copies(module)
        kept = _mark_out_of_line(module)
        result = original(self)
        if kept:  # the copies' machine code is optimized as the rest's
            self._final_module = _without_optnone(self._final_module)
        return result

    # An earlier version of this wrapper (another copy of fastem in the
    # process, e.g. benchmarks/kernel_ab.py's reference) may be installed
    # already: it is wrapped in turn (internalizing twice changes nothing).
    _optimize_final_module._fastem_internalizes = True
    _optimize_final_module._fastem_out_of_line = True
    _optimize_final_module.__wrapped__ = original
    CPUCodeLibrary._optimize_final_module = _optimize_final_module
    return True


# Mangled-name prefixes of the helpers and of the out-of-line ones (filled
# by Helper).
_HELPERS: set[str] = set()
_OUT_OF_LINE: set[str] = set()
_Linkage = None
INTERNALIZED = _patch_final_optimization()


# ------------------------------------------------------------ helpers
# Every ``@njit`` function compiles, besides its own code, a CPython wrapper
# (unboxing each argument) and a C-callable wrapper, optimizes them and emits
# their machine code. A helper that only kernels call never runs them: its
# code is linked into each caller's module. There LLVM inlines it and then
# optimizes the helper's (already optimized) code a second time as part of a
# caller several times its size, which made up most of the optimization and
# code generation time of a fused kernel. A helper that runs once per block of
# rows gains nothing from inlining: it stays a call.


def _mangled_prefix(module: str, qualname: str) -> str:
    """The start of Numba's mangled symbol for ``module.qualname`` (Itanium
    style: each dotted part prefixed with its length)."""
    parts = module.split(".") + qualname.split(".")
    return "_ZN" + "".join(f"{len(p)}{p}" for p in parts)


class Helper:
    """A Numba function that only other Numba functions call, compiled
    without the CPython and C wrappers.

    Compiled code sees the wrapper-less dispatcher (through
    ``_numba_type_``). A call from Python goes to a separate twin compiled
    with wrappers on first use (tests call helpers directly), cached under
    its own name, so the two never load each other's compiled code; its other
    attributes (``stats``, ``signatures``, ``py_func``) are the twin's.

    With ``out_of_line`` (for helpers that run once per block of rows, never
    per element) callers keep calling it rather than inlining it: the same
    machine code as inlined (the helper is optimized on its own first either
    way) for a fraction of the callers' optimization and code generation
    time. Never for a helper called inside a vectorized loop (``exp64``).
    """

    def __init__(self, fn, flags: dict, out_of_line: bool = False) -> None:
        from numba import njit

        self._flags = dict(flags)
        # No cache: a kernel's cache entry holds its own copy of the helper's
        # code, so a process that loads kernels never needs the helper; and
        # no machine code of its own (see _patch_helper_finalization).
        self.jit = njit(
            **dict(self._flags, no_cpython_wrapper=True, no_cfunc_wrapper=True, cache=False)
        )(fn)
        self._fn = fn
        self._twin = None
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__doc__ = fn.__doc__
        self.__module__ = fn.__module__
        self.__wrapped__ = fn
        prefix = _mangled_prefix(fn.__module__, fn.__qualname__)
        _HELPERS.add(prefix)
        if out_of_line:
            _OUT_OF_LINE.add(prefix)

    @property
    def _numba_type_(self):
        return self.jit._numba_type_

    @property
    def py(self):
        """The twin with wrappers, for calls from Python."""
        if self._twin is None:
            import types

            from numba import njit

            fn = self._fn
            twin = types.FunctionType(
                fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
            )
            twin.__qualname__ = fn.__qualname__ + "__py"  # its own cache index
            twin.__doc__ = fn.__doc__
            self._twin = njit(**self._flags)(twin)
        return self._twin

    def __call__(self, *args):
        return self.py(*args)

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_fn", "_twin", "_flags", "jit"):
            raise AttributeError(name)
        return getattr(self.py, name)


# A helper's own library is optimized (its callers link that optimized
# module in) but never run: kernels run their own copies, and a Python call
# runs the twin. Emitting its machine code (and caching it) was wasted work,
# a tenth of a cold fit's compile. Its module is therefore never added to
# Numba's JIT, as for Numba's ahead-of-time libraries: no machine code, no
# symbols (so none can be resolved to it either).


def _is_helper_module(module) -> bool:
    """Whether a final module is a wrapper-less helper's own: it defines a
    registered helper and no CPython wrapper, and its code never reads a Numba
    environment (a raise carrying runtime values, a print: those need the
    environment the JIT would hold, so such a helper is emitted as before)."""
    if not _HELPERS:
        return False
    prefixes = tuple(_HELPERS)
    found = False
    for fn in module.functions:
        if fn.is_declaration or fn.linkage != _Linkage.external:
            continue
        if fn.name.startswith("_ZN7cpython"):
            return False
        found = found or fn.name.startswith(prefixes)
    return found and not _reads_environment(module)


def _reads_environment(module) -> bool:
    """Whether an instruction of ``module`` uses a ``NumbaEnv`` global (after
    optimization an unused one is only its own definition line)."""
    return any(
        "_ZN08NumbaEnv" in line and not line.startswith("@_ZN08NumbaEnv")
        for line in str(module).splitlines()
    )


def _patch_helper_finalization() -> bool:
    """Wrap Numba's ``_finalize_final_module`` so that a helper's own library
    is finalized without being added to the JIT (see above); False where
    this Numba's codegen is not the one it was written against."""
    try:
        from numba.core.codegen import CPUCodeLibrary
    except ImportError:  # pragma: no cover - other Numba layout
        return False
    original = getattr(CPUCodeLibrary, "_finalize_final_module", None)
    if original is None or _Linkage is None:  # pragma: no cover - other Numba layout
        return False
    if getattr(original, "_fastem_no_helper_code", False):
        return True

    def _finalize_final_module(self):
        module = getattr(self, "_final_module", None)
        codegen = getattr(self, "_codegen", None)
        if module is None or codegen is None or not _is_helper_module(module):
            return original(self)
        # Numba's ahead-of-time codegen: the module is not added to the JIT,
        # nothing is emitted (compiles hold Numba's compiler lock).
        codegen._add_module = _no_module
        self._finalize_specific = _nothing
        try:
            return original(self)
        finally:
            del codegen._add_module
            del self._finalize_specific

    _finalize_final_module._fastem_no_helper_code = True
    _finalize_final_module.__wrapped__ = original
    CPUCodeLibrary._finalize_final_module = _finalize_final_module

    # Numba then stores the helper's environment pointer in its module's
    # global, which is not in the JIT (its address would be 0): skipped for a
    # name the JIT does not define. (A kernel's copy of a helper never reads
    # that environment; a kernel loaded from the cache runs its copies so.)
    from numba.core.codegen import JITCPUCodegen

    set_env = JITCPUCodegen.set_env
    if not getattr(set_env, "_fastem_no_helper_code", False):

        def guarded_set_env(self, env_name, env):
            if not self._engine.is_symbol_defined(env_name):
                return None
            return set_env(self, env_name, env)

        guarded_set_env._fastem_no_helper_code = True
        guarded_set_env.__wrapped__ = set_env
        JITCPUCodegen.set_env = guarded_set_env
    return True


def _no_module(module):
    return None


def _nothing():
    return None


NO_HELPER_CODE = _patch_helper_finalization()


def helper(out_of_line: bool = False, **flags):
    """Decorator: a :class:`Helper` compiled with these ``njit`` flags."""

    def decorate(fn):
        return Helper(fn, dict({"pipeline_class": Compiler}, **flags), out_of_line)

    return decorate


# ------------------------------------------------------------ typing memo
# Numba resolves the type of every call, operators included, by trying each
# of the function's typing templates in turn (``BaseFunction.get_call_type``),
# for every statement: ``float64 * float64`` is resolved again at each of the
# hundreds of products of a hand-unrolled tile (and once more while lowering
# it). That was most of Numba's type inference time and part of its
# lowering in fastem's kernels. While fastem's compiler runs (``Compiler``),
# the signature found for a function type, typing context and argument types
# is remembered and reused: the same types give the same signature, so the
# compiled code is the same. Failures are not remembered (they raise again).
# Other Numba code in the process is not affected (the memo is off outside
# fastem's compiles; compiles hold Numba's global compiler lock).

_CALL_TYPES: dict = {}  # key -> (signature, implementation key)
_MEMO_DEPTH = 0


# The caller's flags an @overload's compile inherits (Numba's
# CPUTargetOptions.finalize: ``inherit_if_not_set``); no other flag of the
# caller reaches the overload's body.
_INHERITED_FLAGS = ("nrt", "fastmath", "error_model", "forceinline")


def _patch_call_type_memo() -> bool:
    """Wrap ``BaseFunction.get_call_type`` with the memo (active only inside
    :class:`Compiler`); False where this Numba lacks it."""
    try:
        from numba.core.types.functions import BaseFunction
    except ImportError:  # pragma: no cover - other Numba layout
        return False
    original = getattr(BaseFunction, "get_call_type", None)
    if original is None:  # pragma: no cover - other Numba layout
        return False
    if getattr(original, "_fastem_memo", False):
        return True
    try:
        from numba.core.targetconfig import ConfigStack
        from numba.core.typing.templates import _OverloadFunctionTemplate
    except ImportError:  # pragma: no cover - other Numba layout
        return False

    overloads: dict = {}  # function type -> whether an @overload template resolves it
    flag_keys: dict = {}  # id(flags) -> (flags, their values): hashed once, not per call

    def _flags_key(function_type):
        """The caller's flags where an @overload resolves ``function_type``
        (Numba compiles one per flags), else None (resolved in the caller's own
        context). Only the inherited flags count, read once per flags object."""
        has = overloads.get(function_type)
        if has is None:
            # Read from the MRO: the templates are ABCs, and a negative ABC
            # issubclass walks every @overload template class Numba has made
            # (hundreds): 0.48 s of a cold full fit (docs/cold_start.md, session 12).
            has = overloads[function_type] = any(
                isinstance(t, type) and _OverloadFunctionTemplate in t.__mro__
                for t in getattr(function_type, "templates", ())
            )
        flags = ConfigStack.top_or_none() if has else None
        if flags is None:
            return None
        entry = flag_keys.get(id(flags))
        if entry is None or entry[0] is not flags:  # kept alive: an id is not reused
            entry = flag_keys[id(flags)] = (flags, _hashable_values(flags))
        return entry[1]

    def _hashable_values(flags) -> tuple:
        """The values of the flags an overload's compile inherits from its caller
        (``FastMathOptions``, unhashable, by its repr, which shows every setting)."""
        return tuple(repr(getattr(flags, name, None)) for name in _INHERITED_FLAGS)

    def get_call_type(self, context, args, kws):
        if not _MEMO_DEPTH:
            return original(self, context, args, kws)
        try:
            # An @overload is compiled once per set of the caller's flags
            # (fastmath, error_model): its resolution is remembered per flags.
            key = (self, context, tuple(args), tuple(sorted(kws.items())), _flags_key(self))
            found = _CALL_TYPES.get(key)
        except TypeError:  # an unhashable argument type: not remembered
            return original(self, context, args, kws)
        if found is not None:
            # Numba's resolution also records which implementation lowers the
            # signature (the last resolution's): recorded again, as resolving
            # afresh would.
            sig, impl_key = found
            self._impl_keys[sig.args] = impl_key
            return sig
        sig = original(self, context, args, kws)
        if sig is not None and sig.args in self._impl_keys:
            _CALL_TYPES[key] = (sig, self._impl_keys[sig.args])
        return sig

    get_call_type._fastem_memo = True
    get_call_type.__wrapped__ = original
    BaseFunction.get_call_type = get_call_type
    return True


MEMO = _patch_call_type_memo()


def _compiler_class():
    from numba.core.compiler import Compiler as _NumbaCompiler

    class Compiler(_NumbaCompiler):
        """Numba's default compiler with the typing memo on while it runs."""

        def _compile_core(self):
            global _MEMO_DEPTH
            _MEMO_DEPTH += 1
            try:
                return super()._compile_core()
            finally:
                _MEMO_DEPTH -= 1

    return Compiler


Compiler = _compiler_class()


# ------------------------------------------------------------ BLAS check
# Numba's first compile (or cache load) in a process imports its NumPy
# implementations (``CPUContext.load_additional_registries``), and
# ``numba.np.arraymath`` checks at import whether ``np.dot`` may call BLAS:
# ``ensure_blas()`` imports ``scipy.linalg`` (0.1-0.3 s, a tenth of a cold
# first fit; fastem itself never uses SciPy). The answer is read in one place
# only, when ``np.correlate``/``np.convolve`` is typed (``np.dot`` and
# ``np.linalg`` call ``ensure_blas()`` themselves when typed). During that first
# import the check is therefore skipped, and ``arraymath._HAVE_BLAS`` becomes
# :class:`_BlasCheck`, which runs Numba's own check the first time it is read:
# the same answer, and SciPy is imported only by code that needs BLAS. The
# modules are imported in Numba's own order (an import hook edits
# ``numba.np.linalg`` once its code has run), so every registration is the same.


class _BlasCheck:
    """``numba.np.arraymath._HAVE_BLAS`` until first read: Numba's check, run then."""

    def __init__(self, check) -> None:
        self._check = check
        self._value = None

    def __bool__(self) -> bool:
        if self._value is None:
            self._value = bool(self._check())
        return self._value

    def __repr__(self) -> str:
        return f"_BlasCheck({'not run' if self._value is None else self._value})"


def _blas_not_checked() -> None:
    """Stands for ``numba.np.linalg.ensure_blas`` while arraymath is imported."""


class _LinalgHook:
    """A ``sys.meta_path`` finder that lets Python load ``numba.np.linalg`` as
    usual and then swaps its ``ensure_blas`` for :func:`_blas_not_checked`."""

    def find_spec(self, name, path=None, target=None):
        if name != "numba.np.linalg":
            return None
        import importlib.machinery

        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader

        class _Loader:
            def create_module(self, spec):
                return loader.create_module(spec)

            def exec_module(self, module):
                module.__loader__ = spec.loader = loader  # Python's loader, as usual
                loader.exec_module(module)
                _ORIGINAL_ENSURE_BLAS.append(module.ensure_blas)
                module.ensure_blas = _blas_not_checked

            def __getattr__(self, name):
                return getattr(loader, name)

        spec.loader = _Loader()
        return spec


_ORIGINAL_ENSURE_BLAS: list = []


def _patch_blas_check() -> bool:
    """Wrap ``CPUContext.load_additional_registries`` so that its first run
    imports arraymath without the BLAS check (see above); False where this
    Numba's layout is not the one it was written against, or arraymath was
    imported already (another library compiled first: nothing left to save)."""
    import sys

    try:
        from numba.core.cpu import CPUContext
    except ImportError:  # pragma: no cover - other Numba layout
        return False
    if "numba.np.linalg" in sys.modules or "numba.np.arraymath" in sys.modules:
        return False
    original = CPUContext.__dict__.get("load_additional_registries")
    if original is None:  # pragma: no cover - other Numba layout
        return False

    def load_additional_registries(self):
        CPUContext.load_additional_registries = original  # once: later calls are Numba's
        hook = _LinalgHook()
        sys.meta_path.insert(0, hook)
        try:
            return original(self)
        finally:
            sys.meta_path.remove(hook)
            linalg = sys.modules.get("numba.np.linalg")
            arraymath = sys.modules.get("numba.np.arraymath")
            if _ORIGINAL_ENSURE_BLAS and linalg is not None:
                ensure_blas = _ORIGINAL_ENSURE_BLAS[0]
                linalg.ensure_blas = ensure_blas
                if arraymath is not None and arraymath.ensure_blas is _blas_not_checked:
                    arraymath.ensure_blas = ensure_blas
                    if arraymath._HAVE_BLAS is True:  # set by the skipped check
                        arraymath._HAVE_BLAS = _BlasCheck(arraymath._check_blas)

    load_additional_registries.__wrapped__ = original
    CPUContext.load_additional_registries = load_additional_registries
    return True


BLAS_CHECK_DEFERRED = _patch_blas_check()
