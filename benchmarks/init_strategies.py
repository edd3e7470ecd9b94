"""How often each initialization reaches the best-known optimum, and at what cost.

For each problem of a suite (scikit-learn's bundled small real data sets with
features of very different scales, and synthetic mixtures from
``fastem.datasets.make_mixture``, several K and covariance types):

1. the *best-known optimum*: the highest average log-likelihood that any run
   below reaches, including a *pool* of ``--extra`` restarts of each of
   k-means++, random rows and random responsibilities (spurious optima
   excluded, see :func:`spurious`); the table shows the smallest component's
   rows at that optimum, and how often the pool's restarts reach it ("pool
   hits") with the restarts that would reach it 97% of the time ("r97");
2. for each strategy, ``--seeds`` runs (random_state 0, 1, ...) and the share
   of them that end within ``--tol-success`` (nats per row) of that optimum,
   with the median CPU seconds and EM passes per run.

Strategies: fastem's k-means (``n_init=1``), k-means with ``n_init`` chosen so
that it takes about as long as 'best' ("k-means = time", ×n_init), k-means++,
random_from_data, hc (model-based hierarchical clustering), emEM (short EM
runs, then the best one continued), the better of an hc and an emEM fit
("hc+emem"), and 'best' (deterministic and random starts, short runs, the best
few continued). A strategy with ``n_init = r`` is ``r`` single fits with
consecutive seeds, keeping the best; its passes and seconds are their sums.
Passes include the initialization's own EM passes (emEM's and 'best''s short
runs, counted as they run). Every fit is plain EM to ``tol=1e-7``
(``max_iter=3000``), so a run ends at its local optimum.

    python benchmarks/init_strategies.py [--seeds 5] [--extra 30] [--quick]
        [--tol-success 1e-3] [--markdown FILE] [--json FILE]
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np

import fastem._init as init_module
from fastem import GaussianMixture
from fastem.datasets import make_mixture
from fastem.exceptions import ConvergenceWarning

FIT = {"tol": 1e-7, "max_iter": 3000}
SINGLE = ("kmeans", "k-means++", "random_from_data", "hc", "emem", "best")
POOL = ("k-means++", "random_from_data", "random")


class _PassCounter:
    """Counts the EM passes the initializations run (``fastem._init`` calls
    ``em_stats`` for every short run): emEM's and 'best''s passes are part of
    their cost."""

    def __init__(self) -> None:
        self.count = 0
        self._em_stats = init_module.em_stats
        init_module.em_stats = self

    def __call__(self, *args, **kwargs):
        self.count += 1
        return self._em_stats(*args, **kwargs)


PASSES = _PassCounter()


@dataclass
class Problem:
    name: str
    X: np.ndarray
    k: int
    covariance_type: str


def _real(name: str) -> np.ndarray:
    from sklearn import datasets

    loader = {
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
        "breast_cancer": datasets.load_breast_cancer,
        "diabetes": datasets.load_diabetes,
    }[name]
    X = loader().data.astype(np.float64)
    if name == "diabetes":  # column 1 is sex (two values): full covariances would collapse on it
        X = np.delete(X, 1, axis=1)
    return X


def _scaled_mixture(n, d, k, seed, scales=None, rotate=True) -> np.ndarray:
    X, _ = make_mixture(n, d, k, rotate=rotate, random_state=seed)
    if scales is not None:
        X = X * np.asarray(scales)
    return X


def suite(quick: bool) -> list[Problem]:
    problems = [
        Problem("iris K=3 full", _real("iris"), 3, "full"),
        Problem("iris K=4 full", _real("iris"), 4, "full"),
        Problem("iris K=3 diag", _real("iris"), 3, "diag"),
        Problem("wine K=3 full", _real("wine"), 3, "full"),
        Problem("wine K=3 diag", _real("wine"), 3, "diag"),
        Problem("wine K=4 tied", _real("wine"), 4, "tied"),
        Problem("breast_cancer K=2 diag", _real("breast_cancer"), 2, "diag"),
        Problem("breast_cancer K=3 full", _real("breast_cancer"), 3, "full"),
        Problem("diabetes K=3 full", _real("diabetes"), 3, "full"),
        Problem("diabetes K=4 spherical", _real("diabetes"), 4, "spherical"),
        Problem("mix 600x2 K=8 full", _scaled_mixture(600, 2, 8, 1), 8, "full"),
        Problem(
            "mix 1000x5 K=6 full, scales 1e-2..1e3",
            _scaled_mixture(1000, 5, 6, 2, [1.0, 1e3, 1e-2, 10.0, 0.1]),
            6,
            "full",
        ),
        Problem("mix 1500x4 K=12 full", _scaled_mixture(1500, 4, 12, 3), 12, "full"),
        Problem("mix 2000x8 K=10 diag", _scaled_mixture(2000, 8, 10, 4, rotate=False), 10, "diag"),
        Problem("mix 800x6 K=5 tied", _scaled_mixture(800, 6, 5, 6), 5, "tied"),
    ]
    return problems[::3] if quick else problems


def spurious(gm: GaussianMixture, X: np.ndarray) -> bool:
    """A degenerate optimum: a component of fewer rows than it has free
    covariance dimensions, or a covariance collapsed onto a subspace (smallest
    eigenvalue below 1e-5 in units of the features' variances). Such optima
    have unbounded likelihood and are not what a best-known optimum means."""
    n, d = X.shape
    if (gm.weights_ * n).min() < (d + 1 if gm.covariance_type == "full" else 2):
        return True
    scale = 1.0 / np.sqrt(X.var(axis=0))
    cov = gm.covariances_
    if gm.covariance_type in ("full", "tied"):
        cov = cov if cov.ndim == 3 else cov[None]
        lam = min(np.linalg.eigvalsh(c * np.outer(scale, scale)).min() for c in cov)
    elif gm.covariance_type == "diag":
        lam = (cov * scale**2).min()
    else:
        lam = cov.min() * (scale**2).min()
    return bool(lam < 1e-5)


def fit_once(problem: Problem, init: str, seed: int) -> tuple[float, float, int, float]:
    """(average log-likelihood, CPU seconds, EM passes, rows of the smallest
    component) of one fit; the log-likelihood is -inf for a fit that fails or
    ends at a spurious optimum. Passes include the initialization's own."""
    gm = GaussianMixture(
        problem.k,
        covariance_type=problem.covariance_type,
        init_params=init,
        random_state=seed,
        **FIT,
    )
    t0 = time.process_time()
    PASSES.count = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm.fit(problem.X)
    except ValueError:  # a start that collapses a covariance counts as a failure
        return -math.inf, time.process_time() - t0, PASSES.count, 0.0
    seconds = time.process_time() - t0
    passes = gm.n_iter_ + PASSES.count
    bound = -math.inf if spurious(gm, problem.X) else float(gm.lower_bound_)
    return bound, seconds, passes, float(gm.weights_.min() * problem.X.shape[0])


def warm_up() -> None:
    """Compile every kernel the suite uses before anything is timed."""
    X, _ = make_mixture(300, 3, 2, random_state=0)
    for ct in ("full", "tied", "diag", "spherical"):
        for init in SINGLE:
            GaussianMixture(2, covariance_type=ct, init_params=init, random_state=0).fit(X)


def combine(*runs: tuple[float, float, int, float]) -> tuple[float, float, int, float]:
    """Best of several runs; their costs add."""
    best = max(runs, key=lambda r: r[0])
    return best[0], sum(r[1] for r in runs), sum(r[2] for r in runs), best[3]


COLUMNS = [
    "kmeans",
    "kmeans = time",
    "k-means++",
    "random_from_data",
    "hc",
    "emem",
    "hc+emem",
    "best",
]


def restarts_for(p: float, target: float = 0.97) -> float:
    """Independent restarts that reach an optimum of per-restart probability
    ``p`` with probability ``target``."""
    if p >= 1.0:
        return 1.0
    if p <= 0.0:
        return math.inf
    return math.ceil(math.log(1.0 - target) / math.log(1.0 - p))


def run(args) -> tuple[list[list[str]], dict[str, float]]:
    raw: dict[str, dict] = {}
    rows: list[list[str]] = []
    totals: dict[str, list[float]] = {c: [] for c in COLUMNS}
    for problem in suite(args.quick):
        t_start = time.perf_counter()
        results: dict[str, list[tuple[float, float, int, float]]] = {}
        for init in SINGLE:
            results[init] = [fit_once(problem, init, s) for s in range(args.seeds)]
        t_km = np.median([r[1] for r in results["kmeans"]])
        t_best = np.median([r[1] for r in results["best"]])
        r_eq = max(1, int(round(t_best / t_km)))
        results["kmeans = time"] = [
            combine(*(fit_once(problem, "kmeans", 1000 + s * r_eq + i) for i in range(r_eq)))
            for s in range(args.seeds)
        ]
        results["hc+emem"] = [
            combine(h, e) for h, e in zip(results["hc"], results["emem"], strict=True)
        ]
        pool = [fit_once(problem, init, 5000 + s) for init in POOL for s in range(args.extra)]
        everything = [r for rs in results.values() for r in rs] + pool
        top = max(everything, key=lambda r: r[0])
        best = top[0]
        hits = float(np.mean([r[0] >= best - args.tol_success for r in pool]))
        raw[problem.name] = {"best": best, "pool": pool, "runs": results}
        row = [
            problem.name,
            f"{problem.X.shape[0]}x{problem.X.shape[1]}",
            f"{best:.4f}",
            f"{top[3]:.1f}",
            f"{100 * hits:.0f}% ({restarts_for(hits)})",
        ]
        for c in COLUMNS:
            rs = results[c]
            ok = float(np.mean([r[0] >= best - args.tol_success for r in rs]))
            totals[c].append(ok)
            cell = (
                f"{100 * ok:.0f}% · {np.median([r[1] for r in rs]):.2f}s"
                f" · {int(np.median([r[2] for r in rs]))}"
            )
            row.append(f"{cell} (×{r_eq})" if c == "kmeans = time" else cell)
        rows.append(row)
        print(" | ".join(row), f"[{time.perf_counter() - t_start:.0f}s]", flush=True)
    summary = {c: float(np.mean(v)) for c, v in totals.items()}
    if args.json:  # every run's (log-likelihood, seconds, passes, rows), to recombine later
        import json

        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(raw, f, default=float)
    return rows, summary


def markdown(rows, summary) -> str:
    head = ["problem", "n x d", "best ℓ", "smallest comp.", "pool hits (r97)"] + COLUMNS
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append(
        "| **mean success** | | | | | "
        + " | ".join(f"**{100 * summary[c]:.1f}%**" for c in COLUMNS)
        + " |"
    )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="runs per strategy and problem")
    ap.add_argument("--extra", type=int, default=30, help="pool restarts per random strategy")
    ap.add_argument("--tol-success", type=float, default=1e-3, help="nats per row")
    ap.add_argument("--quick", action="store_true", help="every third problem only")
    ap.add_argument("--markdown", default=None, help="also write the table to this file")
    ap.add_argument("--json", default=None, help="also write every run's results to this file")
    args = ap.parse_args()
    warm_up()
    rows, summary = run(args)
    table = markdown(rows, summary)
    print()
    print(table)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
