"""Seconds per EM pass with 10% of entries missing vs the complete-data pass.

Runs ``fastem._passes.em_stats`` on a standard workload (default W2) twice per
repeat, interleaved: on the complete data (complete-data kernel) and on the same
data with a fraction of entries set to NaN completely at random (missing-data
kernel, patterns precomputed with ``fastem._missing.find_patterns``). Prints the
median of each and their ratio, which is what compares across noisy machines.

    python benchmarks/missing_ratio.py [--workload W2] [--frac 0.1] [--repeats 5] [--iters 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fastem import GaussianMixture
from fastem._covariance import precision_cholesky_from_precisions
from fastem._missing import find_patterns
from fastem._passes import PassParams, em_stats
from fastem.backends import get_backend
from fastem.datasets import make_workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="W2")
    ap.add_argument("--frac", type=float, default=0.1, help="fraction of entries missing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument(
        "--iters", type=int, default=0,
        help="EM iterations on the complete data before timing (0: the initial parameters)",
    )  # fmt: skip
    args = ap.parse_args()

    dtype = np.dtype(args.dtype)
    kernels = get_backend(args.backend)
    X, init = make_workload(args.workload, dtype=dtype)
    cov = init["covariance_type"]
    if args.iters:
        gm = GaussianMixture(max_iter=args.iters, tol=0.0, backend=args.backend, **init).fit(X)
        weights, means, pc = gm.weights_, gm.means_, gm.precisions_cholesky_
    else:
        weights, means = init["weights_init"], init["means_init"]
        pc = precision_cholesky_from_precisions(init["precisions_init"], cov)
    params = PassParams.from_model(weights, means, pc, cov, dtype)
    rng = np.random.default_rng(0)
    Xm = X.copy()
    Xm[rng.random(X.shape) < args.frac] = np.nan
    patterns = find_patterns(Xm)
    w = np.ones(X.shape[0])

    def complete():
        return em_stats(kernels, X, w, params, check_nan=False)

    def missing():
        return em_stats(kernels, Xm, w, params, patterns)

    complete()  # compile / warm up
    missing()
    times: dict[str, list[float]] = {"complete": [], "missing": []}
    for _ in range(args.repeats):
        for name, fn in (("complete", complete), ("missing", missing)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {name: float(np.median(t)) for name, t in times.items()}
    print(
        f"{args.workload} {cov} {dtype.name} backend={args.backend}: "
        f"{patterns.n_patterns} patterns, {patterns.rows.shape[0]} rows, "
        f"{patterns.n_missing / X.size:.1%} missing"
    )
    for name in ("complete", "missing"):
        print(f"  {name:8s} median {med[name] * 1e3:8.2f} ms  (all: "
              + ", ".join(f"{t * 1e3:.1f}" for t in times[name]) + ")")  # fmt: skip
    print(f"  ratio missing/complete: {med['missing'] / med['complete']:.2f}")


if __name__ == "__main__":
    main()
