"""Per-pass time of the numba (or Cython) kernels: the working tree against a reference.

The numba backend files of ``--ref`` (``git show REV:fastem/backends/...``) are copied into a
temporary package and imported next to the working tree's backend; each repeat times one
fused E+M pass (the whole per-iteration kernel cost) of each version on each workload in
turn, so load on the machine hits both alike. Prints the median seconds per pass and the
ratio new/ref per workload. Both versions are warmed (compiled) first. ``--clock cpu`` times
process CPU time instead of wall time (steadier on a shared machine).

    python benchmarks/kernel_ab.py --ref HEAD --workloads W1 W2 W3 W4 --repeats 7

With two dtypes (``--dtype float64 float32``) every repeat times both versions in both
dtypes, and the speed of the second dtype relative to the first (median of the per-repeat
ratios ``t_first / t_second``) is printed for each version too:

    python benchmarks/kernel_ab.py --workloads W2 W4 --dtype float64 float32 --threads 1 --clock cpu

With ``--backend cython`` it A/Bs the Cython extension instead: ``--ref-so`` is the
extension built from the reference sources (build it there with ``setup.py build_ext -b DIR``
and pass ``DIR/fastem/backends/_cython.*.so``); it is loaded under another module name beside
the working tree's ``fastem.backends._cython``.

    python benchmarks/kernel_ab.py --backend cython --ref-so /tmp/ref/_cython.so --threads 1

With ``--missing FRAC`` that fraction of the entries (completely at random, seeded) is NaN and
a pass is ``fastem._passes.em_stats`` with the patterns found once beforehand (as a fit does):
the missing-data kernels. Every ratio is printed with the quartiles of the per-repeat ratios.
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


def load_ref_so(path: str):
    """The Cython extension at ``path``, as module ``fastem_ref_cython._cython`` (import the
    working tree's ``fastem.backends._cython`` first: Cython then initializes a second,
    separate module from the other file)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fastem_ref_cython._cython", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def add_missing(X, frac: float, seed: int = 0):
    """A copy of ``X`` with ``frac`` of its entries NaN (no row left empty), and its patterns."""
    from fastem._missing import find_patterns

    X = X.copy()
    mask = np.random.default_rng(seed).random(X.shape) < frac
    mask[mask.all(axis=1), 0] = False
    X[mask] = np.nan
    return X, find_patterns(X)


def one_pass(backend, X, w, p, ct, k, d, patterns=None):
    """Seconds (of ``CLOCK``) of one fused E+M pass of ``backend`` (the missing-data
    kernels if ``patterns`` is given)."""
    from fastem._stats import Stats

    if patterns is not None:
        from fastem._passes import em_stats

        t = CLOCK()
        em_stats(backend, X, w, p, patterns)
        return CLOCK() - t
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
    parser.add_argument("--backend", choices=("numba", "cython"), default="numba")
    parser.add_argument("--ref-so", help="--backend cython: the reference build of the extension")
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2", "W3", "W4"])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--dtype",
        nargs="+",
        default=["float64"],
        help="one or two dtypes; with two, also the speed ratio of the second to the first",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--missing",
        type=float,
        default=0.0,
        help="fraction of entries set to NaN: times the missing-data kernels",
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time (all threads), steadier than wall time on a loaded machine",
    )
    args = parser.parse_args(argv)
    if len(args.dtype) > 2:
        parser.error("--dtype takes one or two dtypes")
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    if args.backend == "cython":
        if not args.ref_so:
            parser.error("--backend cython needs --ref-so")
        from fastem.backends import _cython as new

        ref = load_ref_so(args.ref_so)
        args.ref = args.ref_so
        for mod in (new, ref):
            mod.set_num_threads(args.threads)
    else:
        import numba

        from fastem.backends import _numba as new

        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
        ref = load_ref(args.ref)
    cases = [(w, dt) for w in args.workloads for dt in args.dtype]
    data = {(w, dt): pass_args(w, np.dtype(dt)) for w, dt in cases}
    if args.missing > 0:
        for c, (X, *rest) in list(data.items()):
            Xm, patterns = add_missing(X, args.missing)
            data[c] = (Xm, *rest, patterns)
    for a in data.values():  # compile both
        one_pass(ref, *a)
        one_pass(new, *a)
    times = {(c, v): [] for c in cases for v in ("ref", "new")}
    for r in range(args.repeats):
        for c, a in data.items():
            order = (("ref", ref), ("new", new)) if r % 2 == 0 else (("new", new), ("ref", ref))
            for v, mod in order:
                times[c, v].append(one_pass(mod, *a))
    print(
        f"backend={args.backend} threads={args.threads} dtype={' '.join(args.dtype)} ref={args.ref}"
        f" repeats={args.repeats} clock={args.clock} missing={args.missing}"
    )
    print(
        "workload  dtype     ref s/pass   new s/pass   new/ref"
        "   median of paired new/ref [quartiles]"
    )
    for c in cases:
        r, n = np.median(times[c, "ref"]), np.median(times[c, "new"])
        q1, q2, q3 = np.percentile(np.divide(times[c, "new"], times[c, "ref"]), [25, 50, 75])
        print(
            f"{c[0]:8s}  {c[1]:8s}  {r:10.5f}   {n:10.5f}   {n / r:7.3f}"
            f"   {q2:7.3f} [{q1:.3f}-{q3:.3f}]"
        )
    if len(args.dtype) == 2:
        a, b = args.dtype
        print(
            f"speed of {b} relative to {a} (median of paired t_{a} / t_{b};"
            " in brackets their quartiles, the spread between repeats)"
        )
        for w in args.workloads:
            parts = []
            for v in ("ref", "new"):
                q1, q2, q3 = np.percentile(
                    np.divide(times[(w, a), v], times[(w, b), v]), [25, 50, 75]
                )
                parts.append(f"{v} {q2:6.2f} [{q1:.2f}-{q3:.2f}]")
            print(f"{w:8s}  " + "   ".join(parts))


if __name__ == "__main__":
    main()
