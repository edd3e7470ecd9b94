"""The log prior density whose MAP update is the HMMs' M-step (issue #15).

fastem's M-step is hmmlearn's, priors included. Each update below is the
maximizer of ``Q(theta) + log p(theta)`` (``Q`` the expected complete-data
log-likelihood of the E-step) for the density ``p`` written next to it, up to
an additive constant that does not depend on the parameters. So Baum-Welch
never decreases the *objective* ``log L(theta) + log p(theta)`` (the log
posterior up to a constant), which :func:`log_prior` lets a fit record.

Conventions (``n`` the posterior weight of a state or component, ``S`` its
scatter about the new mean):

- Dirichlet(alpha) on ``startprob_``, each row of ``transmat_``, each row of
  GMMHMM's ``weights_`` and of ``emissionprob_``: ``sum (alpha - 1) log p``.
  MAP: ``p ∝ alpha - 1 + counts``. A zero entry of the parameter is left out
  of the sum: fastem keeps zeros of ``startprob_``/``transmat_`` (structural
  zeros), so the parameter lives on that face of the simplex and the M-step
  maximizes over the face. Exact for ``alpha >= 1``; for ``alpha < 1`` the
  density is unbounded at the boundary (no MAP exists) and hmmlearn's clipping
  of ``alpha - 1 + counts`` at 0 is not a maximizer.
- GaussianHMM (hmmlearn's ``_do_mstep``): means ``(w m0 + sum g x) / (w + n)``
  and, for "diag" (per state k and feature d),
  ``sigma2 = (cp + w (mu - m0)^2 + S) / (max(cw - 1, 0) + n)``: the MAP of
  ``-1/2 [max(cw - 1, 0) log sigma2 + (cp + w (mu - m0)^2) / sigma2]``, i.e. a
  Normal ``N(m0, sigma2 / w)`` on the mean times an inverse gamma with shape
  ``(max(cw - 1, 0) - 3) / 2`` (``- 2`` when ``w = 0``) and scale ``cp / 2``.
  "spherical" averages the "diag" update over features, which is the MAP of
  the same penalty with one ``sigma2`` for all features when ``covars_weight``
  is the same for every feature. "full": ``-1/2 [max(cw - D, 0) log|Sigma| +
  tr(Sigma^-1 (cp + w (mu - m0)(mu - m0)^T))]`` (Normal times inverse Wishart
  with ``max(cw - D, 0) - D - 2`` degrees of freedom and scale ``cp``; a scalar
  ``cp`` is added to every entry, hmmlearn's broadcasting). "tied": one
  ``Sigma``, the K mean terms summed.
- GMMHMM (hmmlearn's ``GMMHMM._do_mstep``, a Normal-inverse-Wishart /
  Normal-inverse-gamma prior per component, ``lambda = means_weight``):
  "full" ``-1/2 [(nu + D + 2) log|Sigma| + tr(Sigma^-1 (Psi^T + lambda cm cm^T))]``,
  "diag" ``-(alpha + 3/2) log sigma2 - (beta + lambda cm^2 / 2) / sigma2``,
  "spherical" ``-(alpha + 1 + D/2) log sigma2 - (beta + lambda |cm|^2 / 2) / sigma2``,
  "tied" (per state) ``-1/2 [(nu + D + 1 + M) log|Sigma| + tr(Sigma^-1 (Psi^T +
  sum_m lambda cm cm^T))]`` with ``cm = mu - m0``. hmmlearn's covariance update
  uses the scatter about the means *before* the M-step: with
  ``means_weight = 0`` that is an ECM step (covariances given the old means,
  then means given the new covariances: each conditional step maximizes, so
  the objective still never decreases); with ``means_weight > 0`` the prior term
  uses the new means and the step is neither (no guarantee). hmmlearn's
  default for "spherical", ``covars_prior = -(n_mix + 2) / 2``, leaves
  ``(n_mix - D) / 2 log sigma2`` (flat only when ``n_mix == D``).
- PoissonHMM: ``sum alpha log lambda - beta lambda`` (gamma, shape
  ``alpha + 1``, rate ``beta``). hmmlearn's update
  ``(alpha + N ybar_k) / (beta + N)`` uses the total weight ``N`` of all
  states, so it is this MAP only when ``alpha = beta = 0`` (the default) or
  there is one state; otherwise it is the MAP of a prior that scales with the
  state's share ``n_k / N`` of the data, not of any fixed prior.

Not part of any prior: fastem's ``reg_covar`` (added to the covariance after
the MAP update: a floor that binds may lower the objective) and the ``1e-5``
lower bound hmmlearn puts on the "diag"/"spherical" denominator.
"""

from __future__ import annotations

import numpy as np

__all__ = ["log_prior", "log_prior_function"]


def mean_prior_arrays(means_weight, means_prior, K: int, D: int) -> tuple[np.ndarray, np.ndarray]:
    """GaussianHMM's ``means_weight`` and ``means_prior`` broadcast to (K, D).

    hmmlearn's M-step computes ``means_weight * means_prior + stats['obs']``
    with ``obs`` of shape (K, D): NumPy's broadcasting, so a 1-D array runs
    along the features (a length-K one is per feature when K == D). A 1-D
    array of length K that NumPy cannot broadcast (D != K) is read per state,
    as hmmlearn's docstring describes (hmmlearn raises there, or for D == 1
    makes (K, K) means). Raises ValueError where neither applies.
    """
    out = []
    for a in (means_weight, means_prior):
        a = np.asarray(a, dtype=np.float64)
        if a.ndim == 1 and a.shape[0] == K and D != K:
            a = a[:, None]
        out.append(np.ascontiguousarray(np.broadcast_to(a, (K, D))))
    return out[0], out[1]


def _dirichlet(p: np.ndarray, alpha) -> float:
    """``sum (alpha - 1) log p`` over the entries with ``p > 0`` (the face)."""
    return _dirichlet_term(alpha)(p)


def _dirichlet_term(alpha):
    """:func:`_dirichlet` of a fixed ``alpha`` as a function of ``p`` (``alpha - 1``
    computed once; the default flat prior: a constant 0, no work per call)."""
    alpha = np.asarray(alpha, dtype=np.float64)
    if alpha.ndim == 0 and alpha == 1.0:
        return _zero
    am1 = alpha - 1.0

    def term(p) -> float:
        p = np.asarray(p, dtype=np.float64)
        logp = np.log(p, out=np.zeros(p.shape), where=p > 0)  # 0 where p == 0: left out
        if am1.ndim == 0:
            return float(am1 * logp.sum())
        return float(np.sum(am1 * logp))

    return term


def _zero(_p) -> float:
    return 0.0


def _logdet_trace(cov: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log|cov|`` and ``tr(cov^-1 scale)`` of stacked matrices (..., D, D)."""
    L = np.linalg.cholesky(cov)
    logdet = 2.0 * np.log(np.diagonal(L, axis1=-2, axis2=-1)).sum(axis=-1)
    trace = np.trace(np.linalg.solve(cov, scale), axis1=-2, axis2=-1)
    return logdet, trace


def _gaussian_hmm(model) -> float:
    return _gaussian_hmm_term(model)(model)


def _gaussian_hmm_term(model):
    """The Gaussian emission term as a function of the model's parameters, its
    hyperparameter arrays prepared once (the broadcasting of
    ``GaussianHMM._emission_mstep``, term for term)."""
    K, D = np.shape(model.means_)
    ct = model.covariance_type
    mw, mp = mean_prior_arrays(model.means_weight, model.means_prior, K, D)
    cp = np.asarray(model.covars_prior, dtype=np.float64)
    cw = np.asarray(model.covars_weight, dtype=np.float64)
    if ct in ("spherical", "diag"):
        shape = np.maximum(cw - 1.0, 0.0)
        shape = np.ascontiguousarray(np.broadcast_to(shape, (K, D))) if shape.any() else None
        # hmmlearn's defaults (means_weight 0, covars_weight 1) leave cp / var alone:
        # then the numerator is a constant (K, D) array
        fixed = None if mw.any() else np.ascontiguousarray(np.broadcast_to(cp, (K, D)))
        spherical = ct == "spherical"

        def diag(model) -> float:
            cov = np.asarray(model._covars_, dtype=np.float64)
            var = cov[:, None] if spherical else cov  # broadcasts to (K, D)
            if fixed is None:
                meandiff = np.asarray(model.means_, dtype=np.float64) - mp
                scale = np.broadcast_to(cp + mw * meandiff**2, (K, D))
            else:
                scale = fixed
            out = np.sum(scale / var)
            if shape is not None:
                out += np.sum(shape * np.log(np.broadcast_to(var, (K, D))))
            return float(-0.5 * out)

        return diag
    dof = np.maximum(cw - D, 0.0)

    def full(model) -> float:
        mu = np.asarray(model.means_, dtype=np.float64)
        meandiff = mu - mp
        cov = np.asarray(model._covars_, dtype=np.float64)
        # hmmlearn's np.outer(md, md) times means_weight: the weight of column j
        outer = mw[:, None, :] * meandiff[:, :, None] * meandiff[:, None, :]
        if ct == "tied":
            logdet, trace = _logdet_trace(cov, np.broadcast_to(cp + outer.sum(axis=0), (D, D)))
            return float(-0.5 * (dof * logdet + trace))
        logdet, trace = _logdet_trace(cov, np.broadcast_to(cp + outer, (K, D, D)))
        return float(-0.5 * np.sum(np.broadcast_to(dof, (K,)) * logdet + trace))

    return full


def _gmm_hmm(model) -> float:
    wp, mp, mw, cp, cw = model._priors()
    mu = np.asarray(model.means_, dtype=np.float64)
    K, M, D = mu.shape
    ct = model.covariance_type
    cov = np.asarray(model.covars_, dtype=np.float64)
    cm = mu - mp
    out = _dirichlet(model.weights_, wp)
    if ct == "full":  # nu = cw, Psi = cp
        scale = np.swapaxes(cp, 2, 3) + mw[:, :, None, None] * cm[..., :, None] * cm[..., None, :]
        logdet, trace = _logdet_trace(cov, scale)
        return out + float(-0.5 * np.sum((cw + D + 2.0) * logdet + trace))
    if ct == "tied":
        scale = np.swapaxes(cp, 1, 2) + np.einsum(
            "ij,ijkl->ikl", mw, cm[..., :, None] * cm[..., None, :]
        )
        logdet, trace = _logdet_trace(cov, scale)
        return out + float(-0.5 * np.sum((cw + D + 1.0 + M) * logdet + trace))
    if ct == "diag":  # alpha = cp, beta = cw
        return out + float(
            np.sum(-(cp + 1.5) * np.log(cov) - (cw + 0.5 * mw[:, :, None] * cm**2) / cov)
        )
    sq = (cm**2).sum(axis=2)
    return out + float(np.sum(-(cp + 1.0 + D / 2.0) * np.log(cov) - (cw + 0.5 * mw * sq) / cov))


def _poisson_hmm(model) -> float:
    lam = np.asarray(model.lambdas_, dtype=np.float64)
    alpha = np.broadcast_to(np.asarray(model.lambdas_prior, dtype=np.float64), lam.shape)
    beta = np.broadcast_to(np.asarray(model.lambdas_weight, dtype=np.float64), lam.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_log = np.where(alpha == 0, 0.0, alpha * np.log(lam))  # 0 log 0 = 0
    return float(np.sum(a_log - beta * lam))


_CLASSES: list[type] = []


def log_prior(model) -> float:
    """Log prior density of a fitted (or initialized) HMM's parameters.

    The density, up to an additive constant, whose MAP update is the model's
    M-step (see the module docstring for each model and covariance type and for
    where the M-step is not its exact maximizer). The Baum-Welch objective is
    ``log-likelihood + log_prior(model)``.

    Parameters
    ----------
    model : GaussianHMM, GMMHMM, CategoricalHMM, PoissonHMM or MultinomialHMM
        With its parameters set (``startprob_``, ``transmat_`` and the
        emission parameters).

    Returns
    -------
    float
        ``-inf`` where a parameter is outside the prior's support (e.g. a
        singular covariance).
    """
    return log_prior_function(model)(model)


def log_prior_function(model):
    """:func:`log_prior` as a function of the parameters, for the fixed
    hyperparameters of ``model``: the prior arrays are prepared once (a fit
    builds it once and calls it every iteration) and the default flat terms
    cost nothing.

    Parameters
    ----------
    model : GaussianHMM, GMMHMM, CategoricalHMM, PoissonHMM or MultinomialHMM
        Its priors, covariance type and parameter shapes must not change while
        the returned function is in use.

    Returns
    -------
    callable
        ``f(model) -> float``, equal to ``log_prior(model)`` bit for bit.
    """
    if not _CLASSES:  # imported here: the estimator modules import this one
        from ._discrete import CategoricalHMM, MultinomialHMM, PoissonHMM
        from ._gaussian import GaussianHMM
        from ._gmm import GMMHMM

        _CLASSES.extend((GMMHMM, GaussianHMM, CategoricalHMM, PoissonHMM, MultinomialHMM))
    GMMHMM, GaussianHMM, CategoricalHMM, PoissonHMM, MultinomialHMM = _CLASSES
    start = _dirichlet_term(model.startprob_prior)
    trans = _dirichlet_term(model.transmat_prior)
    if isinstance(model, GMMHMM):
        emission = _gmm_hmm
    elif isinstance(model, GaussianHMM):
        emission = _gaussian_hmm_term(model)
    elif isinstance(model, CategoricalHMM):
        term = _dirichlet_term(model.emissionprob_prior)

        def emission(m):
            return term(m.emissionprob_)
    elif isinstance(model, PoissonHMM):
        emission = _poisson_hmm
    elif isinstance(model, MultinomialHMM):  # hmmlearn's emission update has no prior

        def emission(m):
            return 0.0
    else:
        raise TypeError(f"no prior is defined for {type(model).__name__}")

    def evaluate(m) -> float:
        out = start(m.startprob_)
        out += trans(m.transmat_)
        try:
            out += emission(m)
        except np.linalg.LinAlgError:
            return -np.inf
        return float(out)

    if isinstance(model, GaussianHMM) and model.covariance_type in ("full", "tied"):
        return _compiled_gaussian_full(model, evaluate) or evaluate
    return evaluate


def _compiled_gaussian_full(model, fallback):
    """``evaluate`` of :func:`log_prior_function` for a full/tied GaussianHMM on
    the numba backend in one compiled call
    (:func:`fastem.hmm._mstep_numba.log_prior_full`: the same LAPACK calls and
    sums in NumPy's order: NumPy's value to a few ulp, since Numba's libm log and
    NumPy's SIMD log differ in the last bit on some inputs) instead of ~25 NumPy calls (~60 us
    per LONGFULL iteration); ``fallback`` (the NumPy code) where a covariance is
    not finite or not positive definite. None where it does not apply: other
    backends, priors that do not broadcast as the NumPy code's (which then
    raises its own error), ``K * K`` or ``D`` above ``PAIRWISE_MAX``."""
    try:
        if model._kernels().name != "numba":
            return None
        from ._mstep_numba import HAVE_LAPACK, PAIRWISE_MAX, log_prior_full
    except (ImportError, ValueError):
        return None
    K, D = np.shape(model.means_)
    tied = model.covariance_type == "tied"
    C = 1 if tied else K
    if not HAVE_LAPACK or max(K * K, D) > PAIRWISE_MAX:
        return None

    def am1_of(alpha, shape):  # (alpha - 1 broadcast and flattened, scalar?, flat?)
        alpha = np.asarray(alpha, dtype=np.float64)
        if np.broadcast_shapes(alpha.shape, shape) != shape:
            raise ValueError
        flat = alpha.ndim == 0 and alpha == 1.0
        am1 = np.ascontiguousarray(np.broadcast_to(alpha - 1.0, shape)).reshape(-1)
        return am1, alpha.ndim == 0, flat

    try:
        start_am1, s_scalar, s_flat = am1_of(model.startprob_prior, (K,))
        trans_am1, t_scalar, t_flat = am1_of(model.transmat_prior, (K, K))
        mw, mp = mean_prior_arrays(model.means_weight, model.means_prior, K, D)
        if not (mw == mw[:, :1]).all():
            return None  # a per-feature weight: hmmlearn's column-wise term (fallback)
        cp = np.asarray(model.covars_prior, dtype=np.float64)
        cw = np.asarray(model.covars_weight, dtype=np.float64)
        if np.broadcast_shapes(cp.shape, (C, D, D)[tied:]) != (C, D, D)[tied:]:
            return None
        if cw.ndim > (0 if tied else 1):
            return None
        args = (
            start_am1, trans_am1,
            (not s_flat) | 2 * s_scalar | 4 * (not t_flat) | 8 * t_scalar,
            np.ascontiguousarray(np.broadcast_to(mw, (K, D))),
            np.ascontiguousarray(np.broadcast_to(mp, (K, D))),
            np.ascontiguousarray(np.broadcast_to(cp, (C, D, D))),
            np.ascontiguousarray(np.broadcast_to(np.maximum(cw - D, 0.0), (C,))),
        )  # fmt: skip
    except ValueError:
        return None

    def evaluate(m) -> float:
        cov = m._covars_
        ok, value = log_prior_full(
            m.startprob_, m.transmat_.reshape(-1), m.means_, cov.reshape(-1, D, D), *args
        )
        return float(value) if ok else fallback(m)

    return evaluate
