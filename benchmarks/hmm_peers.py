"""Seconds per Baum-Welch iteration: fastem.hmm against hmmlearn (../shared/BENCHMARKS.md).

Each figure is (time of a fit with n_iter=n1 - time with n_iter=n0) / (n1 - n0),
from the same given initial parameters, with early stopping disabled, so that
initialization and set-up cancel out. Runs are interleaved (fastem on all Numba
threads, fastem on one thread, hmmlearn log, hmmlearn scaling, repeat) and the
medians over repeats are reported with the ratio to hmmlearn's faster
implementation.

Usage::

    python benchmarks/hmm_peers.py [--workload HB1] [--repeats 5] [--n0 2] [--n1 12]
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np

WORKLOADS = {
    # name: (covariance_type, D, K, n_sequences, length)
    "HB1": ("diag", 10, 20, 50, 200),
    "HB2": ("diag", 1, 10, 50, 100),
    "LONGFULL": ("full", 8, 8, 1, 20000),
}


def make_data(cov_type: str, D: int, K: int, S: int, T: int, seed: int = 0):
    """Sequences from a random sticky HMM with well-separated means, and the
    initial parameters every implementation starts from."""
    rng = np.random.default_rng(seed)
    trans = np.full((K, K), 0.1 / max(K - 1, 1))
    np.fill_diagonal(trans, 0.9 if K > 1 else 1.0)
    means = rng.normal(scale=4.0, size=(K, D))
    X = np.empty((S * T, D))
    for s in range(S):
        z = rng.integers(K)
        for t in range(T):
            X[s * T + t] = means[z] + rng.normal(size=D)
            z = rng.choice(K, p=trans[z])
    lengths = np.full(S, T)
    init = dict(
        startprob_=np.full(K, 1.0 / K),
        transmat_=np.full((K, K), 1.0 / K) * 0.5 + np.eye(K) * 0.5,
        means_=X[rng.choice(S * T, K, replace=False)],
    )
    var = X.var(axis=0)
    init["covars_"] = {
        "diag": np.tile(var, (K, 1)),
        "full": np.tile(np.diag(var), (K, 1, 1)),
    }[cov_type]
    return X, lengths, init


def _fit_seconds(make, X, lengths, init, n_iter, threads=None):
    model = make(n_iter)
    for name, value in init.items():
        setattr(model, name, np.array(value, copy=True))
    if threads is not None:
        import numba

        before = numba.get_num_threads()
        numba.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        model.fit(X, lengths)
        return time.perf_counter() - t0
    finally:
        if threads is not None:
            numba.set_num_threads(before)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="HB1", choices=sorted(WORKLOADS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n0", type=int, default=2)
    parser.add_argument("--n1", type=int, default=12)
    args = parser.parse_args(argv)
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)

    from hmmlearn import hmm as hl

    from fastem.hmm import GaussianHMM

    cov_type, D, K, S, T = WORKLOADS[args.workload]
    X, lengths, init = make_data(cov_type, D, K, S, T)
    common = dict(covariance_type=cov_type, init_params="", tol=-np.inf)
    makers = {
        "fastem": lambda n: GaussianHMM(K, n_iter=n, **common),
        "fastem-1-thread": lambda n: GaussianHMM(K, n_iter=n, **common),
        "hmmlearn-log": lambda n: hl.GaussianHMM(K, n_iter=n, implementation="log", **common),
        "hmmlearn-scaling": lambda n: hl.GaussianHMM(
            K, n_iter=n, implementation="scaling", **common
        ),
    }
    _fit_seconds(makers["fastem"], X, lengths, init, 1)  # compile / warm caches
    per_iter = {name: [] for name in makers}
    for _ in range(args.repeats):
        for name, make in makers.items():
            threads = 1 if name == "fastem-1-thread" else None
            t0 = _fit_seconds(make, X, lengths, init, args.n0, threads)
            t1 = _fit_seconds(make, X, lengths, init, args.n1, threads)
            per_iter[name].append((t1 - t0) / (args.n1 - args.n0))
    med = {name: float(np.median(v)) for name, v in per_iter.items()}
    ref_name = min(("hmmlearn-log", "hmmlearn-scaling"), key=med.get)
    print(f"{args.workload}: {cov_type}, D={D}, K={K}, {S} x {T}; median of {args.repeats}")
    for name, value in med.items():
        print(f"  {name:18s} {value * 1e3:9.3f} ms/iter   {med[ref_name] / value:6.2f}x {ref_name}")


if __name__ == "__main__":
    main()
