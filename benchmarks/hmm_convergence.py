"""Passes and seconds to the maximum for Baum-Welch: plain against every scheme of the driver.

Every method of every problem starts from the same initial parameters (the model's
own initialization with ``random_state=seed``, then one Baum-Welch step; HB2's
given start) and runs on
fastem's fixed-point driver (``fastem/hmm/_accel.py``) with ``stopping="relative",
tol=1e-14``: until a plain EM step gains less than 1e-14 relative, or the pass
cap. The maximum is the objective (log-likelihood + log prior; the log-likelihood
here, flat priors) that a long plain run (4 times the cap) ends at, as the
mixture's benchmark (``benchmarks/convergence.py``) defines it. A method's passes
to the maximum are its first pass whose ``objective_history_`` is within ``1e-10``
relative of it; its seconds are the CPU time (process time, one thread) of the
passes up to there, measured per pass inside the driver. A method that never gets
there shows ``>passes`` and how far below the maximum (relative) it ended; one that
gets there and ends at a better local maximum says so (HMMs have many).

Problems (``--quick``: fewer sequences, a lower cap):

- ``HB2``: ``benchmarks/hmm_peers.py``'s HB2 (Gaussian diag, D=1, K=10, 50 x 100),
  slow: many transitions go to zero at the maximum;
- ``full-overlap``: GaussianHMM full, D=3, K=4, close means, 20 x 150;
- ``categorical``: K=3, 6 symbols, overlapping emissions, 30 x 100;
- ``poisson``: K=3, close rates, 30 x 100;
- ``gmmhmm``: GMMHMM diag, K=3 x 2 mixtures, D=2, 20 x 150.

    python benchmarks/hmm_convergence.py --quick
    nice -n 5 python benchmarks/hmm_convergence.py
    python benchmarks/hmm_convergence.py --methods "plain,qn,qn:simplex=prob,mpe:kind=rre"

A method is ``plain`` or an acceleration (``squarem``, ``anderson``, ``qn``, ``mpe``),
optionally followed by driver options after a colon, ``;``-separated: the scheme's
``Options`` fields (``qn:q=2;reference=x2``), ``simplex=log|prob``, the frame of
the probability rows (log-probabilities, or the probabilities themselves, a
negative entry infeasible), and ``shrink=<fraction>|none``, the cut of an
extrapolated probability at a fraction of its value at the last EM point;
without them, the driver's choice (``fastem/hmm/_accel.py``: log rows for SQUAREM
and Anderson, probabilities cut at 0.1 for qn and MPE). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

import fastem.hmm._accel as accel
from fastem.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hmm_peers import make_data, sample_states  # noqa: E402

REL = 1e-10
DEFAULT_METHODS = "plain,squarem,anderson,qn,mpe"


def _sticky(K: int, stay: float) -> np.ndarray:
    trans = np.full((K, K), (1 - stay) / (K - 1))
    np.fill_diagonal(trans, stay)
    return trans


def problems(quick: bool, seed: int = 0) -> dict:
    """name -> (model factory, X, lengths, given initial parameters or None)."""
    rng = np.random.default_rng(seed)
    S = 20 if quick else 30
    out = {}
    X, lengths, init = make_data("diag", 1, 10, 25 if quick else 50, 100, seed=seed)
    out["HB2"] = (lambda **kw: GaussianHMM(10, covariance_type="diag", **kw), X, lengths, init)

    z = sample_states(rng, _sticky(4, 0.85), S, 150)
    means = rng.normal(scale=1.2, size=(4, 3))
    A = rng.normal(size=(4, 3, 3)) * 0.4 + np.eye(3)
    X = means[z] + np.einsum("nij,nj->ni", A[z], rng.normal(size=(S * 150, 3)))
    out["full-overlap"] = (
        lambda **kw: GaussianHMM(4, covariance_type="full", **kw), X, np.full(S, 150), None
    )  # fmt: skip

    z = sample_states(rng, _sticky(3, 0.8), S, 100)
    emis = rng.dirichlet(np.ones(6) * 2.0, size=3)
    X = np.array([rng.choice(6, p=emis[k]) for k in z])[:, None]
    out["categorical"] = (lambda **kw: CategoricalHMM(3, **kw), X, np.full(S, 100), None)

    z = sample_states(rng, _sticky(3, 0.8), S, 100)
    X = rng.poisson(np.array([1.0, 3.0, 6.0])[z])[:, None]
    out["poisson"] = (lambda **kw: PoissonHMM(3, **kw), X, np.full(S, 100), None)

    z = sample_states(rng, _sticky(3, 0.85), S, 150)
    centres = rng.normal(scale=3.0, size=(3, 2, 2))
    X = centres[z, rng.integers(2, size=S * 150)] + rng.normal(size=(S * 150, 2))
    out["gmmhmm"] = (
        lambda **kw: GMMHMM(3, n_mix=2, covariance_type="diag", **kw), X, np.full(S, 150), None
    )  # fmt: skip
    return out


def parse_method(spec: str):
    """'qn:q=2;simplex=prob' -> (acceleration, scheme options, simplex frame)."""
    name, _, rest = spec.partition(":")
    options, simplex, shrink = {}, None, None
    for item in filter(None, rest.split(";")):
        key, _, value = item.partition("=")
        if key == "simplex":
            simplex = value
            continue
        if key == "shrink":
            shrink = None if value == "none" else float(value)
            continue
        for cast in (int, float):
            try:
                value = cast(value)
                break
            except ValueError:
                pass
        options[key] = {"True": True, "False": False}.get(value, value)
    return (None if name == "plain" else name), options, simplex, shrink


def start_params(factory, X, lengths, given, seed: int = 0) -> dict:
    model = factory(n_iter=1, random_state=seed, backend="numpy")
    if given is not None:
        model.set_params(init_params="")
        for name, value in given.items():
            setattr(model, name, np.array(value, copy=True))
    model.fit(X, lengths)
    return {n: np.array(getattr(model, n)) for n in model._param_attrs()}


def run(factory, X, lengths, start, spec: str, cap: int, backend: str):
    """One fit from ``start``: (objective per pass, CPU seconds per pass, accepted, rejected)."""
    acceleration, options, simplex, shrink = parse_method(spec)
    model = factory(
        n_iter=cap, tol=1e-14, stopping="relative", acceleration=acceleration,
        init_params="", backend=backend, n_threads=1,
    )  # fmt: skip
    for name, value in start.items():
        setattr(model, name, value.copy())
    stamps: list[float] = []
    evaluate = accel._BaumWelchProblem.evaluate

    def timed(self, x, extrapolated):
        ev = evaluate(self, x, extrapolated)
        if ev is not None:  # an infeasible point costs no pass
            stamps.append(time.process_time())
        return ev

    saved = accel.run_fixed_point, dict(accel.SIMPLEX_FRAMES), dict(accel.SHRINK)
    accel.run_fixed_point = functools.partial(saved[0], options=options or None)
    if simplex is not None:  # else the driver's own choice
        accel.SIMPLEX_FRAMES[acceleration] = simplex
    if shrink is not None or "shrink=none" in spec:
        accel.SHRINK[acceleration] = shrink
    accel._BaumWelchProblem.evaluate = timed
    try:
        t0 = time.process_time()
        model.fit(X, lengths)
    finally:
        accel.run_fixed_point = saved[0]
        accel.SIMPLEX_FRAMES.clear()
        accel.SIMPLEX_FRAMES.update(saved[1])
        accel.SHRINK.clear()
        accel.SHRINK.update(saved[2])
        accel._BaumWelchProblem.evaluate = evaluate
    seconds = np.array(stamps) - t0
    history = np.array(model.objective_history_)
    monitor = model.monitor_
    accepted = getattr(monitor, "n_extrapolations_accepted", 0)
    rejected = getattr(monitor, "n_extrapolations_rejected", 0)
    return history, seconds, accepted, rejected


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller problems, cap 3,000")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated")
    parser.add_argument("--only", help="comma-separated problem names")
    parser.add_argument("--cap", type=int, help="pass cap (default 3,000 quick, 10,000)")
    parser.add_argument("--plain-cap", type=int, help="the long plain run's cap (default 4x)")
    parser.add_argument("--backend", default="numba", choices=("numba", "cython", "numpy"))
    parser.add_argument("--seed", type=int, default=0, help="data and initialization seed")
    args = parser.parse_args(argv)
    cap = args.cap or (3000 if args.quick else 10000)
    methods = args.methods.split(",")
    probs = problems(args.quick, args.seed)
    names = args.only.split(",") if args.only else list(probs)
    print("| problem | maximum | " + " | ".join(methods) + " |")
    print("|---|---|" + "---|" * len(methods))
    for name in names:
        factory, X, lengths, given = probs[name]
        start = start_params(factory, X, lengths, given, args.seed)
        long = run(factory, X, lengths, start, "plain", args.plain_cap or 4 * cap, args.backend)
        results = [run(factory, X, lengths, start, m, cap, args.backend) for m in methods]
        best = long[0][-1]
        cells = []
        for history, seconds, accepted, rejected in results:
            hit = np.nonzero(history >= best - REL * abs(best))[0]
            extra = f" ({accepted}/{rejected})" if accepted or rejected else ""
            gap = (best - history[-1]) / abs(best)
            if hit.size:
                above = f", ends {-gap:.0e} above" if gap < -REL else ""
                cells.append(f"{hit[0] + 1} / {seconds[hit[0]]:.2f} s{extra}{above}")
            else:
                cells.append(f">{history.size} (gap {gap:.0e}){extra}")
        print(f"| {name} | {best:.6f} ({long[0].size}) | " + " | ".join(cells) + " |", flush=True)
    print(
        "\nmaximum: the long plain run's final objective (its passes); cells: passes / CPU "
        "seconds to within 1e-10 relative of it (accepted/rejected extrapolations, "
        "infeasible ones included); '>n (gap g)': never within, ended g relative below; "
        "'ends above': reached it and went on to a better local maximum"
    )


if __name__ == "__main__":
    main()
