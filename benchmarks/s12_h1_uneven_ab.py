"""A/B of the Cython HMM kernels on uneven batches: an old build of
``fastem/backends/_cython_hmm.pyx`` (a module importable as ``--old NAME``,
e.g. built from ``git show COMMIT:fastem/backends/_cython_hmm.pyx`` saved as
``_cython_hmm_old.pyx`` with the project's compile flags) against the working
tree's, and hmmlearn for the ratio.

Whole Baum-Welch iterations of a GaussianHMM (K=8, D=2) on lengths
(20000, 10, 10, 10) x 4 from the same initial parameters (benchmarks/cliffs.py's
``hmm-uneven-K8`` data), 1 thread, process CPU time per iteration (fit of n1
minus fit of n0 iterations), interleaved, medians over ``--repeats``; the paired
ratio old/new is the median over the repeats.

Usage::

    PYTHONPATH=/tmp/h1ab python benchmarks/s12_h1_uneven_ab.py --old _cython_hmm_old
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402


def _data(cov, d=2, k=8, n_batches=4):
    lengths = np.array([20_000, 10, 10, 10] * n_batches)
    starts = set(np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist())
    n = int(lengths.sum())
    rng = np.random.default_rng(0)
    trans = np.full((k, k), 0.1 / (k - 1))
    np.fill_diagonal(trans, 0.9)
    means = rng.normal(scale=4.0, size=(k, d))
    cum = np.cumsum(trans, axis=1)
    u = rng.random(n)
    z = np.empty(n, dtype=np.int64)
    for i in range(n):
        z[i] = rng.integers(k) if i in starts else min(np.searchsorted(cum[z[i - 1]], u[i]), k - 1)
    X = means[z] + rng.normal(size=(n, d))
    var = X.var(axis=0)
    init = dict(
        startprob_=np.full(k, 1.0 / k),
        transmat_=np.full((k, k), 0.5 / k) + np.eye(k) * 0.5,
        means_=X[rng.choice(n, k, replace=False)],
        covars_=np.tile(var, (k, 1)) if cov == "diag" else np.tile(np.diag(var), (k, 1, 1)),
    )
    return X, lengths, init


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="module name of the old Cython HMM build")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--n0", type=int, default=2)
    p.add_argument("--n1", type=int, default=6)
    p.add_argument("--cov", default="diag,full")
    args = p.parse_args()

    for cov in args.cov.split(","):
        _run(cov, args)


def _run(cov, args):
    from hmmlearn import hmm as hl

    from fastem import hmm as fh
    from fastem.hmm import _backend

    new = _backend.get_hmm_kernels("cython")
    old = _backend.HMMKernels("cython", importlib.import_module(args.old), new.mixture)
    X, lengths, init = _data(cov)
    common = dict(covariance_type=cov, init_params="", tol=-np.inf)

    def fit(make, m, kernels=None):
        model = make(m)
        for key, value in init.items():
            setattr(model, key, np.array(value, copy=True))
        if kernels is not None:
            _backend._loaded["cython"] = kernels
        try:
            c = time.process_time()
            model.fit(X, lengths)
            return time.process_time() - c
        finally:
            _backend._loaded["cython"] = new

    def ours(m):
        return fh.GaussianHMM(8, n_iter=m, backend="cython", n_threads=1, **common)

    def peer(m):
        return hl.GaussianHMM(8, n_iter=m, implementation="scaling", **common)

    arms = {
        "old": lambda m: fit(ours, m, old),
        "new": lambda m: fit(ours, m, new),
        "hmmlearn": lambda m: fit(peer, m),
    }
    for arm in arms.values():
        arm(args.n0)
    per = {name: [] for name in arms}
    for r in range(args.repeats):
        for name in list(arms)[:: -1 if r % 2 else 1]:
            t1 = arms[name](args.n1)
            t0 = arms[name](args.n0)
            per[name].append((t1 - t0) / (args.n1 - args.n0))
    med = {k: float(np.median(v)) for k, v in per.items()}
    paired = np.median(np.array(per["old"]) / np.array(per["new"]))
    print(
        f"{cov}: ms/iter old {1e3 * med['old']:.2f} new {1e3 * med['new']:.2f} "
        f"hmmlearn {1e3 * med['hmmlearn']:.2f} | old/new paired {paired:.2f}x | "
        f"vs hmmlearn old {med['hmmlearn'] / med['old']:.2f}x "
        f"new {med['hmmlearn'] / med['new']:.2f}x",
        flush=True,
    )


if __name__ == "__main__":
    main()
