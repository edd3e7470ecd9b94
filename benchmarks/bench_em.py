"""asv benchmarks: EM iteration speed, whole fits, prediction, memory, cold start.

Sizes: CI-sized by default (the standard workloads cut to 20,000 rows);
``FASTEM_BENCH_FULL=1`` runs the full W1-W5 of the project's BENCHMARKS.md.
Threads: pinned to ``FASTEM_BENCH_THREADS`` (default 2) for Numba and OpenMP,
BLAS to 1 (fastem's kernels do not call BLAS), so results compare between runs.
"""

from __future__ import annotations

import os
import time
import warnings

import numpy as np

from fastem import GaussianMixture
from fastem.backends import available_backends, get_backend
from fastem.datasets import make_workload

FULL = os.environ.get("FASTEM_BENCH_FULL", "") == "1"
THREADS = int(os.environ.get("FASTEM_BENCH_THREADS", "2"))
QUICK_ROWS = 20_000
WORKLOADS = ["W1", "W2", "W3", "W4", "W5"]
# The NumPy reference is affordable only on the CI-sized data.
BACKENDS = [b for b in ("numba", "cython") if b in available_backends()] + (
    [] if FULL else ["numpy"]
)
# The NumPy reference's tied missing-data path loops over ~10k missingness patterns in
# Python (about 7 s a pass at 20,000 rows): the compiled backends only.
COMPILED_BACKENDS = [b for b in BACKENDS if b != "numpy"]
N0, N1 = 2, 7  # seconds per iteration = (t(N1) - t(N0)) / (N1 - N0)


def pin_threads(n: int = THREADS) -> None:
    """Pin every thread pool the fit could use."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    if "numba" in available_backends():
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if "cython" in available_backends():
        get_backend("cython").set_num_threads(n)


def workload(name: str, dtype=np.float64) -> tuple[np.ndarray, dict]:
    X, init = make_workload(name, dtype=dtype)
    if not FULL:
        X = np.ascontiguousarray(X[:QUICK_ROWS])
    return X, init


def fit_from_init(X, init, backend, max_iter):
    gm = GaussianMixture(backend=backend, max_iter=max_iter, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return gm.fit(X)


def seconds_per_iteration(X, init, backend, repeats=3) -> float:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fit_from_init(X, init, backend, N0)
        t1 = time.perf_counter()
        fit_from_init(X, init, backend, N1)
        t2 = time.perf_counter()
        samples.append(((t2 - t1) - (t1 - t0)) / (N1 - N0))
    return float(np.median(samples))


class EMIteration:
    """EM iterations on the standard workloads, from the standard initial parameters."""

    params = (BACKENDS, WORKLOADS)
    param_names = ("backend", "workload")
    timeout = 600

    def setup(self, backend, name):
        pin_threads()
        self.X, self.init = workload(name)
        fit_from_init(self.X[:1000], self.init, backend, 1)  # compile / warm caches

    def time_five_iterations(self, backend, name):
        fit_from_init(self.X, self.init, backend, 5)

    def track_seconds_per_iteration(self, backend, name):
        return seconds_per_iteration(self.X, self.init, backend)

    track_seconds_per_iteration.unit = "seconds"

    def track_average_loglik_after_20_iterations(self, backend, name):
        return fit_from_init(self.X, self.init, backend, 20).lower_bound_

    track_average_loglik_after_20_iterations.unit = "nats per row"


class EMIterationMissing:
    """EM iterations on W2 and W3 with 10% of entries missing completely at random,
    and the ratio to the complete-data iteration on the same data (issue #5: at most 3)."""

    params = (BACKENDS, ["W2", "W3"])
    param_names = ("backend", "workload")
    timeout = 900

    def setup(self, backend, name):
        pin_threads()
        self.X, self.init = workload(name)
        mask = np.random.default_rng(0).random(self.X.shape) < 0.10
        self.X_missing = self.X.copy()
        self.X_missing[mask] = np.nan
        fit_from_init(self.X_missing[:1000], self.init, backend, 1)  # compile / warm caches

    def track_seconds_per_iteration(self, backend, name):
        return seconds_per_iteration(self.X_missing, self.init, backend)

    track_seconds_per_iteration.unit = "seconds"

    def track_ratio_to_complete_data(self, backend, name):
        missing = seconds_per_iteration(self.X_missing, self.init, backend)
        complete = seconds_per_iteration(self.X, self.init, backend)
        return missing / complete

    track_ratio_to_complete_data.unit = "ratio"


class EMIterationTiedMissing:
    """W5 (tied) with 20% of entries missing completely at random (issue #13):
    seconds per iteration, the ratio to the complete-data iteration, and one
    pass of the tied missing-data kernel against the full-covariance missing
    kernel given k copies of the shared factor (the path tied took before)."""

    params = (COMPILED_BACKENDS,)
    param_names = ("backend",)
    timeout = 900
    frac = 0.20

    def setup(self, backend):
        from fastem._covariance import precision_cholesky_from_precisions
        from fastem._missing import find_patterns
        from fastem._passes import PassParams

        pin_threads()
        self.X, self.init = workload("W5")
        mask = np.random.default_rng(0).random(self.X.shape) < self.frac
        self.X_missing = self.X.copy()
        self.X_missing[mask] = np.nan
        init = self.init
        pc = precision_cholesky_from_precisions(init["precisions_init"], "tied")
        self.params = PassParams.from_model(
            init["weights_init"], init["means_init"], pc, "tied", self.X.dtype
        )
        self.patterns = find_patterns(self.X_missing)
        self.kernels = get_backend(backend)
        fit_from_init(self.X_missing[:1000], self.init, backend, 1)  # compile / warm caches
        self._pass(tied=True)
        self._pass(tied=False)

    def _pass(self, tied):
        import dataclasses

        from fastem._passes import em_stats

        params = self.params if tied else dataclasses.replace(self.params, tied_chol=None)
        w = np.ones(self.X.shape[0])
        return em_stats(self.kernels, self.X_missing, w, params, self.patterns)

    def track_seconds_per_iteration(self, backend):
        return seconds_per_iteration(self.X_missing, self.init, backend)

    track_seconds_per_iteration.unit = "seconds"

    def track_ratio_to_complete_data(self, backend):
        missing = seconds_per_iteration(self.X_missing, self.init, backend)
        complete = seconds_per_iteration(self.X, self.init, backend)
        return missing / complete

    track_ratio_to_complete_data.unit = "ratio"

    def track_speedup_over_full_missing_pass(self, backend):
        times = {True: [], False: []}
        for _ in range(3):
            for tied in (True, False):
                t0 = time.perf_counter()
                self._pass(tied)
                times[tied].append(time.perf_counter() - t0)
        return float(np.median(times[False]) / np.median(times[True]))

    track_speedup_over_full_missing_pass.unit = "ratio"


class EMIterationFloat32:
    """float32 fitting (W2)."""

    params = (BACKENDS,)
    param_names = ("backend",)
    timeout = 600

    def setup(self, backend):
        pin_threads()
        self.X, self.init = workload("W2", dtype=np.float32)
        fit_from_init(self.X[:1000], self.init, backend, 1)

    def time_five_iterations(self, backend):
        fit_from_init(self.X, self.init, backend, 5)

    def track_seconds_per_iteration(self, backend):
        return seconds_per_iteration(self.X, self.init, backend)

    track_seconds_per_iteration.unit = "seconds"


class WholeFit:
    """A whole fit with the default initialization (k-means) and three restarts."""

    params = (BACKENDS,)
    param_names = ("backend",)
    timeout = 900

    def setup(self, backend):
        pin_threads()
        self.X, self.init = workload("W2")
        self.k = self.init["n_components"]
        GaussianMixture(self.k, backend=backend, max_iter=1).fit(self.X[:2000])

    def _fit(self, backend):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return GaussianMixture(self.k, n_init=3, random_state=0, backend=backend).fit(self.X)

    def time_fit_kmeans_init_n_init_3(self, backend):
        self._fit(backend)

    def track_average_loglik(self, backend):
        return self._fit(backend).lower_bound_

    track_average_loglik.unit = "nats per row"


class PredictProba:
    """Responsibilities of new rows under a fitted model (W2)."""

    params = (BACKENDS,)
    param_names = ("backend",)

    def setup(self, backend):
        pin_threads()
        self.X, init = workload("W2")
        self.model = fit_from_init(self.X, init, backend, 3)
        self.model.predict_proba(self.X[:100])

    def time_predict_proba(self, backend):
        self.model.predict_proba(self.X)

    def track_rows_per_second(self, backend):
        t0 = time.perf_counter()
        self.model.predict_proba(self.X)
        return self.X.shape[0] / (time.perf_counter() - t0)

    track_rows_per_second.unit = "rows/s"


class FitMemory:
    """Peak memory of a W2 fit; subtract peakmem_reference (the same set-up, no fit).

    The data are generated once (``setup_cache``, another process) and loaded
    from disk, so the set-up peaks at the imports plus X: generating X in
    ``setup`` would peak above the fit and hide it.
    """

    params = (BACKENDS,)
    param_names = ("backend",)
    timeout = 600

    def setup_cache(self):
        X, init = workload("W2")
        path = os.path.abspath("fit_memory_w2.npy")
        np.save(path, X)
        return path, init

    def setup(self, cache, backend):
        path, self.init = cache
        pin_threads()
        self.X = np.load(path)
        fit_from_init(self.X[:1000], self.init, backend, 1)

    def peakmem_fit_w2(self, cache, backend):
        fit_from_init(self.X, self.init, backend, 5)

    def peakmem_reference(self, cache, backend):
        pass


# The first fit of a new process (empty and warm compiled-kernel cache) is timed by
# bench_startup.FirstFit. (The ColdStart benchmark that was here filled its warm cache in
# the timed process itself, so its "warm" fit ran on kernels already loaded.)
