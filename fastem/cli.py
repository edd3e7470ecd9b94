"""The ``fastem`` command.

``fastem demo`` fits a mixture to built-in synthetic data and prints what it
found next to the truth. (More subcommands are planned: fit, predict, select,
segment.)
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import __version__
from .backends import available_backends
from .datasets import make_mixture
from .mixture import GaussianMixture


def _match_components(true_means: np.ndarray, found_means: np.ndarray) -> np.ndarray:
    """Greedy nearest matching of found components to true ones (k is small)."""
    k = true_means.shape[0]
    dist = ((true_means[:, None, :] - found_means[None, :, :]) ** 2).sum(axis=2)
    order = np.full(k, -1)
    for _ in range(k):
        i, j = np.unravel_index(np.argmin(dist), dist.shape)
        order[i] = j
        dist[i, :] = np.inf
        dist[:, j] = np.inf
    return order


def run_demo(args: argparse.Namespace) -> int:
    X, labels = make_mixture(
        args.n_samples, args.n_features, args.n_components, random_state=args.seed
    )
    print(
        f"fastem {__version__} demo: {args.n_samples:,} rows, {args.n_features} features, "
        f"{args.n_components} components (seed {args.seed})"
    )
    gm = GaussianMixture(
        args.n_components,
        covariance_type=args.covariance,
        random_state=args.seed,
        backend=args.backend,
        max_iter=500,
    )
    start = time.perf_counter()
    gm.fit(X)
    elapsed = time.perf_counter() - start
    print(
        f"backend {gm.backend_}: {gm.n_iter_} EM iterations, "
        f"{'converged' if gm.converged_ else 'NOT converged'}, {elapsed:.2f} s "
        "(includes k-means initialization and any first-call compilation)"
    )
    print(f"average log-likelihood: {gm.lower_bound_:.5f}")
    true_means = np.array([X[labels == k].mean(axis=0) for k in range(args.n_components)])
    true_weights = np.bincount(labels, minlength=args.n_components) / labels.size
    order = _match_components(true_means, gm.means_)
    agreement = (order[labels] == gm.predict(X)).mean()
    print("component  true weight  fitted weight  distance between true and fitted mean")
    for k in range(args.n_components):
        j = order[k]
        dist = float(np.linalg.norm(true_means[k] - gm.means_[j]))
        print(f"{k:9d}  {true_weights[k]:11.4f}  {gm.weights_[j]:13.4f}  {dist:.4f}")
    print(f"rows assigned to the component they were drawn from: {agreement:.1%}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastem", description="Gaussian mixture models by EM, fast."
    )
    parser.add_argument("--version", action="version", version=f"fastem {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="fit built-in synthetic data and report the result")
    demo.add_argument("--n-samples", type=int, default=100_000)
    demo.add_argument("--n-features", type=int, default=2)
    demo.add_argument("--n-components", type=int, default=5)
    demo.add_argument("--covariance", choices=("full", "tied", "diag", "spherical"), default="full")
    demo.add_argument(
        "--backend",
        choices=("numba", "cython", "numpy"),
        default=None,
        help=f"kernel backend (available here: {', '.join(available_backends())})",
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=run_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fastem`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for name in ("n_samples", "n_features", "n_components"):
        if getattr(args, name, 1) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if getattr(args, "n_samples", 2) < getattr(args, "n_components", 1):
        parser.error("--n-samples must be at least --n-components")
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"fastem: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
