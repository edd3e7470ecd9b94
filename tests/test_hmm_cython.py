"""The Cython/OpenMP HMM kernels (``fastem.backends._cython_hmm``): every kernel
against the NumPy reference (hypothesis over shapes, length-1 sequences,
zero-weight sequences, impossible transitions and emissions), bit-identical
results on 1 and 2 OpenMP threads, and fits with ``backend="cython"`` equal to
``backend="numpy"``. Skipped where the optional extension is not built."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

cy = pytest.importorskip("fastem.backends._cython_hmm")

from _helpers import hmm_forward_backward as _fb  # noqa: E402
from _helpers import hmm_offsets as _offsets  # noqa: E402
from _helpers import hmm_start_trans  # noqa: E402

from fastem.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM  # noqa: E402
from fastem.hmm import _kernels_numpy as ref  # noqa: E402
from fastem.hmm._backend import available_hmm_backends, get_hmm_kernels  # noqa: E402


def _close(a, b, name, rtol=1e-10, atol=1e-13):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=name)


@st.composite
def _problems(draw):
    K = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(1, 15), min_size=1, max_size=8))
    return dict(
        K=K,
        D=draw(st.integers(1, 4)),
        M=draw(st.integers(1, 3)),
        lengths=lengths,
        dtype=draw(st.sampled_from([np.float32, np.float64])),
        seed=draw(st.integers(0, 2**16)),
        zero_w=draw(st.lists(st.booleans(), min_size=len(lengths), max_size=len(lengths))),
        p_zero_trans=draw(st.sampled_from([0.0, 0.3, 0.6])),
        p_impossible=draw(st.sampled_from([0.0, 0.05, 0.3])),
    )


@settings(max_examples=40, deadline=None)
@given(p=_problems())
def test_kernels_match_reference(p):
    K, D, M, lengths = p["K"], p["D"], p["M"], p["lengths"]
    rng = np.random.default_rng(p["seed"])
    offsets = _offsets(lengths)
    N, S = sum(lengths), len(lengths)
    # impossible transitions (the diagonal stays possible) and impossible emissions
    start, trans = hmm_start_trans(rng, K, p["p_zero_trans"])
    logB = rng.normal(scale=3.0, size=(N, K))
    logB[rng.uniform(size=(N, K)) < p["p_impossible"]] = -np.inf
    logB[rng.uniform(size=N) < 0.1] -= 2000.0  # whole frames whose exp underflows
    w = rng.uniform(0.1, 3.0, size=S)
    w[np.array(p["zero_w"])] = 0.0

    a, b = _fb(cy, logB, offsets, start, trans, w), _fb(ref, logB, offsets, start, trans, w)
    np.testing.assert_array_equal(a["loglik"] == -np.inf, b["loglik"] == -np.inf)
    for name in a:
        _close(a[name], b[name], name)

    ok = np.repeat(np.isfinite(b["loglik"]), lengths)
    filt_a, filt_b = np.empty((N, K)), np.empty((N, K))
    ll_a, ll_b = np.empty(S), np.empty(S)
    cy.forward_filter(logB, offsets, start, trans, filt_a, ll_a)
    ref.forward_filter(logB, offsets, start, trans, filt_b, ll_b)
    _close(ll_a, ll_b, "filter loglik", rtol=1e-12)
    _close(filt_a[ok], filt_b[ok], "filt")
    # an impossible sequence gets zero filtered probabilities (as numba; the
    # reference leaves the frames before the impossible one)
    assert not filt_a[~ok].any()

    with np.errstate(divide="ignore"):
        ls, lt = np.log(start), np.log(trans)
    path_a, path_b = np.empty(N, dtype=np.int64), np.empty(N, dtype=np.int64)
    lp_a, lp_b = np.empty(S), np.empty(S)
    cy.viterbi(logB, offsets, ls, lt, path_a, lp_a)
    ref.viterbi(logB, offsets, ls, lt, path_b, lp_b)
    np.testing.assert_array_equal(path_a, path_b)
    _close(lp_a, lp_b, "viterbi logprob", rtol=1e-12)

    X = rng.normal(loc=50.0, size=(N, D)).astype(p["dtype"])
    shift = rng.normal(loc=50.0, size=(K, D))
    row_w = np.repeat(w, lengths)
    for name, shape in (("moments_diag", (K, D)), ("moments_full", (K, D, D))):
        res = []
        for module in (cy, ref):
            nk, sx, sxx = np.empty(K), np.empty((K, D)), np.empty(shape)
            getattr(module, name)(X, b["gamma"], row_w, shift, nk, sx, sxx)
            res.append((nk, sx, sxx))
        for u, v in zip(*res, strict=True):
            _close(u, v, name, rtol=1e-9, atol=1e-9)

    comp = rng.normal(scale=5.0, size=(N, K * M)) - 300.0
    comp[rng.uniform(size=comp.shape) < p["p_impossible"]] = -np.inf
    gm = []
    for module in (cy, ref):
        state, post = np.empty((N, K)), np.empty((N, K * M))
        module.gmm_state_logprob(comp, M, state)
        module.gmm_posteriors(comp, M, state, b["gamma"], row_w, post)
        gm.append((state, post))
    np.testing.assert_array_equal(gm[0][0] == -np.inf, gm[1][0] == -np.inf)
    _close(gm[0][0], gm[1][0], "gmm_state_logprob", rtol=1e-13, atol=0.0)
    _close(gm[0][1], gm[1][1], "gmm_posteriors", rtol=1e-12, atol=1e-300)


def test_strided_outputs_are_written():
    """Outputs that are not C-contiguous float64 views still receive the results."""
    rng = np.random.default_rng(3)
    K, lengths = 3, [4, 1, 6]
    offsets, N = _offsets(lengths), sum(lengths)
    logB = rng.normal(size=(N, K))
    start, trans = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K)
    w = np.ones(len(lengths))
    big = np.full((N, 2 * K), np.nan)
    gamma = big[:, ::2]  # a strided view
    cy.forward_backward(logB, offsets, start, trans, w, gamma, np.empty(3), np.empty((K, K)),
                        np.empty(K))  # fmt: skip
    _close(gamma, _fb(ref, logB, offsets, start, trans, w)["gamma"], "gamma")
    assert np.isnan(big[:, 1::2]).all()


def _all_outputs():
    """Every kernel's outputs on one problem with many sequence groups (70
    sequences) and row chunks (about 5000 rows)."""
    rng = np.random.default_rng(8)
    lengths = rng.integers(1, 150, size=70)
    offsets = _offsets(lengths)
    N, K, D, S = int(lengths.sum()), 5, 3, lengths.size
    logB = rng.normal(scale=3.0, size=(N, K))
    start, trans = rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K)
    w = rng.uniform(0.5, 2.0, size=S)
    out = list(_fb(cy, logB, offsets, start, trans, w).values())
    filt, ll = np.empty((N, K)), np.empty(S)
    cy.forward_filter(logB, offsets, start, trans, filt, ll)
    path, lp = np.empty(N, dtype=np.int64), np.empty(S)
    cy.viterbi(logB, offsets, np.log(start), np.log(trans), path, lp)
    out += [filt, ll, path, lp]
    row_w = np.repeat(w, lengths)
    shift = rng.normal(size=(K, D))
    for dtype in (np.float64, np.float32):
        X = rng.normal(size=(N, D)).astype(dtype)
        for fn, shape in ((cy.moments_full, (K, D, D)), (cy.moments_diag, (K, D))):
            nk, sx, sxx = np.empty(K), np.empty((K, D)), np.empty(shape)
            fn(X, out[0], row_w, shift, nk, sx, sxx)
            out += [nk, sx, sxx]
    comp = rng.normal(scale=5.0, size=(N, K * 2))
    state, post = np.empty((N, K)), np.empty((N, K * 2))
    cy.gmm_state_logprob(comp, 2, state)
    cy.gmm_posteriors(comp, 2, state, out[0], row_w, post)
    return out + [state, post]


def test_bit_identical_on_1_and_2_threads(monkeypatch):
    mixture = pytest.importorskip("fastem.backends._cython")
    if not mixture.openmp_enabled():
        pytest.skip("built without OpenMP: always one thread")
    before = mixture.get_num_threads()
    # every pass parallel, however small (passes under ~0.3 ms run serial by default)
    min_work = cy._set_parallel_min_work(0)
    results = {}
    try:
        for threads in (1, 2):
            mixture.set_num_threads(threads)
            assert cy._team_size() == threads  # the setting reaches this extension
            results[threads] = _all_outputs()
    finally:
        mixture.set_num_threads(before)
        cy._set_parallel_min_work(min_work)
    results["default"] = _all_outputs()  # small passes serial: the same groups, same bits
    for threads in (2, "default"):
        for a, b in zip(results[1], results[threads], strict=True):
            np.testing.assert_array_equal(a, b)
    # Negative control: groups and chunks set otherwise (as a split that followed
    # the thread count would) change the summation order, which the comparison sees.
    monkeypatch.setattr(cy, "_seq_chunks", lambda n: 3)
    monkeypatch.setattr(cy, "_row_chunks", lambda n, f=0: 3)
    changed = _all_outputs()
    assert any(not np.array_equal(a, b) for a, b in zip(results[1], changed, strict=True))


LENGTHS = [70, 1, 49, 80]


def _cases():
    rng = np.random.default_rng(0)
    N = sum(LENGTHS)
    z = (np.arange(N) // 25) % 3
    X = rng.normal(size=(N, 2)) * 0.8 + np.array([-2.0, 0.0, 2.5])[z, None]
    counts = rng.poisson(np.where((np.arange(N) // 20) % 2, 6.0, 1.0))
    cases = [(GaussianHMM, dict(n_components=3, covariance_type=ct), X)
             for ct in ("full", "diag", "tied", "spherical")]  # fmt: skip
    cases += [(GMMHMM, dict(n_components=2, n_mix=2, covariance_type=ct), X)
              for ct in ("full", "diag")]  # fmt: skip
    cases += [(CategoricalHMM, dict(n_components=3), np.minimum(counts, 4)[:, None])]
    cases += [(PoissonHMM, dict(n_components=2), counts[:, None])]
    return cases


CASES = _cases()


@pytest.mark.skipif("cython" not in available_hmm_backends(), reason="cython backend not built")
@pytest.mark.parametrize(
    ("cls", "kw", "X"),
    CASES,
    ids=[f"{c.__name__}-{k.get('covariance_type', '')}" for c, k, _ in CASES],
)
def test_fit_equals_numpy_backend(cls, kw, X):
    assert get_hmm_kernels("cython").hmm is cy
    models = {}
    for backend in ("cython", "numpy"):
        m = cls(**kw, n_iter=6, tol=-np.inf, random_state=0, backend=backend)
        models[backend] = m.fit(X, LENGTHS)
    a, b = models["cython"], models["numpy"]
    np.testing.assert_allclose(a.monitor_.history, b.monitor_.history, rtol=1e-10)
    for name in a._param_attrs():
        _close(getattr(a, name), getattr(b, name), name, rtol=1e-8, atol=1e-12)
    _close(a.score_sequences(X, LENGTHS), b.score_sequences(X, LENGTHS), "score", rtol=1e-10)
    _close(a.predict_proba(X, LENGTHS), b.predict_proba(X, LENGTHS), "posteriors", 1e-8, 1e-10)
    _close(a.predict_filtered_proba(X, LENGTHS), b.predict_filtered_proba(X, LENGTHS), "filt",
           1e-8, 1e-10)  # fmt: skip
    np.testing.assert_array_equal(a.predict(X, LENGTHS), b.predict(X, LENGTHS))


def test_automatic_selection_prefers_numba(monkeypatch):
    from fastem.hmm import _backend

    monkeypatch.delenv("FASTEM_BACKEND", raising=False)
    assert _backend.HMM_BACKENDS == ("numba", "cython", "numpy")
    first = available_hmm_backends()[0]
    assert get_hmm_kernels(None).name == first
    if "numba" in available_hmm_backends():
        assert first == "numba"


def test_fast_exp_and_log_match_numpy():
    """The kernels' vectorizable exp (arguments <= 0, 0 below -708) and log
    (positive normal numbers): the log within 1 ulp of ``np.log``, the exp within
    2 ulp of ``np.exp``."""
    rng = np.random.default_rng(12)
    r2 = np.sqrt(2.0)
    x = np.concatenate(
        [
            10.0 ** rng.uniform(-307, 308, 5000),
            rng.uniform(0.5, 2.0, 5000),
            [1.0, 2.0, 0.5, r2, np.nextafter(r2, 3), np.nextafter(r2, 0), r2 / 2],
            [np.finfo(float).tiny, np.finfo(float).max, 1e-250, 1 + 2e-16, 1 - 1e-16],
        ]
    )
    _, lg = cy._exp_log(x)
    want = np.log(x)
    assert lg[x == 1.0][0] == 0.0
    nz = want != 0
    assert (np.abs(lg - want)[nz] / np.spacing(np.abs(want[nz]))).max() <= 1.0
    y = np.concatenate([-rng.uniform(0, 708, 5000), [0.0, -1e-300, -707.9, -708.5, -np.inf]])
    e, _ = cy._exp_log(y)
    ok = y >= -708.0
    assert (np.abs(e - np.exp(y))[ok] / np.spacing(np.exp(y[ok]))).max() <= 2.0
    assert not e[~ok].any()
