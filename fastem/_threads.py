"""Thread caps for the compiled backends, restored afterwards even on error."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .backends import get_backend


def get_backend_threads(backend: str) -> int:
    """Threads the next kernel call of ``backend`` will use (1 for numpy)."""
    if backend == "numba":
        import numba

        return int(numba.get_num_threads())
    if backend == "cython":
        return int(get_backend("cython").get_num_threads())
    return 1


def _set_backend_threads(backend: str, n: int) -> None:
    if backend == "numba":
        import numba

        # numba cannot start more threads than its pool (NUMBA_NUM_THREADS) holds
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    elif backend == "cython":
        get_backend("cython").set_num_threads(n)


@contextlib.contextmanager
def limit_threads(backend: str, n_threads: int | None) -> Iterator[None]:
    """Run the body with ``backend`` capped at ``n_threads`` threads.

    ``None`` leaves the backend's own setting (``NUMBA_NUM_THREADS`` for numba,
    ``OMP_NUM_THREADS`` for cython, else every core). The previous count is
    restored when the body ends, also when it raises. The setting is per
    calling thread, as numba's and OpenMP's are.
    """
    if n_threads is None or backend == "numpy":
        yield
        return
    before = get_backend_threads(backend)
    _set_backend_threads(backend, n_threads)
    try:
        yield
    finally:
        _set_backend_threads(backend, before)
