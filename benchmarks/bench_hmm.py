"""asv benchmarks of fastem.hmm: Baum-Welch iteration speed and memory.

Workloads (../shared/BENCHMARKS.md): HB1 (Gaussian diag, D=10, K=20, 50 x 200),
HB2 (Gaussian diag, D=1, K=10, 50 x 100), HB4 (GMMHMM 8 states x 4 diag
components, D=13, 500 x 200) and LONGFULL (Gaussian full, D=8, K=8, one
sequence of 20,000 frames), the data and initial parameters of
``benchmarks/hmm_peers.py``. Seconds per iteration are the difference of two
fits from the same given parameters (n_iter=N1 minus n_iter=N0, no early
stopping), so initialization and set-up cancel out. Threads: pinned to
``FASTEM_BENCH_THREADS`` (default 2), BLAS to 1, as in ``bench_em.py``.
The ratios to hmmlearn are measured by ``benchmarks/hmm_peers.py`` (hmmlearn is
not an asv dependency).
"""

from __future__ import annotations

import os
import time

import numpy as np

from fastem.hmm import available_hmm_backends

try:  # asv imports the benchmark folder as a package; a plain run imports the file
    from .bench_em import pin_threads
    from .hmm_peers import WORKLOADS, make_data, serial_times
except ImportError:  # pragma: no cover
    from bench_em import pin_threads
    from hmm_peers import WORKLOADS, make_data, serial_times

N0, N1 = 2, 6
BACKENDS = available_hmm_backends()  # numba (where it imports), numpy
NAMES = ["HB1", "HB2", "HB4", "LONGFULL"]


def _model(name: str, backend: str, n_iter: int, **extra):
    from fastem.hmm import GMMHMM, GaussianHMM

    cov_type, D, K, S, T, n_mix = WORKLOADS[name]
    common = dict(covariance_type=cov_type, init_params="", tol=-np.inf, n_iter=n_iter)
    common.update(backend=backend, **extra)
    if n_mix is None:
        return GaussianHMM(K, **common)
    return GMMHMM(K, n_mix=n_mix, **common)


def _fit(name, backend, X, lengths, init, n_iter, **extra):
    model = _model(name, backend, n_iter, **extra)
    for attr, value in init.items():
        setattr(model, attr, np.array(value, copy=True))
    return model.fit(X, lengths)


def _data(name):
    cov_type, D, K, S, T, n_mix = WORKLOADS[name]
    return make_data(cov_type, D, K, S, T, n_mix)


def _warm(name, backend, X, init):
    """Compile (or load from the cache) both paths before timing: one sequence
    (the separate kernels) and 40 short ones (the fused diagonal E-step, which
    takes 8 or more batches of sequences)."""
    _fit(name, backend, X[:400], [400], init, 1)
    _fit(name, backend, X[:400], [10] * 40, init, 1)


class HMMIteration:
    """Baum-Welch iterations on HB1, HB2, HB4 and one long full-covariance sequence."""

    params = (BACKENDS, NAMES)
    param_names = ("backend", "workload")
    timeout = 900

    def setup(self, backend, name):
        if backend == "numpy" and name in ("HB4", "LONGFULL"):
            raise NotImplementedError  # the NumPy reference is minutes per run there
        pin_threads()
        self.X, self.lengths, self.init = _data(name)
        _warm(name, backend, self.X, self.init)

    def time_five_iterations(self, backend, name):
        _fit(name, backend, self.X, self.lengths, self.init, 5)

    def track_seconds_per_iteration(self, backend, name):
        samples = []
        for _ in range(3):
            t0 = time.perf_counter()
            _fit(name, backend, self.X, self.lengths, self.init, N0)
            t1 = time.perf_counter()
            _fit(name, backend, self.X, self.lengths, self.init, N1)
            t2 = time.perf_counter()
            samples.append(((t2 - t1) - (t1 - t0)) / (N1 - N0))
        return float(np.median(samples))

    track_seconds_per_iteration.unit = "seconds"

    def track_loglik_after_5_iterations(self, backend, name):
        """Guards the speed figures: a faster kernel must give the same model."""
        model = _fit(name, backend, self.X, self.lengths, self.init, 5)
        return float(model.monitor_.history[-1]) / self.X.shape[0]

    track_loglik_after_5_iterations.unit = "nats per frame"


class HMMSerialPart:
    """The serial part of a Baum-Welch iteration on HB1 and HB2 (Numba): CPU time
    of the calling thread outside the thread pool's passes (Python, the M-step,
    kernels small enough to run inline, reductions), which bounds the 2-thread
    wall time from below; and the number of pool passes per iteration."""

    params = (NAMES[:2],)
    param_names = ("workload",)
    timeout = 900

    def setup(self, name):
        if "numba" not in BACKENDS:
            raise NotImplementedError
        pin_threads()
        self.X, self.lengths, self.init = _data(name)
        _warm(name, "numba", self.X, self.init)

    def _times(self, name):
        def make(n):
            return _model(name, "numba", n)

        return serial_times(make, self.X, self.lengths, self.init, N0, N1, 3, None)

    def track_serial_cpu_per_iteration(self, name):
        return float(self._times(name)[0])

    track_serial_cpu_per_iteration.unit = "seconds"

    def track_pool_passes_per_iteration(self, name):
        return float(self._times(name)[3])

    track_pool_passes_per_iteration.unit = "passes"


class HMMAcceleratedFit:
    """A whole fit on HB2 (hmmlearn's rule, tol=1e-3, at most 300 passes), plain and
    accelerated: seconds, passes and the log-likelihood reached."""

    params = ([None, "squarem", "anderson"],)
    param_names = ("acceleration",)
    timeout = 900

    def setup(self, acceleration):
        pin_threads()
        self.X, self.lengths, self.init = _data("HB2")
        _warm("HB2", BACKENDS[0], self.X, self.init)

    def _whole_fit(self, acceleration):
        return _fit("HB2", BACKENDS[0], self.X, self.lengths, self.init, 300, tol=1e-3,
                    acceleration=acceleration)  # fmt: skip

    def time_fit(self, acceleration):
        self._whole_fit(acceleration)

    def track_passes(self, acceleration):
        return self._whole_fit(acceleration).monitor_.iter

    track_passes.unit = "passes"

    def track_loglik(self, acceleration):
        return float(self._whole_fit(acceleration).monitor_.history[-1]) / self.X.shape[0]

    track_loglik.unit = "nats per frame"


class HMMFitMemory:
    """Peak memory of an HB4 fit; subtract peakmem_reference (same set-up, no fit).

    Target: a fit's peak at most X + 32 MB. The data are generated once
    (``setup_cache``) and loaded from disk, so that the set-up's own peak does
    not hide the fit's.
    """

    params = (BACKENDS[:1],)
    param_names = ("backend",)
    timeout = 900

    def setup_cache(self):
        X, lengths, init = _data("HB4")
        path = os.path.abspath("hmm_fit_memory_hb4.npz")
        np.savez(path, X=X, lengths=lengths, **init)
        return path

    def setup(self, path, backend):
        pin_threads()
        with np.load(path) as saved:
            self.X = saved["X"]
            self.lengths = saved["lengths"]
            self.init = {k: saved[k] for k in saved.files if k not in ("X", "lengths")}
        _fit("HB4", backend, self.X[:400], [400], self.init, 1)

    def peakmem_fit_hb4(self, path, backend):
        _fit("HB4", backend, self.X, self.lengths, self.init, 2)

    def peakmem_reference(self, path, backend):
        pass

    def track_x_megabytes(self, path, backend):
        return self.X.nbytes / 2**20

    track_x_megabytes.unit = "MB"
