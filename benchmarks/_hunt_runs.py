"""Record the EM driver's runs while a hunt script fits (shared by the s12 hunt scripts).

Nothing happens at import: asv imports every module under ``benchmarks/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import fastem._em.fixed_point as fp


@contextlib.contextmanager
def recorded_runs() -> Iterator[list]:
    """Yield a list that collects every ``fastem._em.fixed_point.Run`` made inside the block.

    The hunts read each run's path (``run.result.objectives`` / ``kinds``) after a fit.
    ``Run.__init__`` is restored on exit, also when the block raises.
    """
    runs: list = []
    original = fp.Run.__init__

    def recording_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        runs.append(self)

    fp.Run.__init__ = recording_init
    try:
        yield runs
    finally:
        fp.Run.__init__ = original
