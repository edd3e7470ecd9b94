"""The Cython forward-backward's lock-step lanes (``fastem.backends._cython_hmm``):
batches of four sequences run together, each lane on (T, Kp) scratch padded to a
multiple of four states. Against the NumPy reference under hypothesis with the
shapes that stress the lanes (a number of sequences not a multiple of four,
length-1 sequences, very different lengths in one batch (run one sequence at a
time), dead lanes, K not a multiple of four and above eight), for the
forward-backward and the filter; a sequence's results independent of its batch
neighbours; a Gaussian fit with
missing rows equal to ``backend="numpy"``; and the fused diagonal E-step
(``estep_diag``) against the reference's kernels in turn, on 1 and 2 threads and
in a fit.
Skipped where the optional extension is not built."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

cy = pytest.importorskip("fastem.backends._cython_hmm")

from _helpers import hmm_forward_backward as _fb  # noqa: E402
from _helpers import hmm_offsets as _offsets  # noqa: E402
from _helpers import hmm_start_trans  # noqa: E402

from fastem.backends import get_backend  # noqa: E402
from fastem.hmm import GaussianHMM  # noqa: E402
from fastem.hmm import _kernels_numpy as ref  # noqa: E402
from fastem.hmm._backend import available_hmm_backends  # noqa: E402


@st.composite
def _lane_problems(draw):
    S = draw(st.integers(1, 13))  # 1, 5, 9, 13: a last batch of one sequence
    # lengths from three regimes, so one batch can hold a length-1 sequence next
    # to one a hundred times longer
    lengths = draw(
        st.lists(
            st.one_of(st.just(1), st.integers(2, 6), st.integers(40, 120)),
            min_size=S,
            max_size=S,
        )
    )
    return dict(
        K=draw(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 12, 13])),
        lengths=lengths,
        seed=draw(st.integers(0, 2**16)),
        zero_w=draw(st.lists(st.booleans(), min_size=S, max_size=S)),
        p_zero_trans=draw(st.sampled_from([0.0, 0.5])),
        p_impossible=draw(st.sampled_from([0.0, 0.02, 0.2])),
        p_missing=draw(st.sampled_from([0.0, 0.2])),
    )


@settings(max_examples=60, deadline=None)
@given(p=_lane_problems())
def test_lanes_match_reference(p):
    K, lengths = p["K"], p["lengths"]
    rng = np.random.default_rng(p["seed"])
    offsets = _offsets(lengths)
    N, S = sum(lengths), len(lengths)
    start, trans = hmm_start_trans(rng, K, p["p_zero_trans"])
    logB = rng.normal(scale=3.0, size=(N, K))
    logB[rng.uniform(size=(N, K)) < p["p_impossible"]] = -np.inf  # dead lanes
    logB[rng.uniform(size=N) < 0.05] -= 2000.0  # frames whose exp underflows: the redo
    logB[rng.uniform(size=N) < p["p_missing"]] = 0.0  # a row with nothing observed
    w = rng.uniform(0.1, 3.0, size=S)
    w[np.array(p["zero_w"])] = 0.0

    a, b = _fb(cy, logB, offsets, start, trans, w), _fb(ref, logB, offsets, start, trans, w)
    np.testing.assert_array_equal(a["loglik"] == -np.inf, b["loglik"] == -np.inf)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-13, err_msg=name)

    # the filter runs the same lock-step forward pass
    filt_a, filt_b = np.empty((N, K)), np.empty((N, K))
    ll_a, ll_b = np.empty(S), np.empty(S)
    cy.forward_filter(logB, offsets, start, trans, filt_a, ll_a)
    ref.forward_filter(logB, offsets, start, trans, filt_b, ll_b)
    np.testing.assert_allclose(ll_a, ll_b, rtol=1e-12, atol=1e-13)  # log(1 +- eps) near 0
    ok = np.repeat(np.isfinite(ll_b), lengths)
    np.testing.assert_allclose(filt_a[ok], filt_b[ok], rtol=1e-10, atol=1e-13)
    assert not filt_a[~ok].any()  # an impossible sequence: zero filtered probabilities


def test_sequence_independent_of_its_batch_neighbours():
    """Lanes never mix: sequence 0's posteriors and log-likelihood are the same
    bits whatever the three sequences that share its batch (longer, shorter,
    impossible), and the transition counts of a batch are the sum of its
    sequences' (the neighbours given weight 0 add exactly nothing); an uneven
    batch runs one sequence at a time, again the same bits whatever its
    neighbours.

    Across the two modes the tolerance is the Numba twin's
    (``test_hmm_kernels.test_lockstep_batches_match_reference_on_hard_cases``):
    the one-lane product (two accumulator chains over the states) sums in
    another order than the four-lane one, so a sequence's last bits depend on
    whether its batch runs in lanes, which its neighbours' lengths decide."""
    rng = np.random.default_rng(5)
    K = 10
    start, trans = hmm_start_trans(rng, K, 0.3)
    first = rng.normal(scale=3.0, size=(60, K))
    layouts = {
        True: ([60, 60, 60, 60], [60, 40, 30, 50]),  # lock-step lanes
        False: ([60, 1, 200, 7], [60, 3, 2, 1]),  # uneven: one at a time
    }
    results = {}
    for lanes, group in layouts.items():
        results[lanes] = []
        for lengths in group:
            assert cy._lock_step_py(_offsets(lengths), 0, 4) == lanes
            logB = np.concatenate(
                [first] + [rng.normal(scale=3.0, size=(n, K)) for n in lengths[1:]]
            )
            if lengths[1] == 60:
                logB[70, :] = -np.inf  # an impossible neighbour: a dead lane
            w = np.array([1.5, 0.0, 0.0, 0.0])
            results[lanes].append(_fb(cy, logB, _offsets(lengths), start, trans, w))
    assert results[True][0]["loglik"][1] == -np.inf
    for group in results.values():
        for other in group[1:]:
            np.testing.assert_array_equal(other["gamma"][:60], group[0]["gamma"][:60])
            np.testing.assert_array_equal(other["loglik"][0], group[0]["loglik"][0])
            np.testing.assert_array_equal(other["start"], group[0]["start"])
            np.testing.assert_array_equal(other["xi"], group[0]["xi"])
    a, b = results[True][0], results[False][0]
    for name in ("gamma", "start", "xi"):
        np.testing.assert_allclose(a[name][:60], b[name][:60], rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(a["loglik"][0], b["loglik"][0], rtol=1e-13)


def test_lanes_with_many_states():
    """K = 70 (eight-column register tiles and a four-column tail, 18 row tiles)
    and batches of 4, 4 and 2 sequences, against the reference."""
    rng = np.random.default_rng(9)
    K, lengths = 70, [30, 1, 17, 30, 2, 29, 5, 11, 30, 4]
    offsets = _offsets(lengths)
    start, trans = hmm_start_trans(rng, K, 0.5)
    logB = rng.normal(scale=3.0, size=(sum(lengths), K))
    w = rng.uniform(0.5, 2.0, size=len(lengths))
    a, b = _fb(cy, logB, offsets, start, trans, w), _fb(ref, logB, offsets, start, trans, w)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-10, atol=1e-13, err_msg=name)


@pytest.mark.skipif("cython" not in available_hmm_backends(), reason="cython backend not built")
@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_fit_with_missing_rows_equals_numpy(covariance_type):
    """Seven sequences (batches of four and three) with NaN entries and whole
    NaN rows: a fit on the Cython kernels equals one on the NumPy reference."""
    rng = np.random.default_rng(2)
    lengths = [40, 1, 25, 60, 3, 33, 18]
    N = sum(lengths)
    z = (np.arange(N) // 15) % 3
    X = rng.normal(size=(N, 3)) * 0.7 + np.array([-2.0, 0.0, 2.0])[z, None]
    X[rng.uniform(size=X.shape) < 0.1] = np.nan
    X[rng.uniform(size=N) < 0.05] = np.nan  # rows with nothing observed
    models = {}
    for backend in ("cython", "numpy"):
        m = GaussianHMM(
            n_components=5,
            covariance_type=covariance_type,
            n_iter=5,
            tol=-np.inf,
            random_state=0,
            backend=backend,
        )
        models[backend] = m.fit(X, lengths)
    a, b = models["cython"], models["numpy"]
    np.testing.assert_allclose(a.monitor_.history, b.monitor_.history, rtol=1e-10)
    for name in a._param_attrs():
        np.testing.assert_allclose(
            getattr(a, name), getattr(b, name), rtol=1e-8, atol=1e-12, err_msg=name
        )
    np.testing.assert_allclose(
        a.predict_proba(X, lengths), b.predict_proba(X, lengths), rtol=1e-8, atol=1e-10
    )


# ------------------------------------------------------------------ fused E-step


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.one_of(st.just(1), st.integers(2, 30)), min_size=1, max_size=40),
    K=st.sampled_from([1, 2, 3, 5, 8, 9, 13]),
    D=st.integers(1, 5),
    left_right=st.booleans(),
    outlier=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_estep_diag_matches_reference(lengths, K, D, left_right, outlier, seed):
    """``estep_diag`` (emissions, lock-step forward-backward and moments per
    batch) against the NumPy reference's three kernels in turn, on every shape
    (the batch threshold lowered to 1); declines below the threshold."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cy, "FUSED_MIN_BATCHES", 1)
        _check_estep(lengths, K, D, left_right, outlier, seed)
        mp.setattr(cy, "FUSED_MIN_BATCHES", (len(lengths) + 3) // 4 + 1)
        _check_estep(lengths, K, D, left_right, outlier, seed, fused=False)  # declines


def _check_estep(lengths, K, D, left_right, outlier, seed, fused=True):
    """The fused E-step against the reference (``fused``), or its refusal."""
    rng = np.random.default_rng(seed)
    offsets = _offsets(lengths)
    N, S = sum(lengths), len(lengths)
    means = rng.normal(scale=3.0, size=(K, D))
    pc = rng.uniform(0.5, 2.0, size=(K, D))
    if outlier:  # frames far from every mean, a sharp state: the exact-shift redo
        pc[0] = 40.0
    cc = np.log(pc).sum(axis=1) - 0.5 * D * np.log(2 * np.pi)
    X = means[rng.integers(K, size=N)] + rng.normal(size=(N, D))
    if outlier:
        X[offsets[:-1][np.array(lengths) > 1] + 1] += 30.0
    start, trans = hmm_start_trans(rng, K, 0.0)
    if left_right and K > 1:  # structural zeros below the diagonal
        trans = np.triu(trans)
        trans /= trans.sum(axis=1, keepdims=True)
        start = np.eye(K)[0]
    w = rng.uniform(0.0, 2.0, size=S)
    w[rng.uniform(size=S) < 0.2] = 0.0
    row_w = np.repeat(w, lengths)
    shift = means + rng.normal(scale=0.1, size=(K, D))
    args = (X, offsets, means, pc, cc, start, trans, w, row_w, shift)
    got = [np.empty(S), np.empty((K, K)), np.empty(K), np.empty(K), np.empty((K, D))]
    got.append(np.empty((K, D)))
    if not fused:
        assert cy.estep_diag(*args, *got) is False
        return
    assert cy.estep_diag(*args, *got) is True

    logB = np.empty((N, K))
    get_backend("numpy").log_prob_diag(X, means, pc, cc, logB)
    fb = _fb(ref, logB, offsets, start, trans, w)
    nk, sx, sxx = np.empty(K), np.empty((K, D)), np.empty((K, D))
    ref.moments_diag(X, fb["gamma"], row_w, shift, nk, sx, sxx)
    want = [fb["loglik"], fb["xi"], fb["start"], nk, sx, sxx]
    for name, a, b in zip(("loglik", "xi", "start", "nk", "sx", "sxx"), got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-9, err_msg=name)


def test_estep_diag_bit_identical_on_1_and_2_threads():
    mixture = pytest.importorskip("fastem.backends._cython")
    if not mixture.openmp_enabled():
        pytest.skip("built without OpenMP: always one thread")
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 120, size=90)
    offsets = _offsets(lengths)
    N, S, K, D = int(lengths.sum()), lengths.size, 6, 3
    means = rng.normal(scale=3.0, size=(K, D))
    pc = rng.uniform(0.5, 2.0, size=(K, D))
    cc = np.log(pc).sum(axis=1) - 0.5 * D * np.log(2 * np.pi)
    X = means[rng.integers(K, size=N)] + rng.normal(size=(N, D))
    start, trans = hmm_start_trans(rng, K, 0.3)
    w = rng.uniform(0.5, 2.0, size=S)
    args = (X, offsets, means, pc, cc, start, trans, w, np.repeat(w, lengths), means)
    before = mixture.get_num_threads()
    min_work = cy._set_parallel_min_work(0)
    results = []
    try:
        for threads in (1, 2):
            mixture.set_num_threads(threads)
            out = [np.empty(S), np.empty((K, K)), np.empty(K), np.empty(K), np.empty((K, D))]
            out.append(np.empty((K, D)))
            assert cy.estep_diag(*args, *out) is True
            results.append(out)
    finally:
        mixture.set_num_threads(before)
        cy._set_parallel_min_work(min_work)
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif("cython" not in available_hmm_backends(), reason="cython backend not built")
def test_fit_takes_the_fused_estep(monkeypatch):
    """A diagonal GaussianHMM fit on 40 sequences (10 batches) runs the Cython
    fused E-step, and equals the NumPy reference's fit."""
    calls = []
    fused = cy.estep_diag
    monkeypatch.setattr(cy, "estep_diag", lambda *a: calls.append(1) or fused(*a))
    rng = np.random.default_rng(6)
    lengths = list(rng.integers(1, 40, size=40))
    N = sum(lengths)
    z = (np.arange(N) // 10) % 3
    X = rng.normal(size=(N, 2)) * 0.7 + np.array([-2.0, 0.0, 2.0])[z, None]
    models = {}
    for backend in ("cython", "numpy"):
        m = GaussianHMM(
            n_components=3, covariance_type="diag", n_iter=4, tol=-np.inf, random_state=0,
            backend=backend,
        )  # fmt: skip
        models[backend] = m.fit(X, lengths)
    assert calls
    a, b = models["cython"], models["numpy"]
    np.testing.assert_allclose(a.monitor_.history, b.monitor_.history, rtol=1e-10)
    for name in a._param_attrs():
        np.testing.assert_allclose(
            getattr(a, name), getattr(b, name), rtol=1e-8, atol=1e-12, err_msg=name
        )


@settings(max_examples=30, deadline=None)
@given(
    N=st.integers(1, 300),
    K=st.sampled_from([1, 3, 4, 5, 13, 32, 70]),
    D=st.integers(0, 14),
    seed=st.integers(0, 2**16),
)
def test_component_logprob_diag_matches_reference(N, K, D, seed):
    """The optional ``component_logprob_diag`` (the fused E-step's emission code,
    vectorized over components) against the NumPy backend's ``log_prob_diag``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(loc=5.0, size=(N, D))
    means = rng.normal(loc=5.0, size=(K, D))
    pc = rng.uniform(0.2, 3.0, size=(K, D))
    cc = rng.normal(size=K)
    got, want = np.full((N, K), np.nan), np.empty((N, K))
    cy.component_logprob_diag(X, means, pc, cc, got)
    get_backend("numpy").log_prob_diag(X, means, pc, cc, want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-10)
