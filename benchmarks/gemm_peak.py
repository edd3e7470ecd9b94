"""Full-covariance passes as a fraction of the machine's GEMM peak, measured in one run.

The limit of a full-covariance EM pass is about ``2 N K D^2`` flops (the triangular
Mahalanobis products plus the symmetric second moments, issue #13). This script times, in
one interleaved loop so that load on the machine hits every figure alike:

* NumPy's GEMM (``n x n`` by ``n x n``, float64 and float32) under a BLAS thread cap of
  1 and of 2 threads: the peak, in GFLOP/s (median over the repeats);
* one fused E+M pass (the whole per-iteration kernel cost) of the numba and the cython
  backend on W2 and W4 (``BENCHMARKS.md``), each dtype, each thread count.

It prints seconds per pass, the flop rate ``2 N K D^2 / t``, its fraction of the GEMM peak
at the same dtype and thread count, the float32/float64 speed ratio and cython/numba.

    python benchmarks/gemm_peak.py --workloads W2 W4 --threads 1 2 --repeats 5
    python benchmarks/gemm_peak.py --threads 1 --clock cpu   # on a loaded machine
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kernel_ab  # noqa: E402
from kernel_ab import one_pass, pass_args  # noqa: E402


def gemm_seconds(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> float:
    """Seconds (of ``kernel_ab.CLOCK``) of one ``np.dot(a, b, out=out)``."""
    t = kernel_ab.CLOCK()
    np.dot(a, b, out=out)
    return kernel_ab.CLOCK() - t


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=["W2", "W4"])
    parser.add_argument("--backends", nargs="+", default=["numba", "cython"])
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="cpu: process CPU time (steadier on a loaded machine; use with --threads 1)",
    )
    args = parser.parse_args(argv)
    kernel_ab.CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    from threadpoolctl import threadpool_limits

    from fastem._threads import limit_threads
    from fastem.backends import get_backend

    mods = {b: get_backend(b) for b in args.backends}
    rng = np.random.default_rng(0)
    m = args.gemm_size
    mats = {}
    for dt in args.dtypes:
        a = rng.standard_normal((m, m)).astype(dt)
        mats[dt] = (a, a.T.copy(), np.empty((m, m), dtype=dt))
    data = {}
    for w in args.workloads:
        for dt in args.dtypes:
            data[w, dt] = pass_args(w, np.dtype(dt))
    for a in data.values():  # compile / warm every kernel
        for mod in mods.values():
            one_pass(mod, *a)

    t_gemm = {(dt, nt): [] for dt in args.dtypes for nt in args.threads}
    t_pass = {
        (w, dt, b, nt): []
        for w in args.workloads
        for dt in args.dtypes
        for b in args.backends
        for nt in args.threads
    }
    for r in range(args.repeats):
        for nt in args.threads:
            with threadpool_limits(nt):
                for dt in args.dtypes:
                    t_gemm[dt, nt].append(gemm_seconds(*mats[dt]))
            with threadpool_limits(1):  # the kernels call no BLAS; keep it quiet anyway
                for (w, dt), a in data.items():
                    order = args.backends if r % 2 == 0 else args.backends[::-1]
                    for b in order:
                        with limit_threads(b, nt):
                            t_pass[w, dt, b, nt].append(one_pass(mods[b], *a))

    print(f"repeats={args.repeats} gemm={m}x{m} clock={args.clock} (medians)")
    peak = {}
    for (dt, nt), ts in t_gemm.items():
        peak[dt, nt] = 2 * m**3 / np.median(ts) / 1e9
        print(f"GEMM peak {dt:8s} threads={nt}: {peak[dt, nt]:7.1f} GFLOP/s")
    print()
    print("workload dtype    backend threads  s/pass    GFLOP/s  of-peak  limit s")
    med = {key: float(np.median(ts)) for key, ts in t_pass.items()}
    for (w, dt, b, nt), t in med.items():
        X, _, _, _, k, d = data[w, dt]
        flops = 2.0 * X.shape[0] * k * d * d
        rate = flops / t / 1e9
        limit = flops / (peak[dt, nt] * 1e9)
        print(
            f"{w:8s} {dt:8s} {b:7s} {nt:7d}  {t:8.5f}  {rate:7.1f}  {rate / peak[dt, nt]:6.1%}"
            f"  {limit:7.4f}"
        )
    print()
    if "float32" in args.dtypes and "float64" in args.dtypes:
        for w in args.workloads:
            for b in args.backends:
                for nt in args.threads:
                    ratio = med[w, "float64", b, nt] / med[w, "float32", b, nt]
                    paired = np.median(
                        np.divide(t_pass[w, "float64", b, nt], t_pass[w, "float32", b, nt])
                    )
                    print(
                        f"float32 speed / float64 speed  {w} {b} threads={nt}: {ratio:.2f}"
                        f" (median of paired ratios {paired:.2f})"
                    )
    if "numba" in args.backends and "cython" in args.backends:
        for w in args.workloads:
            for dt in args.dtypes:
                for nt in args.threads:
                    ratio = med[w, dt, "cython", nt] / med[w, dt, "numba", nt]
                    print(f"cython time / numba time  {w} {dt} threads={nt}: {ratio:.2f}")


if __name__ == "__main__":
    main()
