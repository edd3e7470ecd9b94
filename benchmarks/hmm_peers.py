"""Seconds per Baum-Welch iteration: fastem.hmm against hmmlearn (../shared/BENCHMARKS.md).

Each figure is (time of a fit with n_iter=n1 - time with n_iter=n0) / (n1 - n0),
from the same given initial parameters, with early stopping disabled, so that
initialization and set-up cancel out. Runs are interleaved (fastem on all Numba
threads, fastem on one thread, hmmlearn log, hmmlearn scaling, repeat) and the
medians over repeats are reported with the ratio to hmmlearn's faster
implementation. On a loaded machine wall times swing with the load; the
process CPU time of the same fits is reported beside them (``cpu``, summed over
threads, so the 1-thread CPU ratio is the ratio of work done).

Usage::

    python benchmarks/hmm_peers.py [--workload HB1] [--repeats 5] [--n0 2] [--n1 12] [--memory]
    python benchmarks/hmm_peers.py --workload HB1 --ab-kernels COMMIT [--repeats 7]
    python benchmarks/hmm_peers.py --workload HB1 --backend cython [--repeats 5]
    python benchmarks/hmm_peers.py --workload HB1 --ab-fb COMMIT [--repeats 15]
    python benchmarks/hmm_peers.py --workload HB2 --serial [--threads 2] [--repeats 7]
    python benchmarks/hmm_peers.py --workload HB2 --ab-serial COMMIT [--rounds 6]
    python benchmarks/hmm_peers.py --workload LONGFULL --ab-compiled [--rounds 9] [--threads 2]

``--serial`` (no peers) splits a Numba fit's iteration into its serial part,
the CPU time of the calling thread outside the thread pool's passes (Python,
the M-step, small kernels run inline, reductions), and the pool's passes (wall
time and CPU time of all threads, and their number per iteration). The serial
part bounds the wall time on any number of cores from below and is far less
disturbed by other processes than wall time.

``--ab-serial COMMIT`` compares the whole code (Python and kernels) at
``COMMIT`` with the working tree: it checks ``COMMIT`` out into a temporary git
worktree (the built Cython extensions copied in; ``COMMIT`` may instead be the
path of a tree laid out by hand, such as a copy of the working tree with some
changes reverted, which isolates them from other work), then runs ``--serial`` in
the two trees alternately, each in its own process, ``--rounds`` times (the
first round only warms the Numba caches), and prints per thread count the
medians of the serial CPU and of the 1-thread CPU of a whole iteration
(serial + pool passes) with the medians of the paired old/new ratios.

``--ab-compiled`` (no peers; full/tied workloads) alternates, in one process,
fits with the compiled full/tied E-step parameters and log prior
(``fastem.hmm._mstep_numba.estep_params_full``, ``log_prior_full``) and fits
with the NumPy code they replace (``HAVE_LAPACK`` set False: both decline;
the results are the same bits), ``--rounds`` times in alternating order, and
prints per thread count (1 and ``--threads``) the medians of the calling
thread's CPU, the process CPU and the wall time per iteration with the
medians of the paired ratios.

``--ab-fb COMMIT`` times the Numba forward-backward kernel alone, at
``COMMIT`` against the working tree, on the E-step inputs of the workload
(the model after two iterations from the initial parameters): 1 thread, CPU
time of back-to-back calls, interleaved, median of the paired ratios. Less
disturbed by a loaded machine than whole iterations.

``--backend {numba,cython,numpy}`` sets fastem's ``backend=`` (default
``numba``); ``cython`` sets ``OMP_WAIT_POLICY=passive`` before the extension
loads unless the environment sets a policy. With a backend other than ``numba`` the run also times
``backend="numba"`` in the same interleaved loop (1 thread) and prints the
median of the paired CPU ratios of the two, so the cython/numba ratio comes
from this script.

``--ab-kernels COMMIT`` skips hmmlearn and compares whole iterations (1
thread, process CPU time, interleaved) with the Numba HMM kernels of
``fastem/backends/_numba_hmm.py`` at ``COMMIT`` against the working tree's;
it prints the medians and the median of the paired ratios.

``--memory`` adds the peak of the process's resident memory during a
one-iteration fit above its level before the fit (RSS sampled every
millisecond, so Numba's own allocations count, which tracemalloc misses), and
tracemalloc's peak of NumPy/Python allocations.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np

WORKLOADS = {
    # name: (covariance_type, D, K, n_sequences, length, n_mix or None for GaussianHMM)
    "HB1": ("diag", 10, 20, 50, 200, None),
    "HB2": ("diag", 1, 10, 50, 100, None),
    "HB4": ("diag", 13, 8, 500, 200, 4),
    "LONGFULL": ("full", 8, 8, 1, 20000, None),
}


def sample_states(rng, trans: np.ndarray, S: int, T: int) -> np.ndarray:
    """State paths of ``S`` sequences of ``T`` frames of the chain ``trans``, one
    after another (a uniform first state)."""
    K = len(trans)
    z = np.empty(S * T, dtype=np.int64)
    for s in range(S):
        state = rng.integers(K)
        for t in range(T):
            z[s * T + t] = state
            state = rng.choice(K, p=trans[state])
    return z


def make_data(cov_type: str, D: int, K: int, S: int, T: int, n_mix=None, seed: int = 0):
    """Sequences from a random sticky HMM with well-separated means (a mixture of
    ``n_mix`` Gaussians per state if given), and the initial parameters every
    implementation starts from."""
    rng = np.random.default_rng(seed)
    M = n_mix or 1
    trans = np.full((K, K), 0.1 / max(K - 1, 1))
    np.fill_diagonal(trans, 0.9 if K > 1 else 1.0)
    means = rng.normal(scale=4.0, size=(K, M, D))
    z = sample_states(rng, trans, S, T)
    X = means[z, rng.integers(M, size=S * T)] + rng.normal(size=(S * T, D))
    lengths = np.full(S, T)
    init = dict(
        startprob_=np.full(K, 1.0 / K),
        transmat_=np.full((K, K), 1.0 / K) * 0.5 + np.eye(K) * 0.5,
    )
    var = X.var(axis=0)
    if n_mix is None:
        init["means_"] = X[rng.choice(S * T, K, replace=False)]
        init["covars_"] = {
            "diag": np.tile(var, (K, 1)),
            "full": np.tile(np.diag(var), (K, 1, 1)),
        }[cov_type]
    else:
        init["weights_"] = np.full((K, M), 1.0 / M)
        init["means_"] = X[rng.choice(S * T, K * M, replace=False)].reshape(K, M, D)
        init["covars_"] = np.tile(var, (K, M, 1))
    return X, lengths, init


def peak_memory_mb(make, X, lengths, init) -> float:
    """Peak of NumPy/Python allocations (tracemalloc) during a one-iteration fit."""
    import tracemalloc

    model = make(1)
    for name, value in init.items():
        setattr(model, name, np.array(value, copy=True))
    tracemalloc.start()
    model.fit(X, lengths)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_mb(make, X, lengths, init) -> float:
    """Peak resident memory above the level before a one-iteration fit (Linux)."""
    import threading

    model = make(1)
    for name, value in init.items():
        setattr(model, name, np.array(value, copy=True))
    before = _rss_bytes()
    peak = [before]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        model.fit(X, lengths)
    finally:
        done.set()
        watcher.join()
    return (max(peak[0], _rss_bytes()) - before) / 2**20


def _fit_seconds(make, X, lengths, init, n_iter, threads=None):
    """Wall and process CPU seconds of one fit."""
    model = make(n_iter)
    for name, value in init.items():
        setattr(model, name, np.array(value, copy=True))
    if threads is not None:
        import numba

        before = numba.get_num_threads()
        numba.set_num_threads(threads)
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        model.fit(X, lengths)
        return time.perf_counter() - t0, time.process_time() - c0
    finally:
        if threads is not None:
            numba.set_num_threads(before)


def _kernels_at(commit: str):
    """The HMM kernels of ``fastem/backends/_numba_hmm.py`` at ``commit``, paired
    with today's mixture kernels, loaded as a separate module (no Numba cache)."""
    import importlib.util
    import re
    import subprocess
    import tempfile

    from fastem.hmm import _backend

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = subprocess.run(
        ["git", "show", f"{commit}:fastem/backends/_numba_hmm.py"],
        cwd=root, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    src = re.sub(r"^from \.(\w+) import", r"from fastem.backends.\1 import", src, flags=re.M)
    src = src.replace("from . import _numba_cache", "from fastem.backends import _numba_cache")
    src = src.replace("cache=True", "cache=False")
    path = os.path.join(tempfile.mkdtemp(), "old_numba_hmm.py")
    with open(path, "w") as f:
        f.write(src)
    # Under a fastem name, so that fastem's build step (internal copies of each
    # kernel's helpers, keyed on the "_ZN6fastem" mangled prefix) applies to it
    # as to the cached module: a copy outside the package measured ~1.07x faster
    # on identical code.
    spec = importlib.util.spec_from_file_location("fastem.backends._numba_hmm_at_commit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    new = _backend.get_hmm_kernels("numba")
    return _backend.HMMKernels("numba", module, new.mixture), new


def ab_kernels(commit, make, X, lengths, init, n0, n1, repeats):
    """Whole-iteration CPU time on 1 thread: kernels at ``commit`` vs the working tree."""
    from fastem.hmm import _backend

    old, new = _kernels_at(commit)
    times = {"old": [], "new": []}
    try:
        for _ in range(repeats + 1):  # the first round compiles
            for name, kernels in (("old", old), ("new", new)):
                _backend._loaded["numba"] = kernels
                c0 = _fit_seconds(make, X, lengths, init, n0, 1)[1]
                c1 = _fit_seconds(make, X, lengths, init, n1, 1)[1]
                times[name].append((c1 - c0) / (n1 - n0))
    finally:
        _backend._loaded["numba"] = new
    o, n = np.array(times["old"][1:]), np.array(times["new"][1:])
    print(
        f"  kernels at {commit}: {np.median(o) * 1e3:.3f} ms/iter, working tree: "
        f"{np.median(n) * 1e3:.3f} ms/iter (1 thread, CPU); median paired ratio "
        f"{np.median(o / n):.2f}x over {repeats} repeats"
    )


class _CaptureFB:
    """HMM kernels whose ``forward_backward`` records its arguments."""

    def __init__(self, module):
        self._module = module
        self.args = None

    def __getattr__(self, name):
        return getattr(self._module, name)

    def forward_backward(self, *args):
        self.args = args


def ab_forward_backward(commit, make, X, lengths, init, repeats):
    """The forward-backward kernel alone (1 thread, CPU): ``commit`` vs the working tree."""
    import numba

    from fastem.hmm import _backend

    old, new = _kernels_at(commit)
    model = make(2)
    for name, value in init.items():
        setattr(model, name, np.array(value, copy=True))
    model.fit(X, lengths)
    S = len(lengths)
    capture = _CaptureFB(new.hmm)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    kernels = _backend.HMMKernels("numba", capture, new.mixture)
    model._forward_backward(kernels, model._validate_X(X, fitting=False), offsets, np.ones(S))
    logB, offsets, startprob, transmat, seq_weight = capture.args[:5]
    K = logB.shape[1]
    n_calls = max(1, int(2e7 // (logB.shape[0] * K * K)))  # about 10-50 ms a batch

    def run(module, n):
        out = (np.empty_like(logB), np.empty(S), np.empty((K, K)), np.empty(K))
        c0 = time.process_time()
        for _ in range(n):
            module.forward_backward(logB, offsets, startprob, transmat, seq_weight, *out)
        return (time.process_time() - c0) / n, out

    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        diff = max(
            float(np.max(np.abs(a - b)))
            for a, b in zip(run(old.hmm, 1)[1], run(new.hmm, 1)[1], strict=True)
        )
        times = np.array([[run(m, n_calls)[0] for m in (old.hmm, new.hmm)] for _ in range(repeats)])
    finally:
        numba.set_num_threads(before)
    o, n = times[:, 0], times[:, 1]
    print(
        f"  forward-backward at {commit}: {np.median(o) * 1e3:.3f} ms, working tree: "
        f"{np.median(n) * 1e3:.3f} ms (1 thread, CPU); median paired ratio "
        f"{np.median(o / n):.2f}x over {repeats} repeats; largest difference {diff:.1e}"
    )


def serial_times(make, X, lengths, init, n0, n1, repeats, threads):
    """Per iteration (medians over ``repeats``), seconds: the calling thread's
    CPU time outside the thread pool's passes, the passes' wall time and CPU
    time (all threads), their number, and the whole iteration's wall time."""
    from fastem.backends import _numba, _numba_hmm

    acc = {"main": 0.0, "proc": 0.0, "wall": 0.0, "calls": 0}

    def timed(fn):
        def run(kernel, n_iter, *args):
            m0, p0, w0 = time.thread_time(), time.process_time(), time.perf_counter()
            try:
                return fn(kernel, n_iter, *args)
            finally:
                acc["main"] += time.thread_time() - m0
                acc["proc"] += time.process_time() - p0
                acc["wall"] += time.perf_counter() - w0
                acc["calls"] += 1

        return run

    names = [(_numba, "run_chunks"), (_numba_hmm, "run_chunks")]
    if hasattr(_numba_hmm, "run_dynamic"):  # the fused E-step's pool pass
        names.append((_numba_hmm, "run_dynamic"))
    saved = [(mod, name, getattr(mod, name)) for mod, name in names]

    def one_fit(n):
        for key in acc:
            acc[key] = 0
        m0, w0 = time.thread_time(), time.perf_counter()
        _fit_seconds(make, X, lengths, init, n, threads)
        return np.array(
            [time.thread_time() - m0 - acc["main"], acc["wall"], acc["proc"], acc["calls"],
             time.perf_counter() - w0]
        )  # fmt: skip

    try:
        for mod, name, fn in saved:
            setattr(mod, name, timed(fn))
        one_fit(n0)  # compile / warm caches
        rows = [(one_fit(n1) - one_fit(n0)) / (n1 - n0) for _ in range(repeats)]
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)
    return np.median(np.array(rows), axis=0)


def serial_profile(make, X, lengths, init, n0, n1, repeats, threads):
    """Print :func:`serial_times`."""
    serial, wall, cpu, calls, total = serial_times(make, X, lengths, init, n0, n1, repeats, threads)
    print(
        f"  {threads} thread(s): serial CPU {serial * 1e3:.3f} ms/iter (calling thread, outside "
        f"the pool's passes); {calls:.0f} passes/iter: wall {wall * 1e3:.3f} ms, CPU "
        f"{cpu * 1e3:.3f} ms (all threads); whole iteration wall {total * 1e3:.3f} ms "
        f"(median of {repeats})"
    )


_SERIAL_LINE = (
    r"(\d+) thread\(s\): serial CPU ([\d.]+) ms/iter.*?passes/iter: wall [\d.]+ ms, "
    r"CPU ([\d.]+) ms"
)


def ab_serial(commit, workload, rounds, repeats, n0, n1, threads):
    """``--serial`` at ``commit`` (a temporary worktree) and in the working tree,
    alternately in fresh processes; medians and paired ratios."""
    import glob
    import re
    import shutil
    import subprocess
    import sys
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    given_tree = os.path.isdir(commit)  # a tree already laid out (e.g. a copy with files reverted)
    old = os.path.abspath(commit) if given_tree else os.path.join(tempfile.mkdtemp(), "old")
    if not given_tree:
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", old, commit], cwd=root, check=True
        )
        for so in glob.glob(os.path.join(root, "fastem", "backends", "*.so")):
            shutil.copy(so, os.path.join(old, "fastem", "backends"))
    try:
        args = ["--workload", workload, "--serial", "--repeats", str(repeats), "--n0", str(n0),
                "--n1", str(n1), "--threads", str(threads)]  # fmt: skip
        res = {"old": {}, "new": {}}
        for r in range(rounds):
            for name, tree in (("old", old), ("new", root)):
                out = subprocess.run(
                    [sys.executable, os.path.join(tree, "benchmarks", "hmm_peers.py"), *args],
                    cwd=tree, env=dict(os.environ, PYTHONPATH=tree), check=True,
                    capture_output=True, text=True,
                ).stdout  # fmt: skip
                if r == 0:
                    continue  # warms (or compiles) the tree's Numba cache
                for th, serial, passes in re.findall(_SERIAL_LINE, out):
                    row = res[name].setdefault(int(th), [])
                    row.append((float(serial), float(serial) + float(passes)))
    finally:
        if not given_tree:
            subprocess.run(["git", "worktree", "remove", "--force", old], cwd=root, check=False)
    print(f"{workload}: {commit} (old) vs the working tree (new), {rounds - 1} alternated rounds")
    for th in sorted(res["new"]):
        o, n = np.array(res["old"][th]), np.array(res["new"][th])
        line = (
            f"  {th} thread(s): serial CPU old {np.median(o[:, 0]) * 1e3:.1f} new "
            f"{np.median(n[:, 0]) * 1e3:.1f} us/iter, paired ratio "
            f"{np.median(o[:, 0] / n[:, 0]):.2f}"
        )
        if th == 1:  # on one thread the passes' CPU is the rest of the iteration
            line += (
                f"; whole iteration CPU old {np.median(o[:, 1]) * 1e3:.1f} new "
                f"{np.median(n[:, 1]) * 1e3:.1f} us/iter, paired ratio "
                f"{np.median(o[:, 1] / n[:, 1]):.2f}"
            )
        print(line)


def ab_compiled(make, X, lengths, init, n0, n1, rounds, threads):
    """Print the in-process A/B of ``--ab-compiled``."""
    from fastem.hmm import _mstep_numba

    def per_iter(th):
        def one(n):
            model = make(n)
            for name, value in init.items():
                setattr(model, name, np.array(value, copy=True))
            import numba

            before = numba.get_num_threads()
            numba.set_num_threads(th)
            try:
                t, c, w = time.thread_time(), time.process_time(), time.perf_counter()
                model.fit(X, lengths)
                return np.array(
                    [time.thread_time() - t, time.process_time() - c, time.perf_counter() - w]
                )
            finally:
                numba.set_num_threads(before)

        return (one(n1) - one(n0)) / (n1 - n0)

    saved = _mstep_numba.HAVE_LAPACK
    try:
        for th in sorted({1, threads}):
            rows = {True: [], False: []}
            for on in (True, False):  # compile / warm caches
                _mstep_numba.HAVE_LAPACK = on
                per_iter(th)
            for r in range(rounds):
                for on in (True, False) if r % 2 else (False, True):
                    _mstep_numba.HAVE_LAPACK = on
                    rows[on].append(per_iter(th))
            new, old = np.array(rows[True]), np.array(rows[False])
            ratio = np.median(old / new, axis=0)
            cells = [
                f"{label} NumPy {np.median(old[:, i]) * 1e6:.0f} compiled "
                f"{np.median(new[:, i]) * 1e6:.0f} us (paired {ratio[i]:.3f})"
                for i, label in enumerate(("calling-thread CPU", "process CPU", "wall"))
            ]
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            print(f"  {th} thread(s), per iteration: " + "; ".join(cells) + f"; load {load:.1f}")
    finally:
        _mstep_numba.HAVE_LAPACK = saved


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="HB1", choices=sorted(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n0", type=int, default=2)
    parser.add_argument("--n1", type=int, default=12)
    parser.add_argument("--memory", action="store_true", help="also report peak allocations")
    parser.add_argument("--ab-kernels", metavar="COMMIT", help="A/B of the HMM kernels (no peers)")
    parser.add_argument(
        "--ab-fb", metavar="COMMIT", help="A/B of the forward-backward kernel alone (no peers)"
    )
    parser.add_argument(
        "--serial", action="store_true", help="serial part and pool passes of a fit (no peers)"
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for --serial")
    parser.add_argument(
        "--ab-serial", metavar="COMMIT",
        help="--serial at COMMIT (a temporary worktree) and here, alternated (no peers)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, default=6, help="rounds for --ab-serial")
    parser.add_argument(
        "--ab-compiled", action="store_true",
        help="compiled full/tied E-step parameters and log prior vs NumPy, one process (no peers)",
    )  # fmt: skip
    parser.add_argument(
        "--backend", default="numba", choices=("numba", "cython", "numpy"), help="fastem backend"
    )
    args = parser.parse_args(argv)
    if args.backend == "cython":
        # Passive OpenMP waits: GCC's default spins each worker up to ~300k cycles after a
        # parallel region, CPU that the interleaved peers (and the 1-thread fits) of this run
        # would otherwise share the cores with. Read when libgomp loads, so it is set before
        # the Cython extension is imported, and only when the user has not chosen a policy.
        os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    if args.ab_serial:
        ab_serial(
            args.ab_serial, args.workload, args.rounds, args.repeats, args.n0, args.n1, args.threads
        )
        return

    from hmmlearn import hmm as hl

    from fastem import hmm as fh

    cov_type, D, K, S, T, n_mix = WORKLOADS[args.workload]
    X, lengths, init = make_data(cov_type, D, K, S, T, n_mix)
    common = dict(covariance_type=cov_type, init_params="", tol=-np.inf)
    if n_mix is None:
        ours, theirs = fh.GaussianHMM, hl.GaussianHMM
    else:
        ours, theirs = fh.GMMHMM, hl.GMMHMM
        common["n_mix"] = n_mix
    ours_common = dict(common, backend=args.backend)
    if args.ab_kernels:
        print(f"{args.workload}: {cov_type}, D={D}, K={K}, {S} x {T}")
        make = lambda n: ours(K, n_iter=n, **dict(common, backend="numba"))  # noqa: E731
        ab_kernels(args.ab_kernels, make, X, lengths, init, args.n0, args.n1, args.repeats)
        return
    if args.ab_fb:
        print(f"{args.workload}: {cov_type}, D={D}, K={K}, {S} x {T}")
        make = lambda n: ours(K, n_iter=n, **dict(common, backend="numba"))  # noqa: E731
        ab_forward_backward(args.ab_fb, make, X, lengths, init, args.repeats)
        return
    if args.ab_compiled:
        print(f"{args.workload}: {cov_type}, D={D}, K={K}, {S} x {T}; numba")
        make = lambda n: ours(K, n_iter=n, **dict(common, backend="numba"))  # noqa: E731
        ab_compiled(make, X, lengths, init, args.n0, args.n1, args.rounds, args.threads)
        return
    if args.serial:
        print(f"{args.workload}: {cov_type}, D={D}, K={K}, {S} x {T}; numba")
        make = lambda n: ours(K, n_iter=n, **dict(common, backend="numba"))  # noqa: E731
        for threads in sorted({1, args.threads}):
            serial_profile(make, X, lengths, init, args.n0, args.n1, args.repeats, threads)
        return
    makers = {
        "fastem": lambda n: ours(K, n_iter=n, **ours_common),
        "fastem-1-thread": lambda n: ours(K, n_iter=n, n_threads=1, **ours_common),
    }
    if args.backend != "numba":
        # The same fits on Numba, 1 thread, for the paired ratio, right after the
        # other backend's. Placed after hmmlearn's (HB4), its n0-iteration fits
        # came out slower than its n1-iteration ones allowed (6.5 ms per
        # iteration against ~30 ms measured alone), so the order matters.
        makers["fastem-numba-1-thread"] = lambda n: ours(
            K, n_iter=n, n_threads=1, **dict(common, backend="numba")
        )
    makers["hmmlearn-log"] = lambda n: theirs(K, n_iter=n, implementation="log", **common)
    makers["hmmlearn-scaling"] = lambda n: theirs(K, n_iter=n, implementation="scaling", **common)
    one_thread = ("fastem-1-thread", "fastem-numba-1-thread")
    for name in makers:
        if name.startswith("fastem"):
            _fit_seconds(makers[name], X, lengths, init, 1)  # compile / warm caches
    per_iter = {name: [] for name in makers}
    cpu_iter = {name: [] for name in makers}
    for _ in range(args.repeats):
        for name, make in makers.items():
            w0, c0 = _fit_seconds(make, X, lengths, init, args.n0)  # n_threads=1 in make
            w1, c1 = _fit_seconds(make, X, lengths, init, args.n1)
            per_iter[name].append((w1 - w0) / (args.n1 - args.n0))
            cpu_iter[name].append((c1 - c0) / (args.n1 - args.n0))
    med = {name: float(np.median(v)) for name, v in per_iter.items()}
    cpu = {name: float(np.median(v)) for name, v in cpu_iter.items()}
    ref_name = min(("hmmlearn-log", "hmmlearn-scaling"), key=med.get)
    cpu_ref = min(("hmmlearn-log", "hmmlearn-scaling"), key=cpu.get)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.workload}: {cov_type}, D={D}, K={K}, {S} x {T}; backend {args.backend}; median "
        f"of {args.repeats} interleaved repeats; load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    for name in makers:
        print(
            f"  {name:21s} wall {med[name] * 1e3:9.3f} ms/iter {med[ref_name] / med[name]:6.2f}x"
            f" | cpu {cpu[name] * 1e3:9.3f} ms/iter {cpu[cpu_ref] / cpu[name]:6.2f}x"
        )
    print(f"  (ratios to the faster hmmlearn: wall {ref_name}, cpu {cpu_ref})")
    if args.backend != "numba":
        paired = np.array(cpu_iter[one_thread[0]]) / np.array(cpu_iter[one_thread[1]])
        print(
            f"  {args.backend} / numba, 1 thread, CPU: median paired ratio {np.median(paired):.2f}"
            f" (>1: {args.backend} slower) over {args.repeats} repeats"
        )
    if args.memory:
        x_mb = X.nbytes / 2**20
        for name in ("fastem", "hmmlearn-scaling"):
            peak = peak_memory_mb(makers[name], X, lengths, init)
            rss = peak_rss_mb(makers[name], X, lengths, init)
            print(
                f"  1-iteration fit, {name}: peak RSS +{rss:.1f} MB, peak allocations "
                f"{peak:.1f} MB (X: {x_mb:.1f} MB)"
            )


if __name__ == "__main__":
    main()
