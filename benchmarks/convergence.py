"""Passes and seconds to the maximum: plain EM against SQUAREM and damped Anderson.

For every problem of the sweep, all methods start from the same initial parameters
(BENCHMARKS.md's standard start: K random rows as means, equal weights, identity
covariances scaled to the data). The maximum is the best average log-likelihood any
run reaches: a long plain-EM run (until a step gains nothing, or the pass cap) and
the accelerated runs (until a step gains nothing). Each method's time to the
maximum is its first pass whose lower bound is within ``1e-10`` relative of it;
seconds are measured at that pass from the fit's progress events. A method that
never gets there shows ``>passes`` and, instead of seconds, how far below the
maximum (relative) it ended. scikit-learn at
``tol=1e-10`` (``--sklearn``; not on the problems with missing values, which it does
not fit) is the reference of what its own rule reaches: its passes, wall seconds, and
how far below the maximum (relative) it stopped.

The sweep (28 problems; 30 with ``--full``): overlap from well separated to heavy (the centres'
distances scaled by 1.5, 1 and 0.6), K from 2 to 32, D from 2 to 64, the four
covariance types, 0% and 20% missing values; plus W1-W4 (``--full`` only).

    python benchmarks/convergence.py            # reduced: 2,000 rows, cap 2,000 passes
    python benchmarks/convergence.py --full     # 50,000 rows, cap 20,000 passes, W1-W4
    python benchmarks/convergence.py --only issue-200k   # the issue's 200k x 16, K=16
    python benchmarks/convergence.py --stopping-settings  # candidate defaults (passes / gap)
    python benchmarks/convergence.py --methods "plain,squarem,squarem:reference=x2;means=mean"

A method is ``plain``, ``squarem``, ``anderson``, ``qn`` (quasi-Newton, Zhou,
Alexander & Lange 2011) or ``rre`` (cycled vector extrapolation, RRE or MPE, Smith, Ford
& Sidi 1987), optionally followed by driver options (``SquaremOptions`` /
``AndersonOptions`` / ``QuasiNewtonOptions`` / ``VectorOptions`` fields) after a colon:
``squarem:reference=x2;max_backoff=0``. ``means=mean`` or ``means=natural``
extrapolates the means in data units or in the precision factor's frame (see
``driver_options``). ``squarem`` is ``GaussianMixture``'s SQUAREM (``reference=x1``,
natural means); ``squarem:reference=x2;means=mean`` the earlier default. With
``--only issue-200k`` the summary also gives each method's CPU seconds (process time, all
threads) and passes.

Prints a Markdown table and a summary (median and slowest-quarter pass ratios, time
ratios, seconds per pass).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings

import numpy as np

import fastem.mixture
from fastem import GaussianMixture
from fastem._events import fit_listener
from fastem.datasets import initial_parameters, make_mixture, make_workload

METHODS = (None, "squarem", "anderson")
REL = 1e-10
# (name, D, K, covariance, overlap scale, missing fraction)
SHAPES = [(2, 4), (8, 8), (16, 16), (64, 4), (2, 32), (8, 2)]
COVARIANCES = ("full", "tied", "diag", "spherical")
OVERLAPS = {"sep": 1.5, "mid": 1.0, "heavy": 0.6}


def sweep(full: bool = False) -> list[tuple]:
    problems = []
    for i, (d, k) in enumerate(SHAPES):
        for j, overlap in enumerate(OVERLAPS):
            ct = COVARIANCES[(i + j) % 4]
            problems.append((f"{overlap}-D{d}-K{k}-{ct}", d, k, ct, OVERLAPS[overlap], 0.0))
            # missing values where rows keep something observed; at D=64 nearly every row
            # has its own pattern and a pass costs ~K D^3 per row: --full only
            if d > 2 and j != 0 and (d <= 16 or full):
                problems.append(
                    (f"{overlap}-D{d}-K{k}-{ct}-nan20", d, k, ct, OVERLAPS[overlap], 0.2)
                )
    for ct in COVARIANCES:  # every type on one mid-sized, overlapping shape
        problems.append((f"heavy-D8-K6-{ct}", 8, 6, ct, 0.6, 0.0))
    return problems


def make_problem(spec, n: int, seed: int = 0):
    name, d, k, ct, scale, missing = spec
    X, labels = make_mixture(n, d, k, random_state=seed)
    centres = np.array([X[labels == j].mean(axis=0) for j in range(k)])
    X += (scale - 1.0) * centres[labels]
    init = initial_parameters(X, k, ct, random_state=seed + 1)
    if missing:
        rng = np.random.default_rng(seed + 2)
        X[rng.random(X.shape) < missing] = np.nan
        X[np.isnan(X).all(axis=1), 0] = 0.0
    return X, init


def parse_method(spec: str):
    """``'squarem:reference=x1;max_backoff=0'`` -> ``('squarem', {...})``; plain -> None."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        try:
            options[key] = int(value)
        except ValueError:
            try:
                options[key] = float(value)
            except ValueError:
                options[key] = value
    return (None if name == "plain" else name), options


@contextlib.contextmanager
def driver_options(options):
    """Hand ``options`` to the driver's scheme (GaussianMixture does not expose them).
    ``means='mean'`` or ``'natural'`` is not a driver option but the mixture's
    coordinates for the means: ``mu_k`` or ``U_k^T mu_k`` (``U_k`` the precision
    Cholesky factor), instead of the scheme's own (``fastem.mixture.MEANS_FRAMES``:
    natural for SQUAREM and qn, data units for Anderson); see docs/acceleration.md."""
    options = dict(options or {})
    frame = options.pop("means", None)
    original = fastem.mixture.run_fixed_point
    frames = dict(fastem.mixture.MEANS_FRAMES)

    def merged(*args, options=None, **kwargs):  # over any options the estimator passes
        return original(*args, options={**(options or {}), **extra}, **kwargs)

    extra = options
    if options:
        fastem.mixture.run_fixed_point = merged
    if frame is not None:
        fastem.mixture.MEANS_FRAMES.update(dict.fromkeys(frames, frame))
    try:
        yield
    finally:
        fastem.mixture.run_fixed_point = original
        fastem.mixture.MEANS_FRAMES.update(frames)


def run(X, init, method, cap, n_threads=None):
    """One fit to its own end: (lower bounds, seconds at each pass, the model, CPU seconds).

    ``method`` is a method spec (see the module docs) or None."""
    method, options = parse_method(method) if method else (None, {})
    stamps, cpu = [], []

    def listener(event, **info):
        if event == "iteration":
            stamps.append(time.perf_counter())
            cpu.append(time.process_time())

    gm = GaussianMixture(
        tol=1e-300,  # Aitken's rule at 1e-300: stop when a step gains nothing at all
        stopping="aitken",
        max_iter=cap,
        acceleration=method,
        n_threads=n_threads,
        **init,
    )
    with warnings.catch_warnings(), fit_listener(listener), driver_options(options):
        warnings.simplefilter("ignore")
        c0 = time.process_time()
        t0 = time.perf_counter()
        gm.fit(X)
    return np.array(gm.lower_bounds_), np.array(stamps) - t0, gm, np.array(cpu) - c0


def run_sklearn(X, init, cap):
    from sklearn.mixture import GaussianMixture as SkGM

    gm = SkGM(tol=1e-10, max_iter=cap, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        gm.fit(X)
    return gm.n_iter_, time.perf_counter() - t0, gm.lower_bound_


def reach(bounds, stamps, target):
    hit = np.flatnonzero(bounds >= target)
    if hit.size == 0:
        return None, None
    return int(hit[0]) + 1, float(stamps[hit[0]])


STOPPING_SETTINGS = [
    ("plain, tol=1e-3 absolute (scikit-learn)", None, "absolute", 1e-3),
    ("plain, aitken 1e-8", None, "aitken", 1e-8),
    ("squarem, aitken 1e-8", "squarem", "aitken", 1e-8),
    ("anderson, aitken 1e-8", "anderson", "aitken", 1e-8),
    ("squarem, relative 1e-10", "squarem", "relative", 1e-10),
]


def stopping_table(specs, n, cap, threads) -> None:
    """Passes and distance to the maximum of candidate default settings (issue part 4)."""
    print("| problem | " + " | ".join(label for label, *_ in STOPPING_SETTINGS) + " |")
    print("|---|" + "---|" * len(STOPPING_SETTINGS))
    found = {label: [] for label, *_ in STOPPING_SETTINGS}
    for spec, _ in specs:
        X, init = make_problem(spec, n)
        best = max(run(X, init, m, cap, threads)[0].max() for m in METHODS)
        cells = [spec[0]]
        for label, method, stopping, tol in STOPPING_SETTINGS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gm = GaussianMixture(
                    tol=tol, stopping=stopping, acceleration=method, max_iter=cap,
                    n_threads=threads, **init,
                ).fit(X)  # fmt: skip
            gap = max(best - gm.lower_bound_, 0.0)
            found[label].append((gm.n_iter_, gap))
            cells.append(f"{gm.n_iter_} / {gap:.1e}")
        print("| " + " | ".join(cells) + " |", flush=True)
    print()
    for label, values in found.items():
        passes = np.array([p for p, _ in values])
        gaps = np.array([g for _, g in values])
        print(
            f"{label}: median {np.median(passes):.0f} passes, median gap {np.median(gaps):.1e}, "
            f"max gap {gaps.max():.1e}, within 1e-6 on {np.mean(gaps < 1e-6):.0%}"
        )


def summary_row(name, results, best) -> dict:
    """Per method: passes and seconds to within REL of ``best`` (None if never), passes
    run, seconds per pass, and the best value reached."""
    target = best - REL * abs(best)
    row = {"name": name}
    for method, (bounds, stamps, _, _) in results.items():
        passes, secs = reach(bounds, stamps, target)
        per_pass = stamps[-1] / max(len(bounds), 1)
        row[method] = (passes, secs, len(bounds), per_pass, bounds.max())
    return row


def summarize(methods, rows, quarter_size=None) -> None:
    """Median and slowest-quarter ratios of passes to the maximum, per method.

    Two slowest quarters: over the problems the method reached (ranked by plain EM's
    passes; differs between methods), and the same quarter of all problems for every
    method (the problems plain EM takes most passes on, its cap if it never got
    there), where a problem the method did not reach counts as 0x. ``quarter_size``
    overrides its size (a quarter of the problems run): ``--only`` with the sweep's
    slowest quarter and ``--quarter 7`` gives that quarter's figures."""
    quarter = sorted(rows, key=lambda row: -(row[None][0] or row[None][2]))
    quarter = {row["name"] for row in quarter[: quarter_size or max(1, len(rows) // 4)]}
    for method in methods if None in methods else ():
        if method is None:
            continue
        pairs, t_ratios, per_pass, fixed = [], [], [], []
        below = above = 0
        for row in rows:
            p0, s0, n0, pp0, end0 = row[None]
            p1, s1, _, pp1, end1 = row[method]
            per_pass.append(pp1 / pp0)
            # ended at a different stationary point than plain EM (beyond rounding)
            below += end1 < end0 - 1e-10 * abs(end0)
            above += end1 > end0 + 1e-10 * abs(end0)
            if row["name"] in quarter:
                fixed.append((p0 or n0) / p1 if p1 else 0.0)
            if p1 is None:
                print(f"{method}: did not reach the maximum on {row['name']}")
                continue
            # plain EM that did not reach it within the cap counts at the cap: a lower bound
            pairs.append((p0 or n0, (p0 or n0) / p1))
            t_ratios.append((s0 or pp0 * n0) / s1)
        if not pairs:
            continue
        pairs.sort(reverse=True)
        ratios = np.array([r for _, r in pairs])
        slow = ratios[: max(1, len(ratios) // 4)]
        print(
            f"{method}: passes to the maximum, plain / accelerated: median "
            f"{np.median(ratios):.1f}x, slowest quarter (by plain passes) median "
            f"{np.median(slow):.1f}x, min {ratios.min():.1f}x; the same slowest quarter "
            f"for all ({len(fixed)} problems, not reached = 0x): median "
            f"{np.median(fixed):.1f}x; seconds: median "
            f"{np.median(t_ratios):.1f}x; seconds per pass vs plain: median "
            f"{np.median(per_pass):.3f}; reached the maximum on {len(pairs)} / {len(rows)}; "
            f"ended below plain EM on {below}, above on {above}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="50,000 rows, W1-W4, cap 20,000")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--cap", type=int, default=None, help="passes per plain run")
    parser.add_argument(
        "--only", default=None, help="substrings (comma-separated) of the problem names to run"
    )
    parser.add_argument("--after", default=None, help="resume after the problem of this name")
    parser.add_argument("--sklearn", action="store_true", help="also scikit-learn, tol=1e-10")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="kernel threads (default 1: steadier on a shared machine)",
    )
    parser.add_argument(
        "--methods",
        default="plain,squarem,anderson",
        help="comma-separated methods, each 'plain', 'squarem', 'anderson', 'qn' or 'rre' "
        "with optional driver options after a colon ('squarem:reference=x1', "
        "'rre:kind=mpe;order=3')",
    )
    parser.add_argument(
        "--kmeans", action="store_true", help="fastem's default k-means start, not the standard one"
    )
    parser.add_argument(
        "--maximum",
        choices=("best", "plain"),
        default="best",
        help="the maximum a method must reach: the best value any run reaches (default), or "
        "the issue's definition, the best value of the long plain-EM run",
    )
    parser.add_argument(
        "--quarter",
        type=int,
        default=None,
        help="size of the 'same slowest quarter' in the summary (default: a quarter of "
        "the problems run)",
    )
    parser.add_argument(
        "--stopping-settings",
        action="store_true",
        help="instead: passes / distance to the maximum of candidate default settings",
    )
    args = parser.parse_args(argv)
    methods = tuple(None if m == "plain" else m for m in args.methods.split(","))
    cpu_rows = []
    n = args.rows or (50_000 if args.full else 2_000)
    cap = args.cap or (20_000 if args.full else 2_000)
    specs = [(s, None) for s in sweep(args.full)]
    if args.full:
        specs += [((w,), "W") for w in ("W1", "W2", "W3", "W4")]
    specs.append((("issue-200k",), "issue"))
    if args.after:
        names = [s[0][0] for s in specs]
        specs = specs[names.index(args.after) + 1 :]
    if args.only:
        names = {s[0][0] for s in specs}
        wanted = args.only.split(",")  # a full name selects itself only, else a substring

        def chosen(name: str) -> bool:
            return any(w == name if w in names else w in name for w in wanted)

        specs = [s for s in specs if chosen(s[0][0])]
    else:
        specs = [s for s in specs if s[1] != "issue"]

    if args.stopping_settings:
        stopping_table(specs, n, cap, args.threads)
        return 0
    head = "| problem | best l | " + " | ".join(
        f"{m or 'plain'} passes | {m or 'plain'} s" for m in methods
    )
    head += " | accepted/rejected |" + (" sklearn tol=1e-10 |" if args.sklearn else "")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    rows: dict[str, list[dict]] = {}
    for spec, kind in specs:
        if kind == "W":
            X, init = make_workload(spec[0])
        elif kind == "issue":
            X, _ = make_mixture(args.rows or 200_000, 16, 16, random_state=0)  # W2's data
            init = initial_parameters(X, 16, "full", random_state=1)
        else:
            X, init = make_problem(spec, n)
        run(X[:500], init, None, 2, args.threads)  # compile outside the timings
        results = {}
        if args.kmeans:
            init = {"n_components": init["n_components"], "random_state": 0,
                    "covariance_type": init["covariance_type"]}  # fmt: skip
        for method in methods:
            budget = cap if method is None else cap // 2 + 200
            results[method] = run(X, init, method, budget, args.threads)
        maxima = {"best": max(r[0].max() for r in results.values())}
        if None in results:  # the definition: the long plain run's best value
            maxima["plain"] = float(results[None][0].max())
        best = maxima.get(args.maximum, maxima["best"])
        target = best - REL * abs(best)
        cells = [spec[0], f"{best:.8f}"]
        cpu_row = {}
        for method, (bounds, stamps, _, cpu) in results.items():
            passes, secs = reach(bounds, stamps, target)
            cpu_row[method] = (passes, reach(bounds, cpu, target)[1], len(bounds), cpu[-1])
            # not reached: the passes run, and how far below the maximum the fit ended
            gap = f"{(bounds.max() - best) / abs(best):.0e}"
            cells += [str(passes) if passes else f">{len(bounds)}", f"{secs:.2f}" if secs else gap]
        for key, value in maxima.items():
            rows.setdefault(key, []).append(summary_row(spec[0], results, value))
        cells.append(
            ", ".join(
                f"{results[m][2].n_extrapolations_accepted_}/{results[m][2].n_extrapolations_rejected_}"
                for m in methods
                if m
            )
        )
        if args.sklearn and np.isnan(X).any():
            cells.append("n/a (missing values)")
        elif args.sklearn:
            it, secs, lb = run_sklearn(X, init, cap)
            gap = "reached" if lb >= target else f"{(lb - best) / abs(best):.0e}"
            cells.append(f"{it} passes, {secs:.1f} s, {gap}")
        print("| " + " | ".join(cells) + " |", flush=True)
        cpu_rows.append((spec[0], cpu_row))

    for key, label in (("best", "the best value of any run"), ("plain", "plain EM's best")):
        if key in rows:
            print(f"\nMaximum = {label}:")
            summarize(methods, rows[key], args.quarter)
    if args.only:  # CPU time (all threads), e.g. for the 200k problem
        print()
        for name, cpu_row in cpu_rows:
            for method, (passes, cpu_hit, n_run, cpu_end) in cpu_row.items():
                hit = f"{passes} passes, {cpu_hit:.1f} CPU s" if passes else "not reached"
                print(
                    f"{name} {method or 'plain'}: to the maximum {hit}; "
                    f"ran {n_run} passes, {cpu_end:.1f} CPU s ({1e3 * cpu_end / n_run:.2f} ms each)"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
