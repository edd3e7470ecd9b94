"""Seconds per EM iteration with 10% of entries missing vs complete data.

Two measurements on a standard workload (default W2), each interleaved between
the complete data and the same data with a fraction of entries set to NaN
completely at random, medians over repeats, and their ratio (what compares
across noisy machines):

* ``pass``: one ``fastem._passes.em_stats`` call (the missing-data kernel,
  patterns found once beforehand, as a fit does);
* ``fit``: seconds per iteration as BENCHMARKS.md defines them, a fit with
  ``max_iter=n1`` minus one with ``max_iter=n0`` from the same initial
  parameters with ``tol=0``, divided by ``n1 - n0`` (pattern finding, set-up
  and validation cancel out; M-steps and the per-iteration parameter set-up
  count).

For a tied workload (W5) it also times, in the same interleaved loop, the pass
over the rows with NaN through the full-covariance missing kernel given k
copies of the shared factor (``pass missing full``: the path tied took before
its own kernel), and with ``--sklearn`` scikit-learn's seconds per iteration
on the complete data from the same parameters (scikit-learn cannot take NaN:
the missing-data figures compare against its complete-data iteration).
``--threads`` pins the backend's threads (and BLAS to the same number).
``--clock cpu`` times with the process's CPU time instead of the wall clock:
with ``--threads 1`` it is what a shared, loaded machine can measure (its
wall times spread 2-3x within one run).

    python benchmarks/missing_ratio.py [--workload W2] [--frac 0.1] [--repeats 5] [--iters 0]
        [--n0 2] [--n1 7] [--backend numba] [--threads N] [--sklearn] [--clock wall]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings

import numpy as np

from fastem import GaussianMixture
from fastem._covariance import precision_cholesky_from_precisions, precisions_from_cholesky
from fastem._missing import find_patterns
from fastem._passes import PassParams, em_stats
from fastem._threads import limit_threads
from fastem.backends import get_backend
from fastem.datasets import make_workload


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="W2")
    ap.add_argument("--frac", type=float, default=0.1, help="fraction of entries missing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backend", default="numba")
    ap.add_argument("--dtype", default="float64")
    ap.add_argument("--n0", type=int, default=2)
    ap.add_argument("--n1", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="backend (and BLAS) threads")
    ap.add_argument("--sklearn", action="store_true", help="also scikit-learn, complete data")
    ap.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall: time.perf_counter; cpu: time.process_time (all threads of the process)",
    )  # fmt: skip
    ap.add_argument(
        "--iters", type=int, default=0,
        help="EM iterations on the complete data before timing (0: the initial parameters)",
    )  # fmt: skip
    args = ap.parse_args()
    limiter = None
    if args.sklearn:
        import sklearn.mixture  # noqa: F401  (its BLAS must be loaded before the limit)
    if args.threads is not None:
        try:
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(args.threads)  # kept: the limit holds while it lives
        except ImportError:
            pass
    with limit_threads(args.backend, args.threads):
        run(args)
    del limiter


def run(args) -> None:
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
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

    full_params = dataclasses.replace(params, tied_chol=None)

    def missing_full():  # tied through the full-covariance missing kernel (k copies)
        return em_stats(kernels, Xm, w, full_params, patterns)

    passes = [("pass complete", complete), ("pass missing", missing)]
    if cov == "tied":
        passes.append(("pass missing full", missing_full))

    start = {"weights_init": weights, "means_init": means,
             "precisions_init": precisions_from_cholesky(pc, cov)}  # fmt: skip

    def fit(data, max_iter):
        gm = GaussianMixture(
            init["n_components"], covariance_type=cov, max_iter=max_iter, tol=0.0,
            backend=args.backend, **start,
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm.fit(data)

    def sklearn_fit(data, max_iter):
        from sklearn.mixture import GaussianMixture as SkGaussianMixture

        gm = SkGaussianMixture(
            init["n_components"], covariance_type=cov, max_iter=max_iter, tol=0.0, **start
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm.fit(data)

    def per_iteration(data, fit_fn=fit):
        t0 = clock()
        fit_fn(data, args.n0)
        t1 = clock()
        fit_fn(data, args.n1)
        t2 = clock()
        return ((t2 - t1) - (t1 - t0)) / (args.n1 - args.n0)

    for _, fn in passes:  # compile / warm up
        fn()
    fit(X[:1000], 1)
    fit(Xm[:1000], 1)
    names = [name for name, _ in passes] + ["fit complete", "fit missing"]
    if args.sklearn:
        names.append("sklearn complete")
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name, fn in passes:
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
        times["fit complete"].append(per_iteration(X))
        times["fit missing"].append(per_iteration(Xm))
        if args.sklearn:
            times["sklearn complete"].append(per_iteration(X, sklearn_fit))
    med = {name: float(np.median(t)) for name, t in times.items()}
    print(
        f"{args.workload} {cov} {dtype.name} backend={args.backend} threads={args.threads}: "
        f"{patterns.n_patterns} patterns, {patterns.rows.shape[0]} rows, "
        f"{patterns.n_missing / X.size:.1%} missing; {args.clock} clock, medians of {args.repeats}"
    )
    for name in times:
        print(f"  {name:14s} {med[name] * 1e3:8.2f} ms  (all: "
              + ", ".join(f"{t * 1e3:.1f}" for t in times[name]) + ")")  # fmt: skip
    for kind in ("pass", "fit"):
        ratio = med[f"{kind} missing"] / med[f"{kind} complete"]
        print(f"  ratio missing/complete per {kind:4s}: {ratio:.2f}")
    if "pass missing full" in med:
        ratio = med["pass missing full"] / med["pass missing"]
        print(f"  speed-up of the tied missing kernel over the full path per pass: {ratio:.2f}")
    if args.sklearn:
        for kind in ("complete", "missing"):
            ratio = med["sklearn complete"] / med[f"fit {kind}"]
            print(f"  scikit-learn complete / fastem {kind:8s} per iteration: {ratio:.1f}x")


if __name__ == "__main__":
    main()
