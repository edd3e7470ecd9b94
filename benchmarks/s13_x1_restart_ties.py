"""Which restart ``n_init > 1`` keeps on rounding ties (session 13, X1 item 4).

``paths``: random small problems fitted in memory, from a memory map read in small
blocks and from a Dask array; counts the problems whose paths keep different restarts
under scikit-learn's rule (a strictly higher final bound) and under fastem's (higher by
more than 1e-12 relative). ``sklearn``: ordinary fits (make_mixture(400, 2, 3), the four
covariance types x kmeans/random_from_data, n_init=4) against scikit-learn's restarts,
paired by drawing them one by one from one RandomState; counts the fits whose kept
restart is scikit-learn's under either rule. The restarts' final bounds are read from
the fit's ``init_end`` events, so both rules are evaluated on the same fits.

Run from the repository root:
    python -m benchmarks.s13_x1_restart_ties paths 60
    FASTEM_BACKEND=numpy python -m benchmarks.s13_x1_restart_ties sklearn 25
"""

import os
import sys
import tempfile
import warnings

import numpy as np

TIE = 1e-12


def _kept(bounds, tie):
    """The restart a rule keeps: a later one only if higher by more than ``tie`` relative."""
    best = 0
    for i, b in enumerate(bounds):
        if b > bounds[best] + tie * max(1.0, abs(bounds[best])):
            best = i
    return best


def _restart_bounds(X, **params):
    from fastem import GaussianMixture
    from fastem._events import fit_listener

    bounds = []

    def listen(event, **info):
        if event == "init_end":
            bounds.append(info["lower_bound"])

    with fit_listener(listen):
        GaussianMixture(**params).fit(X)
    return bounds


def paths(n_problems: int) -> None:
    import dask
    import dask.array as da

    import fastem._blocks as blocks
    from fastem.datasets import make_mixture

    rng = np.random.default_rng(0)
    counts = dict(problems=0, differ_strict=0, differ_tie=0)
    cts = ("tied", "full", "diag", "spherical")
    with tempfile.TemporaryDirectory() as tmp:
        for case in range(n_problems):
            seed, rs = int(rng.integers(0, 1000)), int(rng.integers(0, 2**31 - 1))
            n, d = int(rng.integers(150, 400)), int(rng.integers(1, 3))
            X, _ = make_mixture(n, d, 3, random_state=seed)
            params = dict(
                n_components=int(rng.integers(2, 4)),
                covariance_type=cts[case % len(cts)],
                n_init=4,
                random_state=rs,
                init_params=str(rng.choice(["kmeans", "random_from_data", "k-means++"])),
                tol=1e-8,
                max_iter=300,
            )
            chunk = int(rng.integers(17, 200))
            ref = _restart_bounds(X, **params)
            path = os.path.join(tmp, "X.npy")
            np.save(path, X)
            before = blocks.BLOCK_BYTES
            blocks.BLOCK_BYTES = chunk * d * 8
            try:
                mm = _restart_bounds(np.load(path, mmap_mode="r"), **params)
            finally:
                blocks.BLOCK_BYTES = before
            with dask.config.set(scheduler="synchronous"):
                dk = _restart_bounds(da.from_array(X, chunks=(chunk, -1)), **params)
            strict = [_kept(b, 0.0) for b in (ref, mm, dk)]
            tied = [_kept(b, TIE) for b in (ref, mm, dk)]
            counts["problems"] += 1
            counts["differ_strict"] += len(set(strict)) > 1
            counts["differ_tie"] += len(set(tied)) > 1
            if len(set(strict)) > 1 or len(set(tied)) > 1:
                print(f"seed={seed} n={n} d={d} chunk={chunk} {params}: kept (memory, memmap, "
                      f"dask) strict {strict}, with 1e-12 {tied}")  # fmt: skip
    print(counts)


def sklearn(n_seeds: int) -> None:
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    from fastem.datasets import make_mixture

    counts = dict(fits=0, unpaired=0, same_strict=0, same_tie=0, sklearn_breaks_a_tie=0)
    for seed in range(n_seeds):
        X, _ = make_mixture(400, 2, 3, random_state=seed)
        for ct in ("full", "tied", "diag", "spherical"):
            for init_params in ("kmeans", "random_from_data"):
                kw = dict(n_components=3, covariance_type=ct, init_params=init_params)
                ours = _restart_bounds(X, n_init=4, random_state=seed, **kw)
                draws = np.random.RandomState(seed)
                theirs = [
                    SkGaussianMixture(random_state=draws, **kw).fit(X).lower_bound_
                    for _ in range(4)
                ]
                if not np.allclose(ours, theirs, rtol=1e-9, atol=0):
                    counts["unpaired"] += 1  # another start (e.g. tied random_from_data)
                    continue
                kept = _kept(theirs, 0.0)
                counts["fits"] += 1
                counts["same_strict"] += _kept(ours, 0.0) == kept
                counts["same_tie"] += _kept(ours, TIE) == kept
                counts["sklearn_breaks_a_tie"] += kept != _kept(theirs, TIE)
    print(counts)


def main(argv: list[str]) -> None:
    warnings.simplefilter("ignore")
    what, n = argv[0], int(argv[1])
    {"paths": paths, "sklearn": sklearn}[what](n)


if __name__ == "__main__":
    main(sys.argv[1:])
