"""The numba k-means pass after its cold-start trim (issue #13, section 2).

The kernel loads its block in X's dtype (as the E-step kernels do, so a
float32 fit compiles one ``_load_block``) and widens each value to float64
where it is used. Widening float32 to float64 is exact, so a float32 pass must
give exactly what the same values as float64 give: the same labels, counts,
sums and inertia, bit for bit. A negative control checks that the comparison
sees a kernel that computes in float32 instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

from fastem.backends import _numba as nb_mod  # noqa: E402

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _pass(X, w, centers):
    """One k-means pass; every output, as bytes where it is an array."""
    n, d = X.shape
    k = centers.shape[0]
    sums = np.zeros((k, d))
    counts = np.zeros(k)
    labels = np.empty(n, dtype=np.int64)
    inertia = nb_mod.kmeans_pass(X, w, centers, sums, counts, labels)
    return inertia, sums.tobytes(), counts.tobytes(), labels.tobytes()


def _data(seed, n, d, k, scale):
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((n, d)) * scale + rng.uniform(-3, 3, d)).astype(np.float32)
    w = rng.uniform(0.0, 2.0, n)
    centers = X[rng.choice(n, k, replace=False)].astype(np.float64)
    centers += rng.standard_normal(centers.shape) * 1e-3 * scale  # not a row of X
    return X, w, centers


@SETTINGS
@given(
    n=st.sampled_from([1, 7, 300, 2049, 5000]),
    d=st.integers(1, 9),
    k=st.integers(1, 6),
    scale=st.sampled_from([1e-3, 1.0, 1e4]),
    seed=st.integers(0, 2**32 - 1),
)
def test_float32_pass_equals_its_float64_widening(n, d, k, scale, seed):
    k = min(k, n)
    X, w, centers = _data(seed, n, d, k, scale)
    assert _pass(X, w, centers) == _pass(X.astype(np.float64), w, centers)


def test_negative_control_a_float32_kernel_is_seen(monkeypatch):
    """The same kernel with its centre values rounded to float32 (``cj`` in
    X's dtype, so the distances are computed in float32) gives other bits:
    the comparison above would fail for such a kernel."""
    from numba import njit

    X, w, centers = _data(0, 4000, 5, 4, 1.0)
    want = _pass(X.astype(np.float64), w, centers)
    py = nb_mod._chunks_kmeans.py_func
    glb = dict(py.__globals__)
    fake_np = types.ModuleType("fake_numpy")  # np.float64(...) becomes np.float32(...)
    fake_np.float64 = np.float32
    fake_np.int64 = np.int64
    glb["np"] = fake_np
    broken = types.FunctionType(py.__code__, glb, py.__name__, py.__defaults__, py.__closure__)
    monkeypatch.setattr(nb_mod, "_chunks_kmeans", njit(nogil=True)(broken))
    got = _pass(X, w, centers)
    assert got[0] != want[0]
    assert got[1] != want[1]


_CHILD = """
import json, sys
import numpy as np
from fastem import GaussianMixture
from fastem.backends import _numba
X = np.random.default_rng(0).standard_normal((3000, 4)).astype(np.float32)
GaussianMixture(3, covariance_type=sys.argv[1], max_iter=2, random_state=0).fit(X)
n = len(_numba._load_block.jit.signatures)
if len(sys.argv) > 2:  # negative control: a caller loading into float64 scratch
    from numba import njit
    load = _numba._load_block
    @njit
    def into_float64(X):
        xt = np.empty((X.shape[1], 8))
        load(X, 0, 8, xt)
        return xt[0, 0]
    head = X[:8].copy()
    head.flags.writeable = False  # as the kernels get X: only the block's dtype differs
    into_float64(head)
    n = len(_numba._load_block.jit.signatures)
print(json.dumps(n))
"""


def _load_block_specializations(tmp_path, covariance_type, control=False):
    # an empty cache of its own: a cache-loading process compiles nothing
    cache = tmp_path / ("cache-control" if control else "cache")
    env = dict(os.environ, FASTEM_CACHE_DIR=str(cache))
    env.pop("NUMBA_CACHE_DIR", None)  # it would override FASTEM_CACHE_DIR
    args = [sys.executable, "-c", _CHILD, covariance_type] + (["control"] if control else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_float32_fit_compiles_one_block_load(tmp_path):
    """A float32 diagonal fit (k-means initialization, then the E-step kernel)
    compiles ``_load_block`` once: the k-means kernel's block is float32 too.
    Control: one more caller with a float64 block is counted (2)."""
    assert _load_block_specializations(tmp_path, "diag") == 1
    assert _load_block_specializations(tmp_path, "diag", control=True) == 2
