"""Held-out shapes: fastem against its peers away from the standard workloads.

Looks for performance cliffs: shapes where fastem is slower than
scikit-learn's ``GaussianMixture`` (or hmmlearn) or where its ratio is far
worse than on neighbouring shapes. Every figure is process CPU time on one
thread (``n_threads=1`` for fastem, BLAS/OpenMP limited to 1 thread through the
environment before NumPy loads), measured interleaved (fastem, peer, fastem,
peer, ...), median over ``--repeats`` after a warm-up fit (Numba compilation
excluded).

Columns: ``iter`` is the ratio of CPU seconds per EM iteration (fit with
``max_iter=n1`` minus ``max_iter=n0`` from the same initial parameters,
``tol=0``, divided by ``n1 - n0``), ``fit`` the ratio of the whole
``n1``-iteration fit; for predict/score_samples and partial_fit cases both
columns are the ratio of one call (one pass of partial_fit over the data). The
``nan-*`` cases compare fastem with NaN against fastem on the same data without
NaN (scikit-learn refuses NaN). Ratios are ``peer / fastem``: above 1 fastem is faster.

Usage::

    nice -n 5 python benchmarks/cliffs.py [--cases gmm-D1-K1,hmm-K32] [--repeats 5]
    nice -n 5 python benchmarks/cliffs.py --list
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402

# name: (N, D, K, covariance_type, dtype, options)
GMM_CASES = {
    "gmm-D1-K1": (100_000, 1, 1, "full", np.float64, {}),
    "gmm-D1-K4": (100_000, 1, 4, "full", np.float64, {}),
    "gmm-D2-K64": (50_000, 2, 64, "full", np.float64, {}),
    "gmm-D2-K128": (20_000, 2, 128, "full", np.float64, {}),
    "gmm-D64-K4-full": (20_000, 64, 4, "full", np.float64, {}),
    "gmm-D128-K4-full": (10_000, 128, 4, "full", np.float64, {}),
    "gmm-D128-K4-diag": (20_000, 128, 4, "diag", np.float64, {}),
    "gmm-N50-D2-K3": (50, 2, 3, "full", np.float64, {}),
    "gmm-N50-D5-K3-diag": (50, 5, 3, "diag", np.float64, {}),
    "gmm-N500-D2-K3": (500, 2, 3, "full", np.float64, {}),
    "gmm-NltKD-full": (300, 16, 16, "full", np.float64, {"reg_covar": 1e-2}),
    "gmm-tied-K64": (20_000, 8, 64, "tied", np.float64, {}),
    "gmm-spherical-K64": (50_000, 8, 64, "spherical", np.float64, {}),
    "gmm-spherical-K128": (20_000, 4, 128, "spherical", np.float64, {}),
    "gmm-diag-K128": (20_000, 4, 128, "diag", np.float64, {}),
    "gmm-f32-full": (100_000, 8, 8, "full", np.float32, {}),
    "gmm-sw-full": (100_000, 8, 8, "full", np.float64, {"sample_weight": True}),
}
# name: (N, D, K, covariance_type, method)
CALL_CASES = {
    "predict-1M-D4-K8": (1_000_000, 4, 8, "full", "predict"),
    "score-1M-D4-K8": (1_000_000, 4, 8, "full", "score_samples"),
    "predict-200k-D16-K16-diag": (200_000, 16, 16, "diag", "predict_proba"),
}
# name: (covariance_type, D, K, n_sequences, length)
HMM_CASES = {
    "hmm-K32-diag": ("diag", 4, 32, 20, 200),
    "hmm-long-1x100k": ("diag", 2, 4, 1, 100_000),
    "hmm-long-full-1x20k": ("full", 4, 8, 1, 20_000),
    "hmm-tiny-2000x5": ("diag", 2, 4, 2000, 5),
    "hmm-tiny-500x20": ("diag", 3, 6, 500, 20),
    "hmm-K64-full": ("full", 2, 64, 5, 200),
    "hmm-K32-D1": ("diag", 1, 32, 50, 100),
    "hmm-tiny-5000x2": ("diag", 2, 3, 5000, 2),
    "hmm-K16-tied-D8": ("tied", 8, 16, 20, 300),
    "hmm-K16-spherical-D8": ("spherical", 8, 16, 20, 300),
    "hmm-long-1x100k-K16": ("diag", 2, 16, 1, 100_000),
    # lengths (20000, 10, 10, 10) x 4: one long sequence per batch of four
    "hmm-uneven-K8": ("diag", 2, 8, 16, "uneven"),
    "hmm-uneven-K8-full": ("full", 2, 8, 16, "uneven"),
}
# name: (N, D, K, batch rows): partial_fit over the data in batches, against
# scikit-learn's warm-started fit(max_iter=1) on each batch (it has no partial_fit).
PARTIAL_CASES = {
    "partial-fit-B50-D4-K8": (50_000, 4, 8, 50),
    "partial-fit-B1000-D4-K8": (200_000, 4, 8, 1000),
}
# Cases with NaN go through fastem only (scikit-learn refuses NaN): the ratio
# is against the same fit without NaN.
NAN_CASES = {
    "nan-f32-full": (50_000, 8, 8, "full", np.float32),
    "nan-f64-diag": (50_000, 8, 8, "diag", np.float64),
}


def cpu(fn, *args):
    t0 = time.process_time()
    fn(*args)
    return time.process_time() - t0


def interleaved(fns: dict, n0: int, n1: int, repeats: int, per_iter: bool = True):
    """Median CPU per iteration and per fit of each fit function, interleaved."""
    for fn in fns.values():  # warm-up: compile, caches
        fn(n0)
        fn(n1)
    it = {name: [] for name in fns}
    whole = {name: [] for name in fns}
    for r in range(repeats):
        names = list(fns)
        if r % 2:
            names.reverse()
        for name in names:
            c0 = cpu(fns[name], n0) if per_iter else 0.0
            c1 = cpu(fns[name], n1)
            it[name].append((c1 - c0) / (n1 - n0))
            whole[name].append(c1)
    return (
        {k: float(np.median(v)) for k, v in it.items()},
        {k: float(np.median(v)) for k, v in whole.items()},
    )


def gmm_case(name, backends, n0, n1, repeats):
    from sklearn.mixture import GaussianMixture as SkGM

    from fastem import GaussianMixture
    from fastem.datasets import initial_parameters, make_mixture

    n, d, k, cov, dtype, opts = GMM_CASES[name]
    opts = dict(opts)
    X, _ = make_mixture(n, d, k, rotate=cov != "diag", random_state=0, dtype=dtype)
    init = initial_parameters(X, k, cov, random_state=1)
    reg = opts.pop("reg_covar", 1e-6)
    sw = None
    if opts.pop("sample_weight", False):
        sw = np.random.default_rng(2).uniform(0.5, 2.0, size=n)

    def ours(backend):
        def fit(m):
            gm = GaussianMixture(
                tol=0.0, reg_covar=reg, max_iter=m, backend=backend, n_threads=1, **init
            )
            gm.fit(X) if sw is None else gm.fit(X, sample_weight=sw)

        return fit

    def peer(m):
        gm = SkGM(tol=0.0, reg_covar=reg, max_iter=m, random_state=0, **init)
        if sw is None:
            gm.fit(X)
        else:  # scikit-learn >= 1.8 only; otherwise the unweighted fit
            try:
                gm.fit(X, sample_weight=sw)
            except TypeError:
                gm.fit(X)

    fns = {f"fastem[{b}]": ours(b) for b in backends}
    fns["sklearn"] = peer
    return interleaved(fns, n0, n1, repeats)


def nan_case(name, backends, n0, n1, repeats):
    from fastem import GaussianMixture
    from fastem.datasets import initial_parameters, make_mixture

    n, d, k, cov, dtype = NAN_CASES[name]
    X, _ = make_mixture(n, d, k, rotate=cov != "diag", random_state=0, dtype=dtype)
    init = initial_parameters(X, k, cov, random_state=1)
    Xn = X.copy()
    mask = np.random.default_rng(3).random(X.shape) < 0.05
    mask[mask.all(axis=1)] = False
    Xn[mask] = np.nan

    def ours(backend, data):
        def fit(m):
            GaussianMixture(tol=0.0, max_iter=m, backend=backend, n_threads=1, **init).fit(data)

        return fit

    fns = {}
    for b in backends:
        fns[f"fastem[{b}]+nan"] = ours(b, Xn)
    fns["sklearn"] = ours(backends[0], X)  # the "peer" is fastem without NaN
    return interleaved(fns, n0, n1, repeats)


def call_case(name, backends, repeats):
    from sklearn.mixture import GaussianMixture as SkGM

    from fastem import GaussianMixture
    from fastem.datasets import initial_parameters, make_mixture

    n, d, k, cov, method = CALL_CASES[name]
    X, _ = make_mixture(n, d, k, rotate=cov != "diag", random_state=0, dtype=np.float64)
    init = initial_parameters(X, k, cov, random_state=1)
    sk = SkGM(max_iter=2, random_state=0, **init).fit(X[:20000])
    models = {}
    for b in backends:
        models[f"fastem[{b}]"] = GaussianMixture(max_iter=2, backend=b, n_threads=1, **init).fit(
            X[:20000]
        )
    models["sklearn"] = sk
    fns = {name_: (lambda m, mod=mod: getattr(mod, method)(X)) for name_, mod in models.items()}
    _, whole = interleaved(fns, 0, 1, repeats, per_iter=False)
    return whole, whole


def partial_case(name, backends, repeats):
    from sklearn.mixture import GaussianMixture as SkGM

    from fastem import GaussianMixture
    from fastem.datasets import initial_parameters, make_mixture

    n, d, k, batch = PARTIAL_CASES[name]
    X, _ = make_mixture(n, d, k, random_state=0)
    init = initial_parameters(X, k, "full", random_state=1)

    def ours(backend):
        def run(_):
            gm = GaussianMixture(backend=backend, n_threads=1, **init)
            for a in range(0, n, batch):
                gm.partial_fit(X[a : a + batch])

        return run

    def peer(_):
        gm = SkGM(max_iter=1, tol=0.0, warm_start=True, **init)
        for a in range(0, n, batch):
            gm.fit(X[a : a + batch])

    fns = {f"fastem[{b}]": ours(b) for b in backends}
    fns["sklearn"] = peer
    _, whole = interleaved(fns, 0, 1, repeats, per_iter=False)
    return whole, whole


def hmm_case(name, backends, n0, n1, repeats):
    from hmmlearn import hmm as hl

    from fastem import hmm as fh

    cov, d, k, s, t = HMM_CASES[name]
    lengths = np.array([20_000, 10, 10, 10] * (s // 4)) if t == "uneven" else np.full(s, t)
    starts = set(np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist())
    s, t = 1, int(lengths.sum())  # frames drawn as one run, restarted at each sequence
    rng = np.random.default_rng(0)
    trans = np.full((k, k), 0.1 / max(k - 1, 1))
    np.fill_diagonal(trans, 0.9)
    means = rng.normal(scale=4.0, size=(k, d))
    z = np.empty(s * t, dtype=np.int64)
    cum = np.cumsum(trans, axis=1)
    u = rng.random(s * t)
    for i in range(s * t):
        if i in starts:
            z[i] = rng.integers(k)
        else:
            z[i] = min(np.searchsorted(cum[z[i - 1]], u[i]), k - 1)
    X = means[z] + rng.normal(size=(s * t, d))
    var = X.var(axis=0)
    init = dict(
        startprob_=np.full(k, 1.0 / k),
        transmat_=np.full((k, k), 0.5 / k) + np.eye(k) * 0.5,
        means_=X[rng.choice(s * t, k, replace=False)],
        covars_={
            "diag": np.tile(var, (k, 1)),
            "full": np.tile(np.diag(var), (k, 1, 1)),
            "tied": np.diag(var),
            "spherical": np.full(k, var.mean()),
        }[cov],
    )
    common = dict(covariance_type=cov, init_params="", tol=-np.inf)

    def run(make):
        def fit(m):
            model = make(m)
            for key, value in init.items():
                setattr(model, key, np.array(value, copy=True))
            model.fit(X, lengths)

        return fit

    fns = {
        f"fastem[{b}]": run(
            lambda m, b=b: fh.GaussianHMM(k, n_iter=m, backend=b, n_threads=1, **common)
        )
        for b in backends
    }
    fns["hmmlearn"] = run(lambda m: hl.GaussianHMM(k, n_iter=m, implementation="scaling", **common))
    return interleaved(fns, n0, n1, repeats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    p.add_argument("--backends", default="numba,cython")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--n0", type=int, default=2)
    p.add_argument("--n1", type=int, default=7)
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    every = {**GMM_CASES, **CALL_CASES, **PARTIAL_CASES, **HMM_CASES, **NAN_CASES}
    if args.list:
        print("\n".join(every))
        return 0
    warnings.filterwarnings("ignore")
    logging.getLogger("hmmlearn").setLevel(logging.ERROR)
    from fastem.backends import available_backends

    backends = [b for b in args.backends.split(",") if b in available_backends()]
    names = args.cases.split(",") if args.cases else list(every)
    print(f"load: {os.getloadavg()}; 1 thread; CPU time; ratio = peer / fastem (> 1: faster)")
    print(f"{'case':28s} {'impl':18s} {'iter':>7s} {'fit':>7s}")
    for name in names:
        if name in GMM_CASES:
            it, whole = gmm_case(name, backends, args.n0, args.n1, args.repeats)
        elif name in CALL_CASES:
            it, whole = call_case(name, backends, args.repeats)
        elif name in PARTIAL_CASES:
            it, whole = partial_case(name, backends, args.repeats)
        elif name in HMM_CASES:
            it, whole = hmm_case(name, backends, args.n0, args.n1, args.repeats)
        elif name in NAN_CASES:
            it, whole = nan_case(name, backends, args.n0, args.n1, args.repeats)
        else:
            raise SystemExit(f"unknown case {name}")
        peer = [key for key in it if not key.startswith("fastem")][0]
        for key in it:
            if key == peer:
                continue
            r_it = it[peer] / it[key] if it[key] > 0 else float("inf")
            r_fit = whole[peer] / whole[key] if whole[key] > 0 else float("inf")
            print(f"{name:28s} {key:18s} {r_it:7.2f} {r_fit:7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
