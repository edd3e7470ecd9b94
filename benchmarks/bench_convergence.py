"""asv: data passes to the maximum, plain EM against SQUAREM, damped Anderson, qn and MPE.

One small overlapping problem (3,000 rows, D=2, K=4, full covariances, BENCHMARKS.md's
standard start). The maximum is the best lower bound of the runs (each until a
step gains nothing, plain EM capped at 2,000 passes); a method's figure is its first
pass within 1e-10 relative of it (the cap + 1 if never). The sweep of many problems
is ``benchmarks/convergence.py``.
"""

from __future__ import annotations

import warnings

import numpy as np

from fastem import GaussianMixture
from fastem.datasets import initial_parameters, make_mixture

CAP = 2_000


def _passes_to_maximum() -> dict:
    X, labels = make_mixture(3_000, 2, 4, random_state=5)
    centres = np.array([X[labels == j].mean(axis=0) for j in range(4)])
    X += -0.3 * centres[labels]  # heavier overlap: slow plain EM
    init = initial_parameters(X, 4, "full", random_state=1)
    bounds = {}
    for method in (None, "squarem", "anderson", "qn", "mpe"):
        gm = GaussianMixture(
            tol=1e-300, stopping="aitken", max_iter=CAP, acceleration=method, **init
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm.fit(X)
        bounds[str(method)] = np.array(gm.lower_bounds_)
    best = max(b.max() for b in bounds.values())
    target = best - 1e-10 * abs(best)
    out = {}
    for method, b in bounds.items():
        hit = np.flatnonzero(b >= target)
        out[method] = int(hit[0]) + 1 if hit.size else CAP + 1
    return out


class PassesToMaximum:
    """Data passes until the lower bound is within 1e-10 of the maximum."""

    params = ["None", "squarem", "anderson", "qn", "mpe"]
    param_names = ["acceleration"]
    timeout = 600

    def setup_cache(self):
        return _passes_to_maximum()

    def track_passes(self, cache, acceleration):
        return cache[acceleration]

    track_passes.unit = "passes"
