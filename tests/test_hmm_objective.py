"""The HMMs' penalized objective (issue #15): log-likelihood + log prior.

- ``log_prior`` against scipy.stats densities (up to its constant);
- the M-step is the argmax of ``Q + log prior`` (GMMHMM: each conditional step
  of its ECM step), by perturbing its output in feasible directions;
- Baum-Welch never decreases the recorded objective (hypothesis);
- negative controls: an M-step without the prior, or with a wrong pseudo-count,
  fails the argmax check.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats as ss

from fastem.hmm import GMMHMM, CategoricalHMM, GaussianHMM, PoissonHMM
from fastem.hmm._accel import _Packer
from fastem.hmm._base import BaseHMM, _offsets, _seq_weights
from fastem.hmm._prior import log_prior

COV_TYPES = ("spherical", "diag", "full", "tied")
LENGTHS = [30, 1, 24, 35]
N = sum(LENGTHS)
SW = [1.0, 2.0, 0.5, 1.5]


def _gauss(seed=0, d=2, nan=0.0):
    rng = np.random.default_rng(seed)
    z = (np.arange(N) // 12) % 3
    X = rng.normal(size=(N, d)) * 0.8 + np.array([-2.0, 0.0, 2.5])[z, None]
    if nan:
        X[rng.random(X.shape) < nan] = np.nan
        X[3] = np.nan  # a frame with nothing observed
    return X


def _counts(seed=1):
    rng = np.random.default_rng(seed)
    return rng.poisson(np.where((np.arange(N) // 10) % 2, 6.0, 1.5))[:, None]


# ------------------------------------------------------------------ Q + log prior
def _logdet_inv(cov):
    sign, logdet = np.linalg.slogdet(cov)
    return logdet, np.linalg.inv(cov)


def _q_gauss(nk, sx, sxx, shift, mu, cov, kind):
    """Expected complete-data Gaussian log-density (no 2 pi) of stacked components:
    nk (C,), sx (C, D), sxx (C, D[, D]) about ``shift``, at means ``mu`` (C, D)
    and covariances ``cov``: (C,) spherical, (C, D) diag, (C, D, D) full."""
    d = mu - shift
    if kind in ("diag", "spherical"):
        var = np.broadcast_to(cov[:, None] if kind == "spherical" else cov, mu.shape)
        S = sxx - 2 * d * sx + nk[:, None] * d**2
        return float(np.sum(-0.5 * nk[:, None] * np.log(var) - 0.5 * S / var))
    dd = d[:, :, None] * sx[:, None, :]
    S = sxx - dd - np.swapaxes(dd, 1, 2) + nk[:, None, None] * d[:, :, None] * d[:, None, :]
    logdet, inv = _logdet_inv(cov)
    return float(np.sum(-0.5 * nk * logdet - 0.5 * np.einsum("kij,kji->k", inv, S)))


def _xlogy(a, p):
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(np.where(a > 0, a * np.log(p), 0.0)))


def _objective(model, fb, stats) -> float:
    """Q(theta | E-step) + log prior(theta) at the model's current parameters."""
    q = _xlogy(fb.start, model.startprob_) + _xlogy(fb.xi, model.transmat_)
    if isinstance(model, GMMHMM):
        nk, sx, sxx, shift = stats
        K, M, D = model.means_.shape
        q += _xlogy(nk, model.weights_)
        ct = model.covariance_type
        cov = model.covars_
        if ct == "tied":
            cov, kind = np.repeat(cov, M, axis=0), "full"
        else:
            cov, kind = cov.reshape(K * M, *cov.shape[2:]), ct
        flat = (nk.reshape(K * M), sx.reshape(K * M, D), sxx.reshape(K * M, *sxx.shape[2:]))
        q += _q_gauss(*flat, shift.reshape(K * M, D), model.means_.reshape(K * M, D), cov, kind)
    elif isinstance(model, GaussianHMM):
        nk, sx, sxx, shift = stats
        K, D = model.means_.shape
        ct = model.covariance_type
        cov = np.broadcast_to(model._covars_, (K, D, D)) if ct == "tied" else model._covars_
        q += _q_gauss(nk, sx, sxx, shift, model.means_, cov, "full" if ct == "tied" else ct)
    elif isinstance(model, CategoricalHMM):
        q += _xlogy(stats, model.emissionprob_)
    else:
        post, obs = stats
        q += _xlogy(obs, model.lambdas_) - float(np.sum(post[:, None] * model.lambdas_))
    return q + log_prior(model)


def _estep(model, X, lengths=LENGTHS, sample_weight=SW):
    kernels = model._kernels()
    X = model._validate_X(X, fitting=True)
    offsets = _offsets(lengths, X.shape[0])
    w = _seq_weights(sample_weight, offsets.size - 1)
    fb = model._forward_backward(kernels, X, offsets, w)
    stats = model._emission_stats(kernels, X, fb.gamma, offsets, w, logB=fb.logB)
    return fb, stats


def _max_gain(model, fb, stats, codes: str, seed=0, n_dir=12) -> float:
    """Largest increase of Q + log prior over small feasible perturbations of the
    parameters ``codes`` (unconstrained coordinates: softmax rows, log variances,
    Cholesky factors with a log diagonal), relative to ``1 + |objective|``."""
    base = _objective(model, fb, stats)
    probe = copy.deepcopy(model)
    probe.params = codes
    packer = _Packer(probe)
    x0 = packer.pack(probe)
    rng = np.random.default_rng(seed)
    best = -np.inf
    for _ in range(n_dir):
        v = rng.normal(size=x0.size)
        v /= np.linalg.norm(v)
        for eps in (1e-3, -1e-3, 1e-5, -1e-5):
            assert packer.unpack(probe, x0 + eps * v)
            best = max(best, _objective(probe, fb, stats) - base)
    return best / (1.0 + abs(base))


TOL = 1e-12  # relative: rounding of an objective of ~1e3 is ~1e-13


def _gaussian(ct, **kw):
    prior = dict(
        startprob_prior=1.5, transmat_prior=np.array([[2.0, 1.2, 1.0]] * 3),
        means_prior=0.3, means_weight=0.7, covars_prior=0.4, covars_weight=3.0,
    )  # fmt: skip
    if ct in ("full", "tied"):
        prior["covars_prior"] = 0.4 * np.eye(2) + 0.1
    return GaussianHMM(3, covariance_type=ct, **{**prior, **kw})


def _gmm(ct, means_weight=0.0, means_prior=0.5, **kw):
    cp, cw = {
        "full": (0.3 * np.eye(2), 1.0),
        "tied": (0.3 * np.eye(2), 2.0),
        "diag": (0.6, 0.2),
        "spherical": (0.6, 0.2),
    }[ct]
    return GMMHMM(
        2, n_mix=2, covariance_type=ct, startprob_prior=2.0, transmat_prior=1.5,
        weights_prior=1.8, means_prior=means_prior, means_weight=means_weight,
        covars_prior=cp, covars_weight=cw, **kw,
    )  # fmt: skip


def _after(model, X, n_iter=2, lengths=LENGTHS, sample_weight=SW):
    """The model after a few iterations (a point away from the initialization)."""
    model.set_params(n_iter=n_iter, tol=-np.inf, random_state=0, backend="numpy")
    return model.fit(X, lengths, sample_weight=sample_weight)


def _mstep(model, fb, stats):
    new = copy.deepcopy(model)
    new._do_mstep(fb, stats)
    return new


# ------------------------------------------------------------------ argmax
@pytest.mark.parametrize("ct", COV_TYPES)
@pytest.mark.parametrize("nan", [0.0, 0.15])
def test_gaussian_mstep_is_the_argmax(ct, nan):
    X = _gauss(nan=nan)
    model = _after(_gaussian(ct), X)
    fb, stats = _estep(model, X)
    new = _mstep(model, fb, stats)
    assert _max_gain(new, fb, stats, "stmc") <= TOL


@pytest.mark.parametrize("ct", COV_TYPES)
def test_gmm_mstep_is_an_ecm_step(ct):
    """hmmlearn's GMMHMM covariance update uses the scatter about the old means:
    with means_weight=0 it maximizes over the covariances given the old means,
    then the means (and weights, start, transitions) maximize given the new
    covariances. Each conditional step is an argmax; the joint one is not."""
    X = _gauss(nan=0.1)
    model = _after(_gmm(ct), X)
    fb, stats = _estep(model, X)
    new = _mstep(model, fb, stats)
    assert _max_gain(new, fb, stats, "stwm") <= TOL
    old_means = copy.deepcopy(new)
    old_means.means_ = model.means_.copy()
    assert _max_gain(old_means, fb, stats, "c") <= TOL
    # not the joint argmax: the new covariances are not optimal for the new means
    assert _max_gain(new, fb, stats, "c") > 1e-9


def test_gmm_with_means_weight_is_not_an_ecm_step():
    """With means_weight > 0 hmmlearn's prior term takes the new means but the
    scatter the old ones: the covariances maximize neither conditional (docs)."""
    X = _gauss()
    model = _after(_gmm("diag", means_weight=5.0, means_prior=-4.0), X)
    fb, stats = _estep(model, X)
    new = _mstep(model, fb, stats)
    old_means = copy.deepcopy(new)
    old_means.means_ = model.means_.copy()
    assert _max_gain(old_means, fb, stats, "c") > 1e-9
    assert _max_gain(new, fb, stats, "c") > 1e-9


def test_categorical_mstep_is_the_argmax():
    X = np.minimum(_counts(), 5)
    model = _after(CategoricalHMM(3, startprob_prior=1.5, transmat_prior=2.0,
                                  emissionprob_prior=np.linspace(1.0, 2.5, 6)), X)  # fmt: skip
    fb, stats = _estep(model, X)
    assert _max_gain(_mstep(model, fb, stats), fb, stats, "ste") <= TOL


@pytest.mark.parametrize(
    ("K", "prior"), [(2, {}), (1, dict(lambdas_prior=2.0, lambdas_weight=0.5))]
)
def test_poisson_mstep_is_the_argmax(K, prior):
    X = np.hstack([_counts(), _counts(2)])
    model = _after(PoissonHMM(K, startprob_prior=1.5, transmat_prior=2.0, **prior), X)
    fb, stats = _estep(model, X)
    assert _max_gain(_mstep(model, fb, stats), fb, stats, "stl") <= TOL


def test_poisson_gamma_prior_with_several_states_is_not_a_map():
    """hmmlearn's rates (alpha + N ybar_k) / (beta + N) use the total weight N of
    all states: with K > 1 and a gamma prior they maximize no fixed posterior."""
    X = np.hstack([_counts(), _counts(2)])
    model = _after(PoissonHMM(2, lambdas_prior=3.0, lambdas_weight=1.0), X)
    fb, stats = _estep(model, X)
    assert _max_gain(_mstep(model, fb, stats), fb, stats, "l") > 1e-9


def test_reg_covar_is_not_in_the_objective():
    """reg_covar is added after the MAP update: the M-step is then not the argmax."""
    X = _gauss()
    model = _after(_gaussian("diag", reg_covar=0.05), X)
    fb, stats = _estep(model, X)
    assert _max_gain(_mstep(model, fb, stats), fb, stats, "c") > 1e-9


def test_dirichlet_below_one_has_no_map():
    """alpha < 1: hmmlearn clips alpha - 1 + count at 0, but the density is
    unbounded at the boundary, so any small positive value beats the zero."""
    X = np.minimum(_counts(), 5)
    model = _after(CategoricalHMM(2, emissionprob_prior=0.3, n_features=8), X)
    fb, stats = _estep(model, X)
    new = _mstep(model, fb, stats)
    assert (new.emissionprob_ == 0).any()  # symbols 6, 7 never occur: clipped to 0
    assert _max_gain(new, fb, stats, "e") > 1e-9


# ------------------------------------------------------------------ negative controls
def _no_emission_prior(cls):
    """The emission M-step with hmmlearn's flat priors (the prior term dropped)."""
    original = cls._emission_mstep

    def mstep(self, stats):
        saved = self.get_params()
        self.set_params(means_weight=0.0, covars_prior=0.0, covars_weight=1.0)
        try:
            original(self, stats)
        finally:
            self.set_params(**saved)

    return mstep


def _wrong_pseudo_count(self, fb, stats):
    """Dirichlet pseudo-counts alpha instead of alpha - 1 on the transitions."""
    saved = self.transmat_prior
    self.transmat_prior = np.asarray(saved) + 1.0
    try:
        BaseHMM._do_mstep(self, fb, stats)
    finally:
        self.transmat_prior = saved


@pytest.mark.parametrize("control", ["no emission prior", "wrong pseudo-count"])
def test_negative_control_fails_the_argmax_check(monkeypatch, control):
    X = _gauss()
    model = _after(_gaussian("diag"), X)
    fb, stats = _estep(model, X)
    assert _max_gain(_mstep(model, fb, stats), fb, stats, "stmc") <= TOL
    if control == "no emission prior":
        monkeypatch.setattr(GaussianHMM, "_emission_mstep", _no_emission_prior(GaussianHMM))
    else:
        monkeypatch.setattr(GaussianHMM, "_do_mstep", _wrong_pseudo_count)
    assert _max_gain(_mstep(model, fb, stats), fb, stats, "stmc") > 1e-9


def test_negative_control_breaks_monotonicity(monkeypatch):
    """A fit whose M-step drops the covariance prior ascends the likelihood, not
    the recorded objective: the objective falls (strong prior, long fit)."""
    X = _gauss()
    model = _gaussian("diag", covars_prior=20.0, covars_weight=30.0, n_iter=15)
    monkeypatch.setattr(GaussianHMM, "_emission_mstep", _no_emission_prior(GaussianHMM))
    model.set_params(tol=-np.inf, random_state=0, backend="numpy").fit(X, LENGTHS)
    assert np.diff(model.objective_history_).min() < -1e-6


# ------------------------------------------------------------------ monotonicity
def _assert_monotone(model):
    h = np.asarray(model.objective_history_)
    assert h.size == model.monitor_.iter == len(model.monitor_.history)
    assert np.isfinite(h).all()
    assert (np.diff(h) >= -1e-9 * np.abs(h[1:])).all(), np.diff(h).min()
    assert model.objective_ == h[-1]


def _dirichlet_prior(draw, shape):
    return draw(
        st.sampled_from([1.0, 1.7, np.linspace(1.0, 3.0, int(np.prod(shape))).reshape(shape)])
    )


SETTINGS = settings(
    max_examples=25, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


@st.composite
def _fit_case(draw, family):
    seed = draw(st.integers(0, 2**16))
    weighted = draw(st.booleans())
    sw = draw(st.lists(st.floats(0.2, 3.0), min_size=4, max_size=4)) if weighted else None
    common = dict(
        startprob_prior=_dirichlet_prior(draw, (3,) if family != "gmm" else (2,)),
        n_iter=8, tol=-np.inf, random_state=seed, backend="numpy",
    )  # fmt: skip
    if family in ("gauss", "gmm"):
        ct = draw(st.sampled_from(COV_TYPES))
        X = _gauss(seed, nan=draw(st.sampled_from([0.0, 0.1])))
        if family == "gauss":
            cp = draw(st.floats(0.01, 2.0))
            model = GaussianHMM(
                3, covariance_type=ct, means_prior=draw(st.floats(-3, 3)),
                means_weight=draw(st.floats(0.0, 3.0)),
                covars_prior=cp * np.eye(2) if ct in ("full", "tied") else cp,
                covars_weight=draw(st.floats(0.0, 8.0)),
                transmat_prior=_dirichlet_prior(draw, (3, 3)), **common,
            )  # fmt: skip
        else:
            model = _gmm(ct)
            model.set_params(
                weights_prior=_dirichlet_prior(draw, (2, 2)),
                transmat_prior=_dirichlet_prior(draw, (2, 2)), **common,
            )  # fmt: skip
    elif family == "categorical":
        X = np.minimum(_counts(seed), 5)
        model = CategoricalHMM(
            3, transmat_prior=_dirichlet_prior(draw, (3, 3)), n_features=6,
            emissionprob_prior=_dirichlet_prior(draw, (3, 6)), **common,
        )  # fmt: skip
    else:
        X = np.hstack([_counts(seed), _counts(seed + 1)])
        K = draw(st.sampled_from([1, 3]))
        gamma = dict(lambdas_prior=draw(st.floats(0, 4)), lambdas_weight=draw(st.floats(0, 2)))
        common["startprob_prior"] = _dirichlet_prior(draw, (K,))
        model = PoissonHMM(K, transmat_prior=1.4, **(gamma if K == 1 else {}), **common)
    return model, X, sw


def _assert_argmax(model, X, sw):
    """The next M-step from the fitted model maximizes Q + log prior (GMMHMM: each
    conditional step of its ECM step)."""
    fb, stats = _estep(model, X, LENGTHS, sw)
    new = _mstep(model, fb, stats)
    if isinstance(model, GMMHMM):
        assert _max_gain(new, fb, stats, "stwm", n_dir=4) <= TOL
        new.means_ = model.means_.copy()
        assert _max_gain(new, fb, stats, "c", n_dir=4) <= TOL
        return
    codes = {GaussianHMM: "stmc", CategoricalHMM: "ste", PoissonHMM: "stl"}[type(model)]
    assert _max_gain(new, fb, stats, codes, n_dir=4) <= TOL


@pytest.mark.parametrize("family", ["gauss", "gmm", "categorical", "poisson"])
def test_baum_welch_never_decreases_the_objective(family):
    """Random priors (Dirichlet alpha >= 1), data, sample weights and NaN: the
    recorded objective never decreases, and the M-step from the last iterate is
    the argmax."""

    @SETTINGS
    @given(case=_fit_case(family))
    def check(case):
        model, X, sw = case
        _assert_monotone(model.fit(X, LENGTHS, sample_weight=sw))
        _assert_argmax(model, X, sw)

    check()


def test_objective_is_loglik_plus_log_prior_at_each_estep():
    """objective_history_[i] is the weighted log-likelihood plus the log prior of
    the parameters E-step i ran at (those after i M-steps: a fit of i iterations)."""
    X = _gauss()
    kw = dict(tol=-np.inf, random_state=0, backend="numpy")
    model = _gaussian("full", n_iter=3, **kw).fit(X, LENGTHS, sample_weight=SW)
    h = model.objective_history_
    assert h.size == 3 and model.objective_ == h[-1]
    for i in range(3):
        at = _gaussian("full", n_iter=i, **kw).fit(X, LENGTHS, sample_weight=SW)
        fb, _ = _estep(at, X)
        expected = float(np.asarray(SW) @ fb.loglik) + log_prior(at)
        np.testing.assert_allclose(h[i], expected, rtol=1e-12)
        np.testing.assert_allclose(h[i] - model.monitor_.history[i], log_prior(at), rtol=1e-9)


# ------------------------------------------------------------------ scipy densities
def _diff(f, a, b):
    return f(a) - f(b)


def _set(model, **attrs):
    for k, v in attrs.items():
        setattr(model, k, v)
    model._check()
    return model


def _spd(rng, n, d):
    A = rng.normal(size=(n, d, d))
    return A @ np.swapaxes(A, 1, 2) + d * np.eye(d)


def _gaussian_pair(ct, rng, mp, mw, cp, cw, K=3, D=2):
    models = []
    for _ in range(2):
        cov = {
            "spherical": rng.uniform(0.3, 2.0, K),
            "diag": rng.uniform(0.3, 2.0, (K, D)),
            "full": _spd(rng, K, D),
            "tied": _spd(rng, 1, D)[0],
        }[ct]
        m = GaussianHMM(K, covariance_type=ct, means_prior=mp, means_weight=mw,
                        covars_prior=cp, covars_weight=cw,
                        startprob_prior=np.array([1.5, 2.0, 3.0]), transmat_prior=2.5)  # fmt: skip
        models.append(_set(
            m, startprob_=rng.dirichlet(np.ones(K)), transmat_=rng.dirichlet(np.ones(K), K),
            means_=rng.normal(size=(K, D)), covars_=cov,
        ))  # fmt: skip
    return models


def _scipy_hmm(m) -> float:
    out = ss.dirichlet.logpdf(m.startprob_, np.broadcast_to(m.startprob_prior, m.startprob_.shape))
    tp = np.broadcast_to(m.transmat_prior, m.transmat_.shape)
    out += sum(ss.dirichlet.logpdf(row, a) for row, a in zip(m.transmat_, tp, strict=True))
    return out


@pytest.mark.parametrize("ct", COV_TYPES)
def test_gaussian_log_prior_matches_scipy(ct):
    rng = np.random.default_rng(5)
    K, D, mw = 3, 2, 0.8
    mp = np.array([0.5, -1.0])
    if ct in ("full", "tied"):
        cp = np.array([[1.0, 0.3], [0.3, 0.7]])
        cw = 10.0 if ct == "full" else 12.0  # inverse Wishart dof 4 either way
    else:
        cp, cw = 0.8, 6.0
    a, b = _gaussian_pair(ct, rng, mp, mw, cp, cw)

    def density(m):
        out = _scipy_hmm(m)
        mu, cov = m.means_, m._covars_
        if ct == "diag":  # N(m0, s2 / w) x InvGamma((c' - 3) / 2, cp / 2), c' = max(cw - 1, 0)
            out += ss.norm.logpdf(mu, mp, np.sqrt(cov / mw)).sum()
            return out + ss.invgamma.logpdf(cov, (cw - 1 - 3) / 2, scale=cp / 2).sum()
        if ct == "spherical":  # one s2 per state: InvGamma(D (c' - 1) / 2 - 1, D cp / 2)
            out += ss.norm.logpdf(mu, mp, np.sqrt(cov[:, None] / mw)).sum()
            shape = D * (cw - 1 - 1) / 2 - 1
            return out + ss.invgamma.logpdf(cov, shape, scale=D * cp / 2).sum()
        covs = cov if ct == "full" else [cov] * K
        out += sum(ss.multivariate_normal.logpdf(mu[k], mp, covs[k] / mw) for k in range(K))
        if ct == "full":  # inverse Wishart, dof max(cw - D, 0) - D - 2
            return out + sum(ss.invwishart.logpdf(c, cw - D - D - 2, cp) for c in cov)
        return out + ss.invwishart.logpdf(cov, cw - D - D - 1 - K, cp)

    np.testing.assert_allclose(_diff(log_prior, a, b), _diff(density, a, b), rtol=1e-10)


@pytest.mark.parametrize("ct", COV_TYPES)
def test_gmm_log_prior_matches_scipy(ct):
    rng = np.random.default_rng(6)
    K, M, D, lam = 2, 3, 2, 0.6
    m0 = np.array([0.2, -0.4])
    if ct in ("full", "tied"):
        cp, cw = np.array([[1.0, 0.2], [0.2, 0.5]]), 4.0  # Psi, nu
    else:
        cp, cw = 2.5, 0.7  # alpha, beta
    pair = []
    for _ in range(2):
        cov = {
            "spherical": rng.uniform(0.3, 2.0, (K, M)),
            "diag": rng.uniform(0.3, 2.0, (K, M, D)),
            "full": _spd(rng, K * M, D).reshape(K, M, D, D),
            "tied": _spd(rng, K, D),
        }[ct]
        tp = np.array([[1.2, 3.0], [2.0, 1.0]])
        m = GMMHMM(K, n_mix=M, covariance_type=ct, weights_prior=np.array([1.5, 2.0, 4.0]),
                   means_prior=m0, means_weight=lam, covars_prior=cp, covars_weight=cw,
                   startprob_prior=2.0, transmat_prior=tp)  # fmt: skip
        pair.append(_set(
            m, startprob_=rng.dirichlet(np.ones(K)), transmat_=rng.dirichlet(np.ones(K), K),
            weights_=rng.dirichlet(np.ones(M), K), means_=rng.normal(size=(K, M, D)),
            covars_=cov,
        ))  # fmt: skip

    def density(m):
        out = _scipy_hmm(m) + sum(ss.dirichlet.logpdf(w, m.weights_prior) for w in m.weights_)
        mu, cov = m.means_, m.covars_
        for k in range(K):
            for j in range(M):
                if ct == "diag":
                    out += ss.norm.logpdf(mu[k, j], m0, np.sqrt(cov[k, j] / lam)).sum()
                    out += ss.invgamma.logpdf(cov[k, j], cp, scale=cw).sum()
                elif ct == "spherical":
                    out += ss.multivariate_normal.logpdf(mu[k, j], m0, cov[k, j] / lam * np.eye(D))
                    out += ss.invgamma.logpdf(cov[k, j], cp, scale=cw)
                elif ct == "full":
                    out += ss.multivariate_normal.logpdf(mu[k, j], m0, cov[k, j] / lam)
                    out += ss.invwishart.logpdf(cov[k, j], cw, cp.T)
                else:
                    out += ss.multivariate_normal.logpdf(mu[k, j], m0, cov[k] / lam)
            if ct == "tied":
                out += ss.invwishart.logpdf(cov[k], cw, cp.T)
        return out

    np.testing.assert_allclose(_diff(log_prior, *pair), _diff(density, *pair), rtol=1e-10)


def test_discrete_log_priors_match_scipy():
    rng = np.random.default_rng(7)
    K, V = 3, 4
    ep = np.linspace(1.2, 3.0, K * V).reshape(K, V)
    cats = [
        _set(CategoricalHMM(K, startprob_prior=2.0, transmat_prior=1.5, emissionprob_prior=ep,
                            n_features=V),
             startprob_=rng.dirichlet(np.ones(K)), transmat_=rng.dirichlet(np.ones(K), K),
             emissionprob_=rng.dirichlet(np.ones(V), K))
        for _ in range(2)
    ]  # fmt: skip

    def cat_density(m):
        e = sum(ss.dirichlet.logpdf(p, a) for p, a in zip(m.emissionprob_, ep, strict=True))
        return _scipy_hmm(m) + e

    np.testing.assert_allclose(_diff(log_prior, *cats), _diff(cat_density, *cats), rtol=1e-10)
    alpha, beta = np.array([[0.5, 2.0]]), 1.5
    pois = [
        _set(PoissonHMM(K, startprob_prior=1.1, transmat_prior=2.0, lambdas_prior=alpha,
                        lambdas_weight=beta),
             startprob_=rng.dirichlet(np.ones(K)), transmat_=rng.dirichlet(np.ones(K), K),
             lambdas_=rng.uniform(0.5, 5.0, (K, 2)))
        for _ in range(2)
    ]  # fmt: skip

    def pois_density(m):  # gamma with shape alpha + 1 and rate beta
        return _scipy_hmm(m) + ss.gamma.logpdf(m.lambdas_, alpha + 1, scale=1 / beta).sum()

    np.testing.assert_allclose(_diff(log_prior, *pois), _diff(pois_density, *pois), rtol=1e-10)


def test_structural_zeros_are_left_out_of_the_dirichlet():
    """A zero of startprob_/transmat_ stays zero, so the prior is the Dirichlet on
    that face: its term is omitted (finite objective), and the fit stays monotone."""
    X = _gauss()
    model = GaussianHMM(3, init_params="mc", startprob_prior=2.0, transmat_prior=2.0,
                        n_iter=6, tol=-np.inf, random_state=0, backend="numpy")  # fmt: skip
    model.startprob_ = np.array([1.0, 0.0, 0.0])
    model.transmat_ = np.array([[0.9, 0.1, 0.0], [0.0, 0.9, 0.1], [0.05, 0.0, 0.95]])
    model.fit(X, LENGTHS)
    _assert_monotone(model)


# ------------------------------------------------------------------ driver, persistence
@pytest.mark.parametrize("acceleration", ["squarem", "anderson"])
def test_accelerated_fit_judges_by_the_objective(acceleration):
    X = _gauss()
    model = _gaussian("diag", covars_prior=2.0, covars_weight=6.0, n_iter=30, tol=1e-10,
                      acceleration=acceleration, random_state=0, backend="numpy")  # fmt: skip
    model.fit(X, LENGTHS, sample_weight=SW)
    h = model.objective_history_
    assert h.size == model.monitor_.iter == len(model.monitor_.history)
    assert (np.diff(h) >= 0).all()
    # the bound is the best point's objective; the returned model is its M-step
    fb, stats = _estep(model, X)
    w = np.asarray(SW)
    assert float(w @ fb.loglik) + log_prior(model) >= h[-1] - 1e-10 * abs(h[-1])


def test_objective_history_is_saved_and_loaded(tmp_path):
    from fastem.hmm import load

    X = _gauss()
    model = _gaussian("tied", n_iter=4, tol=-np.inf, random_state=0, backend="numpy")
    model.fit(X, LENGTHS)
    model.save(tmp_path / "m.npz")
    loaded = load(tmp_path / "m.npz")
    np.testing.assert_array_equal(loaded.objective_history_, model.objective_history_)
    assert loaded.objective_ == model.objective_
    assert loaded.monitor_.objective_history == list(model.objective_history_)


def test_default_backend_records_the_same_objective():
    """The fit's own kernels (numba's fused diag E-step where available) record
    the objective the numpy reference does, and it never decreases, in the plain
    loop and on the driver."""
    from fastem.hmm import available_hmm_backends

    X = _gauss(3)
    for ct in ("diag", "spherical"):
        for acceleration in (None, "anderson"):
            kw = dict(n_iter=12, tol=-np.inf, random_state=0, acceleration=acceleration)
            ref = _gaussian(ct, backend="numpy", **kw).fit(X, LENGTHS, sample_weight=SW)
            fit = _gaussian(ct, backend=available_hmm_backends()[0], **kw)
            fit.fit(X, LENGTHS, sample_weight=SW)
            _assert_monotone(fit)
            np.testing.assert_allclose(fit.objective_history_, ref.objective_history_, rtol=1e-9)


def test_default_priors():
    """hmmlearn's defaults: flat except GaussianHMM's covars_prior (0.01 / var)
    and GMMHMM spherical's ((n_mix - D) / 2) log var."""
    rng = np.random.default_rng(8)
    K, M, D = 2, 3, 2
    common = dict(startprob_=np.array([0.3, 0.7]), transmat_=np.array([[0.6, 0.4], [0.1, 0.9]]))
    cov = {
        "spherical": rng.uniform(0.5, 2, (K, M)),
        "diag": rng.uniform(0.5, 2, (K, M, D)),
        "full": np.tile(np.eye(D) * 1.7, (K, M, 1, 1)),
        "tied": np.tile(np.eye(D) * 1.3, (K, 1, 1)),
    }
    for ct in COV_TYPES:
        g = _set(GMMHMM(K, n_mix=M, covariance_type=ct), weights_=np.full((K, M), 1 / M),
                 means_=rng.normal(size=(K, M, D)), covars_=cov[ct], **common)  # fmt: skip
        expected = (M - D) / 2 * np.log(cov[ct]).sum() if ct == "spherical" else 0.0
        np.testing.assert_allclose(log_prior(g), expected, rtol=1e-12, atol=0)
    var = rng.uniform(0.5, 2, (K, D))
    gh = _set(GaussianHMM(K), means_=rng.normal(size=(K, D)), covars_=var, **common)
    np.testing.assert_allclose(log_prior(gh), -0.5 * np.sum(0.01 / var), rtol=1e-12)
    cat = _set(
        CategoricalHMM(K, n_features=3), emissionprob_=rng.dirichlet(np.ones(3), K), **common
    )
    pois = _set(PoissonHMM(K), lambdas_=rng.uniform(0.5, 3, (K, 2)), **common)
    assert log_prior(cat) == log_prior(pois) == 0.0
