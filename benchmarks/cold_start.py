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


def run_child(ct: str, dt: str, cache: str, threads: int) -> dict:
    env = dict(os.environ, FASTEM_CACHE_DIR=cache, NUMBA_NUM_THREADS=str(threads))
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, ct, dt], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--covariance", nargs="+", default=["full", "diag", "tied", "spherical"])
    parser.add_argument("--dtype", nargs="+", default=["float64", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print("first fit of a new process, 20000 x 4, K=3, max_iter=10 (median of", args.repeats, ")")
    print(
        f"{'covariance':10s} {'dtype':8s} | {'cold wall':>9s} {'cold cpu':>8s} | "
        f"{'warm wall':>9s} {'warm cpu':>8s} | {'fit alone':>9s} {'cpu':>6s} | "
        f"{'warm extra':>10s} {'cpu':>6s}"
    )
    for ct in args.covariance:
        for dt in args.dtype:
            cold, warm = [], []
            warm_dir = tempfile.mkdtemp(prefix="fastem-warm-")
            try:
                run_child(ct, dt, warm_dir, args.threads)  # fills the warm cache
                for _ in range(args.repeats):
                    cold_dir = tempfile.mkdtemp(prefix="fastem-cold-")
                    try:
                        cold.append(run_child(ct, dt, cold_dir, args.threads))
                    finally:
                        shutil.rmtree(cold_dir, ignore_errors=True)
                    warm.append(run_child(ct, dt, warm_dir, args.threads))
            finally:
                shutil.rmtree(warm_dir, ignore_errors=True)

            def med(rows, key):
                return statistics.median(r[key] for r in rows)

            extra = statistics.median(r["wall"] - r["wall2"] for r in warm)
            extra_cpu = statistics.median(r["cpu"] - r["cpu2"] for r in warm)
            print(
                f"{ct:10s} {dt:8s} | {med(cold, 'wall'):9.2f} {med(cold, 'cpu'):8.2f} | "
                f"{med(warm, 'wall'):9.3f} {med(warm, 'cpu'):8.3f} | "
                f"{med(warm, 'wall2'):9.3f} {med(warm, 'cpu2'):6.3f} | "
                f"{extra:10.3f} {extra_cpu:6.3f}"
            )


if __name__ == "__main__":
    main()
