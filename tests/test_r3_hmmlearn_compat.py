"""hmmlearn 0.3.3 drop-in behaviours that hmmlearn's own suite does not pin down
(R3's bug hunt): each test failed on the code before its fix.

Tests that compare with hmmlearn skip without it; the others state hmmlearn's
behaviour as a fixed expectation and run anywhere (``backend="numpy"`` where no
compiled kernel is needed)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastem.hmm import CategoricalHMM, available_hmm_backends

BACKENDS = available_hmm_backends()
logging.getLogger("hmmlearn").setLevel(logging.ERROR)


def _categorical(module_cls, start, trans, emission, **kw):
    model = module_cls(start.size, init_params="", **kw)
    model.startprob_ = np.array(start, dtype=float)
    model.transmat_ = np.array(trans, dtype=float)
    model.emissionprob_ = np.array(emission, dtype=float)
    return model


# ------------------------------------------------------------ Viterbi ties
@pytest.mark.parametrize("backend", BACKENDS)
def test_viterbi_ties_resolve_as_hmmlearn(backend):
    """Every path ties: hmmlearn's backtrack takes the last maximizing state
    (std::max over (value, index) pairs), the final frame the first maximum."""
    half = np.full(2, 0.5)
    model = _categorical(CategoricalHMM, half, np.full((2, 2), 0.5), np.full((2, 2), 0.5))
    model.backend = backend
    X = np.zeros((6, 1), dtype=int)
    logprob, path = model.decode(X, lengths=[4, 2])
    np.testing.assert_array_equal(path, [1, 1, 1, 0, 1, 0])
    assert logprob == pytest.approx(6 * np.log(0.25))


def _dyadic_rows(draw, K, width):
    """Rows of probabilities 2^-j summing to 1 (exact logs: ties stay exact)."""
    rows = []
    for _ in range(K):
        row = [0.5**j for j in range(1, width)] + [0.5 ** (width - 1)]
        perm = draw(st.permutations(row))
        rows.append(perm)
    return np.array(rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_viterbi_path_equals_hmmlearns_on_ties(data):
    """Discrete emissions with repeated symbols tie often; every backend's
    path equals hmmlearn's (same log-probability and the same states)."""
    hl = pytest.importorskip("hmmlearn.hmm")
    K = data.draw(st.integers(2, 9), label="K")
    n_symbols = data.draw(st.integers(1, 3), label="symbols")
    start = _dyadic_rows(data.draw, 1, K)[0]
    trans = _dyadic_rows(data.draw, K, data.draw(st.integers(1, K)))
    if trans.shape[1] < K:  # fewer distinct targets: structural zeros (log -inf)
        trans = np.hstack([trans, np.zeros((K, K - trans.shape[1]))])
        trans = np.array([data.draw(st.permutations(list(r))) for r in trans])
    emission = _dyadic_rows(data.draw, K, n_symbols) if n_symbols > 1 else np.ones((K, 1))
    lengths = data.draw(st.lists(st.integers(1, 12), min_size=1, max_size=3), label="lengths")
    X = np.array(
        data.draw(
            st.lists(st.integers(0, n_symbols - 1), min_size=sum(lengths), max_size=sum(lengths))
        )  # fmt: skip
    ).reshape(-1, 1)
    theirs = _categorical(hl.CategoricalHMM, start, trans, emission, n_features=n_symbols)
    lp_h, path_h = theirs.decode(X, lengths)
    for backend in BACKENDS:
        ours = _categorical(CategoricalHMM, start, trans, emission, backend=backend)
        lp_f, path_f = ours.decode(X, lengths)
        assert lp_f == pytest.approx(lp_h, rel=1e-12), backend
        np.testing.assert_array_equal(path_f, path_h, err_msg=backend)
