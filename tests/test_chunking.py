"""The Numba backend's row chunking: a function of the shape alone, memory-bounded."""

from __future__ import annotations

import pytest

numba_backend = pytest.importorskip("fastem.backends._numba")


@pytest.mark.parametrize("n", [1, 2048, 2049, 50_000, 200_000, 10**7])
@pytest.mark.parametrize("floats_per_chunk", [0, 16 * 16 * 17, 64 * 64 * 65, 8 * 512 * 513])
def test_chunks_are_bounded_in_count_and_memory(n, floats_per_chunk):
    nc = numba_backend._n_chunks(n, floats_per_chunk)
    assert 1 <= nc <= numba_backend.MAX_CHUNKS
    assert nc == 1 or nc % 8 == 0  # even static split over 1, 2, 4, 8 threads
    if nc > 8:
        assert nc * floats_per_chunk <= numba_backend.PARTIALS_BUDGET
    assert nc <= max(1, -(-n // numba_backend.MIN_CHUNK_ROWS) + 7)
