"""The same hunt for GaussianHMM (session 12, A1): random K, D, lengths, units 1e-3 to
1e3, the four covariance types, covars_prior=0, Aitken 1e-8, 800 passes; compares the
final objective with plain Baum-Welch from the same start.

Run from the repository root:  python -m benchmarks.s12_a1_hunt_hmm SEED TRIALS
"""

import sys
import warnings

import numpy as np

from benchmarks._hunt_runs import recorded_runs
from fastem.hmm import GaussianHMM


def main(seed: int, trials: int) -> None:
    """Run ``trials`` random problems from ``seed``; print what the hunt finds."""
    warnings.simplefilter("ignore")
    with recorded_runs() as runs:
        _hunt(runs, seed, trials)


def _hunt(runs: list, seed: int, trials: int) -> None:
    rng = np.random.default_rng(seed)
    crash = below = viol = ran = 0
    for trial in range(trials):
        K = int(rng.integers(2, 5))
        D = int(rng.integers(1, 4))
        T = int(rng.integers(100, 600))
        s = int(rng.integers(10000))
        r2 = np.random.default_rng(s)
        means = r2.normal(0, 2, (K, D))
        A = np.full((K, K), 0.1 / (K - 1))
        np.fill_diagonal(A, 0.9)
        st = 0
        X = []
        for _ in range(T):
            X.append(means[st] + r2.normal(size=D))
            st = r2.choice(K, p=A[st])
        X = np.array(X) * 10.0 ** rng.uniform(-3, 3)
        cov = ["diag", "spherical", "tied", "full"][trial % 4]
        kw = dict(
            covariance_type=cov,
            n_iter=800,
            tol=1e-8,
            random_state=s,
            stopping="aitken",
            covars_prior=0,
            min_covar=1e-9,
        )
        try:
            plain = GaussianHMM(K, **kw).fit(X)
            pl = plain.monitor_.objective_history[-1]
            ran += 1
        except Exception:
            continue
        for acc in ("squarem", "anderson", "qn", "mpe"):
            try:
                m = GaussianHMM(K, acceleration=acc, **kw).fit(X)
            except Exception as e:
                crash += 1
                print(
                    "CRASH", trial, cov, K, D, T, s, acc, type(e).__name__, str(e)[:80], flush=True
                )
                continue
            r = runs[-1].result
            path = [
                o for o, kd in zip(r.objectives, r.kinds, strict=True) if kd in ("em", "accepted")
            ]
            if np.any(np.diff(path) < -1e-7 * (1 + abs(pl))):
                viol += 1
                print("NONMONO", trial, cov, acc, min(np.diff(path)), flush=True)
            f = m.monitor_.objective_history[-1]
            if f < pl - 1e-6 * (1 + abs(pl)):
                below += 1
                print(
                    "below",
                    trial,
                    cov,
                    K,
                    D,
                    T,
                    s,
                    acc,
                    pl,
                    f,
                    plain.monitor_.iter,
                    m.monitor_.iter,
                    plain.monitor_.converged,
                    m.monitor_.converged,
                    flush=True,
                )
    print("ran", ran, "crash", crash, "below", below, "nonmono", viol)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
