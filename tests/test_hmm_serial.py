"""The serial part of a fused diag/spherical GaussianHMM iteration (issue #15):
what a fit makes once instead of every iteration gives the same bits.

- ``fastem.hmm._gaussian._FusedPlan`` (the fit's buffers, one compiled call for
  the precision factors and parameter copies) against the general code path,
  whole fits bit for bit;
- the numba ``estep_diag`` workspace (read-only views, group partials, counter
  made once per fit) against fresh calls, with negative controls for its key
  check and for the partials' zeroing;
- ``estep_params_diag`` against ``precision_cholesky`` and ``log_det_cholesky``
  under hypothesis.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("numba")

import fastem.hmm._gaussian as hmm_gaussian  # noqa: E402
from fastem._covariance import _LOG_2PI, log_det_cholesky, precision_cholesky  # noqa: E402
from fastem.hmm import GaussianHMM  # noqa: E402
from fastem.hmm._backend import get_hmm_kernels  # noqa: E402

OUTPUTS = ("loglik", "xi", "start", "nk", "sx", "sxx")


def _data(seed: int, D: int, S: int = 40):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 25, size=S)
    N = int(lengths.sum())
    X = rng.normal(size=(N, D)) + 3.0 * rng.integers(3, size=(N, 1))
    return X, lengths, rng.uniform(0.5, 2.0, size=S)


def _fit(covariance_type, X, lengths, w, **kw):
    m = GaussianHMM(3, covariance_type, n_iter=5, random_state=0, backend="numba", **kw)
    m.fit(X, lengths, sample_weight=w)
    return m


@pytest.mark.parametrize(
    "covariance_type, kw",
    [
        ("diag", {}),
        ("spherical", {"reg_covar": 1e-3}),
        ("diag", {"means_weight": 0.5, "covars_weight": 3.0, "transmat_prior": 1.5}),
        ("spherical", {"acceleration": "squarem", "n_threads": 1}),
        ("diag", {"n_threads": 2, "startprob_prior": 2.0}),
    ],
)
def test_fit_with_the_plan_is_bit_identical_to_the_general_path(covariance_type, kw, monkeypatch):
    """A fit through the per-fit plan equals, bit for bit, the same fit through
    the general code (precision_cholesky, log_det_cholesky, fresh arrays each
    iteration), which is what ran before the plan and still runs on the other
    backends; and the plan is what ran."""
    X, lengths, w = _data(1, 2)
    runs = []
    build = hmm_gaussian._FusedPlan.build
    monkeypatch.setattr(
        hmm_gaussian._FusedPlan, "run",
        lambda self, *a, run=hmm_gaussian._FusedPlan.run: runs.append(1) or run(self, *a),
    )  # fmt: skip
    planned = _fit(covariance_type, X, lengths, w, **kw)
    assert len(runs) >= 5
    monkeypatch.setattr(hmm_gaussian._FusedPlan, "build", classmethod(lambda cls, *a: None))
    general = _fit(covariance_type, X, lengths, w, **kw)
    monkeypatch.setattr(hmm_gaussian._FusedPlan, "build", build)
    for name in ("startprob_", "transmat_", "means_", "_covars_", "objective_history_"):
        np.testing.assert_array_equal(getattr(planned, name), getattr(general, name), name)
    np.testing.assert_array_equal(planned.monitor_.history, general.monitor_.history)


def test_plan_passes_the_general_paths_inputs(monkeypatch):
    """The E-step inputs the plan hands the kernel (means, precision factors,
    constants, start and transition probabilities) are those of the general
    code, bit for bit, for both covariance types and several feature counts."""
    seen = []

    def capture(kernels, X, offsets, means, pc, cc, start, trans, *rest):
        seen.append([np.array(a) for a in (means, pc, cc, start, trans)])

    monkeypatch.setattr(hmm_gaussian, "estep_diag", capture)
    kernels = get_hmm_kernels("numba")
    rng = np.random.default_rng(4)
    for ct in ("diag", "spherical"):
        for D in (1, 3, 9):
            X, lengths, _ = _data(2, D)
            m = GaussianHMM(4, ct, backend="numba")
            m.means_ = rng.normal(size=(4, D))
            m._covars_ = rng.uniform(1e-3, 1e3, size=(4,) if ct == "spherical" else (4, D))
            m.startprob_ = rng.dirichlet(np.ones(4))
            m.transmat_ = rng.dirichlet(np.ones(4), size=4)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            plan = hmm_gaussian._FusedPlan.build(m, kernels, X)
            plan.run(m, kernels, X, offsets, np.ones(len(lengths)))
            pc = precision_cholesky(m._covars_, ct)
            cc = log_det_cholesky(pc, ct, D) - 0.5 * D * _LOG_2PI
            if ct == "spherical":
                pc = np.repeat(pc, D).reshape(4, D)
            want = (m.means_, pc, cc, m.startprob_, m.transmat_)
            for got, ref in zip(seen.pop(), want, strict=True):
                np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("bad", [0.0, -1.0, np.inf, np.nan])
def test_a_bad_variance_raises_the_general_error(bad):
    """A variance that is not finite and positive (set directly, past the
    setter's check): the plan declines and precision_cholesky's error is raised."""
    X, lengths, w = _data(3, 2)
    m = GaussianHMM(3, "diag", backend="numba", init_params="", n_iter=1)
    m.startprob_ = np.full(3, 1 / 3)
    m.transmat_ = np.full((3, 3), 1 / 3)
    m.means_ = np.zeros((3, 2))
    m._covars_ = np.ones((3, 2))
    m._covars_[1, 1] = bad
    kernels = get_hmm_kernels("numba")
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    plan = hmm_gaussian._FusedPlan.build(m, kernels, X)
    assert plan.run(m, kernels, X, offsets, w) is None
    with pytest.raises(ValueError) as general:
        precision_cholesky(m._covars_, "diag")
    with pytest.raises(ValueError) as got:
        m._estep(kernels, X, offsets, w)
    assert str(got.value) == str(general.value)


def _problem(seed, D=2, K=3, S=40):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 30, size=S)
    N = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    X = rng.normal(size=(N, D)) * 2.0
    w = rng.uniform(0.0, 2.0, size=S)
    return X, offsets, w, np.repeat(w, lengths)


def _params(seed, D=2, K=3):
    rng = np.random.default_rng(100 + seed)
    pc = rng.uniform(0.5, 2.0, size=(K, D))
    means = rng.normal(size=(K, D)) * 2.0
    return (
        means, pc, np.log(pc).sum(axis=1) - 0.5 * D * _LOG_2PI,
        rng.dirichlet(np.ones(K)), rng.dirichlet(np.ones(K), size=K),
    )  # fmt: skip


def _call(mod, X, offsets, w, row_w, params, workspace):
    K, D = params[0].shape
    out = dict(
        loglik=np.empty(offsets.size - 1), xi=np.empty((K, K)), start=np.empty(K),
        nk=np.empty(K), sx=np.empty((K, D)), sxx=np.empty((K, D)),
    )  # fmt: skip
    means, pc, cc, start, trans = params
    assert mod.estep_diag(
        X, offsets, means, pc, cc, start, trans, w, row_w, means,
        *(out[n] for n in OUTPUTS), workspace,
    )  # fmt: skip
    return out


def _equal(a, b) -> bool:
    return all(np.array_equal(a[n], b[n]) for n in OUTPUTS)


def test_workspace_calls_equal_fresh_calls(monkeypatch):
    """Calls that share a workspace (new parameters each time, as a fit's
    iterations) give the bits of calls without one; a call on other data
    arrays rebuilds it. Negative controls: with the key check disabled, the
    stale views give other values; partials that are not zeroed after the
    reduction double the next call's counts."""
    mod = get_hmm_kernels("numba").hmm
    X, offsets, w, row_w = _problem(0)
    ws: dict = {}
    for seed in range(3):
        p = _params(seed)
        assert _equal(
            _call(mod, X, offsets, w, row_w, p, ws), _call(mod, X, offsets, w, row_w, p, None)
        )
    kept = ws["estep_diag"]
    X2 = X + 0.5  # other data: a new workspace entry
    p = _params(7)
    fresh2 = _call(mod, X2, offsets, w, row_w, p, None)
    assert _equal(_call(mod, X2, offsets, w, row_w, p, ws), fresh2)
    assert ws["estep_diag"] is not kept

    # negative control 1: the stale entry served for other data
    ws_stale = {"estep_diag": kept}
    monkeypatch.setattr(mod, "_same_data", lambda *a: True)
    assert not _equal(_call(mod, X2, offsets, w, row_w, p, ws_stale), fresh2)
    monkeypatch.undo()

    # negative control 2: partials restored after the reduction (not zeroed)
    real = mod._sum_groups

    def keep_partials(transmat, *args):
        saved = [a.copy() for a in args[:5]]
        real(transmat, *args)
        for a, s in zip(args[:5], saved, strict=True):
            a[...] = s

    ws2: dict = {}
    first = _call(mod, X, offsets, w, row_w, p, ws2)
    monkeypatch.setattr(mod, "_sum_groups", keep_partials)
    _call(mod, X, offsets, w, row_w, p, ws2)  # leaves its partials in place
    second = _call(mod, X, offsets, w, row_w, p, ws2)
    np.testing.assert_allclose(second["nk"], 2 * first["nk"], rtol=1e-12)


def test_a_failed_pass_drops_the_workspace(monkeypatch):
    """A pass that raises leaves partials that were not reduced: the workspace
    entry is dropped, so the next call starts from zeroed partials."""
    mod = get_hmm_kernels("numba").hmm
    X, offsets, w, row_w = _problem(5)
    p = _params(5)
    ws: dict = {}
    want = _call(mod, X, offsets, w, row_w, p, None)
    _call(mod, X, offsets, w, row_w, p, ws)

    def fail(kernel, n_iter, *args):
        kernel(0, n_iter, *args)  # partials written, then an error
        raise KeyboardInterrupt

    monkeypatch.setattr(mod, "run_dynamic", fail)
    monkeypatch.setattr(mod, "SMALL_WORK", 0)
    with pytest.raises(KeyboardInterrupt):
        _call(mod, X, offsets, w, row_w, p, ws)
    assert "estep_diag" not in ws
    monkeypatch.undo()
    assert _equal(_call(mod, X, offsets, w, row_w, p, ws), want)


@settings(max_examples=60, deadline=None)
@given(
    K=st.integers(1, 6),
    D=st.integers(1, 12),
    spherical=st.booleans(),
    log_scale=st.floats(-12, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_estep_params_diag_matches_numpy(K, D, spherical, log_scale, seed):
    """The compiled precision factors and copies equal ``precision_cholesky``
    (and ``np.repeat`` for spherical) bit for bit, over variances spanning
    many magnitudes."""
    from fastem.hmm._mstep_numba import estep_params_diag

    rng = np.random.default_rng(seed)
    C = 1 if spherical else D
    cov = np.exp(log_scale + rng.normal(scale=3.0, size=(K, C)))
    means = rng.normal(size=(K, D))
    start = rng.dirichlet(np.ones(K))
    trans = rng.dirichlet(np.ones(K), size=K)
    bufs = (np.empty((K, C)), np.empty((K, D)), np.empty((K, D)), np.empty(K), np.empty((K, K)))
    assert estep_params_diag(cov, means, start, trans, *bufs)
    ct = "spherical" if spherical else "diag"
    pcs = precision_cholesky(cov[:, 0] if spherical else cov, ct)
    pc = np.repeat(pcs, D).reshape(K, D) if spherical else pcs
    np.testing.assert_array_equal(bufs[0], pcs.reshape(K, C))
    for got, want in zip(bufs[1:], (pc, means, start, trans), strict=True):
        np.testing.assert_array_equal(got, want)


_SIGNATURES = """
import numpy as np
import fastem.hmm._gaussian as hg
from fastem.backends import _numba, _numba_hmm
from fastem.hmm import GaussianHMM

kernels = (_numba._chunks_diag, _numba_hmm._fb_chunks, _numba_hmm._moments_chunks,
           _numba_hmm._estep_diag_chunks, _numba_hmm._sum_groups)
build = hg._FusedPlan.build
for lengths in ([600], [20] * 40):
    rng = np.random.default_rng(6)
    X = rng.normal(size=(sum(lengths), 2)) + 3.0 * rng.integers(3, size=(sum(lengths), 1))
    hg._FusedPlan.build = classmethod(lambda cls, *a: None)
    GaussianHMM(3, "diag", n_iter=3, random_state=0, backend="numba").fit(X, lengths)
    before = [set(k.signatures) for k in kernels]
    hg._FusedPlan.build = build
    GaussianHMM(3, "diag", n_iter=3, random_state=0, backend="numba").fit(X, lengths)
    new = [set(k.signatures) - b for k, b in zip(kernels, before)]
    print(sum(map(len, new)))
"""


def test_plan_compiles_no_new_kernel_types():
    """Through the plan, the kernels see the argument types of the general
    path (read-only views only where the fused kernel takes them; writable
    arrays for the fallback kernels of a shape it declines), so a fit compiles
    no further specialization. In a fresh process: one where another test ran
    first may hold the specializations already. (Checked by hand: passing the
    read-only views on every iteration gives a new ``_sum_groups`` type.)"""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _SIGNATURES], check=True, capture_output=True, text=True
    ).stdout.split()
    assert out == ["0", "0"]
