"""First fit of a new process: with an empty Numba cache (compiles) and a warm one (loads).

Each run is a fresh interpreter with its own ``FASTEM_CACHE_DIR``: a new temporary folder
for "cold", and for "warm" one that an earlier process filled with the same fit. The child
reports the wall and CPU time (``time.process_time``: all its threads, user + sys) of its
first fit and of a second, identical fit; first minus second ("warm extra") is what starting
costs with a warm cache (importing Numba and the backend, loading the compiled kernels).
Compilation is single-threaded, so on a loaded machine its CPU time is the steadier figure.
Do not edit fastem's kernel sources while it runs: Numba's cache index checks their
modification time, so the warm cache would be recompiled.

    python benchmarks/cold_start.py --covariance full diag tied spherical \
        --dtype float64 float32 --repeats 3

With ``--ref COMMIT`` the code at ``COMMIT`` (a temporary ``git worktree``) runs too, each
child of the reference right before the same child of the working tree (cold and warm), so
load on the machine hits both alike; the table then has one line per version and the median
of the paired ratios working tree / reference of the cold CPU time:

    python benchmarks/cold_start.py --ref HEAD --covariance full tied --repeats 5

``--cold-only`` skips the warm runs (half the time).

The table starts with **the numba floor**: a fresh interpreter that imports Numba and calls
one trivial ``@njit(cache=True)`` function, compiled (cold: an empty cache folder) or loaded
from the cache (warm). What that costs (Numba's import, its first compile or cache load,
which sets up its typing and target registries and imports ``scipy.linalg``) every first fit
costs too, before fastem's own kernels; fastem cannot cut it. ``--no-floor`` skips it.

``--profile`` instead runs one cold first fit per version (``--repeats`` times, the medians
printed) and splits the compile time (thread CPU, what compiling a function costs itself,
its callees' compiles excluded) of each function Numba compiled, from Numba's event API and
timers around its LLVM steps: type inference, the rest of Numba's front end, lowering to
LLVM IR, LLVM's per-function passes, its module optimization (O3) and machine code
emission (docs/cold_start.md):

    python benchmarks/cold_start.py --profile --covariance full --dtype float64 --ref HEAD

Problem: 20,000 x 4, K = 3 (issue #13's), ``max_iter=10``, k-means initialization.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time, warnings
import numpy as np
from fastem import GaussianMixture
ct, dt = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
X = np.concatenate([rng.normal(3.0 * i, 1.0, (20000 // 3 + 1, 4)) for i in range(3)])
X = np.ascontiguousarray(X[:20000], dtype=dt)
def fit():
    w, c = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        GaussianMixture(3, covariance_type=ct, max_iter=10, random_state=0).fit(X)
    return time.perf_counter() - w, time.process_time() - c
(w1, c1), (w2, c2) = fit(), fit()
print(json.dumps({"wall": w1, "cpu": c1, "wall2": w2, "cpu2": c2}))
"""


# The numba floor: import Numba and call one trivial cached function (a file of its own:
# Numba caches only functions defined in a file), timed from before the import.
FLOOR = """
import json, time
w0, c0 = time.perf_counter(), time.process_time()
import numba
w1, c1 = time.perf_counter(), time.process_time()
@numba.njit(cache=True)
def one(x):
    return x + 1
one(1)
w2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({"wall": w2 - w0, "cpu": c2 - c0, "import_wall": w1 - w0,
                  "import_cpu": c1 - c0, "call_wall": w2 - w1, "call_cpu": c2 - c1}))
"""


def run_floor(folder: str) -> dict:
    """One fresh interpreter running ``FLOOR`` from ``folder`` (its Numba cache too)."""
    script = Path(folder) / "numba_floor.py"
    script.write_text(FLOOR)
    env = dict(os.environ, NUMBA_CACHE_DIR=folder)
    out = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=folder,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def floor_rows(repeats: int) -> tuple[list, list]:
    """``repeats`` cold and warm runs of the numba floor, interleaved."""
    colds, warms = [], []
    warm_dir = tempfile.mkdtemp(prefix="fastem-floor-warm-")
    try:
        run_floor(warm_dir)  # fills the warm cache
        for _ in range(repeats):
            cold_dir = tempfile.mkdtemp(prefix="fastem-floor-cold-")
            try:
                colds.append(run_floor(cold_dir))
            finally:
                shutil.rmtree(cold_dir, ignore_errors=True)
            warms.append(run_floor(warm_dir))
    finally:
        shutil.rmtree(warm_dir, ignore_errors=True)
    return colds, warms


# A cold first fit (one thread) that reports per compiled function where its compile time
# went. Numba's "numba:compile" events nest (a kernel's compile contains its callees'), so
# each function is charged its own time only; "numba:run_pass" events give the front-end
# passes, and timers around CPUCodeLibrary's LLVM steps the optimization and code emission.
PROFILE = """
import collections, json, sys, time, warnings
import numpy as np
from numba.core import codegen, event
import fastem.backends._numba_cache  # its own patch of the LLVM steps first
clock = time.thread_time
stack, passes = [], []
agg = collections.defaultdict(lambda: collections.defaultdict(float))

class Compile(event.Listener):
    def on_start(self, ev):
        stack.append([ev.data["dispatcher"].py_func.__qualname__, clock(), 0.0])
    def on_end(self, ev):
        name, t0, child = stack.pop()
        dt = clock() - t0
        agg[name]["self"] += dt - child
        agg[name]["n"] += 1
        if stack:
            stack[-1][2] += dt

class Pass(event.Listener):  # a pass's time less the callees compiled during it
    def on_start(self, ev):
        passes.append([ev.data["name"].split(" [")[0], clock(), stack[-1][2] if stack else 0.0])
    def on_end(self, ev):
        name, t0, child0 = passes.pop()
        if stack:
            agg[stack[-1][0]]["pass:" + name] += clock() - t0 - (stack[-1][2] - child0)

def timed(cls, meth, key):
    orig = getattr(cls, meth)
    def wrapper(self, *a, **k):
        t0 = clock()
        try:
            return orig(self, *a, **k)
        finally:
            agg[stack[-1][0] if stack else "(none)"][key] += clock() - t0
    setattr(cls, meth, wrapper)

timed(codegen.CPUCodeLibrary, "_optimize_functions", "fpm")
timed(codegen.CPUCodeLibrary, "_optimize_final_module", "o3")
timed(codegen.JITCodeLibrary, "_finalize_specific", "mc")
event.register("numba:compile", Compile())
event.register("numba:run_pass", Pass())
from fastem import GaussianMixture
ct, dt = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
X = np.concatenate([rng.normal(3.0 * i, 1.0, (20000 // 3 + 1, 4)) for i in range(3)])
X = np.ascontiguousarray(X[:20000], dtype=dt)
c = time.process_time()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    GaussianMixture(3, covariance_type=ct, max_iter=10, random_state=0, n_threads=1).fit(X)
cpu = time.process_time() - c
rows = {}
for name, d in agg.items():
    llvm = d["fpm"] + d["o3"] + d["mc"]
    # native_lowering contains the LLVM steps (the library is finalized there)
    lower = d["pass:native_lowering"] - llvm
    front = sum(v for k, v in d.items() if k.startswith("pass:")) - d["pass:native_lowering"]
    rows[name] = {"n": d["n"], "self": d["self"], "typeinf": d["pass:nopython_type_inference"],
                  "front": front - d["pass:nopython_type_inference"], "lower": lower,
                  "fpm": d["fpm"], "o3": d["o3"], "mc": d["mc"]}
passes = collections.Counter()
for d in agg.values():
    for k, v in d.items():
        if k.startswith("pass:"):
            passes[k[5:]] += v
print(json.dumps({"cpu": cpu, "rows": rows, "passes": passes}))
"""
COLUMNS = ("self", "typeinf", "front", "lower", "fpm", "o3", "mc")


def run_child(
    ct: str, dt: str, cache: str, threads: int, tree: Path = ROOT, code: str = CHILD
) -> dict:
    """One fresh interpreter that imports fastem from ``tree`` (first on its path)."""
    env = dict(os.environ, FASTEM_CACHE_DIR=cache, NUMBA_NUM_THREADS=str(threads))
    env.pop("NUMBA_CACHE_DIR", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", code, ct, dt],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tempfile.gettempdir(),  # not the repository root: ``tree`` decides which fastem
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def cold(ct: str, dt: str, threads: int, tree: Path, code: str = CHILD) -> dict:
    """A first fit with a new, empty cache folder."""
    folder = tempfile.mkdtemp(prefix="fastem-cold-")
    try:
        return run_child(ct, dt, folder, threads, tree, code)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--covariance", nargs="+", default=["full", "diag", "tied", "spherical"])
    parser.add_argument("--dtype", nargs="+", default=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ref", metavar="COMMIT", help="also run COMMIT, interleaved")
    parser.add_argument("--cold-only", action="store_true", help="no warm-cache runs")
    parser.add_argument(
        "--no-floor", action="store_true", help="no numba-floor row (import + a trivial call)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="compile time per function (cold, 1 thread)"
    )
    parser.add_argument("--top", type=int, default=12, help="--profile: functions listed")
    args = parser.parse_args(argv)
    trees = {"": ROOT}
    if args.ref:
        ref_tree = Path(tempfile.mkdtemp(prefix="fastem-ref-")) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(ref_tree), args.ref],
            cwd=ROOT,
            check=True,
        )
        trees = {args.ref: ref_tree, "work": ROOT}
    try:
        (profile if args.profile else report)(args, trees)
    finally:
        if args.ref:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(ref_tree)], cwd=ROOT, check=False
            )
            shutil.rmtree(ref_tree.parent, ignore_errors=True)


def report(args, trees: dict) -> None:
    """Run the children (versions alternated within each repeat) and print the table."""
    print("first fit of a new process, 20000 x 4, K=3, max_iter=10 (median of", args.repeats, ")")
    print(
        f"{'covariance':10s} {'dtype':8s} {'version':>8s} | {'cold wall':>9s} {'cold cpu':>8s} | "
        f"{'warm wall':>9s} {'warm cpu':>8s} | {'fit alone':>9s} {'cpu':>6s} | "
        f"{'warm extra':>10s} {'cpu':>6s}"
    )
    if not args.no_floor:
        print_floor(*floor_rows(args.repeats))
    for ct in args.covariance:
        for dt in args.dtype:
            colds = {v: [] for v in trees}
            warms = {v: [] for v in trees}
            warm_dirs = {v: tempfile.mkdtemp(prefix="fastem-warm-") for v in trees}
            try:
                if not args.cold_only:
                    for v, tree in trees.items():  # fill the warm caches
                        run_child(ct, dt, warm_dirs[v], args.threads, tree)
                for _ in range(args.repeats):
                    for v, tree in trees.items():
                        colds[v].append(cold(ct, dt, args.threads, tree))
                        if not args.cold_only:
                            warms[v].append(run_child(ct, dt, warm_dirs[v], args.threads, tree))
            finally:
                for folder in warm_dirs.values():
                    shutil.rmtree(folder, ignore_errors=True)
            for v in trees:
                print_row(ct, dt, v, colds[v], warms[v])
            if len(trees) == 2:
                ref, new = (colds[v] for v in trees)
                ratios = sorted(b["cpu"] / a["cpu"] for a, b in zip(ref, new, strict=True))
                print(
                    f"{ct:10s} {dt:8s} cold cpu work/ref: median {statistics.median(ratios):.3f}"
                    f" (min {ratios[0]:.3f}, max {ratios[-1]:.3f})"
                )


def profile(args, trees: dict) -> None:
    """``--profile``: per version, the median over repeats of each function's compile time
    by step, the largest first, and the sums."""
    for ct in args.covariance:
        for dt in args.dtype:
            runs = {v: [] for v in trees}
            for _ in range(args.repeats):
                for v, tree in trees.items():
                    runs[v].append(cold(ct, dt, 1, tree, PROFILE))
            for v, rs in runs.items():
                names = set().union(*(r["rows"] for r in rs))

                def med(name, col, rs=rs):
                    return statistics.median(r["rows"].get(name, {}).get(col, 0.0) for r in rs)

                table = sorted(((med(n, "self"), n) for n in names), reverse=True)
                cpu = statistics.median(r["cpu"] for r in rs)
                print(
                    f"\n{ct} {dt} {v or 'work'}: first fit CPU {cpu:.2f} s, compiling "
                    f"{sum(t for t, _ in table):.2f} s (thread CPU; median of {len(rs)})"
                )
                print(f"{'function':34s} {'n':>2s} " + " ".join(f"{c:>7s}" for c in COLUMNS))
                for _, n in table[: args.top]:
                    print(
                        f"{n[:34]:34s} {int(med(n, 'n')):2d} "
                        + " ".join(f"{med(n, c):7.3f}" for c in COLUMNS)
                    )
                rest = table[args.top :]
                if rest:
                    label = f"({len(rest)} more)"
                    print(f"{label:34s}    {sum(t for t, _ in rest):7.3f}")
                print(
                    f"{'sum':34s}    "
                    + " ".join(f"{sum(med(n, c) for n in names):7.3f}" for c in COLUMNS)
                )
                passes = set().union(*(r.get("passes", {}) for r in rs))
                totals = sorted(
                    ((statistics.median(r["passes"].get(p, 0.0) for r in rs), p) for p in passes),
                    reverse=True,
                )
                print(
                    "Numba passes, summed over functions (native_lowering includes LLVM):",
                    ", ".join(f"{p} {t:.3f}" for t, p in totals if t >= 0.005),
                )


def print_floor(cold_rows: list, warm_rows: list) -> None:
    """The numba floor's row (its whole run is start-up: "warm extra" is the warm run) and
    its split into ``import numba`` and the first call."""

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    print(
        f"{'numba floor':19s} {'':>8s} | {med(cold_rows, 'wall'):9.2f} "
        f"{med(cold_rows, 'cpu'):8.2f} | {med(warm_rows, 'wall'):9.3f} "
        f"{med(warm_rows, 'cpu'):8.3f} | {'':9s} {'':6s} | "
        f"{med(warm_rows, 'wall'):10.3f} {med(warm_rows, 'cpu'):6.3f}"
    )
    print(
        f"  (import numba {med(warm_rows, 'import_cpu'):.3f} s CPU; first call: compile "
        f"{med(cold_rows, 'call_cpu'):.3f} s cold, cache load {med(warm_rows, 'call_cpu'):.3f}"
        " s warm)"
    )


def print_row(ct: str, dt: str, version: str, cold_rows: list, warm_rows: list) -> None:
    def med(rows, key):
        return statistics.median(r[key] for r in rows) if rows else float("nan")

    if warm_rows:
        extra = statistics.median(r["wall"] - r["wall2"] for r in warm_rows)
        extra_cpu = statistics.median(r["cpu"] - r["cpu2"] for r in warm_rows)
    else:
        extra = extra_cpu = float("nan")
    print(
        f"{ct:10s} {dt:8s} {version[:8]:>8s} | {med(cold_rows, 'wall'):9.2f} "
        f"{med(cold_rows, 'cpu'):8.2f} | {med(warm_rows, 'wall'):9.3f} "
        f"{med(warm_rows, 'cpu'):8.3f} | {med(warm_rows, 'wall2'):9.3f} "
        f"{med(warm_rows, 'cpu2'):6.3f} | {extra:10.3f} {extra_cpu:6.3f}"
    )


if __name__ == "__main__":
    main()
