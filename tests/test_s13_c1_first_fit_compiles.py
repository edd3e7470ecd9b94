"""What a first fit compiles (issue #13, docs/cold_start.md "Session 13"): no
function of its own for Numba's ``np.empty`` or ``min`` overloads (the scratch
comes from ``_empty_1d``, emitted in place; block sizes from a conditional), and
``_empty_aligned`` still behaves as ``np.empty`` does for what the kernels pass."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

numba = pytest.importorskip("numba")
nb = pytest.importorskip("fastem.backends._numba")

COMPILES = """
import json, os, sys, tempfile, warnings
os.environ["FASTEM_CACHE_DIR"] = tempfile.mkdtemp()
os.environ["FASTEM_BACKEND"] = "numba"
import numpy as np
from numba.core import event
from fastem import GaussianMixture
names = []
class Compile(event.Listener):
    def on_start(self, ev):
        names.append(ev.data["dispatcher"].py_func.__qualname__)
    def on_end(self, ev):
        pass
event.register("numba:compile", Compile())
X = np.random.default_rng(0).normal(size=(600, 4))
for ct in ("full", "tied", "diag", "spherical"):
    for dt in ("float64", "float32"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            GaussianMixture(3, covariance_type=ct, max_iter=3, random_state=0).fit(
                X.astype(dt))
print(json.dumps(names))
"""


def test_first_fits_compile_no_np_empty_or_min_overload():
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(COMPILES)],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    names = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any(n.startswith("_chunks_") for n in names)  # the listener saw the kernels
    assert "_empty_aligned" in names
    assert not [n for n in names if n.startswith(("ol_np_empty", "ol_min"))]


@numba.njit(cache=False)
def _scratch_by_class(size):
    a = nb._empty_aligned(size, np.float64)  # a class, as _numba_missing passes
    b = nb._empty_aligned(np.int32(size), np.float32)
    return a.size, a.itemsize, a.ctypes.data % 64, b.size, b.itemsize, b.ctypes.data % 64


@pytest.mark.parametrize("size", [0, 1, 17, 4096])
def test_empty_aligned_takes_dtype_classes_and_narrow_sizes(size):
    assert _scratch_by_class(size) == (size, 8, 0, size, 4, 0)


@numba.njit(cache=False)
def _scratch(size, like):
    return nb._empty_aligned(size, like.dtype).size


def test_empty_aligned_rejects_negative_sizes_as_np_empty():
    with pytest.raises(ValueError, match="negative dimensions"):
        _scratch(-16, np.empty(0))  # size + 15 < 0: np.empty's own error
    assert _scratch(-15, np.empty(0)) == 0  # np.empty(0)[0:-15]
