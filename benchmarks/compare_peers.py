"""Compare fastem's GaussianMixture with its peers on the standard workloads.

Measures seconds per EM iteration, as defined in the project's BENCHMARKS.md:
the time of a fit with ``max_iter=n1`` minus the time of a fit with
``max_iter=n0``, divided by ``n1 - n0``, both started from the same given
initial parameters with ``tol=0`` so that set-up and initialisation cancel.
Every implementation sees the same data and the same initial parameters
(``fastem.datasets.make_workload``), in one run, with the implementations
interleaved within each repeat (the order rotates from repeat to repeat).

Implementations
---------------
* fastem ``GaussianMixture(backend=name)`` for each requested backend that is
  available (``fastem.backends.available_backends()``); the ``numpy``
  reference backend is slow and runs only when named in ``--backends``;
* scikit-learn ``sklearn.mixture.GaussianMixture`` (required: the denominator
  of every ratio);
* Intel oneDAL's fused ``em_gmm`` through daal4py, pomegranate (>= 1.0) and
  mlpack's ``gmm_train``, each only if it imports (a note says why not
  otherwise). mlpack's Python binding cannot be handed initial parameters, so
  it starts from its own seeded k-means (the same in both fits, so its time
  per iteration is still a difference of like fits) and its log-likelihood is
  not from the same starting point.

scikit-learn runs twice by default, with its BLAS limited to 1 thread and to
``--threads``: on 2 shared cores OpenBLAS on 2 threads can be several times
slower than on 1 and very erratic (NumPy's and SciPy's OpenBLAS copies, and any
other process, busy-waiting against each other; see DESIGN.md), so the faster
of the two (by median) is the reference, which keeps the ratios conservative.
``--sklearn-threads 2`` runs only the 2-thread configuration.

The table gives, per workload and implementation, the median seconds per
iteration (with the range over repeats), the speed-up against the reference
scikit-learn (``sklearn_time / impl_time``, so > 1 means faster; the median
over repeats of the ratio within each repeat) and the final average
log-likelihood per sample of the ``n1``-iteration fit, computed here in float64
from each fitted model's weights, means and covariances with one NumPy formula
for all (mlpack's read with ``get_cpp_params``), with its difference from the
reference scikit-learn's. A header
states the machine (CPU model, cores, AVX-512), library versions and the
thread settings: BLAS/OpenMP pools limited with threadpoolctl to ``--threads``
(default: all usable cores), Numba, oneDAL and torch set to the same count.

``--memory`` instead measures the peak memory of one fit (default W2) for each
fastem backend, scikit-learn (reference) and daal4py if present. Each fit runs
in a fresh subprocess that loads X, warms up (a small fit, so JIT compilation
and thread pools are out of the way), records its resident set size, resets
the kernel's peak-RSS mark (``/proc/self/clear_refs``; falls back to sampling
RSS every 0.5 ms plus ``ru_maxrss`` where that is not allowed), fits, and
reports the peak RSS increase over the baseline, in MB and as a multiple of
``X.nbytes``. scikit-learn and the BLAS-bound numpy backend run there with the
smallest ``--sklearn-threads`` BLAS count (memory does not depend on it; on
busy shared cores their time on 2 BLAS threads can be 50-100x longer).

Usage
-----
::

    python benchmarks/compare_peers.py                       # W1-W5, 3 repeats
    python benchmarks/compare_peers.py --workloads W2 --repeats 5
    python benchmarks/compare_peers.py --backends numba,cython,numpy --dtype float32
    python benchmarks/compare_peers.py --quick               # n0=1, n1=4, 1 repeat
    python benchmarks/compare_peers.py --threads 1
    python benchmarks/compare_peers.py --memory              # peak RSS of a W2 fit
    python benchmarks/compare_peers.py --output peers.md --json peers.json

Options: ``--n0/--n1`` (default 2 and 12; ``--quick`` 1 and 4),
``--sklearn-threads`` (default ``1,<threads>``),
``--reg-covar`` (default 1e-6, scikit-learn's; oneDAL has no equivalent and
adds nothing to well-conditioned covariances), ``--no-peers`` (fastem and
scikit-learn only), ``--memory-workload``, ``--memory-iters``.
Timings on shared machines are noisy (BENCHMARKS.md): compare ratios taken in
one run, never absolute times across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from statistics import median

import numpy as np

WORKLOAD_NAMES = ("W1", "W2", "W3", "W4", "W5")
SKLEARN = "scikit-learn"
DEFAULT_BACKENDS = "numba,cython"

# --------------------------------------------------------------------------------------
# Warnings and threads
# --------------------------------------------------------------------------------------


def silence_convergence_warnings() -> None:
    """tol=0 fits always stop at max_iter: hide the resulting ConvergenceWarnings."""
    with contextlib.suppress(ImportError):
        from sklearn.exceptions import ConvergenceWarning

        warnings.simplefilter("ignore", ConvergenceWarning)
    with contextlib.suppress(ImportError):
        from fastem.exceptions import ConvergenceWarning as FastemConvergenceWarning

        warnings.simplefilter("ignore", FastemConvergenceWarning)
    warnings.filterwarnings("ignore", message=r".*(did not converge|not converge).*")


_THREAD_LIMITER = None  # keeps the threadpoolctl limit alive for the whole run


def apply_thread_limits(threads: int) -> list[str]:
    """Limit every thread pool we can reach to ``threads``; return what was set.

    Call after the implementations have been imported: threadpoolctl only sees
    libraries already loaded.
    """
    global _THREAD_LIMITER
    notes = []
    try:
        from threadpoolctl import threadpool_limits

        _THREAD_LIMITER = threadpool_limits(limits=threads)
        notes.append(f"threadpoolctl: BLAS and OpenMP pools limited to {threads}")
    except ImportError:
        notes.append("threadpoolctl not installed: BLAS/OpenMP pools NOT limited")
    with contextlib.suppress(Exception):
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        notes.append(f"numba: {numba.get_num_threads()} threads")
    if "daal4py" in sys.modules:
        with contextlib.suppress(Exception):
            d4p = sys.modules["daal4py"]
            d4p.daalinit(threads)
            notes.append(f"oneDAL (daal4py): {d4p.num_threads()} threads")
    if "torch" in sys.modules:
        with contextlib.suppress(Exception):
            torch = sys.modules["torch"]
            torch.set_num_threads(threads)
            notes.append(f"torch: {torch.get_num_threads()} threads")
    return notes


def start_numba_threads(threads: int) -> str:
    """Start Numba's thread pool (fixing its threading layer) before any peer is imported.

    Numba picks its layer (tbb, then omp, then workqueue) when its threads start
    (first parallel kernel or ``set_num_threads``). daal4py loads its own libtbb,
    after which Numba picks TBB where it otherwise runs on OpenMP: starting it
    first keeps fastem's numba backend on the layer it gets in ordinary use.
    """
    try:
        import numba

        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        return f"numba threads started before peers were imported: layer {numba.threading_layer()}"
    except Exception as exc:  # numba missing or broken: the numba backend is skipped anyway
        return f"numba not started ({type(exc).__name__}: {exc})"


def thread_report() -> list[str]:
    """The thread pools actually in use, and the environment that shapes them."""
    lines = []
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            lib = os.path.basename(pool.get("filepath", "?"))
            extra = pool.get("architecture") or pool.get("threading_layer") or ""
            lines.append(
                f"{pool.get('internal_api')} {pool.get('version') or ''} ({lib}"
                f"{', ' + extra if extra else ''}): {pool.get('num_threads')} threads"
            )
    except ImportError:
        pass
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        try:
            layer = numba.threading_layer()  # only known after a parallel kernel ran
        except ValueError:
            layer = f"not started yet (config {numba.config.THREADING_LAYER!r})"
        lines.append(f"numba {numba.__version__}: {numba.get_num_threads()} threads, layer {layer}")
    env = [
        f"{k}={os.environ[k]}"
        for k in (
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "NUMBA_NUM_THREADS",
            "OPENBLAS_CORETYPE",
            "FASTEM_BACKEND",
        )
        if k in os.environ
    ]
    lines.append("environment: " + (", ".join(env) if env else "no thread variables set"))
    return lines


# --------------------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def library_versions() -> list[str]:
    from importlib import metadata

    out = [f"python {platform.python_version()}"]
    for dist in (
        "numpy",
        "scipy",
        "numba",
        "scikit-learn",
        "fastem",
        "scikit-learn-intelex",
        "daal4py",
        "daal",
        "pomegranate",
        "torch",
        "mlpack",
        "threadpoolctl",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out.append(f"{dist} {metadata.version(dist)}")
    return out


def machine_header(threads: int, thread_notes: list[str]) -> list[str]:
    flags = cpu_flags()
    simd = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    return [
        f"- Machine: {cpu_model()}, {usable_cores()} usable cores "
        f"(os.cpu_count()={os.cpu_count()}), {simd}, {platform.system()} {platform.release()}",
        "- Libraries: " + ", ".join(library_versions()),
        f"- Threads: {threads} for every implementation; " + "; ".join(thread_notes),
        "- Thread pools: " + "; ".join(thread_report()),
    ]


# --------------------------------------------------------------------------------------
# Log-likelihood, computed one way for every implementation
# --------------------------------------------------------------------------------------


def average_log_likelihood(
    X: np.ndarray,
    weights: np.ndarray,
    means: np.ndarray,
    covariances: np.ndarray,
    covariance_type: str,
    block: int = 32768,
) -> float:
    """Mean over rows of log sum_k w_k N(x | mu_k, Sigma_k), in float64, blockwise."""
    weights = np.asarray(weights, dtype=np.float64).ravel()
    means = np.asarray(means, dtype=np.float64)
    covariances = np.asarray(covariances, dtype=np.float64)
    k, d = means.shape
    const = np.log(weights) - 0.5 * d * math.log(2.0 * math.pi)
    if covariance_type == "tied":  # one shared matrix: score it as k equal full ones
        covariances = np.broadcast_to(covariances.reshape(d, d), (k, d, d))
        covariance_type = "full"
    if covariance_type == "full":
        prec_chol = np.empty((k, d, d))
        for j in range(k):
            lower = np.linalg.cholesky(covariances[j])
            prec_chol[j] = np.linalg.inv(lower).T  # upper: Sigma^-1 = P P^T
            const[j] -= np.log(np.diag(lower)).sum()
    elif covariance_type == "diag":
        inv_std = 1.0 / np.sqrt(covariances.reshape(k, d))
        const += np.log(inv_std).sum(axis=1)
    else:
        raise ValueError(f"unsupported covariance_type {covariance_type!r}")
    total = 0.0
    logp = np.empty((min(block, X.shape[0]), k))
    for start in range(0, X.shape[0], block):
        xb = np.asarray(X[start : start + block], dtype=np.float64)
        lp = logp[: xb.shape[0]]
        for j in range(k):
            if covariance_type == "full":
                y = (xb - means[j]) @ prec_chol[j]
            else:
                y = (xb - means[j]) * inv_std[j]
            lp[:, j] = const[j] - 0.5 * np.einsum("ij,ij->i", y, y)
        top = lp.max(axis=1)
        total += float((top + np.log(np.exp(lp - top[:, None]).sum(axis=1))).sum())
    return total / X.shape[0]


# --------------------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------------------


class Unavailable(Exception):
    """An implementation that cannot run here; the message says why."""


@dataclass
class FitResult:
    weights: np.ndarray | None
    means: np.ndarray | None
    covariances: np.ndarray | None
    n_iter: int | None
    model: object = None  # an opaque fitted model that must score itself (mlpack)


@dataclass
class Runner:
    """One implementation on one workload: ``fit(max_iter)`` is what gets timed."""

    name: str
    fit: object  # callable(max_iter) -> FitResult
    note: str = ""
    same_start: bool = True


def _covariances_from_precisions(init: dict) -> np.ndarray:
    prec = np.asarray(init["precisions_init"], dtype=np.float64)
    if init["covariance_type"] == "full":
        return np.linalg.inv(prec)
    if init["covariance_type"] == "diag":
        return 1.0 / prec
    raise Unavailable(f"covariance_type {init['covariance_type']!r} not handled here")


def make_sklearn(
    X: np.ndarray, init: dict, reg_covar: float, blas_threads: int | None = None
) -> Runner:
    """scikit-learn's GaussianMixture; ``blas_threads`` overrides the BLAS pool size."""
    from sklearn.mixture import GaussianMixture

    def fit(max_iter: int) -> FitResult:
        limit = contextlib.nullcontext()
        if blas_threads is not None:
            from threadpoolctl import threadpool_limits

            limit = threadpool_limits(limits=blas_threads, user_api="blas")
        with limit:
            gm = GaussianMixture(
                tol=0.0, reg_covar=reg_covar, max_iter=max_iter, random_state=0, **init
            ).fit(X)
        return FitResult(gm.weights_, gm.means_, gm.covariances_, gm.n_iter_)

    if blas_threads is None:
        return Runner(SKLEARN, fit)
    plural = "s" if blas_threads > 1 else ""
    return Runner(f"{SKLEARN} ({blas_threads} BLAS thread{plural})", fit)


def fastem_backends(requested: list[str]) -> tuple[list[str], list[str]]:
    """Requested fastem backends that can run, and notes about the others."""
    notes = []
    try:
        from fastem import GaussianMixture  # noqa: F401
    except Exception as exc:  # the estimator is still being written
        return [], [f"fastem: `from fastem import GaussianMixture` failed ({exc}); skipped"]
    from fastem.backends import available_backends, backend_status

    available = set(available_backends())
    status = backend_status()
    usable = []
    for name in requested:
        if name in available:
            usable.append(name)
        else:
            why = status.get(name, "unknown backend")
            notes.append(f"fastem[{name}]: not available ({why}); skipped")
    return usable, notes


def make_fastem(X: np.ndarray, init: dict, reg_covar: float, backend: str) -> Runner:
    from fastem import GaussianMixture

    def fit(max_iter: int) -> FitResult:
        gm = GaussianMixture(
            tol=0.0,
            reg_covar=reg_covar,
            max_iter=max_iter,
            random_state=0,
            backend=backend,
            **init,
        ).fit(X)
        return FitResult(gm.weights_, gm.means_, gm.covariances_, gm.n_iter_)

    return Runner(f"fastem[{backend}]", fit)


def make_daal4py(X: np.ndarray, init: dict, reg_covar: float) -> Runner:
    try:
        import daal4py
    except Exception as exc:
        raise Unavailable(f"does not import ({type(exc).__name__}: {exc})") from exc
    cov_type = init["covariance_type"]
    if cov_type not in ("full", "diag"):
        raise Unavailable(f"daal4py em_gmm: no {cov_type!r} covariance")
    dtype = X.dtype
    k = init["n_components"]
    covs = _covariances_from_precisions(init)
    w0 = np.ascontiguousarray(init["weights_init"], dtype=dtype).reshape(1, k)
    m0 = np.ascontiguousarray(init["means_init"], dtype=dtype)
    if cov_type == "full":
        c0 = [np.ascontiguousarray(c, dtype=dtype) for c in covs]
    else:
        c0 = [np.ascontiguousarray(c, dtype=dtype).reshape(1, -1) for c in covs]
    fptype = "float" if dtype == np.float32 else "double"
    storage = "full" if cov_type == "full" else "diagonal"

    def fit(max_iter: int) -> FitResult:
        algo = daal4py.em_gmm(
            nComponents=k,
            fptype=fptype,
            maxIterations=max_iter,
            accuracyThreshold=0.0,
            covarianceStorage=storage,
        )
        res = algo.compute(X, w0, m0, c0)
        cov = np.array([np.asarray(c).reshape(c0[0].shape) for c in res.covariances])
        if cov_type == "diag":
            cov = cov.reshape(k, -1)
        return FitResult(
            np.asarray(res.weights).ravel(),
            np.asarray(res.means),
            cov,
            int(np.asarray(res.nIterations).ravel()[0]),
        )

    note = "no reg_covar (oneDAL regularizes only ill-conditioned covariances)"
    return Runner("daal4py (oneDAL em_gmm)", fit, note=note if reg_covar else "")


def make_pomegranate(X: np.ndarray, init: dict, reg_covar: float) -> Runner:
    try:
        import torch
        from pomegranate.distributions import Normal
        from pomegranate.gmm import GeneralMixtureModel
    except Exception as exc:
        raise Unavailable(f"does not import ({type(exc).__name__}: {exc})") from exc
    cov_type = init["covariance_type"]
    if cov_type not in ("full", "diag"):
        raise Unavailable(f"pomegranate: no {cov_type!r} covariance")
    tdtype = torch.float32 if X.dtype == np.float32 else torch.float64
    Xt = torch.from_numpy(X)
    covs = _covariances_from_precisions(init)
    means = np.asarray(init["means_init"], dtype=np.float64)
    weights = np.asarray(init["weights_init"], dtype=np.float64)

    def fit(max_iter: int) -> FitResult:
        dists = [
            Normal(
                means=torch.tensor(means[j], dtype=tdtype),
                covs=torch.tensor(covs[j], dtype=tdtype),
                covariance_type=cov_type,
            )
            for j in range(len(weights))
        ]
        model = GeneralMixtureModel(
            dists,
            priors=torch.tensor(weights, dtype=tdtype),
            max_iter=max_iter,
            tol=-math.inf,  # never stop early: improvement < -inf is never true
            verbose=False,
        )
        with torch.no_grad():
            model.fit(Xt)
        return FitResult(
            model.priors.detach().numpy().copy(),
            np.array([d.means.detach().numpy() for d in model.distributions]),
            np.array([d.covs.detach().numpy() for d in model.distributions]),
            None,
        )

    note = "no reg_covar" if reg_covar else ""
    return Runner("pomegranate", fit, note=note)


def make_mlpack(X: np.ndarray, init: dict, reg_covar: float) -> Runner:
    try:
        import mlpack
    except Exception as exc:
        raise Unavailable(f"does not import ({type(exc).__name__}: {exc})") from exc
    import inspect

    cov_type = init["covariance_type"]
    if cov_type not in ("full", "diag"):
        raise Unavailable(f"no {cov_type!r} covariance")
    X64 = np.ascontiguousarray(X, dtype=np.float64)
    k = init["n_components"]
    # mlpack >= 4.x names the data argument input_, older releases input.
    data_kw = "input_" if "input_" in inspect.signature(mlpack.gmm_train).parameters else "input"
    diag = cov_type == "diag"

    def fit(max_iter: int) -> FitResult:
        out = mlpack.gmm_train(
            **{data_kw: X64},
            gaussians=k,
            # mlpack's EMFit (full) counts the starting model as iteration 1, so it
            # does max_iterations - 1 EM steps; Armadillo's gmm_diag (diag) does
            # max_iterations. Both start from the same seeded k-means every time.
            max_iterations=max_iter if diag else max_iter + 1,
            tolerance=0.0,
            diagonal_covariance=diag,
            kmeans_max_iterations=10,
            trials=1,
            seed=1,
        )
        return FitResult(None, None, None, max_iter, model=out["output_model"])

    note = (
        "own seeded k-means start: gmm_train ignores an input_model's parameters as a "
        "starting point, so its log-likelihood is not comparable"
    )
    return Runner("mlpack", fit, note=note, same_start=False)


def _mlpack_parameters(model, cov_type: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and covariances of an mlpack GMMType (via get_cpp_params)."""
    params = model.get_cpp_params()
    gmm = params["GMM"] if "GMM" in params else next(iter(params.values()))
    weights = np.ravel(gmm["weights"])
    means = np.array([np.ravel(d["mean"]) for d in gmm["dists"]])
    covs = np.array([np.asarray(d["covariance"], dtype=np.float64) for d in gmm["dists"]])
    if cov_type == "diag":
        covs = np.array([np.diag(c) if c.ndim == 2 else c for c in covs])
    return weights, means, covs


def score_result(result: FitResult, X: np.ndarray, init: dict) -> float:
    """Average log-likelihood of a fitted model (outside any timed region)."""
    cov_type = init["covariance_type"]
    if result.model is not None:  # mlpack: parameters live in an opaque model object
        try:
            result.weights, result.means, result.covariances = _mlpack_parameters(
                result.model, cov_type
            )
        except Exception:  # no get_cpp_params in this mlpack: ask mlpack for densities
            import inspect

            import mlpack

            fn = mlpack.gmm_probability
            kw = "input_" if "input_" in inspect.signature(fn).parameters else "input"
            dens = fn(**{kw: np.asarray(X, dtype=np.float64)}, input_model=result.model)
            with np.errstate(divide="ignore"):
                return float(np.mean(np.log(np.asarray(dens["output"], dtype=np.float64))))
    return average_log_likelihood(X, result.weights, result.means, result.covariances, cov_type)


PEERS = {"daal4py": make_daal4py, "pomegranate": make_pomegranate, "mlpack": make_mlpack}


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    name: str
    per_iter: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    avg_loglik: float | None = None
    n_iter: int | None = None
    note: str = ""
    error: str = ""
    same_start: bool = True
    reference: bool = False  # the scikit-learn row every ratio is taken against


def timed(fn, *args):
    gc.collect()
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def bench_workload(
    workload: str, args: argparse.Namespace, backends: list[str], notes: list[str]
) -> list[Row]:
    from fastem.datasets import make_workload

    dtype = np.float32 if args.dtype == "float32" else np.float64
    X, init = make_workload(workload, dtype=dtype)
    if len(args.sklearn_threads) == 1 and args.sklearn_threads[0] == args.threads:
        runners = [make_sklearn(X, init, args.reg_covar)]
    else:
        runners = [make_sklearn(X, init, args.reg_covar, t) for t in args.sklearn_threads]
    sk_names = [r.name for r in runners]
    for backend in backends:
        runners.append(make_fastem(X, init, args.reg_covar, backend))
    for peer in args.peers:
        try:
            runners.append(PEERS[peer](X, init, args.reg_covar))
        except Unavailable as exc:
            msg = f"{peer}: {exc}; skipped"
            if msg not in notes:
                notes.append(msg)
    apply_thread_limits(args.threads)  # again: peers may have loaded new pools

    rows = {r.name: Row(workload, r.name, note=r.note, same_start=r.same_start) for r in runners}
    live = []
    for r in runners:  # warm-up: JIT compilation, thread pools, page faults on X
        try:
            r.fit(1)
            live.append(r)
        except Exception as exc:
            rows[r.name].error = f"{type(exc).__name__}: {exc}"
            print(f"  {workload} {r.name}: warm-up failed: {rows[r.name].error}", file=sys.stderr)
    if not any(r.name in sk_names for r in live):
        raise SystemExit(f"scikit-learn failed on {workload}: {rows[sk_names[0]].error}")

    n0, n1 = args.n0, args.n1
    last: dict[str, FitResult] = {}
    repeats: list[dict[str, float]] = []
    for rep in range(args.repeats):
        shift = rep % len(live)
        order = live[shift:] + live[:shift]  # rotate so no implementation always goes first
        per_iter = {}
        for r in order:
            if rows[r.name].error:
                continue
            try:
                t0, _ = timed(r.fit, n0)
                t1, res1 = timed(r.fit, n1)
            except Exception as exc:
                rows[r.name].error = f"{type(exc).__name__}: {exc}"
                continue
            per_iter[r.name] = (t1 - t0) / (n1 - n0)
            rows[r.name].per_iter.append(per_iter[r.name])
            last[r.name] = res1
        repeats.append(per_iter)
        print(
            f"  {workload} repeat {rep + 1}/{args.repeats}: "
            + ", ".join(f"{k} {v:.4g}s" for k, v in per_iter.items()),
            file=sys.stderr,
        )
    # The reference is the fastest scikit-learn configuration (by median).
    timed_sk = [n for n in sk_names if rows[n].per_iter]
    ref = min(timed_sk, key=lambda n: median(rows[n].per_iter))
    rows[ref].reference = True
    for per_iter in repeats:
        sk = per_iter.get(ref)
        for name, t in per_iter.items():
            if sk is not None and sk > 0 and t > 0:
                rows[name].ratios.append(sk / t)
    for row in rows.values():
        if any(t <= 0 for t in row.per_iter):
            row.note += (
                " (noise exceeded the signal in some repeat: t(n1) <= t(n0); "
                "use more --repeats or a larger --n1)"
            )
    for r in live:
        res = last.get(r.name)
        if res is None:
            continue
        rows[r.name].n_iter = res.n_iter
        try:
            rows[r.name].avg_loglik = score_result(res, X, init)
        except Exception as exc:
            rows[r.name].note += f" (scoring failed: {type(exc).__name__}: {exc})"
    return list(rows.values())


def fmt_time(values: list[float]) -> str:
    if not values:
        return "-"
    med = median(values)
    if len(values) == 1:
        return f"{med:.4g}"
    return f"{med:.4g} ({min(values):.3g}–{max(values):.3g})"


def render_table(rows: list[Row], args: argparse.Namespace) -> list[str]:
    sk_ll = {r.workload: r.avg_loglik for r in rows if r.reference}
    out = [
        "| workload | implementation | s/iter, median (range) | vs scikit-learn "
        "| avg log-lik | Δ vs scikit-learn | iters | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{median(r.ratios):.2f}×" if r.ratios else "-"
        ll = f"{r.avg_loglik:.6f}" if r.avg_loglik is not None else "-"
        ref = sk_ll.get(r.workload)
        if not r.same_start:
            delta = "(other start)"
        elif r.avg_loglik is not None and ref is not None and not r.reference:
            delta = f"{r.avg_loglik - ref:+.2e}"
        else:
            delta = ""
        iters = "" if r.n_iter is None else str(r.n_iter)
        note = r.note.strip()
        if r.error:
            note = (note + "; " if note else "") + f"failed: {r.error}"
        name = f"**{r.name}** (reference)" if r.reference else r.name
        out.append(
            f"| {r.workload} | {name} | {fmt_time(r.per_iter)} | {ratio} | {ll} | {delta} "
            f"| {iters} | {note} |"
        )
    return out


# --------------------------------------------------------------------------------------
# Memory mode
# --------------------------------------------------------------------------------------


def _proc_status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _rss_bytes() -> int:
    kb = _proc_status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    import psutil

    return psutil.Process().memory_info().rss


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM, ru_maxrss); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    hwm, rss = _proc_status_kb("VmHWM"), _proc_status_kb("VmRSS")
    return hwm is not None and rss is not None and hwm <= rss + 64


class _Sampler(threading.Thread):
    """Samples RSS every ``interval`` seconds and keeps the maximum."""

    def __init__(self, interval: float = 0.0005):
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, _rss_bytes())
        return self.peak


def memory_child(args: argparse.Namespace) -> None:
    """Run in a fresh process: one fit of one implementation; print JSON."""
    import resource

    silence_convergence_warnings()
    from fastem.datasets import make_workload

    impl = args.memory_child
    start_numba_threads(args.threads)
    dtype = np.float32 if args.dtype == "float32" else np.float64
    X, init = make_workload(args.memory_workload, dtype=dtype)
    if impl == SKLEARN:
        # Memory does not depend on the BLAS thread count, time does (a lot, on shared
        # cores): use the smallest requested count.
        blas = min(args.sklearn_threads)
        runner = make_sklearn(X, init, args.reg_covar, blas)
        warm = make_sklearn(X[:4096], init, args.reg_covar, blas)
    elif impl == "daal4py":
        runner = make_daal4py(X, init, args.reg_covar)
        warm = make_daal4py(X[:4096], init, args.reg_covar)
    else:
        runner = make_fastem(X, init, args.reg_covar, impl)
        warm = make_fastem(X[:4096], init, args.reg_covar, impl)
    apply_thread_limits(args.threads)
    if impl == "numpy":  # BLAS-bound like scikit-learn: same BLAS thread count (see above)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=min(args.sklearn_threads), user_api="blas")
    warm.fit(2)  # compile, start thread pools, load code pages
    del warm
    gc.collect()
    baseline = _rss_bytes()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    reset = _reset_peak()
    sampler = _Sampler()
    sampler.start()
    t = time.perf_counter()
    runner.fit(args.memory_iters)
    elapsed = time.perf_counter() - t
    sampled = sampler.stop()
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if reset:
        peak = (_proc_status_kb("VmHWM") or 0) * 1024
        method = "VmHWM after clear_refs"
    else:
        peak = max(sampled, maxrss_after if maxrss_after > maxrss_before else 0)
        method = "RSS sampled every 0.5 ms / ru_maxrss"
    print(
        json.dumps(
            {
                "impl": impl,
                "x_nbytes": int(X.nbytes),
                "baseline": int(baseline),
                "peak": int(peak),
                "sampled_peak": int(sampled),
                "method": method,
                "fit_seconds": elapsed,
            }
        )
    )


def memory_mode(args: argparse.Namespace) -> list[str]:
    backends, notes = fastem_backends(args.backends)
    impls = list(backends) + [SKLEARN]
    if "daal4py" in args.peers:
        try:
            import daal4py  # noqa: F401

            impls.append("daal4py")
        except Exception as exc:
            notes.append(f"daal4py: does not import ({type(exc).__name__}: {exc}); skipped")

    def label(impl: str) -> str:
        if impl == SKLEARN:
            return f"{SKLEARN} ({min(args.sklearn_threads)} BLAS thread(s))"
        if impl == "numpy":
            return f"fastem[numpy] ({min(args.sklearn_threads)} BLAS thread(s))"
        return impl if impl == "daal4py" else f"fastem[{impl}]"

    rows = []
    x_nbytes = None
    for impl in impls:
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--_memory-child",
            impl,
            "--memory-workload",
            args.memory_workload,
            "--memory-iters",
            str(args.memory_iters),
            "--dtype",
            args.dtype,
            "--threads",
            str(args.threads),
            "--reg-covar",
            repr(args.reg_covar),
            "--sklearn-threads",
            ",".join(str(t) for t in args.sklearn_threads),
        ]
        print(f"  memory: {impl} ...", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            err = (proc.stderr.strip().splitlines() or ["?"])[-1]
            rows.append(f"| {label(impl)} | - | - | - | - | failed: {err} |")
            continue
        rec = json.loads(proc.stdout.strip().splitlines()[-1])
        inc = max(rec["peak"] - rec["baseline"], 0)
        rows.append(
            f"| {label(impl)} | {inc / 1e6:.1f} | {inc / rec['x_nbytes']:.2f}× "
            f"| {rec['baseline'] / 1e6:.1f} | {rec['fit_seconds']:.2f} | {rec['method']} |"
        )
        x_nbytes = rec["x_nbytes"]
    lines = [
        f"### Peak memory of one {args.memory_workload} fit "
        f"({args.memory_iters} iterations, {args.dtype}"
        + (f", X.nbytes = {x_nbytes / 1e6:.1f} MB" if x_nbytes else "")
        + ")",
        "",
        "Each fit in a fresh process; increase = peak RSS during the fit minus RSS after "
        "loading X and a warm-up fit on the first 4096 rows (so JIT compilation, thread "
        "pools and buffers that do not grow with N, if the allocator kept them, are in "
        "the baseline; what grows with N is in the increase).",
        "",
        "| implementation | peak increase (MB) | × X.nbytes | baseline RSS (MB) "
        "| fit time (s) | method |",
        "|---|---|---|---|---|---|",
        *rows,
    ]
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return lines


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Seconds per EM iteration of fastem and its peers on W1-W5.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--workloads", default=",".join(WORKLOAD_NAMES))
    p.add_argument("--repeats", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument(
        "--backends",
        default=DEFAULT_BACKENDS,
        help="fastem backends to run (numpy only when named)",
    )
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--quick", action="store_true", help="n0=1, n1=4, 1 repeat")
    p.add_argument("--n0", type=int, default=None, help="default 2 (1 with --quick)")
    p.add_argument("--n1", type=int, default=None, help="default 12 (4 with --quick)")
    p.add_argument("--threads", type=int, default=usable_cores())
    p.add_argument(
        "--sklearn-threads",
        default=None,
        help="comma list of BLAS thread counts to run scikit-learn with; the fastest is the "
        "reference (default: 1 and --threads)",
    )
    p.add_argument("--reg-covar", type=float, default=1e-6)
    p.add_argument("--no-peers", action="store_true", help="skip daal4py/pomegranate/mlpack")
    p.add_argument("--peers", default="daal4py,pomegranate,mlpack", help=argparse.SUPPRESS)
    p.add_argument("--memory", action="store_true", help="peak-memory mode")
    p.add_argument("--memory-workload", default="W2")
    p.add_argument("--memory-iters", type=int, default=5)
    p.add_argument("--output", help="also write the markdown report to this file")
    p.add_argument("--json", help="write the raw measurements to this file")
    p.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in args.workloads if w not in WORKLOAD_NAMES]
    if unknown:
        p.error(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOAD_NAMES)}")
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.peers = [] if args.no_peers else [x for x in args.peers.split(",") if x]
    bad = [x for x in args.peers if x not in PEERS]
    if bad:
        p.error(f"unknown peer(s) {bad}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.n0 = args.n0 if args.n0 is not None else (1 if args.quick else 2)
    args.n1 = args.n1 if args.n1 is not None else (4 if args.quick else 12)
    if args.n0 < 1 or args.n1 <= args.n0:
        p.error("need 1 <= n0 < n1")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    if args.sklearn_threads is None:
        args.sklearn_threads = sorted({1, args.threads})
    else:
        try:
            args.sklearn_threads = [int(t) for t in args.sklearn_threads.split(",") if t.strip()]
        except ValueError:
            p.error("--sklearn-threads takes a comma list of integers")
        if not args.sklearn_threads or min(args.sklearn_threads) < 1:
            p.error("--sklearn-threads needs thread counts >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.memory_child:
        memory_child(args)
        return 0
    silence_convergence_warnings()
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("scikit-learn is required: it is the reference of every ratio", file=sys.stderr)
        return 2
    command = "python benchmarks/compare_peers.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    # Import what will run before limiting threads, so threadpoolctl sees every pool.
    numba_note = start_numba_threads(args.threads)
    backends, notes = fastem_backends(args.backends)
    for peer in args.peers:
        with contextlib.suppress(Exception):
            __import__({"pomegranate": "pomegranate.gmm"}.get(peer, peer))
    with contextlib.suppress(Exception):
        import sklearn.mixture  # noqa: F401
    thread_notes = [numba_note, *apply_thread_limits(args.threads)]

    report = [f"## fastem vs peers — `{command.strip()}`", ""]
    data: dict = {"command": command, "args": vars(args)}
    if args.memory:
        report += machine_header(args.threads, thread_notes) + [""] + memory_mode(args)
    else:
        rows: list[Row] = []
        for w in args.workloads:
            print(f"{w} ...", file=sys.stderr)
            rows += bench_workload(w, args, backends, notes)
        report += machine_header(args.threads, thread_notes)
        report += [
            f"- Method: seconds/iteration = (t(max_iter={args.n1}) − t(max_iter={args.n0}))"
            f" / {args.n1 - args.n0}, tol=0, reg_covar={args.reg_covar:g}, {args.dtype}, "
            f"same data and initial parameters (fastem.datasets.make_workload); "
            f"{args.repeats} repeat(s), implementations interleaved within each repeat; "
            "median (range over repeats). scikit-learn ran with "
            f"{' and '.join(str(t) for t in args.sklearn_threads)} BLAS thread(s); the "
            "faster (by median) is the reference. 'vs scikit-learn' = reference time / "
            "impl time within each repeat, median over repeats (>1 = faster). "
            "'avg log-lik' = mean "
            f"log-likelihood per sample of the {args.n1}-iteration fit, computed in float64 "
            "from the fitted weights/means/covariances with one formula for all.",
            "",
            *render_table(rows, args),
        ]
        if notes:
            report += ["", *[f"- {n}" for n in notes]]
        data["rows"] = [vars(r) for r in rows]
    text = "\n".join(report)
    print(text)
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text + "\n")
    if args.json:
        data["report"] = text
        with open(args.json, "w") as fh:
            json.dump(data, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
