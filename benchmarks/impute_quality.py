"""Imputation error on clustered data: fastem's mixture imputer against column
means, scikit-learn's IterativeImputer and KNNImputer.

Data: seeded Gaussian blobs (``fastem.datasets.make_mixture``) with a fraction
of entries removed completely at random. Error: root mean squared error over
the removed entries, medians over seeds. Run:

    python benchmarks/impute_quality.py [--n-samples 20000] [--n-features 8]
        [--n-components 5] [--fractions 0.1 0.2 0.3] [--seeds 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from fastem.datasets import make_mixture
from fastem.impute import GaussianMixtureImputer


def _remove(X, fraction, rng):
    mask = rng.random(X.shape) < fraction
    mask[mask.all(axis=1), 0] = False
    Xm = X.copy()
    Xm[mask] = np.nan
    return Xm, mask


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=20_000)
    parser.add_argument("--n-features", type=int, default=8)
    parser.add_argument("--n-components", type=int, default=5)
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")  # IterativeImputer's early-stopping warnings

    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer

    k = args.n_components
    methods = {
        "column mean": lambda: SimpleImputer(strategy="mean"),
        "IterativeImputer": lambda: IterativeImputer(max_iter=20, random_state=0),
        "KNNImputer(5)": lambda: KNNImputer(n_neighbors=5),
        f"fastem GMM(K={k})": lambda: GaussianMixtureImputer(k, n_init=2, random_state=0),
    }
    print(
        f"n={args.n_samples:,} d={args.n_features} K={k}; RMSE over removed entries "
        f"(median of {args.seeds} seeds) and fit+transform seconds (median)"
    )
    print(f"{'missing':>8}  " + "  ".join(f"{name:>22}" for name in methods))
    for fraction in args.fractions:
        errors = {name: [] for name in methods}
        times = {name: [] for name in methods}
        for seed in range(args.seeds):
            X, _ = make_mixture(args.n_samples, args.n_features, k, random_state=seed)
            Xm, mask = _remove(X, fraction, np.random.default_rng(100 + seed))
            for name, make in methods.items():
                start = time.perf_counter()
                filled = make().fit_transform(Xm)
                times[name].append(time.perf_counter() - start)
                errors[name].append(float(np.sqrt(np.mean((filled - X)[mask] ** 2))))
        cells = [f"{np.median(errors[n]):9.4f} ({np.median(times[n]):6.2f} s)" for n in methods]
        print(f"{fraction:8.0%}  " + "  ".join(f"{c:>22}" for c in cells))


if __name__ == "__main__":
    main()
