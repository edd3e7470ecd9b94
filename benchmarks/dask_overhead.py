"""Per-iteration cost of fitting on a Dask array, against the in-memory fit.

Seconds per EM iteration as defined in the project's BENCHMARKS.md: the time of
a fit with ``max_iter=n1`` minus the time of a fit with ``max_iter=n0``, divided
by ``n1 - n0``, both from the same given initial parameters with ``tol=0``, so
set-up (for Dask: persisting, validating) and initialization cancel out. Median
over repeats; the configurations are interleaved within each repeat, in an
order that rotates from repeat to repeat.

Configurations, on the same data (default W2, ``fastem.datasets.make_workload``)
and initial parameters:

* ``in-memory``: ``GaussianMixture.fit`` on the NumPy array (compiled backend,
  ``n_threads=cores``);
* ``dask-<w>w``: the same fit on a Dask array persisted on a
  ``distributed.LocalCluster`` of ``w`` worker processes with one thread each
  (for each ``w`` in ``--workers``, default 1 and 2), the array cut in
  ``--chunks-per-worker`` row chunks per worker (default 2). Each worker's
  kernels get ``cores // w`` threads (``n_threads``), so every configuration
  uses the machine's cores once.

The Dask overhead per iteration is the Dask configuration's time per iteration
minus the in-memory one (a ratio is printed too). Each cluster is warmed up
with one fit first (worker imports, Numba's cached kernels).

Usage::

    python benchmarks/dask_overhead.py                 # W2, n0=2, n1=12, 3 repeats
    python benchmarks/dask_overhead.py --workload W3 --workers 1,2,4 --repeats 5
    python benchmarks/dask_overhead.py --rows 20000    # a quick run on 20,000 rows
    python benchmarks/dask_overhead.py --rows 2000 --cores 1  # the latency floor

On shared, busy cores a kernel on 2 threads can wait milliseconds per parallel
region for a descheduled thread; ``--cores 1`` removes that noise from the
comparison (every configuration then runs its kernels on one thread per task).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from statistics import median

import numpy as np


def _fit(X, init, max_iter: int, n_threads: int | None, backend: str | None):
    from fastem import GaussianMixture

    gm = GaussianMixture(max_iter=max_iter, tol=0.0, n_threads=n_threads, backend=backend, **init)
    return gm.fit(X)


def seconds_per_iteration(X, init, n0: int, n1: int, n_threads, backend) -> tuple[float, float]:
    """One sample of (seconds per iteration, final lower bound)."""
    t0 = time.perf_counter()
    _fit(X, init, n0, n_threads, backend)
    t1 = time.perf_counter()
    gm = _fit(X, init, n1, n_threads, backend)
    t2 = time.perf_counter()
    return ((t2 - t1) - (t1 - t0)) / (n1 - n0), gm.lower_bound_


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="W2")
    parser.add_argument("--rows", type=int, default=None, help="use the first ROWS rows only")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--chunks-per-worker", type=int, default=2)
    parser.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="kernel threads of the in-memory fit; each of w workers gets cores // w",
    )
    parser.add_argument("--backend", default=None, help="fastem backend (default: automatic)")
    parser.add_argument("--n0", type=int, default=2)
    parser.add_argument("--n1", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import dask
    import dask.array as da
    import distributed

    import fastem
    from fastem.backends import resolve_backend_name
    from fastem.datasets import make_workload
    from fastem.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    X, init = make_workload(args.workload)
    if args.rows:
        X = np.ascontiguousarray(X[: args.rows])
    backend = resolve_backend_name(args.backend)
    worker_counts = [int(w) for w in args.workers.split(",")]
    print(
        f"# {args.workload}: X {X.shape} {X.dtype}, K={init['n_components']} "
        f"{init['covariance_type']}; backend {backend}; {args.cores} cores; "
        f"n0={args.n0} n1={args.n1}; median of {args.repeats}"
    )
    print(
        f"# fastem {fastem.__version__}, numpy {np.__version__}, dask {dask.__version__}, "
        f"distributed {distributed.__version__}"
    )

    # Every cluster stays up for the whole run, so the runs can be interleaved.
    configs: dict[str, dict] = {"in-memory": {"X": X, "client": None, "n_threads": args.cores}}
    clusters = []
    for w in worker_counts:
        cluster = distributed.LocalCluster(
            n_workers=w,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        client = distributed.Client(cluster, set_as_default=False)
        clusters.append((cluster, client))
        rows = -(-X.shape[0] // (w * args.chunks_per_worker))
        with client.as_current():
            # Scatter the chunks: the data lives on the workers, as it would in real use.
            blocks = client.scatter([X[a : a + rows] for a in range(0, X.shape[0], rows)])
            Xd = da.concatenate(
                [da.from_delayed(b, shape=(min(rows, X.shape[0] - i * rows), X.shape[1]),
                                 dtype=X.dtype) for i, b in enumerate(blocks)]
            )  # fmt: skip
            n_threads = max(1, args.cores // w)
            _fit(Xd, init, 1, n_threads, backend)  # warm-up: imports, cached kernels
        configs[f"dask-{w}w"] = {"X": Xd, "client": client, "n_threads": n_threads}
        print(f"# dask-{w}w: {w} worker process(es) x 1 thread, {Xd.numblocks[0]} chunks of "
              f"{rows} rows, n_threads={n_threads} per task")  # fmt: skip
    _fit(X[:2000], init, 1, args.cores, backend)  # warm-up of the in-memory path

    names = list(configs)
    samples: dict[str, list[float]] = {name: [] for name in names}
    bounds: dict[str, float] = {}
    try:
        for r in range(args.repeats):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                cfg = configs[name]
                if cfg["client"] is None:
                    s, lb = seconds_per_iteration(
                        cfg["X"], init, args.n0, args.n1, cfg["n_threads"], backend
                    )
                else:
                    with cfg["client"].as_current():
                        s, lb = seconds_per_iteration(
                            cfg["X"], init, args.n0, args.n1, cfg["n_threads"], backend
                        )
                samples[name].append(s)
                bounds[name] = lb
    finally:
        for cluster, client in clusters:
            client.close()
            cluster.close()

    base = median(samples["in-memory"])
    print()
    print("| configuration | s/iteration (median) | range | overhead s/iteration | ratio |"
          " lower bound |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for name in names:
        med = median(samples[name])
        lo, hi = min(samples[name]), max(samples[name])
        overhead = "" if name == "in-memory" else f"{med - base:+.4f}"
        print(
            f"| {name} | {med:.4f} | {lo:.4f}-{hi:.4f} | {overhead} | {med / base:.2f} | "
            f"{bounds[name]:.10f} |"
        )


if __name__ == "__main__":
    main()
