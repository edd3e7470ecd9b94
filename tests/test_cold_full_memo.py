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
        pytypes.FunctionType(
            fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__
        )
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
    for (fnty, context, args, kws, _flags), (sig, impl_key, _fastmath) in memo.items():
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


def _ihalf(n):
    return n // 2


@overload(_ihalf)
def _ov_ihalf(n):
    return lambda n: n // 2


def _ihalf_control(n):
    return n // 2


@overload(_ihalf_control)
def _ov_ihalf_control(n):
    return lambda n: n // 2


def _fhalf(x):
    return x * 0.5


@overload(_fhalf)
def _ov_fhalf(x):
    return lambda x: x * 0.5


def _callers(fn):
    """The same call of ``fn`` compiled by fastem's compiler with and without fastmath."""

    def body(a):
        return fn(a)

    return (
        _fresh(body, fastmath=True, pipeline_class=_numba_cache.Compiler),
        _fresh(body, fastmath=False, pipeline_class=_numba_cache.Compiler),
    )


def _shared_of(fn):
    return {str(sig) for fnty, sig in _numba_cache.SHARED_ACROSS_FASTMATH if fnty.typing_key is fn}


def _compiles(fn) -> int:
    """How many implementations Numba built for the @overload of ``fn`` (one per flags)."""
    from numba.core.registry import cpu_target

    fnty = cpu_target.typing_context.resolve_value_type(fn)
    return sum(len(getattr(t, "_impl_cache", {})) for t in fnty.templates)


def test_memo_shares_a_float_free_overload_across_fastmath(monkeypatch):
    # fastmath acts only on floating-point instructions: an @overload whose signature
    # holds none (int64 -> int64) is resolved once for callers with and without it
    monkeypatch.setattr(_numba_cache, "_CALL_TYPES", {})
    monkeypatch.setattr(_numba_cache, "SHARED_ACROSS_FASTMATH", [])
    fast, plain = _callers(_ihalf)
    assert fast(7) == plain(7) == 3
    assert _shared_of(_ihalf) == {"(int64,) -> int64"}
    assert _compiles(_ihalf) == 1  # the second caller did not compile it again


def test_memo_keeps_float_overloads_and_the_control_per_fastmath(monkeypatch):
    monkeypatch.setattr(_numba_cache, "_CALL_TYPES", {})
    monkeypatch.setattr(_numba_cache, "SHARED_ACROSS_FASTMATH", [])
    # a floating-point signature: one resolution (compile) per fastmath
    fast, plain = _callers(_fhalf)
    assert fast(3.0) == plain(3.0) == 1.5
    assert _shared_of(_fhalf) == set()
    assert _compiles(_fhalf) == 2
    # negative control: the same integer overload as above, with every signature
    # counted as floating-point, is no longer shared
    monkeypatch.setattr(_numba_cache, "_float_free", lambda sig: False)
    fast, plain = _callers(_ihalf_control)
    assert fast(7) == plain(7) == 3
    assert _shared_of(_ihalf_control) == set()
    assert _compiles(_ihalf_control) == 2


@pytest.mark.parametrize(
    ("sig", "free"),
    [
        (types.int64(types.int64, types.intp), True),
        (types.boolean(types.UniTuple(types.int64, 2), types.none), True),
        (types.Array(types.int64, 1, "C")(types.int64, types.NumberClass(types.int64)), True),
        (types.int64(types.float64), False),  # float argument
        (types.float32(types.int64), False),  # float result
        (types.Array(types.float64, 1, "C")(types.int64), False),  # np.empty(n)
        (types.int64(types.Tuple((types.int64, types.complex128))), False),
        (types.int64(types.NumberClass(types.float64)), False),
        (types.int64(types.Omitted(0.5)), False),  # not known float-free
    ],
)
def test_float_free_signatures(sig, free):
    assert _numba_cache._float_free(sig) is free


def test_float_free_looks_at_the_receiver():
    sig = types.int64(types.int64).replace(recvr=types.Array(types.float64, 1, "C"))
    assert not _numba_cache._float_free(sig)
