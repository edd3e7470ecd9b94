"""Numba helpers compiled without wrappers, and kept out of line (issue #13, cold start).

Kernels call helpers that have no CPython/C wrappers (``_numba_cache.Helper``); Python calls
go to a twin with wrappers. Helpers that run once per block of rows are kept as calls in the
kernels (``noinline`` on their linked-in copies) instead of being inlined and optimized again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("numba")

from numba import njit, types  # noqa: E402

from fastem.backends import _numba as nb  # noqa: E402
from fastem.backends import _numba_cache  # noqa: E402


def test_python_call_runs_the_twin_with_the_same_results():
    """A helper called from Python (its twin) computes what the kernels' copy computes."""

    @njit
    def through_kernel(logp, w, mx, s):
        return nb._responsibilities(logp, w, 0, logp.shape[1], mx, s)

    rng = np.random.default_rng(0)
    logp = rng.normal(-3.0, 2.0, (3, 40))
    w = rng.uniform(0.0, 2.0, 40)
    a, b = logp.copy(), logp.copy()
    la = nb._responsibilities(a, w, 0, 40, np.empty(40), np.empty(40))
    lb = through_kernel(b, w, np.empty(40), np.empty(40))
    assert la == lb
    np.testing.assert_array_equal(a, b)
    # the twin is a separate dispatcher with its own cache entries
    assert nb._responsibilities.py is not nb._responsibilities.jit
    assert nb._responsibilities.py.py_func.__qualname__.endswith("__py")
    assert nb._responsibilities.py_func.__code__ is nb._responsibilities.__wrapped__.__code__
    assert len(nb._responsibilities.signatures) >= 1  # the twin's, through __getattr__


def test_out_of_line_prefixes_are_the_mangled_names():
    """The registered prefixes match Numba's mangled symbols (a mangling change would
    silently inline everything again)."""
    f64, i64 = types.float64, types.int64
    nb._center.jit.compile((f64[:, ::1], i64, f64[::1], f64[:, ::1]))
    nb._load_block.jit.compile((f64[:, ::1], i64, i64, f64[:, ::1]))
    nb._empty_aligned.jit.compile((i64, types.DType(f64)))
    for h in (nb._center, nb._load_block, nb._empty_aligned):
        prefix = _numba_cache._mangled_prefix(h.__module__, h.__qualname__)
        assert prefix in _numba_cache._OUT_OF_LINE
        names = [cres.fndesc.mangled_name for cres in h.jit.overloads.values()]
        assert names and all(n.startswith(prefix) for n in names), (prefix, names)
    # not registered: helpers that run per element stay inlined
    assert _numba_cache._mangled_prefix(nb.exp64.__module__, "exp64") not in (
        _numba_cache._OUT_OF_LINE
    )


# A diagonal fit in a fresh process with an empty cache; prints which fastem functions
# the compiled diagonal kernel calls.
CALLS = """
import json, re, sys, warnings
import numpy as np
from fastem import GaussianMixture
from fastem.backends import _numba as nb, _numba_cache
if sys.argv[1] == "inline":
    _numba_cache._OUT_OF_LINE.clear()  # negative control: everything inlined again
X = np.random.default_rng(0).normal(size=(300, 3))
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    GaussianMixture(2, covariance_type="diag", init_params="random", max_iter=2,
                    random_state=0, backend="numba").fit(X)
llvm = "".join(nb._chunks_diag.inspect_llvm().values())
called = sorted(set(re.findall(r"call [^@]*@_ZN6fastem8backends\\d+(\\w+?)B", llvm)))
print(json.dumps(called + ["optnone"] * ("optnone" in llvm)))
"""


def _called(mode: str, cache: str) -> list[str]:
    env = dict(os.environ, FASTEM_CACHE_DIR=cache)
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", CALLS, mode], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kernel_calls_its_block_helpers_out_of_line(tmp_path):
    called = _called("out_of_line", str(tmp_path / "a"))
    assert any("_accum_diag" in c for c in called), called
    assert any("_responsibilities" in c for c in called), called
    assert not any("exp64" in c for c in called), called  # per element: inlined
    # the copies skipped the kernel's module optimization (optnone), and the attribute
    # is gone before machine code is emitted (else LLVM's -O0 code generator)
    assert "optnone" not in called
    # negative control: without the registry LLVM inlines them
    inlined = _called("inline", str(tmp_path / "b"))
    assert not any("_accum_diag" in c or "_responsibilities" in c for c in inlined), inlined


# A process with an empty cache compiles a helper, then a missing-data kernel whose module
# keeps its own out-of-line, internal copy of that helper, then a new jitted caller of the
# helper. Prints whether the JIT still resolves the helper's symbol to the helper's own
# code. "keep_names": the copies keep the helper's name (the state before the fix).
SYMBOLS = """
import json, sys, warnings
import numpy as np
from numba import njit
from fastem import GaussianMixture
from fastem.backends import _numba as nb, _numba_cache
if sys.argv[1] == "keep_names":
    _numba_cache.COPY_SUFFIX = ""

def caller():
    @njit
    def f(logp, w, mx, s):
        return nb._responsibilities(logp, w, 0, logp.shape[1], mx, s)
    return f

logp = np.random.default_rng(0).normal(-3.0, 2.0, (3, 40))
w = np.linspace(0.0, 2.0, 40)
first = caller()(logp.copy(), w, np.empty(40), np.empty(40))
(cres,) = nb._responsibilities.jit.overloads.values()
engine = cres.library.codegen._engine
before = engine.get_function_address(cres.fndesc.mangled_name)
X = np.random.default_rng(0).normal(size=(300, 3))
X[np.random.default_rng(1).random(X.shape) < 0.1] = np.nan
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    GaussianMixture(2, covariance_type="diag", init_params="random", max_iter=2,
                    random_state=0, backend="numba").fit(X)
same = engine.get_function_address(cres.fndesc.mangled_name) == before
out = {"same": same}
if same:  # before the fix this call ran the kernel's copy with the wrong arguments
    out["again"] = caller()(logp.copy(), w, np.empty(40), np.empty(40)) == first
print(json.dumps(out))
"""


def _symbols(mode: str, cache: str) -> dict:
    env = dict(os.environ, FASTEM_CACHE_DIR=cache)
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", SYMBOLS, mode], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kernel_copies_never_replace_the_helpers_symbol(tmp_path):
    """A kernel's private copy of a helper never answers for the helper's name.

    Numba's JIT keeps one table of symbols by name for the whole process, internal ones
    included. A kernel's out-of-line copy of ``_responsibilities`` (LLVM may change the
    calling convention of an internal function) kept the helper's name, so a jitted
    function compiled after the kernel called the copy with the wrong arguments: the CI
    segfault of issue #13, in a process that compiles (empty cache)."""
    assert _symbols("renamed", str(tmp_path / "a")) == {"same": True, "again": True}
    # negative control: with the copies' names kept, the kernel's copy takes the name
    assert _symbols("keep_names", str(tmp_path / "b")) == {"same": False}


def test_without_optnone_edits_only_attribute_groups():
    from llvmlite import binding

    text = """
define i32 @optnone_in_a_name(i32 %x) #0 {
  ret i32 %x
}
define i32 @g(i32 %x) #1 {
  ret i32 %x
}
attributes #0 = { noinline optnone }
attributes #1 = { nounwind }
"""
    module = binding.parse_assembly(text)
    assert "optnone" in str(module).split("attributes #0")[1]  # control: there before
    edited = _numba_cache._without_optnone(module)
    groups = [line for line in str(edited).splitlines() if line.startswith("attributes #")]
    assert groups and not any("optnone" in line for line in groups), groups
    assert any("noinline" in line for line in groups), groups
    assert edited.get_function("optnone_in_a_name") is not None  # names untouched
    same = binding.parse_assembly(text.replace("noinline optnone", "noinline"))
    assert _numba_cache._without_optnone(same) is same  # nothing to remove: no re-parse
