"""The fastem command, driven as a subprocess."""

from __future__ import annotations

import subprocess
import sys


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastem", *args], capture_output=True, text=True, timeout=300
    )


def test_demo_runs_and_recovers_the_mixture():
    # 8 features: the three drawn components barely overlap, so ~99% is reachable.
    result = _run(
        "demo",
        "--n-samples",
        "20000",
        "--n-components",
        "3",
        "--n-features",
        "8",
        "--backend",
        "numpy",
    )
    assert result.returncode == 0, result.stderr
    assert "converged" in result.stdout and "NOT converged" not in result.stdout
    line = [s for s in result.stdout.splitlines() if s.startswith("rows assigned")][0]
    assert float(line.split()[-1].rstrip("%")) > 95.0


def test_bad_arguments_exit_2_with_one_line():
    result = _run("demo", "--n-components", "0")
    assert result.returncode == 2
    assert "--n-components must be at least 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_version():
    result = _run("--version")
    assert result.returncode == 0 and result.stdout.startswith("fastem ")
