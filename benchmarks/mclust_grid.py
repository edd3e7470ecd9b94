"""The mclust BIC grid: fastem's 14 covariance models x K = 1..9 against
scikit-learn's 4 covariance types x K = 1..9, on one data set.

Both sides fit every (model, K) cell independently with the same settings:
``init_params='kmeans'`` (each library's own k-means start), ``n_init=1``,
``tol=1e-3`` on the average log-likelihood (scikit-learn's absolute rule, which
is also fastem's default), ``max_iter=100``, ``reg_covar=1e-6``, the same
``random_state``. Times are CPU seconds of this process (``time.process_time``)
with one thread on both sides (fastem ``n_threads=1``, BLAS/OpenMP limited by
threadpoolctl), so the figures do not depend on how loaded the machine is; wall
seconds are printed too. One untimed fit per library on 2,000 rows first takes the
imports and first-call (Numba cache) costs out of both grids. The BIC is mclust's
sign (``2 loglik - npar log n``, higher is better) for both grids; the four
scikit-learn types are also fitted in fastem under their mclust names (VII, VVI,
EEE, VVV), so the two grids share those rows.

A second part times the M-step of EVE and VVE at large ``d`` (d = 64, K = 16
by default) against one E-step pass over ``--pass-rows`` rows: the generalized
M-step fastem runs inside EM (one warm-started orientation sweep for d > 16),
the exact M-step (iterated to tolerance from the previous orientation), and, for
reference, the ``full`` M-step.

A third part (``--sweep-ab 4,10,24,64``) times EVE/VVE's generalized M-step as EM
runs it (one warm-started orientation sweep, ``_mclust.m_step(..., max_iter=1)``)
with the compiled (Numba) sweep against the NumPy one, interleaved, CPU seconds,
median over ``--repeats``, one thread; and the first-call cost of the compiled
sweep (Numba compilation into an empty cache, then a load from that cache), each
in a fresh interpreter.

``--select`` replaces the cell-by-cell grid with the way a user runs it:
``fastem.select_model`` with its defaults (mclust's 14 models, shared hc + emEM
starts, SQUAREM, Aitken stopping at 1e-8, up to 1000 iterations; by default the
two-stage search, ``refine="contenders"``: every candidate screened, the ones
that could be among the best three fitted to the maximum) against
scikit-learn's 4 types with scikit-learn's defaults (k-means start,
``tol=1e-3``, ``max_iter=100``), one thread on both sides. fastem's grid is one
``select_model(X, n_components=range(1, kmax + 1))`` call (the two-stage search
ranks the whole grid); ``--refine all`` times the former behaviour (every
candidate to the maximum), ``--refine both`` both, on the same data.

``--check-choice`` compares ``refine="contenders"`` with ``refine="all"`` on
small data (iris, wine, diabetes, make_mixture sets): the selected model, its
BIC, the best three, how many candidates were refined, CPU seconds.

    python benchmarks/mclust_grid.py [--n 100000] [--d 8] [--kmax 9] [--true-k 4]
        [--models all] [--no-sklearn] [--mstep-d 64] [--mstep-k 16] [--skip-grid]
        [--sweep-ab 4,10,24,64] [--sweep-k 8] [--skip-mstep] [--select]
        [--refine contenders|all|both]
        [--check-choice]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import numpy as np

from fastem import GaussianMixture
from fastem._covariance import MCLUST_MODELS, SKLEARN_ALIASES
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning

SETTINGS = {"init_params": "kmeans", "n_init": 1, "tol": 1e-3, "max_iter": 100, "reg_covar": 1e-6}


def _limits():
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return None
    return threadpool_limits(1)


def fit_cell(lib: str, model: str, k: int, X: np.ndarray, seed: int) -> dict:
    """One (model, K) fit: CPU and wall seconds, mclust-sign BIC, iterations."""
    n = X.shape[0]
    if lib == "fastem":
        gm = GaussianMixture(k, covariance_type=model, random_state=seed, n_threads=1, **SETTINGS)
    else:
        from sklearn.mixture import GaussianMixture as SkGM

        gm = SkGM(k, covariance_type=model, random_state=seed, **SETTINGS)
    c0, w0 = time.process_time(), time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.filterwarnings("ignore", message=".*did not converge.*")
        try:
            gm.fit(X)
            ok = True
        except ValueError:  # a singular covariance: mclust reports NA for the cell
            ok = False
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    bic = -gm.bic(X) if ok else float("nan")  # mclust's sign: 2 loglik - npar log n
    return {"cpu": cpu, "wall": wall, "bic": bic, "n_iter": getattr(gm, "n_iter_", 0), "n": n}


def run_grids(X, models, sk_models, kmax, seed):
    """Both grids, interleaved by K (so a change of machine load hits both)."""
    ours, theirs = {}, {}
    for k in range(1, kmax + 1):
        for lib, cells, names in (("fastem", ours, models), ("sklearn", theirs, sk_models)):
            for model in names:
                c = cells[(model, k)] = fit_cell(lib, model, k, X, seed)
                print(
                    f"  {lib:7s} {model:9s} K={k}: {c['cpu']:7.2f} s cpu {c['wall']:7.2f} s "
                    f"wall {c['n_iter']:3d} it  BIC {c['bic']:.1f}",
                    flush=True,
                )
    return ours, theirs


def print_table(cells, models, kmax, title):
    print(f"\n{title}: BIC (mclust sign, higher is better)")
    print("  K " + "".join(f"{m:>11s}" for m in models))
    for k in range(1, kmax + 1):
        print(f"{k:3d} " + "".join(f"{cells[(m, k)]['bic']:11.1f}" for m in models))
    totals = [sum(cells[(m, k)]["cpu"] for k in range(1, kmax + 1)) for m in models]
    print("cpu s" + "".join(f"{t:11.2f}" for t in totals))


def mstep_timing(d: int, k: int, pass_rows: int, repeats: int, seed: int = 0) -> None:
    """EVE/VVE M-step cost at large d against one E-step pass (one thread)."""
    from fastem import _stats, backends
    from fastem._mclust import m_step as structured
    from fastem._passes import PassParams, em_stats

    X, _ = make_mixture(pass_rows, d, k, random_state=seed)
    gm = GaussianMixture(k, covariance_type="full", max_iter=3, random_state=seed, n_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    kernels = backends.get_backend(backends.resolve_backend_name(None))
    params = PassParams.from_model(gm.weights_, gm.means_, gm.precisions_cholesky_, "full", X.dtype)
    sw = np.ones(pass_rows)
    eps = float(np.finfo(np.float64).eps)

    def timed(fn):
        out = []
        for _ in range(repeats):
            c0 = time.process_time()
            fn()
            out.append(time.process_time() - c0)
        return statistics.median(out)

    stats0 = em_stats(kernels, X, sw, params)
    t_pass = timed(lambda: em_stats(kernels, X, sw, params))
    # the next EM iteration's statistics: what an M-step inside EM sees
    w1, m1, _, pc1 = _stats.m_step(stats0, "full", 1e-6, eps)
    stats = em_stats(kernels, X, sw, PassParams.from_model(w1, m1, pc1, "full", X.dtype))
    print(f"\nM-step at d={d}, K={k} (CPU s, median of {repeats}, one thread)")
    print(f"  E-step pass, {pass_rows} rows, full kernel: {t_pass:.4f}")
    t_full = timed(lambda: _stats.m_step(stats, "full", 1e-6, eps))
    print(f"  full M-step (_stats.m_step): {t_full:.4f}")
    for model in ("EVE", "VVE"):
        # the previous iteration's exact orientation, the warm start inside EM
        previous = structured(stats0, model, 1e-6, eps).orientation[0]

        def gem(model=model, previous=previous):
            _stats.m_step(stats, model, 1e-6, eps, state={"orientation": previous})

        t_gem = timed(gem)
        c0 = time.process_time()
        exact = structured(stats, model, 1e-6, eps, orientation_init=previous, decompose=False)
        t_exact = time.process_time() - c0
        print(
            f"  {model}: generalized M-step as in EM ({_stats.gem_sweeps(d)} warm sweep(s)) "
            f"{t_gem:.4f} = {t_gem / t_pass:.2f} passes; exact M-step from the same warm "
            f"start {t_exact:.2f} ({exact.n_iter} sweeps) = {t_exact / t_pass:.1f} passes"
        )


def _pass_statistics(d: int, k: int, rows: int, seed: int):
    """Statistics of an E-step pass over ``make_mixture(rows, d, k)`` after three EM
    iterations of a ``full`` model: what an M-step inside EM sees."""
    from fastem import backends
    from fastem._passes import PassParams, em_stats

    X, _ = make_mixture(rows, d, k, random_state=seed)
    gm = GaussianMixture(k, covariance_type="full", max_iter=3, random_state=seed, n_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    kernels = backends.get_backend(backends.resolve_backend_name(None))
    params = PassParams.from_model(gm.weights_, gm.means_, gm.precisions_cholesky_, "full", X.dtype)
    return em_stats(kernels, X, np.ones(rows), params)


_COMPILE_SNIPPET = """
import time, numpy as np, numba
from fastem._mclust import _flat_rounds
c0, w0 = time.process_time(), time.perf_counter()  # the sweep's module and call only
from fastem.backends._numba_mclust import jacobi_sweep
g = np.stack([np.eye(4) + 0.1] * 2); o = np.eye(4)
jacobi_sweep(g, o, np.ones(2), True, *_flat_rounds(4), 8)
print(time.process_time() - c0, time.perf_counter() - w0)
"""


def sweep_ab(ds: list[int], k: int, rows: int, repeats: int, seed: int = 0) -> None:
    """EVE/VVE's generalized M-step (one warm sweep) with the Numba and NumPy sweeps."""
    import os
    import subprocess
    import tempfile

    from fastem._mclust import m_step as structured

    eps = float(np.finfo(np.float64).eps)
    print(f"\nEVE/VVE generalized M-step (1 warm sweep), K={k}: CPU s, median of {repeats}")
    print("  model   d      numpy      numba   numpy/numba")
    for d in ds:
        stats = _pass_statistics(d, k, rows, seed)
        for model in ("EVE", "VVE"):
            # a warm start as inside EM: a few sweeps in, not converged
            prev = structured(stats, model, 1e-6, eps, max_iter=5).orientation[0]
            times = {"numpy": [], "numba": []}
            structured(stats, model, 1e-6, eps, max_iter=1, implementation="numba")  # load
            for _ in range(repeats):
                for impl in times:  # interleaved
                    c0 = time.process_time()
                    structured(
                        stats, model, 1e-6, eps, orientation_init=prev, max_iter=1,
                        decompose=False, implementation=impl,
                    )  # fmt: skip
                    times[impl].append(time.process_time() - c0)
            a, b = statistics.median(times["numpy"]), statistics.median(times["numba"])
            print(f"  {model}  {d:4d}  {a:9.5f}  {b:9.5f}   {a / b:8.1f}", flush=True)
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, FASTEM_CACHE_DIR=cache)
        env.pop("NUMBA_CACHE_DIR", None)
        for what in ("compile into an empty cache", "load from the cache"):
            out = subprocess.run(
                [sys.executable, "-c", _COMPILE_SNIPPET], env=env, check=True,
                capture_output=True, text=True,
            ).stdout.split()  # fmt: skip
            print(f"  first call, {what}: {float(out[0]):.2f} CPU s, {float(out[1]):.2f} wall s")


def select_grid(X: np.ndarray, kmax: int, seed: int, refine: list[str]) -> None:
    """select_model's defaults (14 models) against scikit-learn's defaults (4 types).

    fastem: one ``select_model(X, n_components=range(1, kmax + 1))`` call per
    ``refine`` mode (its two-stage search ranks the whole grid, so the grid is one
    call, as a user runs it); scikit-learn: its 4 types at K = 1..kmax. CPU
    seconds, one thread; the two libraries alternate (scikit-learn, then each
    fastem mode).
    """
    from sklearn.mixture import GaussianMixture as SkGM

    from fastem import select_model

    # warm-up, untimed: imports, Numba cache loads, first calls on both sides
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        select_model(X[:2000], n_components=[2], random_state=seed, n_threads=1)
        for ct in SKLEARN_ALIASES:
            SkGM(2, covariance_type=ct, random_state=seed).fit(X[:2000])
    print("\nselect_model defaults (14 models) vs scikit-learn defaults (4 types); CPU s")
    theirs = {}
    for k in range(1, kmax + 1):
        for ct in SKLEARN_ALIASES:
            c0 = time.process_time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = SkGM(k, covariance_type=ct, random_state=seed).fit(X)
            theirs[(k, ct)] = (time.process_time() - c0, -gm.bic(X), gm.n_iter_)
    t_theirs = sum(t[0] for t in theirs.values())
    print(f"scikit-learn, 4 types x K=1..{kmax}: {t_theirs:.1f} CPU s "
          f"({t_theirs / (4 * kmax):.2f} per type and K)")  # fmt: skip
    for ct in SKLEARN_ALIASES:
        cpu = sum(theirs[(k, ct)][0] for k in range(1, kmax + 1))
        its = sum(theirs[(k, ct)][2] for k in range(1, kmax + 1))
        print(f"  {ct}: {cpu:.2f} CPU s, {its} EM iterations")
    results = {}
    for mode in refine:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            c0 = time.process_time()
            sel = select_model(
                X, n_components=range(1, kmax + 1), random_state=seed, n_threads=1, refine=mode
            )
            cpu = time.process_time() - c0
        results[mode] = sel
        rows = [r for r in sel.table if r["error"] is None]
        best = sel.table[sel.best_index_]
        print(
            f"fastem select_model(refine={mode!r}), 14 models x K=1..{kmax}: {cpu:.1f} CPU s "
            f"({cpu / (14 * kmax):.2f} per model and K); / scikit-learn: {cpu / t_theirs:.2f}"
        )
        print(
            f"  refined {sum(bool(r['refined']) for r in rows)} of {len(sel.table)} candidates; "
            f"selected {best['covariance_type']},{best['n_components']} BIC (mclust sign) "
            f"{-best['bic']:.4f}"
        )
        top = [sel.table[i] for i in sel.ranking()[:3]]
        print("  best three: " + ", ".join(
            f"{r['covariance_type']},{r['n_components']} {-r['bic']:.4f}" for r in top
        ))  # fmt: skip
        iters: dict[str, int] = {}
        for r in rows:
            iters[r["covariance_type"]] = iters.get(r["covariance_type"], 0) + (r["n_iter"] or 0)
        print("  EM passes of the kept fits summed over K: "
              + "  ".join(f"{m} {n}" for m, n in iters.items()))  # fmt: skip
        print("  not refined: " + " ".join(
            f"{r['covariance_type']},{r['n_components']}" for r in rows if not r["refined"]
        ))  # fmt: skip
    print("BIC, mclust sign (fastem's model = scikit-learn's type), K=1..kmax:")
    sel = results[refine[0]]
    for alias, model in SKLEARN_ALIASES.items():
        ours = {r["n_components"]: -r["bic"] for r in sel.table
                if r["covariance_type"] == model and r["bic"] is not None}  # fmt: skip
        pairs = [(ours.get(k, float("nan")), theirs[(k, alias)][1]) for k in range(1, kmax + 1)]
        print(f"  {model}/{alias}: " + "  ".join(f"{a:.1f}/{b:.1f}" for a, b in pairs))


def _choice_data(seed: int) -> dict[str, np.ndarray]:
    """Small data sets for --check-choice: scikit-learn's iris, wine and diabetes
    (without its binary column; unscaled) and three make_mixture sets."""
    from sklearn.datasets import load_diabetes, load_iris, load_wine

    diabetes = load_diabetes().data
    return {
        "iris": load_iris().data,
        "wine": load_wine().data,
        "diabetes": np.delete(diabetes, 1, axis=1),
        "mixture 600x2 K=5": make_mixture(600, 2, 5, random_state=seed)[0],
        "mixture 1500x4 K=3": make_mixture(1500, 4, 3, random_state=seed + 1)[0],
        "mixture 20000x8 K=4": make_mixture(20000, 8, 4, random_state=seed)[0],
    }


def check_choice(kmax: int, seed: int) -> None:
    """select_model's two stages against every candidate to the maximum: the choice,
    its BIC, the best three, the candidates refined, CPU seconds (one thread)."""
    from fastem import select_model

    print(f"\nrefine='contenders' vs refine='all', 14 models, K=1..{kmax} (CPU s, one thread)")
    for name, X in _choice_data(seed).items():
        out = {}
        for mode in ("contenders", "all"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                c0 = time.process_time()
                sel = select_model(X, range(1, kmax + 1), random_state=seed, n_threads=1,
                                   refine=mode)  # fmt: skip
                out[mode] = (sel, time.process_time() - c0)
        (two, t_two), (full, t_full) = out["contenders"], out["all"]

        def top(sel):
            return [
                f"{sel.table[i]['covariance_type']},{sel.table[i]['n_components']}"
                for i in sel.ranking()[:3]
            ]

        b_two, b_full = two.table[two.best_index_], full.table[full.best_index_]
        same = top(two) == top(full)
        print(
            f"  {name} ({X.shape[0]}x{X.shape[1]}): {top(two)[0]} BIC {b_two['bic']:.6f} vs "
            f"{top(full)[0]} {b_full['bic']:.6f} (diff {b_two['bic'] - b_full['bic']:.2e}); "
            f"best three {'equal' if same else f'{top(two)} vs {top(full)}'}; refined "
            f"{sum(bool(r['refined']) for r in two.table)}/{len(two.table)}; CPU "
            f"{t_two:.1f} vs {t_full:.1f} s",
            flush=True,
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--true-k", type=int, default=4)
    p.add_argument("--kmax", type=int, default=9)
    p.add_argument("--models", default="all", help="all, or a comma list of mclust names")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-sklearn", action="store_true")
    p.add_argument("--skip-grid", action="store_true")
    p.add_argument("--mstep-d", type=int, default=64)
    p.add_argument("--mstep-k", type=int, default=16)
    p.add_argument("--pass-rows", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-mstep", action="store_true")
    p.add_argument("--sweep-ab", default="", help="comma list of d, e.g. 4,10,24,64")
    p.add_argument("--sweep-k", type=int, default=8)
    p.add_argument("--select", action="store_true", help="select_model vs scikit-learn")
    p.add_argument(
        "--check-choice", action="store_true", help="refine='contenders' vs 'all' on small data"
    )
    p.add_argument(
        "--refine", default="contenders", help="select_model's refine: contenders, all, or both"
    )
    args = p.parse_args(argv)
    limits = _limits()
    try:
        if args.check_choice:
            check_choice(args.kmax, args.seed)
        elif args.select:
            X, _ = make_mixture(args.n, args.d, args.true_k, random_state=args.seed)
            print(f"data: make_mixture({args.n}, {args.d}, {args.true_k})")
            modes = ["contenders", "all"] if args.refine == "both" else [args.refine]
            select_grid(X, args.kmax, args.seed, modes)
        elif not args.skip_grid:
            X, _ = make_mixture(args.n, args.d, args.true_k, random_state=args.seed)
            models = list(MCLUST_MODELS) if args.models == "all" else args.models.split(",")
            print(f"data: make_mixture({args.n}, {args.d}, {args.true_k}); settings {SETTINGS}")
            sk_models = [] if args.no_sklearn else list(SKLEARN_ALIASES)
            # warm-up, untimed: imports, Numba cache loads, first-call costs on both sides
            for model in ("VVV", "VVI", "VII", "EEE"):
                fit_cell("fastem", model, 2, X[:2000], args.seed)
            for model in sk_models:
                fit_cell("sklearn", model, 2, X[:2000], args.seed)
            ours, theirs = run_grids(X, models, sk_models, args.kmax, args.seed)
            t_ours = sum(c["cpu"] for c in ours.values())
            print_table(ours, models, args.kmax, "fastem")
            print(f"\nfastem: {len(models)} models x K=1..{args.kmax}: {t_ours:.1f} CPU s")
            if sk_models:
                t_theirs = sum(c["cpu"] for c in theirs.values())
                print_table(theirs, sk_models, args.kmax, "scikit-learn")
                print(
                    f"\nscikit-learn: 4 types x K=1..{args.kmax}: {t_theirs:.1f} CPU s; "
                    f"fastem's {len(models)}-model grid / scikit-learn's 4-type grid = "
                    f"{t_ours / t_theirs:.2f}"
                )
                for alias, model in SKLEARN_ALIASES.items():
                    if model in models:
                        a = sum(ours[(model, k)]["cpu"] for k in range(1, args.kmax + 1))
                        b = sum(theirs[(alias, k)]["cpu"] for k in range(1, args.kmax + 1))
                        print(f"  {model} (fastem) / {alias} (scikit-learn): {a / b:.2f}")
        if not args.skip_mstep:
            mstep_timing(args.mstep_d, args.mstep_k, args.pass_rows, args.repeats, args.seed)
        if args.sweep_ab:
            ds = [int(d) for d in args.sweep_ab.split(",")]
            sweep_ab(ds, args.sweep_k, args.pass_rows, args.repeats, args.seed)
    finally:
        if limits is not None:
            limits.unregister() if hasattr(limits, "unregister") else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
