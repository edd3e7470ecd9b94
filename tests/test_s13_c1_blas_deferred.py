"""Numba's import-time BLAS check is deferred to its first use (issue #13,
docs/cold_start.md "Session 13"): a first fit no longer imports ``scipy.linalg``,
Numba's registries are filled in the same order, and the check gives Numba's
answer when read."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

FIT = """
import json, os, sys, tempfile
os.environ["FASTEM_CACHE_DIR"] = tempfile.mkdtemp()
os.environ["FASTEM_BACKEND"] = "numba"
import numpy as np
from fastem import GaussianMixture
X = np.random.default_rng(0).normal(size=(300, 3))
GaussianMixture(2, covariance_type="diag", max_iter=2, random_state=0).fit(X)
from fastem.backends import _numba_cache
out = {"deferred": _numba_cache.BLAS_CHECK_DEFERRED,
       "scipy_linalg_after_fit": "scipy.linalg" in sys.modules}
import numba.np.arraymath as am, numba.np.linalg as la
out["ensure_blas_restored"] = (
    am.ensure_blas is la.ensure_blas and la.ensure_blas is not _numba_cache._blas_not_checked)
out["loader"] = type(la.__loader__).__name__
from numba import njit
a, b = np.arange(7.0), np.array([0.5, -1.0, 2.0])
out["convolve"] = bool(np.array_equal(njit(lambda a, b: np.convolve(a, b))(a, b),
                                      np.convolve(a, b)))
out["have_blas"] = bool(am._HAVE_BLAS)
out["dot"] = float(njit(lambda a: np.dot(a, a))(a)) == float(a @ a)
try:
    import scipy.linalg.cython_blas  # noqa: F401
    out["scipy_blas"] = True
except ImportError:
    out["scipy_blas"] = False
print(json.dumps(out))
"""

# The typing and lowering registries after Numba's first compile, in order.
REGISTRIES = """
import json, re, sys
import numba.core.cpu
original = numba.core.cpu.CPUContext.load_additional_registries
import fastem.backends._numba_cache as nc
if sys.argv[1] == "numba":  # the control: Numba's own first import
    numba.core.cpu.CPUContext.load_additional_registries = original
from numba import njit
njit(lambda x: x + 1)(1)
from numba.core.typing import templates
from numba.core import imputils
def name(x):  # no addresses: they differ between processes
    text = getattr(x, "__qualname__", None) or repr(x)
    return re.sub(r"0x[0-9A-Fa-f]+", "", text)
typing = [name(t) for t in templates.builtin_registry.functions]
typing += [name(g[0]) + name(g[1]) for g in templates.builtin_registry.globals]
lowering = [name(f[0]) + name(f[1:]) for f in imputils.builtin_registry.functions]
print(json.dumps({"typing": typing, "lowering": lowering,
                  "deferred": nc.BLAS_CHECK_DEFERRED}))
"""


def _run(code, *args):
    # Numba registers some implementations while iterating over sets of types:
    # their order depends on str hashing, fixed here.
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_first_fit_does_not_import_scipy_linalg_and_check_is_numbas():
    out = _run(FIT)
    assert out["deferred"]
    assert not out["scipy_linalg_after_fit"]
    assert out["ensure_blas_restored"]
    assert out["loader"] != "_Loader"  # Python's own loader is kept on the module
    assert out["convolve"] and out["dot"]
    assert out["have_blas"] == out["scipy_blas"]


def test_numba_registries_fill_in_numbas_order():
    ours = _run(REGISTRIES, "fastem")
    control = _run(REGISTRIES, "numba")
    assert ours["deferred"]
    assert ours["typing"] == control["typing"]
    assert ours["lowering"] == control["lowering"]
    assert len(ours["typing"]) > 100 and len(ours["lowering"]) > 100
