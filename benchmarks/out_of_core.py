"""Fit a memory-mapped file several times larger than the memory the process may use.

Not an asv suite (it writes gigabytes): run it as a script::

    python benchmarks/out_of_core.py [--size-gb 2.5] [--margin-mb 256] [--dir /tmp]
                                     [--max-iter 10] [--keep]

1. Writes a W2-shaped mixture (16 features, 16 full-covariance components, rows
   drawn as in :func:`fastem.datasets.make_mixture`) as a float64 ``.npy`` file of
   about ``--size-gb`` (less if the disk has not room for it twice over), chunk
   by chunk, never holding it in memory.
2. In a child process: warms up (imports, compiled kernels, thread pool), reads
   its data size ``VmData`` and sets ``RLIMIT_DATA`` to that plus
   ``--margin-mb``. On Linux >= 4.7 RLIMIT_DATA counts private writable
   mappings (the heap and anonymous ``mmap``, where NumPy's arrays live) but not
   the shared read-only mapping of the file, unlike RLIMIT_AS which counts every
   mapping. The child then shows that the limit is enforced (``np.load`` of the
   whole file raises ``MemoryError``), fits ``GaussianMixture`` on
   ``np.load(path, mmap_mode="r")``, and calls ``predict`` and
   ``score_samples`` on the map, printing for each step the wall time, the peak
   resident set (``VmHWM``, reset before each step through
   ``/proc/self/clear_refs``) and the peak anonymous resident memory
   (``RssAnon``, sampled every 10 ms by a thread), next to the file size and the
   limit.

Linux only (``/proc``, RLIMIT_DATA semantics).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

N_FEATURES = 16
N_COMPONENTS = 16
MB = 2**20


def write_mixture(path: str, n_samples: int, chunk: int = 1 << 20, seed: int = 0) -> None:
    """Rows of one random W2-like mixture, written chunk by chunk to a ``.npy`` file."""
    rng = np.random.default_rng(seed)
    d, k = N_FEATURES, N_COMPONENTS
    centres = rng.normal(0.0, 6.0 / np.sqrt(2.0 * d), size=(k, d))
    weights = rng.dirichlet(np.full(k, 5.0))
    factors = []
    for _ in range(k):
        q, r = np.linalg.qr(rng.standard_normal((d, d)))
        q = q * np.sign(np.diag(r))
        factors.append(q * np.sqrt(rng.uniform(0.3, 1.5, size=d)))
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n_samples, d))
    for start in range(0, n_samples, chunk):
        m = min(chunk, n_samples - start)
        labels = rng.choice(k, size=m, p=weights)
        z = rng.standard_normal((m, d))
        block = np.empty((m, d))
        for c in range(k):
            rows = labels == c
            block[rows] = centres[c] + z[rows] @ factors[c].T
        out[start : start + m] = block
        out.flush()
        # drop the written pages from this process too
        out._mmap.madvise(mmap.MADV_DONTNEED, 0, len(out._mmap))
    del out


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


class _PeakSampler:
    """Samples RssAnon every ``interval`` seconds and keeps the maximum."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _status("RssAnon"))
            self._stop.wait(self.interval)

    def reset(self) -> None:
        self.peak = _status("RssAnon")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _reset_hwm() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def child(path: str, margin: int, max_iter: int) -> None:
    from fastem import GaussianMixture

    warm = np.random.default_rng(0).normal(size=(20_000, N_FEATURES))
    GaussianMixture(2, random_state=0, max_iter=2).fit(warm).predict(warm)
    del warm
    sampler = _PeakSampler()
    baseline = _status("VmData")
    limit = baseline + margin
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    report = {
        "file_bytes": os.path.getsize(path),
        "vmdata_baseline": baseline,
        "rlimit_data": limit,
        "rss_baseline": _status("VmRSS"),
        "rssanon_baseline": _status("RssAnon"),
    }
    try:
        np.load(path)
        report["np_load_whole_file"] = "succeeded (limit NOT enforced)"
    except MemoryError as exc:
        report["np_load_whole_file"] = f"MemoryError: {exc}"

    X = np.load(path, mmap_mode="r")
    report["shape"] = list(X.shape)
    model = GaussianMixture(N_COMPONENTS, covariance_type="full", random_state=0, max_iter=max_iter)
    steps = {
        "fit": lambda: model.fit(X),
        "predict": lambda: model.predict(X),
        "score_samples": lambda: model.score_samples(X),
    }
    for name, step in steps.items():
        _reset_hwm()
        sampler.reset()
        t = time.perf_counter()
        result = step()
        report[name] = {
            "seconds": round(time.perf_counter() - t, 2),
            "vmhwm": _status("VmHWM"),
            "peak_rssanon": sampler.peak,
            "output_bytes": int(getattr(result, "nbytes", 0)),
        }
        del result
    report["fit"]["n_iter"] = model.n_iter_
    report["fit"]["lower_bound"] = model.lower_bound_
    sampler.stop()
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=2.5)
    parser.add_argument("--margin-mb", type=int, default=256)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--max-iter", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the data file")
    parser.add_argument("--child", nargs=3, metavar=("PATH", "MARGIN", "MAX_ITER"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return
    if not sys.platform.startswith("linux"):
        sys.exit("Linux only: needs /proc and RLIMIT_DATA's accounting")

    free = shutil.disk_usage(args.dir).free
    size = min(int(args.size_gb * 2**30), free // 2)
    n = size // (N_FEATURES * 8)
    path = os.path.join(args.dir, f"fastem_out_of_core_{os.getpid()}.npy")
    print(f"free disk {free / 2**30:.1f} GiB; writing {n:,} x {N_FEATURES} float64 to {path}")
    t = time.perf_counter()
    try:
        write_mixture(path, n)
        print(f"written {os.path.getsize(path) / 2**30:.2f} GiB in {time.perf_counter() - t:.0f} s")
        cmd = [sys.executable, __file__, "--child", path, str(args.margin_mb * MB)]
        out = subprocess.run([*cmd, str(args.max_iter)], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"child failed ({out.returncode}):\n{out.stderr}")
        rep = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep and os.path.exists(path):
            os.remove(path)

    def mib(x: int) -> str:
        return f"{x / MB:,.0f} MiB"

    print(f"file: {mib(rep['file_bytes'])}, shape {rep['shape']}")
    ratio = rep["file_bytes"] / rep["rlimit_data"]
    # a small --size-gb can leave the limit above the file: say so, not "0.4x smaller"
    relation = f"{ratio:.1f}x smaller" if ratio >= 1 else f"{1 / ratio:.1f}x larger"
    print(
        f"RLIMIT_DATA: {mib(rep['rlimit_data'])} (baseline VmData {mib(rep['vmdata_baseline'])}"
        f" + margin {args.margin_mb} MiB), {relation} than the file"
    )
    print(f"np.load of the whole file under the limit: {rep['np_load_whole_file']}")
    print(
        f"baseline after warm-up: VmRSS {mib(rep['rss_baseline'])}, "
        f"RssAnon {mib(rep['rssanon_baseline'])}"
    )
    for step in ("fit", "predict", "score_samples"):
        r = rep[step]
        extra = f", {r['n_iter']} EM iterations" if step == "fit" else ""
        print(
            f"{step:>13}: {r['seconds']:7.1f} s{extra}; peak VmHWM {mib(r['vmhwm'])}, "
            f"peak RssAnon {mib(r['peak_rssanon'])}; output {mib(r['output_bytes'])}"
        )


if __name__ == "__main__":
    main()
