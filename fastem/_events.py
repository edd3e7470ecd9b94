"""Progress events of a fit, for listeners such as the command's progress bar.

The EM loop calls :func:`emit`; code that wants to follow a fit wraps it in
:func:`fit_listener`. A context variable (not an estimator attribute) carries
the listeners, so estimators stay plain scikit-learn estimators and threads or
async tasks do not see each other's listeners.

Events and their keyword arguments:

``"init_start"``: ``init`` (0-based), ``n_init``
``"iteration"``: ``init``, ``n_init``, ``n_iter`` (1-based), ``max_iter``,
    ``lower_bound``, ``change`` (gain of the lower bound over the previous iteration)
``"init_end"``: ``init``, ``n_init``, ``converged``, ``n_iter``, ``lower_bound``
``"candidate_start"`` (from :func:`fastem.select_model`, before each candidate's
    fit): ``candidate`` (0-based), ``n_candidates``, and ``restart``, ``n_restarts``
    when restarts are shared across covariance types; ``refine=True`` when the
    two-stage search (``refine="contenders"``) continues a screened candidate
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Listener = Callable[..., None]

_listeners: contextvars.ContextVar[tuple[Listener, ...]] = contextvars.ContextVar(
    "fastem_fit_listeners", default=()
)


@contextmanager
def fit_listener(listener: Listener) -> Iterator[None]:
    """Call ``listener(event, **info)`` for every event of fits inside the block."""
    token = _listeners.set(_listeners.get() + (listener,))
    try:
        yield
    finally:
        _listeners.reset(token)


def emit(event: str, **info) -> None:
    """Send one event to the active listeners (nothing when there are none)."""
    for listener in _listeners.get():
        listener(event, **info)
