"""A kernel compiled in this process and the same kernel loaded from Numba's
cache by a later process give bit-identical results.

Each kernel's module holds a linked-in copy of every helper it calls, and with
fastmath that copy may be compiled differently from the helper's own library;
without :mod:`fastem.backends._numba_cache`'s internalization the process that
compiled a kernel ran the helper's library and a cache-loading one the copy
(1 ulp apart in the diagonal and full passes). One test, two fresh processes
sharing an empty cache: the first compiles every mixture kernel (about half a
minute of CPU), the second loads them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("numba")

# Runs the kernels of the JSON list of (kind, d, dtype) cases in argv[1] on
# fixed data and prints, per case, a hash of the bits of every output, plus the
# number of chunk-kernel compilations (cache misses) of this process.
SCRIPT = """
import hashlib, json, sys
import numpy as np
from fastem.backends import _numba as nb

def digest(*arrays):
    m = hashlib.sha1()
    for a in arrays:
        m.update(np.ascontiguousarray(a).tobytes())
    return m.hexdigest()

def case(kind, d, dtype, n=5000, k=4):
    rng = np.random.default_rng(d)
    X = rng.normal(size=(n, d)).astype(dtype)
    w = rng.uniform(0.5, 2.0, size=n)
    means = rng.normal(size=(k, d)).astype(dtype)
    cc = rng.normal(size=k)
    out = np.zeros((n, k))  # k-means leaves it untouched
    nk, sx = np.zeros(k), np.zeros((k, d))
    if kind in ("diag", "spherical"):  # spherical factors broadcast to diag
        pc = rng.uniform(0.5, 2.0, size=(k, d) if kind == "diag" else (k, 1))
        pc = np.ascontiguousarray(np.broadcast_to(pc, (k, d)), dtype=dtype)
        sxx = np.zeros((k, d))
        ll = nb.em_pass_diag(X, w, means, pc, cc, nk, sx, sxx)
        nb.log_prob_diag(X, means, pc, cc, out)
    elif kind == "full":
        pc = np.triu(rng.normal(scale=0.3, size=(k, d, d)), 1)
        pc += np.eye(d) * rng.uniform(0.5, 2.0, size=(k, d))[:, :, None]
        pc = pc.astype(dtype)
        sxx = np.zeros((k, d, d))
        ll = nb.em_pass_full(X, w, means, pc, cc, nk, sx, sxx)
        nb.log_prob_full(X, means, pc, cc, out)
    elif kind == "tied":
        pc = np.triu(rng.normal(scale=0.3, size=(d, d)), 1) + np.diag(rng.uniform(0.5, 2.0, d))
        pc = pc.astype(dtype)
        sxx = np.zeros((d, d))
        ll = nb.em_pass_tied(X, w, means, pc, cc, nk, sx, sxx)
        nb.log_prob_tied(X, means, pc, cc, out)
    else:  # k-means
        sxx = np.empty(n, dtype=np.int64)  # the labels
        ll = nb.kmeans_pass(X, w, means, sx, nk, sxx)
    return digest(np.float64(ll), nk, sx, sxx, out)

result = {"%s-d%d-%s" % tuple(c): case(c[0], c[1], np.dtype(c[2])) for c in json.loads(sys.argv[1])}
kernels = [getattr(nb, name) for name in dir(nb) if name.startswith("_chunks_")]
result["misses"] = sum(sum(kr.stats.cache_misses.values()) for kr in kernels)
print(json.dumps(result))
"""

SHAPES = [("diag", 3), ("spherical", 3), ("full", 3), ("full", 6), ("tied", 3), ("kmeans", 3)]
CASES = [[kind, d, dtype] for kind, d in SHAPES for dtype in ("float64", "float32")]

# Put back Numba's own final optimization (helpers' copies left linkonce_odr):
# the state before the fix, for the negative control.
UNPATCH = (
    "import fastem.backends._numba_cache\n"
    "from numba.core.codegen import CPUCodeLibrary as L\n"
    "L._optimize_final_module = L._optimize_final_module.__wrapped__\n"
    "L._finalize_final_module = L._finalize_final_module.__wrapped__\n"
)


def _run(cache_dir, cases, prefix=""):
    env = dict(os.environ, FASTEM_CACHE_DIR=str(cache_dir))
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", prefix + SCRIPT, json.dumps(cases)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_compiled_and_cache_loaded_kernels_give_identical_bits(tmp_path):
    fresh = _run(tmp_path, CASES)
    cached = _run(tmp_path, CASES)
    assert fresh.pop("misses") > 0  # the first process compiled
    assert cached.pop("misses") == 0  # the second loaded every kernel
    differ = sorted(name for name in fresh if fresh[name] != cached[name])
    assert differ == []


def test_negative_control_numbas_own_linking_differs(tmp_path):
    """Without the internalization the diagonal pass of the first process and
    of the cache-loading one differ (on a CPU and LLVM where the two copies of
    ``_accum_diag`` are compiled differently: AVX-512, LLVM 22 here)."""
    cases = [["diag", 3, "float64"]]
    fresh = _run(tmp_path, cases, UNPATCH)
    cached = _run(tmp_path, cases, UNPATCH)
    assert fresh.pop("misses") > 0 and cached.pop("misses") == 0
    if fresh == cached:
        pytest.skip("this CPU/LLVM compiles both copies of the helper alike")
    assert fresh != cached
