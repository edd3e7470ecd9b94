"""Hunt for accelerated mixture fits that crash, lose, or end below plain EM (session 12, A1).

Random problems (every covariance type and mclust model, 1e-4 to 1e4 units, float32,
10% NaN, sample weights, reg_covar 0 or 1e-6); for each, plain EM and the four schemes
from the same start (Aitken, tol=1e-9, 1,000 passes). Prints the exceptions, paths that
decrease (reg_covar=0 only), and ends more than 1e-4 (relative) below plain EM.

Run from the repository root:  python -m benchmarks.s12_a1_hunt SEED TRIALS
"""

import sys
import warnings

import numpy as np

from benchmarks._hunt_runs import recorded_runs
from fastem import GaussianMixture
from fastem.datasets import make_mixture


def main(seed: int, trials: int) -> None:
    """Run ``trials`` random problems from ``seed``; print what the hunt finds."""
    warnings.simplefilter("ignore")
    with recorded_runs() as runs:
        _hunt(runs, seed, trials)


def _hunt(runs: list, seed: int, trials: int) -> None:
    rng = np.random.default_rng(seed)
    CT = [
        "full",
        "tied",
        "diag",
        "spherical",
        "VEE",
        "EVE",
        "VVE",
        "EEV",
        "VEV",
        "EVV",
        "VEI",
        "EVI",
        "EEI",
        "VII",
    ]
    crash = below = viol = ran = 0
    for trial in range(trials):
        n = int(rng.integers(60, 600))
        d = int(rng.integers(1, 5))
        k = int(rng.integers(2, 6))
        s = int(rng.integers(10000))
        ct = CT[trial % len(CT)]
        if d == 1 and ct in ("EVE", "VVE", "EEV", "VEV", "EVV", "VEE"):
            d = 2
        X = make_mixture(n, d, max(2, k - int(rng.integers(0, 2))), random_state=s)[
            0
        ] * 10.0 ** rng.uniform(-4, 4)
        dtype = np.float32 if rng.random() < 0.25 else np.float64
        X = X.astype(dtype)
        if rng.random() < 0.25:
            X[rng.random(X.shape) < 0.1] = np.nan
        sw = rng.uniform(0.1, 3, n) if rng.random() < 0.3 else None
        rc = [0.0, 1e-6][trial % 2]
        kw = dict(
            covariance_type=ct,
            reg_covar=rc,
            random_state=s,
            max_iter=1000,
            tol=1e-9,
            stopping="aitken",
        )
        try:
            plain = GaussianMixture(k, **kw).fit(X, sample_weight=sw)
            pl = plain.lower_bound_
            ran += 1
        except Exception:
            continue
        for acc in ("squarem", "anderson", "qn", "mpe"):
            try:
                gm = GaussianMixture(k, acceleration=acc, **kw).fit(X, sample_weight=sw)
            except Exception as e:
                crash += 1
                print(
                    "CRASH",
                    trial,
                    ct,
                    n,
                    d,
                    k,
                    s,
                    dtype.__name__,
                    rc,
                    acc,
                    type(e).__name__,
                    str(e)[:80],
                    flush=True,
                )
                continue
            r = runs[-1].result
            path = [
                o for o, kd in zip(r.objectives, r.kinds, strict=True) if kd in ("em", "accepted")
            ]
            tolr = 1e-7 * (1 + abs(pl)) * (100 if dtype == np.float32 else 1)
            if rc == 0 and np.any(np.diff(path) < -tolr):
                viol += 1
                print("NONMONO", trial, ct, acc, min(np.diff(path)), flush=True)
            if gm.lower_bound_ < pl - 1e-4 * (1 + abs(pl)):
                below += 1
                print(
                    "below",
                    trial,
                    ct,
                    n,
                    d,
                    k,
                    s,
                    dtype.__name__,
                    rc,
                    acc,
                    pl,
                    gm.lower_bound_,
                    plain.n_iter_,
                    gm.n_iter_,
                    flush=True,
                )
    print("ran", ran, "crash", crash, "below", below, "nonmono", viol)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
