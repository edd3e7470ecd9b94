"""Per-chunk partial statistics of the compiled HMM moment kernels (numba and
cython): their layout and their sum in chunk order, shared so that both
backends reduce them the same way (NumPy; O(chunks K d^2), never per row)."""

from __future__ import annotations

import numpy as np


def moment_partials(n_chunks: int, k: int, d: int, full: bool):
    """Zeroed ``(nk_p, sx_p, sxx_p)`` for ``n_chunks`` chunks; ``sxx_p`` is
    (chunks, k, d, d) for full moments, (chunks, k, 1, d) for diagonals."""
    return (
        np.zeros((n_chunks, k)),
        np.zeros((n_chunks, k, d)),
        np.zeros((n_chunks, k, d, d) if full else (n_chunks, k, 1, d)),
    )


def sum_moment_partials(nk_p, sx_p, sxx_p, full: bool, nk, sx, sxx) -> None:
    """Write the chunk-ordered sums of the partials into ``nk``, ``sx``,
    ``sxx``; full second moments come as upper triangles and are mirrored."""
    nk[:] = nk_p.sum(axis=0)
    sx[:] = sx_p.sum(axis=0)
    total = sxx_p.sum(axis=0)
    if full:
        sxx[:] = np.triu(total) + np.swapaxes(np.triu(total, 1), 1, 2)
    else:
        sxx[:] = total[:, 0, :]
