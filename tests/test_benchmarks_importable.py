"""Every module in ``benchmarks/`` imports without side effects, as asv's discovery needs.

asv imports each module under ``benchmarks/`` with its own ``sys.argv`` (``discover ...``);
a script that runs at import time fails CI's asv step (session 12's hunt scripts did) or,
worse, patches the library inside the benchmarking process. Checked in a fresh subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.skipif(not BENCHMARKS.is_dir(), reason="benchmarks/ is not beside tests/")
def test_every_benchmark_module_imports_like_asv_discovery():
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        sys.path.insert(0, {str(BENCHMARKS.parent)!r})
        sys.argv = ["benchmark.py", "discover", "benchmarks", "/tmp/result.json"]
        import fastem._em.fixed_point as fp
        before = fp.Run.__init__
        names = [m.name for m in pkgutil.iter_modules([{str(BENCHMARKS)!r}])]
        for name in names:
            importlib.import_module("benchmarks." + name)
        assert fp.Run.__init__ is before, "a benchmark module patched the EM driver"
        print(len(names))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.strip().splitlines()[-1]) >= 10
