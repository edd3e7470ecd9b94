"""Helpers' own libraries are optimized but never emitted (``_numba_cache``'s
``_patch_helper_finalization``; issue #13, docs/cold_start.md "Session 10"): kernels run
their own copies, a Python call runs the twin."""

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit, types  # noqa: E402

from fastem.backends import _numba_cache  # noqa: E402
from fastem.backends._numba_cache import helper  # noqa: E402

SIG = (types.Array(types.float64, 1, "C"), types.int64)


@helper(out_of_line=True, cache=False, nogil=True)
def _twice(a, i):
    return a[i] * 2.0


@helper(out_of_line=True, cache=False, nogil=True)
def _thrice(a, i):
    return a[i] * 3.0


@njit(cache=False, pipeline_class=_numba_cache.Compiler)
def _sum_twice(a):
    s = 0.0
    for i in range(a.shape[0]):
        s += _twice(a, i)
    return s


def _defined(dispatcher) -> bool:
    """Whether the JIT defines the symbol of ``dispatcher``'s only compiled function."""
    (cres,) = dispatcher.overloads.values()
    engine = cres.library.codegen._engine
    return engine.is_symbol_defined(cres.fndesc.mangled_name)


def test_patch_is_installed():
    assert _numba_cache.NO_HELPER_CODE


def test_helper_library_is_not_added_to_the_jit(monkeypatch):
    _twice.jit.compile(SIG)
    assert not _defined(_twice.jit)
    (cres,) = _twice.jit.overloads.values()
    assert _numba_cache._is_helper_module(cres.library._final_module)
    # the caller links the optimized module in and runs its own copy
    a = np.arange(5.0)
    assert _sum_twice(a) == 2.0 * a.sum()
    # a Python call runs the twin, which has its wrapper and its machine code
    assert _twice(a, 3) == 6.0
    # negative control: an unregistered helper's library is emitted as before
    monkeypatch.setattr(_numba_cache, "_HELPERS", set())
    _thrice.jit.compile(SIG)
    assert _defined(_thrice.jit)


@helper(cache=False)
def _checked(x):
    if x < 0.0:
        raise ValueError("negative", x)  # a runtime value: reads the helper's environment
    return x + 1.0


@njit(cache=False)
def _call_checked(x):
    return _checked(x)


_SCRIPT = """
import sys
from numba import njit
from fastem.backends import _numba_cache
from fastem.backends._numba_cache import helper
if sys.argv[1] == "blind":
    _numba_cache._reads_environment = lambda module: False
@helper()
def checked(x):
    if x < 0:
        raise ValueError("negative", x)
    return x + 1
@njit
def call(x):
    return checked(x)
assert call(2) == 3
try:
    call(-1)
except Exception as exc:
    print(type(exc).__name__)
"""


def _raised_in_a_fresh_process(tmp_path, mode: str) -> str:
    import os
    import subprocess
    import sys

    env = dict(os.environ, FASTEM_CACHE_DIR=str(tmp_path / mode))
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_helper_that_reads_its_environment_is_emitted(tmp_path):
    # A raise carrying a runtime value (or a print) reads the helper's Numba
    # environment, which only the JIT holds: such a helper keeps its machine code.
    assert _call_checked(1.0) == 2.0
    with pytest.raises(ValueError, match="negative"):
        _call_checked(-1.0)
    (cres,) = _checked.jit.overloads.values()
    module = cres.library._final_module
    assert _numba_cache._reads_environment(module)
    assert not _numba_cache._is_helper_module(module)
    # A fresh process, as a user's: the raise works; negative control, with the
    # environment check blind the helper is not emitted and the raise breaks.
    assert _raised_in_a_fresh_process(tmp_path, "checked") == "ValueError"
    assert _raised_in_a_fresh_process(tmp_path, "blind") == "RuntimeError"
