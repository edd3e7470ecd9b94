"""Numba Viterbi on both sides of ``VITERBI_ROWS_MIN_K`` (the column walk for
few states, the predecessor-major max-plus step for more): the same paths and
log-probabilities as the NumPy reference, exact ties (the last maximum wins as
a predecessor, as hmmlearn's backtrack) and impossible transitions included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastem.hmm._backend import available_hmm_backends, get_hmm_kernels

pytestmark = pytest.mark.skipif(
    "numba" not in available_hmm_backends(), reason="numba kernels only"
)


@settings(max_examples=40, deadline=None)
@given(
    K=st.sampled_from([1, 2, 3, 7, 11, 12, 13, 20, 33]),
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    ties=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_viterbi_matches_reference_across_the_threshold(K, lengths, ties, seed):
    from fastem.hmm import _kernels_numpy as ref

    mod = get_hmm_kernels("numba").hmm
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    N, S = int(offsets[-1]), len(lengths)
    logB = rng.normal(scale=2.0, size=(N, K))
    trans = rng.dirichlet(np.ones(K), size=K)
    start = rng.dirichlet(np.ones(K))
    if ties:  # equal sums: integer-valued emissions, uniform rows
        logB = np.round(logB)
        trans[: K // 2] = 1.0 / K
    with np.errstate(divide="ignore"):
        log_start, log_trans = np.log(start), np.log(trans)
    if K > 2:
        log_trans[0, 1] = -np.inf  # an impossible transition
    got = (np.empty(N, dtype=np.int64), np.empty(S))
    want = (np.empty(N, dtype=np.int64), np.empty(S))
    mod.viterbi(logB, offsets, log_start, log_trans, *got)
    ref.viterbi(logB, offsets, log_start, log_trans, *want)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_threshold_splits_the_tested_sizes():
    """The sizes above straddle the threshold (both code paths run)."""
    k = get_hmm_kernels("numba").hmm.VITERBI_ROWS_MIN_K
    assert 2 <= k <= 13
