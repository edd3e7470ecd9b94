"""The typing memo of fastem's Numba compiler (``_numba_cache.Compiler``; issue #13,
docs/cold_start.md "Session 10"): on inside fastem's compiles only, and the signatures
it returns are the ones Numba's own resolution gives."""

import operator

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit, types  # noqa: E402
from numba.core.types.functions import BaseFunction  # noqa: E402
from numba.extending import overload  # noqa: E402

from fastem.backends import _numba_cache  # noqa: E402


def _body(x, y):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * y[i] - x[i] * 0.5
    return s


def _fresh(fn, **flags):
    """A new function object (its own dispatcher, no shared compile)."""
    import types as pytypes

    return njit(**flags)(
        pytypes.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__)
    )


def test_memo_is_installed():
    assert _numba_cache.MEMO
    assert getattr(BaseFunction.get_call_type, "_fastem_memo", False)


def test_memo_fills_only_inside_fastem_compiles(monkeypatch):
    memo = {}
    monkeypatch.setattr(_numba_cache, "_CALL_TYPES", memo)
    x = np.arange(5.0)
    plain = _fresh(_body)
    assert plain(x, x) == _body(x, x)
    assert memo == {}  # another library's Numba code: never remembered
    ours = _fresh(_body, pipeline_class=_numba_cache.Compiler)
    assert ours(x, x) == plain(x, x)
    muls = [k for k in memo if getattr(k[0], "typing_key", None) is operator.mul]
    assert muls, "fastem's compiler resolved operator.mul without the memo"
    assert _numba_cache._MEMO_DEPTH == 0


def test_memo_returns_numbas_own_signatures(monkeypatch):
    memo = {}
    monkeypatch.setattr(_numba_cache, "_CALL_TYPES", memo)
    ours = _fresh(_body, pipeline_class=_numba_cache.Compiler)
    ours(np.arange(3.0), np.arange(3.0))
    original = BaseFunction.get_call_type.__wrapped__
    assert memo
    for (fnty, context, args, kws, _flags), (sig, impl_key) in memo.items():
        assert original(fnty, context, args, dict(kws)) == sig
        assert fnty._impl_keys[sig.args] == impl_key


def test_memo_serves_repeated_resolutions(monkeypatch):
    """Negative control included: the second resolution of the same call comes from the
    memo (the original is not asked again), and with the memo off it is asked each time."""
    calls = []
    original = BaseFunction.get_call_type.__wrapped__

    def counting(self, context, args, kws):
        calls.append(args)
        return original(self, context, args, kws)

    monkeypatch.setattr(_numba_cache, "_CALL_TYPES", {})
    # the memo wrapped around a counting resolution (restored after the test)
    monkeypatch.setattr(BaseFunction, "get_call_type", counting)
    assert _numba_cache._patch_call_type_memo()
    from numba.core.registry import cpu_target

    ctx = cpu_target.typing_context
    fnty = ctx.resolve_value_type(operator.mul)
    args = (types.float64, types.float64)
    monkeypatch.setattr(_numba_cache, "_MEMO_DEPTH", 1)
    first = fnty.get_call_type(ctx, args, {})
    recorded = fnty._impl_keys[first.args]
    fnty._impl_keys[first.args] = "overwritten by another resolution"
    second = fnty.get_call_type(ctx, args, {})
    assert first == second and len(calls) == 1
    # a remembered resolution records its implementation again, as a fresh one does
    assert fnty._impl_keys[first.args] == recorded
    monkeypatch.setattr(_numba_cache, "_MEMO_DEPTH", 0)
    fnty.get_call_type(ctx, args, {})
    fnty.get_call_type(ctx, args, {})
    assert len(calls) == 3


def _mydiv(a, b):
    return a / b


@overload(_mydiv)
def _ov_mydiv(a, b):
    return lambda a, b: a / b


def test_memo_keeps_an_overloads_compile_per_caller_flags():
    # Numba compiles an @overload once per set of the caller's flags; a memo keyed
    # without them handed the error_model="numpy" compile (1/0 = inf) to an
    # error_model="python" caller, which must raise (the review found it so).
    @njit(error_model="numpy", pipeline_class=_numba_cache.Compiler)
    def k_numpy(a, b):
        return _mydiv(a, b)

    @njit(error_model="python", pipeline_class=_numba_cache.Compiler)
    def k_python(a, b):
        return _mydiv(a, b)

    assert k_numpy(1.0, 0.0) == np.inf
    with pytest.raises(ZeroDivisionError):
        k_python(1.0, 0.0)


_ARCP_LEAK = """
import math
from numba import njit
from numba.extending import overload
import fastem.backends._numba  # noqa: F401  (installs fastem's compile patches)
from fastem.backends import _numba_cache as nc

def steps(span, step):
    pass

@overload(steps)
def _steps(span, step):
    def impl(span, step):  # integer arguments and result, float math inside
        return int(math.ceil(span / step))
    return impl

@njit(fastmath={"arcp"}, pipeline_class=nc.Compiler)
def fast(span):
    return steps(span, 91)

@njit(pipeline_class=nc.Compiler)
def exact(span):
    return steps(span, 91)

fast(273)  # compiled first: 273 * (1/91) rounds above 3
print(exact(273))
"""


def test_an_integer_overload_is_not_shared_across_fastmath():
    # Session 11's review: keying fastmath only for signatures with a float type let an
    # int -> int overload whose body divides in floats pass its arcp compile to an exact
    # caller (ceil(273 / 91) gave 4). Reverted; this fails on e3fdb9b.
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _ARCP_LEAK], capture_output=True, text=True, check=True,
        env={**__import__("os").environ, "NUMBA_CACHE_DIR": ""},
    )  # fmt: skip
    assert out.stdout.split()[-1] == "3", out.stdout


def _mysub(a, b):
    return a - b


@overload(_mysub)
def _ov_mysub(a, b):
    return lambda a, b: a - b


def test_overload_check_walks_no_abc_subclasses(monkeypatch):
    # Whether an @overload resolves a function type is read from its templates' MROs.
    # An ABC issubclass(t, _OverloadFunctionTemplate) that is False walks every
    # @overload template class Numba has made: 0.48 s of a cold full fit (session 12).
    import abc

    from numba.core.typing.templates import _OverloadFunctionTemplate

    checks = []
    original = abc.ABCMeta.__subclasscheck__

    def counting(cls, sub):
        if cls is _OverloadFunctionTemplate:
            checks.append(sub)
        return original(cls, sub)

    memo = {}
    monkeypatch.setattr(_numba_cache, "_CALL_TYPES", memo)
    monkeypatch.setattr(abc.ABCMeta, "__subclasscheck__", counting)

    @njit(pipeline_class=_numba_cache.Compiler)
    def caller(a, b):  # an @overload, a builtin operator, a NumPy function
        return _mysub(a, b) * 2.0 + np.sqrt(b)

    assert caller(5.0, 4.0) == 4.0
    monkeypatch.undo()
    assert checks == []
    # and the check still tells them apart: an @overload is keyed by the caller's flags
    keys = {k[0].typing_key: k[4] for k in memo if hasattr(k[0], "typing_key")}
    assert keys[_mysub] is not None
    assert keys[np.sqrt] is None  # a ufunc: typed by NumPy rules, no @overload
