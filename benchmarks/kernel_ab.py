"""Per-pass time of the numba kernels: this working tree against a git revision, interleaved.

The numba backend files of ``--ref`` (``git show REV:fastem/backends/...``) are copied into a
temporary package and imported next to the working tree's backend; each repeat times one
fused E+M pass (the whole per-iteration kernel cost) of each version on each workload in
turn, so load on the machine hits both alike. Prints the median seconds per pass and the
ratio new/ref per workload. Both versions are warmed (compiled) first. ``--clock cpu`` times
process CPU time instead of wall time (steadier on a shared machine).

    python benchmarks/kernel_ab.py --ref HEAD --workloads W1 W2 W3 W4 --repeats 7
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FILES = (
    "_numba.py",
    "_numba_cache.py",
    "_numba_exp.py",
    "_numba_missing.py",
    "_numba_impute.py",
    "_tied.py",
)


def load_ref(rev: str):
    """The numba backend module of git revision ``rev``, as package ``fastem_ref_backend``."""
    folder = Path(tempfile.mkdtemp(prefix="fastem-ab-")) / "fastem_ref_backend"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for name in FILES:
        try:
            text = subprocess.run(
                ["git", "show", f"{rev}:fastem/backends/{name}"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        except subprocess.CalledProcessError:
            continue  # a file that revision did not have
        (folder / name).write_text(text)
    sys.path.insert(0, str(folder.parent))
    return importlib.import_module("fastem_ref_backend._numba")


def pass_args(name: str, dtype):
    from fastem._passes import PassParams
    from fastem.datasets import make_workload

    X, init = make_workload(name, dtype=dtype)
    X = np.ascontiguousarray(X)
    ct = init.get("covariance_type", "full")
    k, d = init["means_init"].shape
    prec = init["precisions_init"]
    from fastem._covariance import precision_cholesky_from_precisions

    chol = precision_cholesky_from_precisions(np.asarray(prec, dtype=np.float64), ct)
    p = PassParams.from_model(init["weights_init"], init["means_init"], chol, ct, X.dtype)
    w = np.ones(X.shape[0])
    return X, w, p, ct, k, d


CLOCK = time.perf_counter


def one_pass(backend, X, w, p, ct, k, d):
    """Seconds (of ``CLOCK``) of one fused E+M pass of ``backend``."""
    from fastem._stats import Stats

    stats = Stats.zeros(k, d, p.full, p.shift)
    if ct == "tied":
        fn = backend.em_pass_tied
        args = (X, w, p.means, p.tied_chol, p.comp_const, stats.nk, stats.sx, stats.sxx[0])
    else:
        fn = backend.em_pass_full if p.full else backend.em_pass_diag
        args = (X, w, p.means, p.prec_chol, p.comp_const, stats.nk, stats.sx, stats.sxx)
    t = CLOCK()
    fn(*args)
    return CLOCK() - t


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD")
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2", "W3", "W4"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time (all threads), steadier than wall time on a loaded machine",
    )
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    import numba

    from fastem.backends import _numba as new

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    ref = load_ref(args.ref)
    data = {w: pass_args(w, np.dtype(args.dtype)) for w in args.workloads}
    for a in data.values():  # compile both
        one_pass(ref, *a)
        one_pass(new, *a)
    times = {(w, v): [] for w in args.workloads for v in ("ref", "new")}
    for r in range(args.repeats):
        for w, a in data.items():
            order = (("ref", ref), ("new", new)) if r % 2 == 0 else (("new", new), ("ref", ref))
            for v, mod in order:
                times[w, v].append(one_pass(mod, *a))
    print(
        f"threads={args.threads} dtype={args.dtype} ref={args.ref} repeats={args.repeats}"
        f" clock={args.clock}"
    )
    print("workload  ref s/pass   new s/pass   new/ref   median of paired new/ref")
    for w in args.workloads:
        r, n = np.median(times[w, "ref"]), np.median(times[w, "new"])
        paired = np.median(np.divide(times[w, "new"], times[w, "ref"]))
        print(f"{w:8s}  {r:10.5f}   {n:10.5f}   {n / r:7.3f}   {paired:7.3f}")


if __name__ == "__main__":
    main()
