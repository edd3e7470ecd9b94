"""The model-agnostic EM driver: fixed-point iteration, acceleration, stopping rules.

- :mod:`~fastem._em.fixed_point`: the problem interface (one pass per point),
  pass accounting, the safeguard, plain EM;
- :mod:`~fastem._em.squarem`: SQUAREM (Varadhan & Roland 2008);
- :mod:`~fastem._em.anderson`: damped restarted Anderson (DAAREM, Henderson &
  Varadhan 2019);
- :mod:`~fastem._em.qn`: quasi-Newton with ``q`` secant pairs (Zhou, Alexander &
  Lange 2011);
- :mod:`~fastem._em.vector`: cycled vector extrapolation, MPE and RRE (Smith, Ford &
  Sidi 1987);
- :mod:`~fastem._em.stopping`: absolute, relative and Aitken stopping rules.

Models (the Gaussian mixture, the hidden Markov models) pack their parameters
into a flat vector and provide :class:`FixedPointProblem`.
"""

from .fixed_point import (
    ACCELERATIONS,
    METHODS,
    Evaluation,
    FixedPointProblem,
    FixedPointResult,
    run_fixed_point,
)
from .stopping import STOPPING_RULES, StoppingRule, make_stopping_rule

__all__ = [
    "ACCELERATIONS",
    "METHODS",
    "STOPPING_RULES",
    "Evaluation",
    "FixedPointProblem",
    "FixedPointResult",
    "StoppingRule",
    "make_stopping_rule",
    "run_fixed_point",
]
