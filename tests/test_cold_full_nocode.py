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
