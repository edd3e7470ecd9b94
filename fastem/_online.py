"""Stepwise online EM: :meth:`GaussianMixture.partial_fit`.

Each batch gets one EM pass at the current parameters, producing additive
sufficient statistics (:class:`~fastem._stats.Stats`). Divided by the batch's
weight they become statistics *per unit weight*, so batches of any size
blend on the same scale. The running statistics ``s`` are a stochastic
approximation of their expectation under the data distribution (Cappe &
Moulines, 2009; Liang & Klein, 2009):

``s_t = (1 - eta_t) s_{t-1} + eta_t s_batch_t``, with
``eta_t = (t + learning_offset) ** -learning_decay``

for the ``t``-th batch of the stream (``t = 2, 3, ...``); the first batch's
statistics start the stream (``eta_1 = 1``). The two statistics are taken
about different shifts (the means of the pass that produced them), so the
running ones are re-centred exactly on the new batch's shift before the blend
(:meth:`~fastem._stats.Stats.blended`). The M-step on ``s`` then gives the new
parameters. A decay in (0.5, 1] makes ``sum eta_t`` diverge and
``sum eta_t ** 2`` converge, the conditions under which the recursion converges
to a stationary point of the likelihood. ``learning_offset = 0`` with
``learning_decay = 1`` makes ``s`` the plain average of the batches'
statistics.

The state is kept in fitted attributes (arrays, so that a saved model resumes
its stream): ``n_batches_`` and the running statistics ``sufficient_stats_nk_``,
``sufficient_stats_sx_``, ``sufficient_stats_sxx_`` and
``sufficient_stats_shift_`` (per unit weight, ``sufficient_stats_nk_`` sums to
1). :meth:`GaussianMixture.fit` clears them, and a ``partial_fit`` on a fitted
model without them (after ``fit``, or on a loaded fitted model) continues from
the fitted parameters rather than discarding them: the running statistics are
seeded with the statistics per unit weight whose M-step gives back the fitted
parameters (:func:`stats_from_model`), and the fit counts as the stream's first
batch, so the next batch gets step ``eta_2``.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

from . import backends
from ._covariance import (
    check_covariance_type,
    covariance_shape,
    layout,
    precisions_from_cholesky,
)
from ._data import ArrayData
from ._passes import PassParams
from ._stats import Stats, m_step, to_public_layout
from ._threads import limit_threads
from ._validation import (
    check_array,
    check_feature_names,
    check_positive_int,
    check_sample_weight,
    string_column_names,
)

__all__ = [
    "ONLINE_ATTRIBUTES",
    "check_learning_parameters",
    "clear_online_state",
    "partial_fit",
    "running_stats",
    "stats_from_model",
    "step_size",
]

#: Fitted attributes holding the state of the stream.
ONLINE_ATTRIBUTES = (
    "n_batches_",
    "sufficient_stats_nk_",
    "sufficient_stats_sx_",
    "sufficient_stats_sxx_",
    "sufficient_stats_shift_",
)


def check_learning_parameters(learning_offset, learning_decay) -> tuple[float, float]:
    """Validate ``learning_offset`` (finite, >= 0) and ``learning_decay`` (in (0.5, 1]).

    Returns
    -------
    learning_offset, learning_decay : float
    """
    for name, value in (("learning_offset", learning_offset), ("learning_decay", learning_decay)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
            raise ValueError(f"{name} must be a finite real number, got {value!r}.")
    if learning_offset < 0:
        raise ValueError(f"learning_offset must be >= 0, got {learning_offset!r}.")
    if not 0.5 < learning_decay <= 1:
        raise ValueError(
            f"learning_decay must lie in (0.5, 1] (online EM converges only there), "
            f"got {learning_decay!r}."
        )
    return float(learning_offset), float(learning_decay)


def step_size(t: int, learning_offset: float, learning_decay: float) -> float:
    """Weight ``eta_t`` of the ``t``-th batch (1-based) in the running statistics.

    ``1`` for the first batch (it starts the stream), else
    ``(t + learning_offset) ** -learning_decay`` (at most 1).
    """
    if t <= 1:
        return 1.0
    return min(1.0, float((t + learning_offset) ** -learning_decay))


def running_stats(estimator) -> Stats | None:
    """The running statistics of the estimator's stream, or None before its first batch."""
    if not all(hasattr(estimator, name) for name in ONLINE_ATTRIBUTES):
        return None
    return Stats(
        loglik=0.0,
        weight_sum=1.0,
        nk=np.array(estimator.sufficient_stats_nk_, dtype=np.float64),
        sx=np.array(estimator.sufficient_stats_sx_, dtype=np.float64),
        sxx=np.array(estimator.sufficient_stats_sxx_, dtype=np.float64),
        shift=np.array(estimator.sufficient_stats_shift_, dtype=np.float64),
    )


def stats_from_model(estimator, eps: float) -> Stats:
    """Statistics per unit weight whose M-step reproduces the fitted parameters.

    ``nk = weights_``, ``shift = means_``, ``sx = 0`` and ``sxx`` the scatter
    ``(nk + 10 eps) (covariance - reg_covar I)`` in the shape :class:`Stats`
    uses for the covariance type (full (k, d, d) for 'full'/'tied', else the
    (k, d) diagonals). The ``10 eps`` is what :func:`~fastem._stats.m_step`
    adds to ``nk``, so the M-step returns ``covariances_`` to rounding.

    Parameters
    ----------
    estimator : GaussianMixture
        A fitted model.
    eps : float
        Machine epsilon of the data the next M-step runs on.

    Returns
    -------
    Stats
    """
    ct, reg = layout(estimator.covariance_type), float(estimator.reg_covar)
    weights = np.array(estimator.weights_, dtype=np.float64)
    means = np.array(estimator.means_, dtype=np.float64)
    cov = np.array(estimator.covariances_, dtype=np.float64)
    k, d = means.shape
    nk = weights + 10.0 * eps
    if ct in ("full", "tied"):
        cov = cov - reg * np.eye(d)
        # tied: m_step divides the summed scatter by sum(nk), so each k carries nk_k * cov
        sxx = nk[:, None, None] * (cov if ct == "full" else np.broadcast_to(cov, (k, d, d)))
    else:
        cov = cov - reg
        sxx = nk[:, None] * (cov if ct == "diag" else np.broadcast_to(cov[:, None], (k, d)))
    return Stats(
        loglik=0.0,
        weight_sum=1.0,
        nk=weights,
        sx=np.zeros((k, d)),
        sxx=np.ascontiguousarray(sxx),
        shift=means,
    )


def clear_online_state(estimator) -> None:
    """Forget the stream (what :meth:`GaussianMixture.fit` does): the next
    ``partial_fit`` starts a new one from the current parameters."""
    for name in ONLINE_ATTRIBUTES:
        if name in vars(estimator):
            delattr(estimator, name)


def _check_state(estimator, n_features: int) -> None:
    """The fitted parameters must match the current hyper-parameters."""
    k, d, ct = estimator.n_components, n_features, estimator.covariance_type
    expected = covariance_shape(check_covariance_type(ct), k, d)
    got = np.shape(estimator.precisions_cholesky_)
    if np.shape(estimator.weights_) != (k,) or got != expected:
        raise ValueError(
            f"The fitted parameters (precisions_cholesky_ of shape {got}, "
            f"{np.shape(estimator.weights_)[0]} components) do not match n_components={k} "
            f"and covariance_type={ct!r}: call fit, or start from a new estimator."
        )


def _batch_data(estimator, X, sample_weight, fitted: bool, needs_init: bool) -> ArrayData:
    """Validate one batch as ``fit`` would; return it as ``ArrayData``."""
    name = type(estimator).__name__
    X = check_array(
        X,
        allow_nan=True,
        n_features=estimator.n_features_in_ if fitted else None,
        estimator_name=name,
    )
    sw = check_sample_weight(sample_weight, X.shape[0])
    data = ArrayData(X, sw)
    patterns = data.patterns
    if patterns is not None:
        if patterns.rows.shape[0] == 0:
            raise ValueError(
                "X has no observed value: every entry is NaN (missing). There is nothing "
                "to learn from this batch."
            )
        never = np.flatnonzero(patterns.observed_per_feature == 0)
        if needs_init and never.size:
            raise ValueError(
                f"Feature(s) {never.tolist()} of X are never observed (NaN in every row) in "
                "the first batch, which initializes the model: their distribution cannot be "
                "estimated. Start with a batch that observes every feature, or give "
                "weights_init, means_init and precisions_init."
            )
        if patterns.n_empty:
            warnings.warn(
                f"{patterns.n_empty} row(s) of X have every value missing (NaN); they "
                "carry no information and are left out of the update.",
                UserWarning,
                stacklevel=4,
            )
    if data.weight_sum <= 0:
        raise ValueError(
            "The rows of X that have an observed value all have sample_weight 0: there "
            "is nothing to learn from this batch."
        )
    if needs_init:
        k = estimator.n_components
        informative = sw if patterns is None else sw[patterns.rows]
        n_positive = int((informative > 0).sum())
        if n_positive < k:
            raise ValueError(
                f"The first batch initializes the model but has only {n_positive} rows with "
                f"a positive sample_weight and an observed value, fewer than "
                f"n_components = {k}."
            )
    return data


def partial_fit(estimator, X, sample_weight=None):
    """One step of stepwise online EM on the batch ``X`` (see the module docs).

    Parameters
    ----------
    estimator : GaussianMixture
    X : array-like of shape (n_samples, n_features)
        The batch; NaN entries are missing values. float32 batches are
        processed in float32 (float64 statistics), anything else in float64.
    sample_weight : array-like of shape (n_samples,), default=None

    Returns
    -------
    estimator : GaussianMixture
        Updated in place; unchanged when an error is raised.
    """
    from .mixture import _about_moved_means, _check_random_state

    t0, alpha = check_learning_parameters(estimator.learning_offset, estimator.learning_decay)
    fitted = hasattr(estimator, "precisions_cholesky_")
    ct = check_covariance_type(estimator.covariance_type)
    check_positive_int(estimator.n_components, "n_components")
    given = (estimator.weights_init, estimator.means_init, estimator.precisions_init)
    needs_init = not fitted and any(value is None for value in given)
    # scikit-learn's protocol: a later batch's column names must be the fitted ones;
    # the first batch's are recorded, once the step has succeeded.
    names = string_column_names(X)
    if fitted:
        check_feature_names(estimator, X, reset=False)
    data = _batch_data(estimator, X, sample_weight, fitted, needs_init)
    d = data.n_features
    user = estimator._check_parameters(d, check_init=not fitted)  # used only to start
    if fitted:
        _check_state(estimator, d)
    eps = float(np.finfo(data.dtype).eps)
    backend_name = backends.resolve_backend_name(estimator.backend)
    kernels = backends.get_backend(backend_name)

    running = running_stats(estimator) if fitted else None
    with limit_threads(backend_name, estimator.n_threads):
        if fitted:
            weights, means, prec_chol = (
                np.asarray(a, dtype=np.float64)
                for a in (estimator.weights_, estimator.means_, estimator.precisions_cholesky_)
            )
        else:
            rng = _check_random_state(estimator.random_state)
            weights, means, cov, prec_chol = estimator._initial_parameters(data, user, kernels, rng)
            # the engine's layout (VII, EEE) to the model's, which the stream keeps
            _, prec_chol = to_public_layout(ct, cov, prec_chol, *means.shape)
        pass_params = PassParams.from_model(weights, means, prec_chol, ct, data.dtype)
        batch = data.em_stats(kernels, pass_params)
        lower_bound = batch.loglik / batch.weight_sum  # at the pass's own parameters
        if not fitted:
            # a first batch ~1e4+ sd from the start's means (a far start): its moments
            # are taken again about the moved means, as fit does, or the M-step loses
            # every digit. Only there: that batch is the whole M-step; a later one is
            # blended with the stream, and a small batch (one row: variance 0) is no
            # far start, its step blends its responsibilities at the current model
            batch = _about_moved_means(
                data, kernels, batch, weights, prec_chol, ct, estimator.reg_covar, eps
            )

    batch = batch.scaled(1.0 / batch.weight_sum)
    bounds = getattr(estimator, "lower_bounds_", None) if running is not None else None
    if fitted and running is None:
        # A fitted model without a stream (after fit): the fit is batch 1, not discarded.
        running = stats_from_model(estimator, eps)
        n_done = 1
        fit_bound = getattr(estimator, "lower_bound_", None)
        bounds = [] if fit_bound is None else [float(fit_bound)]
    else:
        n_done = int(estimator.n_batches_) if running is not None else 0
    n_batches = n_done + 1
    if running is None:
        new = batch
    else:
        new = running.blended(batch, step_size(n_batches, t0, alpha))
    # EVE/VVE: a generalized M-step warm-started from the current orientation
    state: dict = {}
    orientation = getattr(estimator, "orientation_", None) if fitted else None
    if ct in ("EVE", "VVE") and orientation is not None:
        state["orientation"] = np.asarray(orientation[0], dtype=np.float64)
    weights, means, covariances, prec_chol = m_step(new, ct, estimator.reg_covar, eps, state=state)
    if not np.isfinite(prec_chol).all() or not np.isfinite(means).all():
        raise ValueError(
            "The online EM step produced non-finite parameters; check the data's scale, "
            "or increase reg_covar."
        )

    # Only now, with everything computed, does the estimator change.
    dtype = data.dtype
    estimator.weights_ = weights.astype(dtype)
    estimator.means_ = means.astype(dtype)
    estimator.covariances_ = covariances.astype(dtype)
    estimator.precisions_cholesky_ = prec_chol.astype(dtype)
    estimator.precisions_ = precisions_from_cholesky(prec_chol, ct).astype(dtype)
    estimator.n_batches_ = n_batches
    estimator.sufficient_stats_nk_ = new.nk
    estimator.sufficient_stats_sx_ = new.sx
    estimator.sufficient_stats_sxx_ = new.sxx
    estimator.sufficient_stats_shift_ = new.shift
    estimator.converged_ = False
    estimator.n_iter_ = n_batches
    estimator.lower_bound_ = float(lower_bound)
    # A new list: the previous one may be held elsewhere (a reference kept by the
    # caller, a copy of the estimator) and must not grow with this stream.
    previous = bounds if isinstance(bounds, list) else []
    estimator.lower_bounds_ = [*previous, float(lower_bound)]
    estimator.n_features_in_ = d
    if not fitted:
        if names is not None:
            estimator.feature_names_in_ = names
        elif hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
    estimator.backend_ = backend_name
    estimator._set_decomposition(ct, covariances, state.get("orientation"), dtype)
    return estimator
