"""Vectorizable ``exp`` for Numba kernels.

Numba lowers ``math.exp`` to a scalar libm call (3-6.5 ns here), which also
stops LLVM from vectorizing the loop around it. :func:`exp64` is written only
with arithmetic, comparisons and bit casts, so a loop calling it vectorizes.

Method: ``x = n ln2 + r`` with ``n = round(x / ln2)`` found by the
"shifter" trick (no float-to-int conversion, which would be undefined for
NaN), Cody-Waite reduction with a two-part ``ln2`` (``n * LN2_HI`` is exact),
a degree-13 Taylor polynomial (Estrin scheme) for ``exp(r)`` on ``|r| <= ln2 / 2`` (truncation
error below 1e-17), and ``2**n`` built from exponent bits as the product of two
powers of two so that results in the subnormal range come out right.
Inputs are clamped to ``[-746, 710]`` (``exp`` is 0 below, inf above); NaN
propagates. Accuracy: within 2 ulp of ``np.exp`` over the whole range.

This function must stay compiled *without* ``fastmath``: reassociation would
fold ``(t + SHIFT) - SHIFT`` and break the range reduction. Numba compiles it
as its own function, so its instructions keep strict semantics even when LLVM
inlines it into a ``fastmath`` kernel.
"""

from __future__ import annotations

from numba import types
from numba.extending import intrinsic

from . import _numba_cache  # noqa: F401  (registers the cache locator)
from ._numba_cache import helper

__all__ = ["exp64"]

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # 32 significant bits: n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_SHIFT = 6755399441055744.0  # 1.5 * 2**52: adding it rounds to an integer in the low bits
_SHIFT_BITS = 0x4338000000000000  # bit pattern of _SHIFT
_EXP_MIN = -746.0  # exp(-746) rounds to 0
_EXP_MAX = 710.0  # exp(710) overflows to inf

# 1/k! for k = 13 .. 2 (Horner order); the k = 1, 0 terms are added exactly last.
_C13 = 1.0 / 6227020800.0
_C12 = 1.0 / 479001600.0
_C11 = 1.0 / 39916800.0
_C10 = 1.0 / 3628800.0
_C9 = 1.0 / 362880.0
_C8 = 1.0 / 40320.0
_C7 = 1.0 / 5040.0
_C6 = 1.0 / 720.0
_C5 = 1.0 / 120.0
_C4 = 1.0 / 24.0
_C3 = 1.0 / 6.0
_C2 = 0.5


@intrinsic
def _f64_bits(typingctx, x):
    """Reinterpret a float64 as int64 (no conversion)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


@intrinsic
def _bits_f64(typingctx, x):
    """Reinterpret an int64 as float64 (no conversion)."""
    if x != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


@helper(cache=True, fastmath={"contract"})
def exp64(x):
    """``exp(x)`` for a float64 scalar, vectorizable by LLVM (see module docstring)."""
    if x < _EXP_MIN:
        x = _EXP_MIN
    if x > _EXP_MAX:
        x = _EXP_MAX
    t = x * _LOG2E + _SHIFT
    nf = t - _SHIFT
    n = _f64_bits(t) - _SHIFT_BITS
    r = (x - nf * _LN2_HI) - nf * _LN2_LO
    # exp(r) = 1 + r + r^2 q(r): Estrin's scheme for q keeps the dependency
    # chain short (the loop is latency-bound with Horner).
    r2 = r * r
    r4 = r2 * r2
    a0 = _C2 + _C3 * r
    a1 = _C4 + _C5 * r
    a2 = _C6 + _C7 * r
    a3 = _C8 + _C9 * r
    a4 = _C10 + _C11 * r
    a5 = _C12 + _C13 * r
    b0 = a0 + a1 * r2
    b1 = a2 + a3 * r2
    b2 = a4 + a5 * r2
    q = b0 + r4 * (b1 + r4 * b2)
    p = 1.0 + (r + r2 * q)
    n1 = n >> 1
    s1 = _bits_f64((n1 + 1023) << 52)
    s2 = _bits_f64((n - n1 + 1023) << 52)
    return (p * s1) * s2
