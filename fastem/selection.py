"""Choosing the number of components and the covariance type by an information criterion.

:func:`select_model` fits a grid of candidates (numbers of components times
covariance types), scores each by BIC, AIC and ICL, and returns a
:class:`ModelSelection` with the best model and the whole table.

Shared initializations
----------------------
As in mclust, all covariance types with the same number of components start
from the same partition: for each ``K`` and each of the ``n_init`` restarts,
the initial responsibilities (fastem's weighted k-means by default, or the
``init_params`` given) are computed once, with :func:`fastem._init.initial_stats`
on the candidates' backend, and every covariance type's starting weights, means
and precisions are derived from those statistics by its own M-step (the
diagonal types use the diagonal of the full second moments). k-means thus runs
``len(n_components) * n_init`` times, not once more per covariance type, and the
criteria compare covariance structures rather than luck of initialization.

Each candidate is a plain :class:`~fastem.GaussianMixture` whose
``weights_init``, ``means_init`` and ``precisions_init`` hold the start of its
best restart, so ``sklearn.base.clone(candidate).fit(X)`` reproduces it exactly.
When ``X`` contains NaN (missing values, for an estimator that accepts them), no
shared start is computed: each candidate initializes itself.

Progress
--------
Before each fit, :func:`select_model` emits a ``"candidate_start"`` event
(:mod:`fastem._events`) with ``candidate`` (0-based) and ``n_candidates``, and,
when the restarts are shared (each restart then is a separate fit with
``n_init=1``), ``restart`` (0-based) and ``n_restarts``; the fit's own events
follow. Progress displays use it to count candidates and restarts.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from . import backends
from ._covariance import COVARIANCE_TYPES, n_parameters, precisions_from_cholesky
from ._events import emit
from ._init import initial_stats
from ._stats import Stats, m_step
from ._threads import limit_threads
from ._validation import check_array, check_positive_int, check_sample_weight
from .backends._numpy import logsumexp_rows
from .exceptions import ConvergenceWarning
from .mixture import GaussianMixture, _check_random_state

__all__ = ["select_model", "ModelSelection", "CRITERIA"]

CRITERIA = ("bic", "aic", "icl")
# Parameters select_model sets itself, with what to use instead.
_RESERVED = {
    "covariance_type": "pass covariance_types",
    "weights_init": "select_model computes the initializations",
    "means_init": "select_model computes the initializations",
    "precisions_init": "select_model computes the initializations",
    "warm_start": "every candidate is fitted from scratch",
}
# Errors that mean "this candidate cannot be fitted" (a singular covariance, say).
_FIT_ERRORS = (ValueError, np.linalg.LinAlgError, FloatingPointError)


class ModelSelection:
    """The result of :func:`select_model`: the best model and every candidate's scores.

    Attributes
    ----------
    best_ : GaussianMixture
        The fitted candidate with the lowest criterion.
    best_params_ : dict
        Its ``{"n_components": int, "covariance_type": str}``.
    best_index_ : int
        Its row in :attr:`table`.
    criterion : str
        The criterion that ranked the candidates: 'bic', 'aic' or 'icl'.
    table : list of dict
        One row per candidate, in fitting order, with keys ``n_components``,
        ``covariance_type``, ``bic``, ``aic``, ``icl``, ``log_likelihood``
        (weighted total over the rows), ``n_parameters``, ``converged``,
        ``n_iter`` and ``error`` (None, or why the candidate failed; its scores
        are then None).
    models_ : dict
        ``(n_components, covariance_type)`` -> fitted GaussianMixture, for every
        candidate that did not fail.
    """

    def __init__(
        self,
        best: GaussianMixture,
        best_index: int,
        criterion: str,
        table: list[dict],
        models: dict[tuple[int, str], GaussianMixture],
    ) -> None:
        self.best_ = best
        self.best_index_ = best_index
        self.best_params_ = {
            "n_components": table[best_index]["n_components"],
            "covariance_type": table[best_index]["covariance_type"],
        }
        self.criterion = criterion
        self.table = table
        self.models_ = models

    def to_text(self) -> str:
        """The table as aligned plain text, the best row marked with ``*``.

        Returns
        -------
        text : str
        """
        headers = ["", "K", "covariance", "BIC", "AIC", "ICL", "log-lik", "params", "conv",
                   "iter", "error"]  # fmt: skip

        def number(value: Any) -> str:
            return "-" if value is None else f"{value:.3f}"

        rows = []
        for i, row in enumerate(self.table):
            failed = row["error"] is not None
            error = row["error"] or ""
            rows.append(
                [
                    "*" if i == self.best_index_ else "",
                    str(row["n_components"]),
                    row["covariance_type"],
                    number(row["bic"]),
                    number(row["aic"]),
                    number(row["icl"]),
                    number(row["log_likelihood"]),
                    str(row["n_parameters"]),
                    "-" if failed else ("yes" if row["converged"] else "no"),
                    "-" if failed else str(row["n_iter"]),
                    error if len(error) <= 60 else error[:57] + "...",
                ]
            )
        widths = [max(len(r[c]) for r in [headers, *rows]) for c in range(len(headers))]
        left = {0, 2, 10}  # text columns; numbers align right

        def line(cells: list[str]) -> str:
            parts = [
                cell.ljust(w) if c in left else cell.rjust(w)
                for c, (cell, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        best = self.best_params_
        footer = (
            f"* best by {self.criterion.upper()} (lower is better): "
            f"n_components={best['n_components']}, covariance_type={best['covariance_type']!r}"
        )
        return "\n".join([line(headers), *(line(r) for r in rows), footer])

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        n_failed = sum(row["error"] is not None for row in self.table)
        score = self.table[self.best_index_][self.criterion]
        return (
            f"ModelSelection(criterion={self.criterion!r}, best_params_={self.best_params_!r}, "
            f"{self.criterion}={score:.6g}, n_candidates={len(self.table)}, n_failed={n_failed})"
        )


# --------------------------------------------------------------- validation
def _check_components(n_components) -> list[int]:
    values = [n_components] if isinstance(n_components, numbers.Integral) else n_components
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(
            f"n_components must be a positive integer or an iterable of them, got {n_components!r}."
        )
    checked = [check_positive_int(k, "n_components") for k in values]
    if not checked:
        raise ValueError("n_components is empty: there is no candidate to fit.")
    return list(dict.fromkeys(checked))  # duplicates removed, order kept


def _check_covariance_types(covariance_types) -> list[str]:
    values = [covariance_types] if isinstance(covariance_types, str) else list(covariance_types)
    for ct in values:
        if ct not in COVARIANCE_TYPES:
            raise ValueError(f"Invalid covariance type {ct!r}; expected one of {COVARIANCE_TYPES}.")
    if not values:
        raise ValueError("covariance_types is empty: there is no candidate to fit.")
    return list(dict.fromkeys(values))


# ------------------------------------------------------------------ scoring
def _criteria(
    model: GaussianMixture, X: np.ndarray, sw: np.ndarray, weighted: bool
) -> dict[str, float]:
    """BIC, AIC, ICL and the weighted log-likelihood from one blocked pass.

    The weighted log-probabilities are computed once per row block (never for
    all rows at once); each row's log-density and the log-responsibility of its
    most probable component come from the same block.
    """
    n = X.shape[0]
    log_density = np.empty(n)
    map_log_resp = 0.0  # sum_i w_i log z_{i, argmax_k z_ik}
    for a, b, logp in model._log_prob_blocks(X):
        lse = logsumexp_rows(logp)
        log_density[a:b] = lse
        # log z of the MAP component: its log-probability minus the row's normalizer.
        map_log_resp += float(sw[a:b] @ (logp.max(axis=1) - lse))
    log_likelihood = float(sw @ log_density)
    p = model._n_parameters()
    if weighted:
        # A row of integer weight m counts as m rows, as in fitting.
        bic = -2.0 * log_likelihood + p * math.log(float(sw.sum()))
        aic = -2.0 * log_likelihood + 2.0 * p
    else:
        # The estimator's own bic()/aic() arithmetic, so the values agree bit for bit.
        score = float(log_density.mean())
        bic = float(-2.0 * score * n + p * np.log(n))
        aic = float(-2.0 * score * n + 2.0 * p)
    return {
        "bic": bic,
        "aic": aic,
        "icl": bic - 2.0 * map_log_resp,
        "log_likelihood": log_likelihood,
    }


# ---------------------------------------------------------------- the search
def _shared_starts(
    X: np.ndarray,
    sw: np.ndarray,
    k: int,
    covariance_types: list[str],
    probe: GaussianMixture,
    rng,
    n_init: int,
) -> list[dict[str, tuple | Exception]]:
    """Per restart: covariance type -> (weights, means, precisions), or the error."""
    backend_name = backends.resolve_backend_name(probe.backend)
    kernels = backends.get_backend(backend_name)
    eps = float(np.finfo(X.dtype).eps)
    starts = []
    for _ in range(n_init):
        with limit_threads(backend_name, probe.n_threads):
            stats = initial_stats(X, sw, k, probe.init_params, rng, kernels, full=True)
        diag_stats = replace(stats, sxx=np.diagonal(stats.sxx, axis1=1, axis2=2).copy())
        per_type: dict[str, tuple | Exception] = {}
        for ct in covariance_types:
            source: Stats = stats if ct in ("full", "tied") else diag_stats
            try:
                weights, means, _, prec_chol = m_step(source, ct, probe.reg_covar, eps)
                per_type[ct] = (weights, means, precisions_from_cholesky(prec_chol, ct))
            except _FIT_ERRORS as exc:
                per_type[ct] = exc
        starts.append(per_type)
    return starts


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _fit_quietly(model: GaussianMixture, X, sample_weight) -> GaussianMixture:
    with warnings.catch_warnings():  # convergence is reported in the table instead
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(X, sample_weight=sample_weight)


def select_model(
    X,
    n_components: int | Iterable[int] = range(1, 10),
    covariance_types: str | Iterable[str] = ("full", "tied", "diag", "spherical"),
    *,
    criterion: str = "bic",
    sample_weight=None,
    n_init: int = 1,
    random_state=None,
    **params,
) -> ModelSelection:
    """Fit a grid of Gaussian mixtures and pick the best by an information criterion.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The data, passed to each candidate's ``fit`` as is (float32 stays float32).
    n_components : int or iterable of int, default=range(1, 10)
        Numbers of components to try; each must be at most ``n_samples``.
    covariance_types : str or iterable of str, default=('full', 'tied', 'diag', 'spherical')
        Covariance types to try.
    criterion : {'bic', 'aic', 'icl'}, default='bic'
        What ranks the candidates (lower is better). ``BIC = -2 log L + p log n``
        and ``AIC = -2 log L + 2 p``, as :meth:`GaussianMixture.bic` and
        :meth:`GaussianMixture.aic`. ``ICL = BIC - 2 sum_i log z_{i, c_i}``, the
        integrated completed likelihood of Biernacki, Celeux & Govaert (2000) as
        mclust computes it (with the sign flipped to lower-is-better): ``z_ik``
        are the responsibilities (:meth:`GaussianMixture.predict_proba`) and
        ``c_i = argmax_k z_ik`` each row's most probable component, so ICL is
        BIC plus the cost of the hard MAP classification. ICL >= BIC, with
        equality for one component; it penalizes overlapping components. A row
        with missing values gets its responsibilities from its observed
        coordinates, as in ``predict_proba``; a row with nothing observed has
        the mixture weights as responsibilities and adds ``-2 log max_k w_k``,
        just as it adds a log-density of 0 to ``log L`` and 1 to ``n``.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights, passed to every fit. With weights, ``log L`` is the weighted
        log-likelihood, ``n`` the sum of the weights and ICL's sum is weighted
        too (an integer weight counts as that many repeated rows), so the
        criteria then differ from
        :meth:`GaussianMixture.bic`, which ignores weights.
    n_init : int, default=1
        Restarts per candidate, from ``n_init`` shared initializations per number
        of components (see the module documentation); the restart with the
        highest lower bound is kept.
    random_state : int, RandomState, Generator or None, default=None
        Seed of the initializations; also given to every candidate.
    **params
        Other :class:`GaussianMixture` parameters (``tol``, ``reg_covar``,
        ``max_iter``, ``init_params``, ``backend``, ``n_threads``, ...), the same
        for every candidate. ``covariance_type``, ``weights_init``,
        ``means_init``, ``precisions_init`` and ``warm_start`` are set by
        select_model and may not be given.

    Returns
    -------
    selection : ModelSelection
        ``best_``, ``best_params_``, ``criterion``, ``table`` (one row per
        candidate), ``models_``, ``to_text()``.

    Raises
    ------
    ValueError
        On invalid input (before anything is fitted): an unknown criterion or
        covariance type, a non-positive or too large number of components, bad
        ``X``, weights or parameters; or when every candidate fails.
    TypeError
        On a parameter :class:`GaussianMixture` does not have.

    Notes
    -----
    A candidate that cannot be fitted (typically a singular covariance: too many
    components for the data) is reported in the table with its error, not
    raised, unless every candidate fails. The criteria of a candidate come from
    one pass over X in row blocks; the (n_samples, n_components) array of
    responsibilities is never formed.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"Invalid criterion {criterion!r}; expected one of {CRITERIA}.")
    ks = _check_components(n_components)
    types = _check_covariance_types(covariance_types)
    for name, why in _RESERVED.items():
        if name in params:
            raise ValueError(f"select_model does not take {name!r}: {why}.")
    n_init = check_positive_int(n_init, "n_init")
    # NaN passes through: whether missing values are allowed is the estimator's call.
    X = check_array(X, allow_nan=True, min_samples=2, estimator_name="select_model")
    n, d = X.shape
    sw = check_sample_weight(sample_weight, n)
    too_many = [k for k in ks if k > n]
    if too_many:
        raise ValueError(
            f"n_components {too_many} exceed n_samples = {n}: a mixture needs at least one "
            "row per component."
        )
    n_positive = int((sw > 0).sum())
    too_many = [k for k in ks if k > n_positive]
    if too_many:
        raise ValueError(
            f"n_components {too_many} exceed the {n_positive} rows with a positive sample_weight."
        )
    rng = _check_random_state(random_state)
    probes = {
        ct: GaussianMixture(1, covariance_type=ct, random_state=random_state, **params)
        for ct in types
    }  # TypeError here for an unknown parameter
    for probe in probes.values():
        probe._check_parameters(d)
    probe = probes[types[0]]
    backends.resolve_backend_name(probe.backend)  # an unavailable backend fails now
    shared = not bool(np.isnan(X).any())
    weighted = sample_weight is not None

    table: list[dict] = []
    models: dict[tuple[int, str], GaussianMixture] = {}
    n_candidates = len(ks) * len(types)
    for k in ks:
        starts = _shared_starts(X, sw, k, types, probe, rng, n_init) if shared else None
        for ct in types:
            candidate = len(table)
            row: dict[str, Any] = {
                "n_components": k,
                "covariance_type": ct,
                "bic": None,
                "aic": None,
                "icl": None,
                "log_likelihood": None,
                "n_parameters": n_parameters(ct, k, d),
                "converged": None,
                "n_iter": None,
                "error": None,
            }
            model, error = None, None
            if starts is None:
                emit("candidate_start", candidate=candidate, n_candidates=n_candidates)
                try:
                    model = _fit_quietly(
                        GaussianMixture(
                            k, covariance_type=ct, n_init=n_init, random_state=random_state,
                            **params,
                        ),
                        X,
                        sample_weight,
                    )  # fmt: skip
                except _FIT_ERRORS as exc:
                    error = exc
            else:
                for restart, start in enumerate(starts):
                    if isinstance(start[ct], Exception):
                        error = error or start[ct]
                        continue
                    weights, means, precisions = start[ct]
                    emit(
                        "candidate_start", candidate=candidate, n_candidates=n_candidates,
                        restart=restart, n_restarts=n_init,
                    )  # fmt: skip
                    fitted = GaussianMixture(
                        k,
                        covariance_type=ct,
                        weights_init=weights,
                        means_init=means,
                        precisions_init=precisions,
                        random_state=random_state,
                        **params,
                    )
                    try:
                        _fit_quietly(fitted, X, sample_weight)
                    except _FIT_ERRORS as exc:
                        error = error or exc
                        continue
                    # The first of equal lower bounds wins, as in GaussianMixture's n_init.
                    if model is None or fitted.lower_bound_ > model.lower_bound_:
                        model = fitted
            if model is not None:
                try:
                    scores = _criteria(model, X, sw, weighted)
                except _FIT_ERRORS as exc:
                    model, error = None, exc
            if model is None:
                row["error"] = _message(error) if error is not None else "no restart succeeded"
            else:
                row.update(scores, converged=bool(model.converged_), n_iter=int(model.n_iter_))
                models[(k, ct)] = model
            table.append(row)

    ranked = [
        (row[criterion], i)
        for i, row in enumerate(table)
        if row["error"] is None and not math.isnan(row[criterion])
    ]
    if not ranked:
        first = table[0]
        raise ValueError(
            f"all {len(table)} candidates failed; the first (n_components="
            f"{first['n_components']}, covariance_type={first['covariance_type']!r}): "
            f"{first['error']}"
        )
    best_index = min(ranked)[1]  # ties: the first in table order
    best_row = table[best_index]
    best = models[(best_row["n_components"], best_row["covariance_type"])]
    if not best.converged_ and best.max_iter > 0:
        warnings.warn(
            f"The selected model (n_components={best_row['n_components']}, covariance_type="
            f"{best_row['covariance_type']!r}) did not converge; consider raising max_iter.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return ModelSelection(best, best_index, criterion, table, models)
