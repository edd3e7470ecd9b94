"""Which start and fit settings should select_model use? How often each candidate
of a selection grid reaches the best-known maximum, and at what cost.

For each problem (scikit-learn's small real data sets, unscaled, and mixtures
from ``fastem.datasets.make_mixture``) and each configuration below,
``select_model`` fits the grid ``K = 1..--kmax`` x covariance models
(``--models``, default scikit-learn's four) once per seed (once in all for
configurations with no randomness: hc on at most 2,000 rows).

For every candidate ``(K, model)``, the *best-known maximum* is the highest
average log-likelihood any configuration and seed reaches for it, spurious
optima excluded (``fastem.selection.degenerate_fit``: a component of fewer rows
than ``d + 1`` for models with a free covariance per component, else 2, or a
covariance collapsed onto a subspace: smallest eigenvalue below 1e-5 feature
variances, as in ``benchmarks/init_strategies.py``). A
candidate *succeeds* when its fit ends within ``--tol-success`` nats per row of
that maximum (not spurious). Reported per configuration: the share of
candidates that succeed, the mean shortfall (nats per row) of those that do
not, how often the selected model (by BIC) is the one the best-known maxima
select, the median CPU seconds of a whole grid and the total EM passes.

Configurations:

- ``sklearn``: ``SCIKIT_LEARN_SETTINGS`` (shared k-means starts, plain EM,
  scikit-learn's stopping at ``tol=1e-3``, ``max_iter=100``): select_model's
  behaviour before this change;
- ``kmeans/aitken``: shared k-means starts, ``DEFAULT_FIT_SETTINGS`` (SQUAREM,
  Aitken stopping at ``tol=1e-8``, ``max_iter=1000``);
- ``hc/plain``: the hc start, plain EM with Aitken stopping at 1e-8
  (``max_iter=1000``): what acceleration buys;
- ``hc/aitken``: the hc start with ``DEFAULT_FIT_SETTINGS``;
- ``hc+emem/aitken``: the better of an hc and an emEM fit per candidate;
- ``best/aitken``: ``init_params="best"`` (hc, k-means and random starts, short
  runs, the best continued; see docs/initialization.md), shared per K;
- ``hc+best/aitken``: the better of an hc and a 'best' fit per candidate.

``--configs`` picks some of them (comma-separated names).

    python benchmarks/selection_defaults.py [--seeds 3] [--kmax 6]
        [--models full,tied,diag,spherical | all | EII,VVV,...] [--quick] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from init_strategies import _real, _scaled_mixture  # noqa: E402

from fastem import select_model  # noqa: E402
from fastem.exceptions import ConvergenceWarning  # noqa: E402
from fastem.selection import (  # noqa: E402
    DEFAULT_FIT_SETTINGS,
    SCIKIT_LEARN_SETTINGS,
    degenerate_fit,
)

CONFIGS = {
    "sklearn": ({**SCIKIT_LEARN_SETTINGS}, True),
    "kmeans/aitken": ({"init_params": "kmeans", **DEFAULT_FIT_SETTINGS}, True),
    "hc/plain": ({"init_params": "hc", **DEFAULT_FIT_SETTINGS, "acceleration": None}, False),
    "hc/aitken": ({"init_params": "hc", **DEFAULT_FIT_SETTINGS}, False),
    "hc+emem/aitken": ({"init_params": "hc+emem", **DEFAULT_FIT_SETTINGS}, True),
    "best/aitken": ({"init_params": "best", **DEFAULT_FIT_SETTINGS}, True),
    "hc+best/aitken": ({"init_params": "hc+best", **DEFAULT_FIT_SETTINGS}, True),
}


SCALES = [1.0, 1e3, 1e-2, 10.0, 0.1]


def problems(quick: bool) -> list[tuple[str, np.ndarray]]:
    out = [
        ("iris", _real("iris")),
        ("wine", _real("wine")),
        ("diabetes", _real("diabetes")),
        (
            "mix 1000x5 scales 1e-2..1e3",
            _scaled_mixture(1000, 5, 4, 2, [1.0, 1e3, 1e-2, 10.0, 0.1]),
        ),
        ("mix 600x2 K=5", _scaled_mixture(600, 2, 5, 1)),
    ]
    return out[::2] if quick else out


def run_grid(X, ks, models, settings, seed):
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sel = select_model(X, ks, models, random_state=seed, **settings)
    seconds = time.process_time() - t0
    n = X.shape[0]
    out = {}
    for (k, ct), model in sel.models_.items():
        bad = _spurious(model, X)
        out[(k, ct)] = (float(model.lower_bound_), bad, int(model.n_iter_), model._n_parameters())
    passes = sum(v[2] for v in out.values())
    return out, seconds, passes, n


def _spurious(model, X) -> bool:
    return degenerate_fit(model, X.shape[0], X.var(axis=0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--kmax", type=int, default=6)
    ap.add_argument("--models", default="full,tied,diag,spherical")
    ap.add_argument("--tol-success", type=float, default=1e-3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--configs", default="sklearn,kmeans/aitken,hc/plain,hc/aitken,hc+emem/aitken")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    configs = {name: CONFIGS[name] for name in args.configs.split(",")}
    ks = list(range(1, args.kmax + 1))
    models = args.models.split(",") if args.models != "all" else "all"
    keys = ("ok", "n", "sel", "nsel", "passes")
    totals = {c: {**dict.fromkeys(keys, 0), "short": [], "sec": [], "pmed": [], "smed": []}
              for c in configs}  # fmt: skip
    lines = []
    for name, X in problems(args.quick):
        t_problem = time.perf_counter()
        n = X.shape[0]
        runs = {}
        for cname, (settings, random) in configs.items():
            seeds = range(args.seeds) if random else range(1)
            runs[cname] = [run_grid(X, ks, models, settings, s) for s in seeds]
        keys = set().union(*(r[0].keys() for rs in runs.values() for r in rs))
        best = {}
        for key in keys:
            values = [
                r[0][key][0] for rs in runs.values() for r in rs if key in r[0] and not r[0][key][1]
            ]
            if values:
                best[key] = max(values)
        # The model the best-known maxima select (BIC = -2 n l + p log n).
        params = {key: r[0][key][3] for rs in runs.values() for r in rs for key in r[0]}
        ref = min(best, key=lambda key: -2 * n * best[key] + params[key] * math.log(n))
        cells = [name, f"{X.shape[0]}x{X.shape[1]}", f"{ref[1]},{ref[0]}"]
        for cname, rs in runs.items():
            t = totals[cname]
            ok_here, n_here, sel_here = 0, 0, 0
            for res, seconds, passes, _ in rs:
                t["sec"].append(seconds)
                t["passes"] += passes
                for key, b in best.items():
                    n_here += 1
                    got = res.get(key)
                    if got is not None and not got[1] and got[0] >= b - args.tol_success:
                        ok_here += 1
                    else:
                        value = -math.inf if got is None or got[1] else got[0]
                        t["short"].append(min(b - value, 10.0))
                scores = {
                    key: -2 * n * v[0] + v[3] * math.log(n) for key, v in res.items() if not v[1]
                }
                if scores and min(scores, key=scores.get) == ref:
                    sel_here += 1
            t["ok"] += ok_here
            t["n"] += n_here
            t["sel"] += sel_here
            t["nsel"] += len(rs)
            med = float(np.median([r[1] for r in rs]))
            t["pmed"].append(float(np.median([r[2] for r in rs])))
            t["smed"].append(med)
            cells.append(
                f"{100 * ok_here / max(n_here, 1):.0f}% · {sel_here}/{len(rs)} · {med:.1f}s"
                f" · {int(np.median([r[2] for r in rs]))}"
            )
        line = "| " + " | ".join(cells) + " |"
        lines.append(line)
        print(line, f"[{time.perf_counter() - t_problem:.0f}s]", flush=True)
    head = ["problem", "n x d", "reference choice", *configs]
    summary = ["**all**", "", ""]
    for c in configs:
        t = totals[c]
        short = np.mean(t["short"]) if t["short"] else 0.0
        summary.append(
            f"**{100 * t['ok'] / max(t['n'], 1):.1f}%** · {t['sel']}/{t['nsel']} · "
            f"{sum(t['smed']):.1f}s · {sum(t['pmed']):.0f} passes (miss: {short:.2g} nats/row)"
        )
    table = "\n".join(
        ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *lines,
         "| " + " | ".join(summary) + " |"]
    )  # fmt: skip
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
