"""Choosing the number of components and the covariance model by an information criterion.

:func:`select_model` fits a grid of candidates (numbers of components times
covariance models: any of mclust's 14, ``"all"`` of them, or scikit-learn's four
names), scores each by BIC, AIC and ICL, and returns a :class:`ModelSelection`
with the best model and the whole table. Its text (:meth:`ModelSelection.to_text`)
is mclust's summary: a K x model grid of the criterion, the best three marked.

Shared initializations
----------------------
As in mclust, every covariance model starts from the same partition. The
``"hc"`` start is mclust's: one model-based hierarchical clustering tree
(:func:`fastem._init.hc_stats_by_k`, on at most 2,000 rows) is built once, and
its cut into ``K`` clusters starts every model with ``K`` components. Any other
start of :class:`~fastem.GaussianMixture` (``"kmeans"``, the former default,
``"emem"``, ``"best"``, ...) is computed once per ``K`` and restart instead,
and several may be combined with ``+``: every candidate is then fitted from
each and keeps the better fit (a degenerate fit, :func:`degenerate_fit`,
loses to a proper one; then the higher lower bound wins). The default,
``"hc+emem"``, adds emEM's short runs (shared by every model at ``K``) to the
hc tree: on the benchmark of docs/selection.md (mclust's 14 models, five data
sets) it brought the share of candidates that reach their best-known maximum
from 71% (hc alone) to 85%, and the reference model was chosen in 9 of 10
grids, at about 1.8 times the time.

Each start is a set of sufficient statistics (:func:`fastem._init.initial_stats`,
on the candidates' backend); every covariance model's starting weights, means
and precisions are its own M-step of those statistics (the diagonal models use
the diagonal of the second moments). The criteria therefore compare covariance
structures rather than luck of initialization.

``n_init`` repeats the starts: restart ``r`` builds its own tree (a different
subsample when there are more than 2,000 rows; on fewer rows the tree is
deterministic and is built only once) and draws new seeds for the other starts.

Each candidate is a plain :class:`~fastem.GaussianMixture` whose
``weights_init``, ``means_init`` and ``precisions_init`` hold the start of its
best fit (and whose ``init_params`` names that start), so
``sklearn.base.clone(candidate).fit(X)`` reproduces it: exactly for a screened
candidate and with ``refine="all"``, to the same maximum (within ``tol``) for
one refined by the two-stage search, which continued it warm. When ``X``
contains NaN (missing values), the starts come from the copy of ``X`` that
:class:`~fastem.GaussianMixture` initializes from (NaN filled by column means,
rows with nothing observed weighted 0); EM then uses the observed values only.

Fit settings
------------
Unless given, every candidate is fitted with :data:`DEFAULT_FIT_SETTINGS`:
SQUAREM acceleration, the Aitken stopping rule with ``tol=1e-8`` (stop when the
predicted remaining gain of the average log-likelihood is below 1e-8) and
``max_iter=1000`` passes, so that each candidate's criterion is that of its
maximum, not of a fit stopped early; docs/selection.md has the measurement.
:data:`SCIKIT_LEARN_SETTINGS` gives the former behaviour (k-means starts,
scikit-learn's stopping rule): ``select_model(X, **SCIKIT_LEARN_SETTINGS)``.

Two stages
----------
Most of a grid's EM passes go to overfitted candidates (more components than
the data support), whose EM converges slowly towards a maximum that cannot win.
So by default (``refine="contenders"``) every candidate is first *screened*
(Aitken at :data:`SCREEN_TOL` = 1e-5, at most :data:`SCREEN_MAX_ITER` passes),
and only those whose criterion, with a generous allowance for what their fit
could still gain, could be among the best :data:`N_CONTENDERS` continue, warm,
to the final settings. The table's ``refined`` column and the ``~`` marks of
:meth:`ModelSelection.to_text` say which; ``refine="all"`` fits every candidate
to the final settings. docs/selection.md has the rule and its measurement.

Degenerate candidates
---------------------
A fit whose component sits on too few rows for what it estimates, or whose
covariance has collapsed (:func:`degenerate_fit`), is a spurious optimum: its
likelihood is bounded only by ``reg_covar`` and beats proper fits without
fitting the data better. mclust's EM stops there on the singular covariance
and reports the cell NA. Here such a candidate keeps its scores, flagged
``degenerate`` in the table (``!`` in :meth:`ModelSelection.to_text`), and is
ranked after every proper candidate: it is chosen only when all are degenerate
(with a warning). On iris, VEE with 7 and 9 components collapse a component
onto one row; without the rule VEE,9 would be chosen over mclust's VEV,2.

Progress
--------
Before each fit, :func:`select_model` emits a ``"candidate_start"`` event
(:mod:`fastem._events`) with ``candidate`` (0-based), ``n_candidates``,
``restart`` (0-based) and ``n_restarts`` (the number of starts per candidate:
each is a separate fit with ``n_init=1``); the fit's own events follow.
Progress displays use it to count candidates and restarts.
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
from ._covariance import COVARIANCE_TYPES, layout, n_parameters, precisions_from_cholesky
from ._data import fill_with_column_means
from ._events import emit
from ._hc import DEFAULT_MAX_ROWS, HC_TRANSFORMS
from ._init import INIT_METHODS, hc_stats_by_k, initial_stats
from ._mclust import ALIASES, DIAGONAL_MODELS, MODEL_NAMES, canonical_model
from ._stats import Stats, m_step
from ._threads import limit_threads
from ._validation import (
    check_array,
    check_positive_int,
    check_sample_weight,
    string_column_names,
)
from .backends._numpy import logsumexp_rows
from .exceptions import ConvergenceWarning
from .mixture import GaussianMixture, _check_random_state

__all__ = [
    "select_model",
    "ModelSelection",
    "CRITERIA",
    "ALL_MODELS",
    "DEFAULT_COVARIANCE_TYPES",
    "DEFAULT_INIT",
    "DEFAULT_FIT_SETTINGS",
    "SCIKIT_LEARN_SETTINGS",
    "check_covariance_types",
    "check_init",
    "degenerate_fit",
]

CRITERIA = ("bic", "aic", "icl")
# mclust's 14 covariance models, in mclust's order; "all" selects them.
ALL_MODELS = MODEL_NAMES
# What select_model and GaussianMixtureIC search by default: all 14, as mclust.
DEFAULT_COVARIANCE_TYPES = "all"
# The shared starts by default: one hc tree for every K and model, and emEM per K;
# each candidate keeps the better fit (measured: docs/selection.md).
DEFAULT_INIT = "hc+emem"
# Every candidate's fit settings unless given: each fit reaches its maximum.
DEFAULT_FIT_SETTINGS: dict[str, Any] = {
    "tol": 1e-8,
    "stopping": "aitken",
    "acceleration": "squarem",
    "max_iter": 1000,
}
# select_model(X, **SCIKIT_LEARN_SETTINGS): k-means starts and scikit-learn's fit settings.
SCIKIT_LEARN_SETTINGS: dict[str, Any] = {
    "init_params": "kmeans",
    "tol": 1e-3,
    "stopping": "absolute",
    "acceleration": None,
    "max_iter": 100,
}
# Two-stage search (select_model's refine="contenders"): every start of every
# candidate is screened (Aitken at SCREEN_TOL per unit of weight, at most
# SCREEN_MAX_ITER passes); then the candidates that could be among the best
# N_CONTENDERS continue to the final settings. A screened fit is taken to gain at
# most SCREEN_SAFETY times Aitken's prediction (or, still climbing at the pass
# limit, its mean gain per pass over the last SCREEN_WINDOW passes times the passes
# left), and at least SCREEN_MIN_GAIN log-likelihood units (small data: a component
# collapsing onto a few rows after the screen; docs/selection.md, "Two stages").
REFINE = ("contenders", "all")
SCREEN_TOL = 1e-5
SCREEN_MAX_ITER = 200
SCREEN_SAFETY = 100.0
SCREEN_WINDOW = 30
SCREEN_MIN_GAIN = 50.0
N_CONTENDERS = 3
SIGNS = ("sklearn", "mclust")
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
        One row per candidate, in fitting order (by ``n_components``, then
        covariance model), with keys ``n_components``, ``covariance_type``,
        ``bic``, ``aic``, ``icl`` (scikit-learn's sign: lower is better),
        ``log_likelihood`` (weighted total over the rows), ``n_parameters``,
        ``converged``, ``n_iter``, ``init`` (the start of the kept fit),
        ``refined``, ``degenerate`` and ``error`` (None, or why the candidate
        failed; its scores are then None). ``degenerate`` is True for a fit at a
        spurious optimum (:func:`degenerate_fit`: a component on fewer rows than
        its covariance needs, or a collapsed covariance), whose likelihood grows
        without fitting the data better; such a candidate keeps its scores but
        is ranked after every proper one and is not chosen unless every
        candidate is degenerate (mclust reports these cells NA: its EM stops on
        the singular covariance that fastem's ``reg_covar`` prevents).
        ``refined`` is True for a candidate fitted to the final settings (to its
        maximum, with the defaults) and False for one that :func:`select_model`'s
        two-stage search left at the screening stage (Aitken's predicted remaining
        gain below :data:`SCREEN_TOL` per row) because it could not be among the
        best :data:`N_CONTENDERS`;
        ``converged`` and ``n_iter`` are then those of the screening fit.
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

    # ------------------------------------------------------------ accessors
    def ranking(self, criterion: str | None = None) -> list[int]:
        """Rows of :attr:`table` that did not fail, best first.

        Parameters
        ----------
        criterion : {'bic', 'aic', 'icl'}, default=None
            The ranking criterion; the selection's own when None.

        Returns
        -------
        list of int
            Indices into :attr:`table`: the proper candidates by increasing
            criterion, then the degenerate ones (``table``'s ``degenerate``,
            :func:`degenerate_fit`) by increasing criterion; ties: table order.
        """
        criterion = _check_criterion(self.criterion if criterion is None else criterion)
        return _ranking(self.table, criterion)

    def grid(
        self, criterion: str | None = None, sign: str = "sklearn"
    ) -> tuple[list[int], list[str], np.ndarray]:
        """The criterion as a K x model grid, as mclust's ``mclustBIC`` object.

        Parameters
        ----------
        criterion : {'bic', 'aic', 'icl'}, default=None
            The selection's own when None.
        sign : {'sklearn', 'mclust'}, default='sklearn'
            'sklearn': ``BIC = -2 log L + p log n``, lower is better (as
            :meth:`GaussianMixture.bic`). 'mclust': the negation,
            ``2 log L - p log n``, larger is better (as mclust's BIC and ICL;
            AIC is negated the same way).

        Returns
        -------
        ks : list of int
            The rows' numbers of components, increasing.
        models : list of str
            The columns' covariance models, in the order searched.
        values : ndarray of shape (len(ks), len(models))
            NaN where the candidate failed (mclust's NA).
        """
        criterion = _check_criterion(self.criterion if criterion is None else criterion)
        factor = _sign_factor(sign)
        ks = sorted({row["n_components"] for row in self.table})
        models = list(dict.fromkeys(row["covariance_type"] for row in self.table))
        values = np.full((len(ks), len(models)), np.nan)
        for row in self.table:
            value = row[criterion]
            if row["error"] is None and value is not None:
                values[ks.index(row["n_components"]), models.index(row["covariance_type"])] = (
                    factor * value
                )
        return ks, models, values

    # ------------------------------------------------------------------ text
    def to_text(
        self,
        sign: str = "sklearn",
        *,
        criterion: str | None = None,
        layout: str = "grid",
        top: int = 3,
        digits: int = 3,
        width: int | None = 100,
    ) -> str:
        """The search as plain text, like mclust's ``summary`` of a BIC object.

        Parameters
        ----------
        sign : {'sklearn', 'mclust'}, default='sklearn'
            'sklearn' prints scikit-learn's sign (``BIC = -2 log L + p log n``,
            lower is better); 'mclust' mclust's (``BIC = 2 log L - p log n``,
            larger is better). The ranking is the same.
        criterion : {'bic', 'aic', 'icl'}, default=None
            The criterion shown; the selection's own when None.
        layout : {'grid', 'table'}, default='grid'
            'grid': a K x model grid of the criterion (rows K, columns the
            covariance models), the best ``top`` cells marked ``(1)``, ``(2)``,
            ..., failed candidates ``NA``, then the top models with their values
            and each failure's reason. 'table': one line per candidate with every
            criterion, the log-likelihood, parameters, convergence, passes,
            start and error, the best row marked ``*``.
        top : int, default=3
            How many best candidates the grid marks and lists.
        digits : int, default=3
            Decimals of the printed values.
        width : int or None, default=100
            The grid's columns are printed in blocks no wider than this (as R
            prints a wide matrix); None prints every column in one block.

        Returns
        -------
        text : str
        """
        criterion = _check_criterion(self.criterion if criterion is None else criterion)
        factor = _sign_factor(sign)
        if layout == "table":
            return self._long_text(sign, factor, digits)
        if layout != "grid":
            raise ValueError(f"layout must be 'grid' or 'table', got {layout!r}")
        top = check_positive_int(top, "top")
        ks, models, values = self.grid(criterion, sign)
        ranked = self.ranking(criterion)[:top]
        rank_of = {
            (self.table[i]["n_components"], self.table[i]["covariance_type"]): r + 1
            for r, i in enumerate(ranked)
        }
        width_mark = len(f" ({top})") if ranked else 0
        screened = {
            (row["n_components"], row["covariance_type"])
            for row in self.table
            if row["error"] is None and row.get("refined") is False
        }
        degenerate = {
            (row["n_components"], row["covariance_type"])
            for row in self.table
            if row["error"] is None and row.get("degenerate")
        }
        cells = []
        for a, k in enumerate(ks):
            line = []
            for b, model in enumerate(models):
                value = values[a, b]
                text = "NA" if math.isnan(value) else f"{value:.{digits}f}"
                if (k, model) in screened:
                    text += "~"
                if (k, model) in degenerate:
                    text += "!"
                rank = rank_of.get((k, model))
                mark = f" ({rank})" if rank is not None else ""
                line.append(text + mark.ljust(width_mark))
            cells.append(line)
        label_width = max(len(str(k)) for k in ks)
        widths = [
            max(len(model) + width_mark, *(len(line[b]) for line in cells))
            for b, model in enumerate(models)
        ]
        name = criterion.upper()
        better = "larger" if factor < 0 else "lower"
        lines = [
            f"{_CRITERION_NAMES[criterion]} ({name}, {_formula(criterion, sign)}; "
            f"{better} is better):"
        ]
        # Blocks of columns that fit in `width`, as R prints a wide matrix.
        blocks: list[list[int]] = [[]]
        used = label_width
        for b, w in enumerate(widths):
            if blocks[-1] and width is not None and used + 2 + w > width:
                blocks.append([])
                used = label_width
            blocks[-1].append(b)
            used += 2 + w
        for n_block, block in enumerate(blocks):
            if n_block:
                lines.append("")
            header = [(models[b] + " " * width_mark).rjust(widths[b]) for b in block]
            lines.append((" " * label_width + "  " + "  ".join(header)).rstrip())
            for k, line in zip(ks, cells, strict=True):
                row_cells = [line[b].rjust(widths[b]) for b in block]
                lines.append((str(k).rjust(label_width) + "  " + "  ".join(row_cells)).rstrip())
        lines.append("")
        lines.append(f"Top {len(ranked)} models based on the {name} criterion:")
        labels = [
            f"({r + 1}) {self.table[i]['covariance_type']},{self.table[i]['n_components']}"
            for r, i in enumerate(ranked)
        ]
        numbers_ = [f"{factor * self.table[i][criterion]:.{digits}f}" for i in ranked]
        col = [max(len(a), len(b)) for a, b in zip(labels, numbers_, strict=True)]
        lines.append("  ".join(a.rjust(w) for a, w in zip(labels, col, strict=True)))
        lines.append("  ".join(b.rjust(w) for b, w in zip(numbers_, col, strict=True)))
        failed = [row for row in self.table if row["error"] is not None]
        if failed:
            lines.append("")
            lines.append(f"NA: {len(failed)} candidate(s) failed:")
            for row in failed:
                lines.append(
                    f"  {row['covariance_type']},{row['n_components']}: "
                    f"{_shorten(row['error'], 100)}"
                )
        if degenerate:
            lines.append("")
            lines.append(
                f"!: {len(degenerate)} degenerate candidate(s) (a component on too few rows "
                "or a collapsed covariance; mclust's NA), ranked after the others: "
                + ", ".join(
                    f"{row['covariance_type']},{row['n_components']}"
                    for row in self.table
                    if (row["n_components"], row["covariance_type"]) in degenerate
                )
            )
        if screened:
            lines.append("")
            lines.append(
                f"~: {len(screened)} candidate(s) only screened (Aitken at {SCREEN_TOL:g} per "
                f"row, or {SCREEN_MAX_ITER} passes): their bound could not reach the best "
                f"{N_CONTENDERS}; refine='all' fits every candidate to the maximum."
            )
        not_converged = [
            f"{row['covariance_type']},{row['n_components']}"
            for row in self.table
            if row["error"] is None and not row["converged"] and row.get("refined") is not False
        ]
        if not_converged:
            lines.append("")
            lines.append(
                f"Not converged within max_iter ({len(not_converged)} "
                f"candidate{'s' if len(not_converged) != 1 else ''}): " + ", ".join(not_converged)
            )
        return "\n".join(lines)

    def _long_text(self, sign: str, factor: float, digits: int) -> str:
        headers = ["", "K", "covariance", "BIC", "AIC", "ICL", "log-lik", "params", "conv",
                   "iter", "refined", "degenerate", "init", "error"]  # fmt: skip

        def number(value: Any, flip: bool = True) -> str:
            if value is None:
                return "NA"
            return f"{(factor if flip else 1.0) * value:.{digits}f}"

        rows = []
        for i, row in enumerate(self.table):
            failed = row["error"] is not None
            rows.append(
                [
                    "*" if i == self.best_index_ else "",
                    str(row["n_components"]),
                    row["covariance_type"],
                    number(row["bic"]),
                    number(row["aic"]),
                    number(row["icl"]),
                    number(row["log_likelihood"], flip=False),
                    str(row["n_parameters"]),
                    "-" if failed else ("yes" if row["converged"] else "no"),
                    "-" if failed else str(row["n_iter"]),
                    "-" if failed else ("no" if row.get("refined") is False else "yes"),
                    "-" if failed else ("yes" if row.get("degenerate") else "no"),
                    row.get("init") or "-",
                    _shorten(row["error"] or "", 60),
                ]
            )
        widths = [max(len(r[c]) for r in [headers, *rows]) for c in range(len(headers))]
        left = {0, 2, 12, 13}  # text columns; numbers align right

        def line(cells: list[str]) -> str:
            parts = [
                cell.ljust(w) if c in left else cell.rjust(w)
                for c, (cell, w) in enumerate(zip(cells, widths, strict=True))
            ]
            return "  ".join(parts).rstrip()

        best = self.best_params_
        better = "larger" if factor < 0 else "lower"
        footer = (
            f"* best by {self.criterion.upper()} ({sign} sign, {better} is better): "
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


_CRITERION_NAMES = {
    "bic": "Bayesian Information Criterion",
    "aic": "Akaike Information Criterion",
    "icl": "Integrated Complete-data Likelihood",
}


def _formula(criterion: str, sign: str) -> str:
    # ICL = BIC - 2 sum log z_MAP (scikit-learn's sign); mclust's is its negation,
    # 2 log L - p log n + 2 sum log z_MAP (log z_MAP <= 0: the classification's cost).
    penalty = "2 p" if criterion == "aic" else "p log n"
    if sign == "mclust":
        return f"2 log L - {penalty}" + (" + 2 sum log z_MAP" if criterion == "icl" else "")
    return f"-2 log L + {penalty}" + (" - 2 sum log z_MAP" if criterion == "icl" else "")


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _ranking(table: list[dict], criterion: str) -> list[int]:
    """Rows of ``table`` with a finite ``criterion``: proper candidates best first,
    then degenerate ones best first (ties: table order)."""
    scored = [
        (bool(row.get("degenerate")), row[criterion], i)
        for i, row in enumerate(table)
        if row["error"] is None and row[criterion] is not None and math.isfinite(row[criterion])
    ]
    return [i for *_, i in sorted(scored)]


def _check_criterion(criterion: str) -> str:
    if criterion not in CRITERIA:
        raise ValueError(f"Invalid criterion {criterion!r}; expected one of {CRITERIA}.")
    return criterion


def _sign_factor(sign: str) -> float:
    if sign not in SIGNS:
        raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
    return 1.0 if sign == "sklearn" else -1.0


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


def covariance_model_name(name) -> str:
    """The name a covariance model is searched under.

    mclust's names in any case become upper case (``"vvv"`` -> ``"VVV"``);
    scikit-learn's four names in any case become lower case and stay aliases
    (``"Full"`` -> ``"full"``, the same model as ``"VVV"``).

    Parameters
    ----------
    name : str

    Returns
    -------
    str

    Raises
    ------
    ValueError
        For anything else.
    """
    if isinstance(name, str):
        if name.lower() in ALIASES:
            return name.lower()
        if name.upper() in MODEL_NAMES:
            return name.upper()
    raise ValueError(
        f"Invalid covariance type {name!r}; expected 'all', one of mclust's 14 models "
        f"({', '.join(MODEL_NAMES)}; any case) or scikit-learn's {', '.join(COVARIANCE_TYPES)}."
    )


def check_covariance_types(covariance_types, n_features: int | None = None) -> list[str]:
    """The covariance models a search fits, validated and normalized.

    Parameters
    ----------
    covariance_types : str or iterable of str
        ``"all"`` (mclust's 14 models), one model name, or several. Names are
        mclust's (any case) or scikit-learn's four (aliases of VII, VVI, EEE
        and VVV); ``"all"`` may appear in a list too.
    n_features : int, default=None
        With one feature the 14 models are only two (mclust's ``E`` and ``V``):
        ``"all"`` then means EII and VII.

    Returns
    -------
    list of str
        Normalized names (:func:`covariance_model_name`), in the order given;
        a model named twice (say ``"full"`` and ``"VVV"``) is kept once, first
        name first.
    """
    if isinstance(covariance_types, str):
        values = [covariance_types]
    elif isinstance(covariance_types, Iterable):
        values = list(covariance_types)
    else:
        raise ValueError(
            f"covariance_types must be a name or an iterable of names, got {covariance_types!r}."
        )
    names: list[str] = []
    for value in values:
        if isinstance(value, str) and value.lower() == "all":
            names.extend(ALL_MODELS if n_features != 1 else ("EII", "VII"))
        else:
            names.append(covariance_model_name(value))
    if not names:
        raise ValueError("covariance_types is empty: there is no candidate to fit.")
    kept: dict[str, str] = {}
    for name in names:
        kept.setdefault(canonical_model(name), name)
    return list(kept.values())


def _is_diagonal(name: str) -> bool:
    return canonical_model(name) in DIAGONAL_MODELS


def check_init(init_params) -> tuple[str, ...]:
    """The start methods of ``init_params``: one of :data:`fastem._init.INIT_METHODS`,
    several joined by ``+`` (``"hc+emem"``), or a sequence of them.

    Returns
    -------
    tuple of str
        The methods, in the order given, each once.
    """
    if isinstance(init_params, str):
        methods, rest = [], init_params
        names = sorted(INIT_METHODS, key=len, reverse=True)  # "k-means++" before "kmeans"
        while rest:
            found = next((m for m in names if rest.startswith(m)), None)
            if found is None:
                break
            methods.append(found)
            rest = rest[len(found) :]
            if rest.startswith("+") and len(rest) > 1:
                rest = rest[1:]
            elif rest:
                found = None
                break
        if rest or not methods:
            methods = None
    elif isinstance(init_params, Iterable):
        methods = list(init_params)
        if not methods or not all(isinstance(m, str) and m in INIT_METHODS for m in methods):
            methods = None
    else:
        methods = None
    if methods is None or len(set(methods)) != len(methods):
        raise ValueError(
            f"Invalid value for 'init_params': {init_params!r}; expected one of "
            f"{INIT_METHODS} or several of them joined by '+' (each once), e.g. 'hc+emem'."
        )
    return tuple(methods)


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
def _weighted_variances(X: np.ndarray, sw: np.ndarray) -> np.ndarray:
    """Each feature's weighted variance, in row blocks."""
    total = float(sw.sum())
    mean = (sw @ X) / total
    sq = np.zeros(X.shape[1])
    for start in range(0, X.shape[0], 4096):
        xb = X[start : start + 4096] - mean
        sq += sw[start : start + 4096] @ (xb * xb)
    return sq / total


def _hc_is_deterministic(sw: np.ndarray) -> bool:
    """Whether hc's tree uses every row as it is (no subsample): then every
    restart would build the same tree (see :mod:`fastem._hc`, "Which rows")."""
    return bool(np.all(sw == np.round(sw)) and sw.sum() <= DEFAULT_MAX_ROWS)


def _start_plan(methods: tuple[str, ...], n_init: int, sw: np.ndarray) -> list[tuple[int, str]]:
    """``(restart, method)`` of every start each candidate is fitted from."""
    plan = []
    for restart in range(n_init):
        for method in methods:
            if method == "hc" and restart > 0 and _hc_is_deterministic(sw):
                continue  # the same tree again
            plan.append((restart, method))
    return plan


def _start_parameters(
    stats: Stats, covariance_types: list[str], reg_covar: float, eps: float
) -> dict[str, tuple | Exception]:
    """Covariance model -> (weights, means, precisions) of its M-step on ``stats``,
    or the error; the diagonal models see the diagonal second moments."""
    if stats.sxx.ndim == 3:
        diag_stats = replace(stats, sxx=np.diagonal(stats.sxx, axis1=1, axis2=2).copy())
    else:
        diag_stats = stats
    per_type: dict[str, tuple | Exception] = {}
    for ct in covariance_types:
        source = diag_stats if _is_diagonal(ct) else stats
        try:
            # state={}: EVE/VVE take a few orientation sweeps (a generalized M-step), as
            # in EM; a start needs a valid structured point, not the exact M-step, whose
            # sweeps can run into the thousands on degenerate statistics
            weights, means, _, prec_chol = m_step(source, ct, reg_covar, eps, state={})
            per_type[ct] = (weights, means, precisions_from_cholesky(prec_chol, ct))
        except _FIT_ERRORS as exc:
            per_type[ct] = exc
    return per_type


def degenerate_fit(model: GaussianMixture, n_rows: float, variances: np.ndarray) -> bool:
    """Whether a fitted mixture is a degenerate (spurious) optimum.

    Degenerate: a component carries fewer rows (``weights_ * n_rows``) than its
    own covariance parameters need: ``d + 1`` where each component has a free
    shape and orientation (VVV, EVV), 2 where its volume or shape is its own
    (VII, VEI, EVI, VVI, VEE, EVE, VVE, VEV: one row leaves them no scatter),
    and 1 where volume and shape are shared (EII, EEI, EEE, EEV: a component's
    rows set only its mean and orientation, so a small one is a proper, bounded
    optimum, which mclust reports too); or a covariance's smallest eigenvalue,
    in units of the features' ``variances``, is below 1e-5 (collapsed onto a
    subspace, which a small ``reg_covar`` allows on discretised data). The row
    counts are ``fastem._init.degenerate``'s (for the starts of
    ``init_params="best"``) but for the shared-volume-and-shape models. Such
    optima have an unbounded likelihood (or, with ``reg_covar``, one bounded only
    by it): they win on it without fitting the data better, so
    :func:`select_model` uses this rule both between a candidate's starts and
    between candidates (a degenerate candidate is ranked after the proper ones;
    mclust reports such cells NA, its EM stopping on the singular covariance).
    """
    d = model.means_.shape[1]
    name = canonical_model(model.covariance_type)
    if name in ("VVV", "EVV"):
        need = d + 1
    elif name.startswith("EE") or name == "EII":
        need = 1
    else:
        need = 2
    if float(np.min(model.weights_)) * n_rows < need:
        return True
    eps = float(np.finfo(np.float64).eps)
    scale = 1.0 / np.sqrt(np.maximum(np.asarray(variances, dtype=np.float64), eps))
    cov = np.asarray(model.covariances_, dtype=np.float64)
    shape = layout(model.covariance_type)
    if shape in ("full", "tied"):
        cov = cov if cov.ndim == 3 else cov[None]
        lam = min(float(np.linalg.eigvalsh(c * np.outer(scale, scale)).min()) for c in cov)
    elif shape == "diag":
        lam = float((cov * scale**2).min())
    else:
        lam = float(cov.min() * (scale**2).min())
    return lam < 1e-5


def _keep_and_score(cell_fits, n_rows, variances, X, sw, weighted):
    """The candidate's kept fit among its starts and its criteria: ``(model,
    scores, None)``, ``(None, None, exc)`` if scoring failed, or ``(None, None,
    None)`` if no start is kept."""
    model = _keep(cell_fits, n_rows, variances)
    if model is None:
        return None, None, None
    try:
        scores = _criteria(model, X, sw, weighted)
    except _FIT_ERRORS as exc:
        return None, None, exc
    # Flagged, not dropped: the row keeps its scores and ranks after the proper ones.
    scores["degenerate"] = bool(degenerate_fit(model, n_rows, variances))
    return model, scores, None


def _fill_row(row: dict, scores: dict, model: GaussianMixture, done: set) -> None:
    """A candidate's table row from its kept fit (``done``: ids of the fits run
    to the final settings)."""
    row.update(
        scores,
        converged=bool(model.converged_),
        n_iter=int(model.n_iter_),
        init=model.init_params,
        refined=id(model) in done,
    )


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
    covariance_types: str | Iterable[str] = DEFAULT_COVARIANCE_TYPES,
    *,
    criterion: str = "bic",
    sample_weight=None,
    n_init: int = 1,
    init_params: str | Iterable[str] = DEFAULT_INIT,
    random_state=None,
    refine: str = "contenders",
    hc_use: str = "SVD",
    **params,
) -> ModelSelection:
    """Fit a grid of Gaussian mixtures and pick the best by an information criterion.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The data, passed to each candidate's ``fit`` as is (float32 stays float32).
    n_components : int or iterable of int, default=range(1, 10)
        Numbers of components to try; each must be at most ``n_samples``.
    covariance_types : str or iterable of str, default='all'
        Covariance models to try: ``"all"`` (mclust's 14: EII, VII, EEI, VEI,
        EVI, VVI, EEE, VEE, EVE, VVE, EEV, VEV, EVV, VVV; with one feature
        only EII and VII, which the others equal there), or any subset of
        them (any case), or scikit-learn's names 'spherical', 'diag', 'tied'
        and 'full' (aliases of VII, VVI, EEE and VVV, fitted as scikit-learn
        fits them). The default is all 14, as in mclust: the criterion, not a
        prior guess, decides which constraints the data support. Restrict the
        list to save time: EVE and VVE iterate their M-step and cost most at
        large ``n_features``.
    criterion : {'bic', 'aic', 'icl'}, default='bic'
        What ranks the candidates (lower is better). ``BIC = -2 log L + p log n``
        and ``AIC = -2 log L + 2 p``, as :meth:`GaussianMixture.bic` and
        :meth:`GaussianMixture.aic`, with ``p`` mclust's parameter count
        (``nMclustParams``). ``ICL = BIC - 2 sum_i log z_{i, c_i}``, the
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
        mclust's sign (larger is better) is available in the output:
        ``selection.to_text(sign="mclust")``, ``selection.grid(sign="mclust")``.
    sample_weight : array-like of shape (n_samples,), default=None
        Row weights, passed to every fit. With weights, ``log L`` is the weighted
        log-likelihood, ``n`` the sum of the weights and ICL's sum is weighted
        too (an integer weight counts as that many repeated rows), so the
        criteria then differ from
        :meth:`GaussianMixture.bic`, which ignores weights.
    n_init : int, default=1
        Rounds of shared starts (see the module documentation); each candidate
        keeps its fit with the highest lower bound. On at most 2,000 rows the hc
        tree is deterministic and built once, so ``n_init`` repeats only the
        random starts (emEM's, k-means', ...).
    init_params : str or sequence of str, default='hc+emem'
        The shared starts: ``"hc"`` (mclust's: one hierarchical clustering tree
        cut at every ``K``), any other :class:`GaussianMixture` start
        (``"kmeans"``, ``"k-means++"``, ``"random"``, ``"random_from_data"``,
        ``"emem"``, ``"best"``, ``"smem"``), or several joined by ``+``: every candidate is
        then fitted from each and keeps its best fit (a degenerate fit loses to
        a proper one). The default fits each candidate from the hc tree's cut
        and from emEM's best short run (run in the 'full' model). emEM's short runs are
        shared too: they run the 'full' model (the 'diag' one when every model
        searched is diagonal) once per ``K`` and restart; so do ``"best"``'s
        and ``"smem"``'s (its split-and-merge search then runs in that model).
    random_state : int, RandomState, Generator or None, default=None
        Seed of the initializations; also given to every candidate.
    refine : {'contenders', 'all'}, default='contenders'
        Which candidates are fitted to the final settings (``tol``,
        ``stopping``, ``max_iter``: by default to their maximum). 'all': every
        candidate, each fitted once (the former behaviour). 'contenders': two
        stages. First every start of every candidate is screened: fitted until
        Aitken's predicted remaining gain of the average log-likelihood is below
        :data:`SCREEN_TOL` (1e-5), or for at most :data:`SCREEN_MAX_ITER` (200)
        passes. Then, best bound first, every candidate that could still be
        among the best :data:`N_CONTENDERS` (3) continues warm from its screened
        fit (same acceleration, the passes ``max_iter`` leaves) to the final
        settings, until none can: a candidate is left screened when its
        criterion minus twice the most its log-likelihood is taken to gain
        (:data:`SCREEN_SAFETY` = 100 times Aitken's prediction, or for a fit
        still climbing at the pass limit its recent gain per pass times the
        passes left; at least :data:`SCREEN_MIN_GAIN` = 50) is above the third
        best value, which can only fall.
        The best three (so the selected model) are thus fitted to the final
        settings; ``table`` rows say which candidates were ``refined``, and
        :meth:`ModelSelection.to_text` marks the others ``~``. No local rule
        bounds a fit that later leaves a plateau: docs/selection.md ("Two
        stages") has the measurement. Two stages are used only with
        ``stopping="aitken"`` and ``tol`` below :data:`SCREEN_TOL` (as the
        defaults); otherwise every candidate is fitted once.
    hc_use : {'SVD', 'VARS', 'STD'}, default='SVD'
        The data the ``"hc"`` tree is built on, mclust's ``hcUse``
        (:func:`fastem._hc.hc_transform`): 'SVD' (mclust's default since 5.3:
        scaled, projected on the singular vectors, partially whitened), 'VARS'
        (the variables as given: mclust 5.0-5.2's default, so its published
        results of that time), 'STD' (each variable centred and scaled).
    **params
        Other :class:`GaussianMixture` parameters (``tol``, ``reg_covar``,
        ``max_iter``, ``acceleration``, ``stopping``, ``backend``,
        ``n_threads``, ...), the same for every candidate. Those of
        :data:`DEFAULT_FIT_SETTINGS` default to its values (SQUAREM, Aitken
        stopping at ``tol=1e-8``, ``max_iter=1000``: fits that reach their
        maximum) rather than :class:`GaussianMixture`'s; pass
        ``**SCIKIT_LEARN_SETTINGS`` for k-means starts and scikit-learn's
        settings. ``covariance_type``, ``weights_init``, ``means_init``,
        ``precisions_init`` and ``warm_start`` are set by select_model and may
        not be given.

    Returns
    -------
    selection : ModelSelection
        ``best_``, ``best_params_``, ``criterion``, ``table`` (one row per
        candidate), ``models_``, ``grid()``, ``to_text()``.

    Raises
    ------
    ValueError
        On invalid input (before anything is fitted): an unknown criterion,
        covariance model or start, a non-positive or too large number of
        components, bad ``X``, weights or parameters; or when every candidate
        fails.
    TypeError
        On a parameter :class:`GaussianMixture` does not have.

    Notes
    -----
    A candidate that cannot be fitted (typically a singular covariance: too many
    components for the data) is reported in the table with its error, not
    raised, unless every candidate fails. A degenerate candidate
    (:func:`degenerate_fit`: say a component collapsed onto one row, which
    ``reg_covar`` keeps finite and mclust reports as NA) keeps its scores, flagged
    ``degenerate`` in the table and ``!`` in the text, but is ranked after the
    proper ones and chosen only when every candidate is degenerate (with a
    warning): on iris, VEE with 9 components reaches such an optimum and would
    otherwise beat mclust's choice, VEV with 2. The criteria of a candidate come from
    one pass over X in row blocks; the (n_samples, n_components) array of
    responsibilities is never formed.
    """
    _check_criterion(criterion)
    ks = _check_components(n_components)
    for name, why in _RESERVED.items():
        if name in params:
            raise ValueError(f"select_model does not take {name!r}: {why}.")
    methods = check_init(init_params)
    if hc_use not in HC_TRANSFORMS:
        raise ValueError(f"hc_use must be one of {HC_TRANSFORMS}, got {hc_use!r}")
    n_init = check_positive_int(n_init, "n_init")
    params = {**DEFAULT_FIT_SETTINGS, **params}
    if refine not in REFINE:
        raise ValueError(f"refine must be one of {REFINE}, got {refine!r}")
    # Two stages only where the screen is looser than the final settings and its
    # Aitken prediction bounds what a screened fit can still gain.
    two_stage = (
        refine == "contenders"
        and params["stopping"] == "aitken"
        and 0 <= params["tol"] < SCREEN_TOL
        and params["max_iter"] > 0
    )
    screen = {"tol": SCREEN_TOL, "max_iter": min(params["max_iter"], SCREEN_MAX_ITER)}
    # NaN passes through: whether missing values are allowed is the estimator's call.
    # A DataFrame's string column names go to every fitted candidate, as a fit on it
    # records them.
    names = string_column_names(X)
    X = check_array(X, allow_nan=True, min_samples=2, estimator_name="select_model")
    n, d = X.shape
    types = check_covariance_types(covariance_types, d)
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
        ct: GaussianMixture(
            1, covariance_type=ct, random_state=random_state, init_params=methods[0], **params
        )
        for ct in types
    }  # TypeError here for an unknown parameter
    for probe in probes.values():
        probe._check_parameters(d)
    probe = probes[types[0]]
    backend_name = backends.resolve_backend_name(probe.backend)  # an unavailable one fails now
    weighted = sample_weight is not None
    plan = _start_plan(methods, n_init, sw)
    # emEM's short runs, shared by every model: the most flexible family searched.
    short_run_type = "diag" if all(_is_diagonal(ct) for ct in types) else "full"
    eps = float(np.finfo(X.dtype).eps)
    # The starts come from complete rows: with missing values, as GaussianMixture
    # initializes, from X with NaN filled by column means and rows with nothing
    # observed weighted 0 (EM itself then uses the observed values only).
    X_init, sw_init = X, sw
    missing = np.isnan(X)
    if missing.any():
        sw_init = np.where(missing.all(axis=1), 0.0, sw)
        X_init = fill_with_column_means(X, sw)
    kernels = backends.get_backend(backend_name)
    n_rows = float(sw_init.sum())  # an integer weight counts as that many rows
    variances = _weighted_variances(X_init, sw_init)
    hc_starts: dict[int, dict[int, Stats]] = {}
    with limit_threads(backend_name, probe.n_threads):
        for restart, method in plan:
            if method == "hc":  # one tree per restart serves every K and model
                hc_starts[restart] = hc_stats_by_k(X_init, sw_init, ks, rng, full=True, use=hc_use)

    table: list[dict] = []
    models: dict[tuple[int, str], GaussianMixture] = {}
    # Every start's fit of every candidate, kept for stage 2: (fit, degenerate or None).
    fits: list[list[list]] = []
    done: set[int] = set()  # ids of the fits run to the final settings
    n_candidates = len(ks) * len(types)
    fit_params = {**params, **screen} if two_stage else params
    for k in ks:
        starts: list[tuple[str, dict[str, tuple | Exception]]] = []
        for restart, method in plan:
            if method == "hc":
                stats = hc_starts[restart][k]
            else:
                with limit_threads(backend_name, probe.n_threads):
                    stats = initial_stats(
                        X_init, sw_init, k, method, rng, kernels, full=short_run_type == "full",
                        covariance_type=short_run_type, reg_covar=probe.reg_covar,
                    )  # fmt: skip
            starts.append((method, _start_parameters(stats, types, probe.reg_covar, eps)))
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
                "init": None,
                "error": None,
                "refined": None,
                "degenerate": None,
            }
            error = None
            cell_fits: list[list] = []
            for restart, (method, start) in enumerate(starts):
                if isinstance(start[ct], Exception):
                    error = error or start[ct]
                    continue
                weights, means, precisions = start[ct]
                emit(
                    "candidate_start", candidate=candidate, n_candidates=n_candidates,
                    restart=restart, n_restarts=len(starts),
                )  # fmt: skip
                fitted = GaussianMixture(
                    k,
                    covariance_type=ct,
                    weights_init=weights,
                    means_init=means,
                    precisions_init=precisions,
                    init_params=method,  # unused (the start is given): says which it was
                    random_state=random_state,
                    **fit_params,
                )
                try:
                    _fit_quietly(fitted, X, sample_weight)
                except _FIT_ERRORS as exc:
                    error = error or exc
                    continue
                cell_fits.append([fitted, None, restart])
                if not two_stage or fitted.n_iter_ >= params["max_iter"]:
                    # A screened fit that used every pass of max_iter is its full fit
                    # already: the path does not depend on tol, only where it stops.
                    fitted.set_params(tol=params["tol"])
                    done.add(id(fitted))
            model, scores, exc = _keep_and_score(cell_fits, n_rows, variances, X, sw, weighted)
            error = exc or error
            if model is None:
                row["error"] = _message(error) if error is not None else "no start succeeded"
            else:
                _fill_row(row, scores, model, done)
                models[(k, ct)] = model
            fits.append(cell_fits)
            table.append(row)

    if two_stage:
        _refine_contenders(
            table, fits, models, done, criterion, params, X, sample_weight, sw, weighted,
            n_rows, variances, n_candidates, len(plan),
        )  # fmt: skip

    ranked = _ranking(table, criterion)
    if not ranked:
        first = table[0]
        raise ValueError(
            f"all {len(table)} candidates failed; the first (n_components="
            f"{first['n_components']}, covariance_type={first['covariance_type']!r}): "
            f"{first['error']}"
        )
    best_index = ranked[0]  # a proper candidate if any; ties: the first in table order
    best_row = table[best_index]
    if best_row["degenerate"]:
        warnings.warn(
            f"Every candidate is degenerate (a component on too few rows or a collapsed "
            f"covariance); the best of them (n_components={best_row['n_components']}, "
            f"covariance_type={best_row['covariance_type']!r}) is returned. Consider fewer "
            "components or a larger reg_covar.",
            UserWarning,
            stacklevel=2,
        )
    if names is not None:
        for model in models.values():
            model.feature_names_in_ = names
    best = models[(best_row["n_components"], best_row["covariance_type"])]
    if not best.converged_ and best.max_iter > 0:
        warnings.warn(
            f"The selected model (n_components={best_row['n_components']}, covariance_type="
            f"{best_row['covariance_type']!r}) did not converge; consider raising max_iter.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return ModelSelection(best, best_index, criterion, table, models)


def _keep(cell_fits: list[list], n_rows: float, variances: np.ndarray) -> GaussianMixture | None:
    """The fit a candidate keeps among its starts' fits (``[fit, degenerate, restart]``;
    ``degenerate`` is filled in on demand): a degenerate fit loses to a proper
    one; then the higher lower bound wins, the first of equal ones as in n_init."""
    if len(cell_fits) > 1:
        for pair in cell_fits:
            if pair[1] is None:
                pair[1] = degenerate_fit(pair[0], n_rows, variances)
    best = None
    for pair in cell_fits:
        key = (not pair[1], pair[0].lower_bound_)
        if best is None or key > (not best[1], best[0].lower_bound_):
            best = pair
    return None if best is None else best[0]


def _continue_fit(model: GaussianMixture, params: dict, X, sample_weight, done: set) -> None:
    """Continue a screened fit from where it stopped to the final settings (warm:
    same acceleration, the remaining passes of ``max_iter``); its ``n_iter_`` and
    ``lower_bounds_`` then cover both stages, and its parameters are the final
    settings again (``warm_start`` off)."""
    n_screen, bounds = int(model.n_iter_), list(model.lower_bounds_)
    accepted = model.n_extrapolations_accepted_
    rejected = model.n_extrapolations_rejected_
    left = int(params["max_iter"]) - n_screen
    if left > 0:
        model.set_params(warm_start=True, tol=params["tol"], stopping=params["stopping"],
                         max_iter=left)  # fmt: skip
        try:
            _fit_quietly(model, X, sample_weight)
        finally:
            model.set_params(warm_start=False, max_iter=params["max_iter"])
        model.n_iter_ = n_screen + int(model.n_iter_)
        model.lower_bounds_ = bounds + list(model.lower_bounds_)
        model.n_extrapolations_accepted_ += accepted
        model.n_extrapolations_rejected_ += rejected
    else:
        model.set_params(tol=params["tol"], stopping=params["stopping"])
    done.add(id(model))


def _gain_bound(model: GaussianMixture, n_rows: float, done: set, max_iter: int) -> float:
    """What a screened fit's total log-likelihood is taken to gain at most by
    continuing to the final settings; 0 for a fit already there.

    A fit the screen stopped (Aitken's predicted remaining gain below
    :data:`SCREEN_TOL` per unit of weight): :data:`SCREEN_SAFETY` times that
    prediction. A fit still climbing at :data:`SCREEN_MAX_ITER` passes: also at
    least its mean gain per pass over the last :data:`SCREEN_WINDOW` passes
    times the passes ``max_iter`` leaves, the most it could gain if its gains
    stopped shrinking. Never less than :data:`SCREEN_MIN_GAIN` in all. Neither
    rule bounds a fit that later leaves a plateau or collapses a component onto
    a few rows; the allowances are measured (docs/selection.md, "Two stages").
    """
    if id(model) in done:
        return 0.0
    per_row = SCREEN_SAFETY * SCREEN_TOL
    if not model.converged_:
        trace = model.lower_bounds_
        window = min(SCREEN_WINDOW, len(trace) - 1)
        slope = (trace[-1] - trace[-1 - window]) / window if window > 0 else math.inf
        per_row = max(per_row, (max_iter - model.n_iter_) * slope)
    return max(per_row * n_rows, SCREEN_MIN_GAIN)


def _refine_contenders(
    table, fits, models, done, criterion, params, X, sample_weight, sw, weighted, n_rows,
    variances, n_candidates, n_restarts,
) -> None:  # fmt: skip
    """Stage 2: continue the screened candidates that could still be among the best
    :data:`N_CONTENDERS` to the final settings, best bound first, until no other can.

    A candidate's criterion can only fall as its fit continues (the log-likelihood
    does not decrease), and by at most ``2 * _gain_bound``: its stage-1 value
    minus that is a lower bound ``L``. The threshold ``T`` is the
    ``N_CONTENDERS``-th best of the values that can only fall further (final ones,
    and for BIC/AIC the screened ones; ICL, not monotone, counts final values only
    and bounds a screened candidate by its BIC bound, as ICL >= BIC). A candidate
    with ``L > T`` cannot enter the best ``N_CONTENDERS``; the others are refined.
    """
    monotone = criterion != "icl"
    max_iter = int(params["max_iter"])
    base = "bic" if criterion == "icl" else criterion
    bounds: dict[int, float] = {}
    for i, row in enumerate(table):
        if row["error"] is not None or all(id(f) in done for f, *_ in fits[i]):
            continue
        # The most any of its starts' fits could reach; the kept fit's criterion
        # was computed after its last M-step, a little above its lower bound.
        reach = max(f.lower_bound_ * n_rows + _gain_bound(f, n_rows, done, max_iter)
                    for f, *_ in fits[i])  # fmt: skip
        model = models[(row["n_components"], row["covariance_type"])]
        reach = max(reach, row["log_likelihood"] + _gain_bound(model, n_rows, done, max_iter))
        penalty = row[base] + 2.0 * row["log_likelihood"]
        bounds[i] = penalty - 2.0 * reach
    while bounds:
        # Degenerate candidates are not chosen while a proper one exists: they do not
        # set the threshold (leaving them out can only refine more candidates).
        values = [
            row[criterion]
            for i, row in enumerate(table)
            if row["error"] is None and (row["refined"] or monotone) and not row["degenerate"]
        ]
        values = sorted(v for v in values if v is not None and not math.isnan(v))
        threshold = values[N_CONTENDERS - 1] if len(values) >= N_CONTENDERS else math.inf
        i = min(bounds, key=bounds.get)
        if bounds[i] > threshold:
            break
        del bounds[i]
        row = table[i]
        key = (row["n_components"], row["covariance_type"])
        cell_fits = fits[i]
        kept = models[key]
        failed = None
        # The kept fit first: another start's is then judged against its final value.
        for pair in sorted(cell_fits, key=lambda pair: pair[0] is not kept):
            fit = pair[0]
            if id(fit) in done:
                continue
            if fit is not kept:
                # Another start's fit is continued too if it could still overtake.
                reach = fit.lower_bound_ * n_rows + _gain_bound(fit, n_rows, done, max_iter)
                if reach < kept.lower_bound_ * n_rows and not degenerate_fit(
                    kept, n_rows, variances
                ):
                    continue
            # The same candidate and restart numbers as its screen: progress shows it again.
            emit(
                "candidate_start", candidate=i, n_candidates=n_candidates, restart=pair[2],
                n_restarts=n_restarts, refine=True,
            )  # fmt: skip
            try:
                _continue_fit(fit, params, X, sample_weight, done)
            except _FIT_ERRORS as exc:
                failed = failed or exc
                cell_fits.remove(pair)
        for pair in cell_fits:
            pair[1] = None  # degeneracy is judged again on the continued fits
        model, scores, exc = _keep_and_score(cell_fits, n_rows, variances, X, sw, weighted)
        failed = exc or failed
        if model is None:
            row.update(bic=None, aic=None, icl=None, log_likelihood=None, converged=None,
                       n_iter=None, init=None, refined=None, degenerate=None,
                       error=_message(failed))  # fmt: skip
            models.pop(key, None)
            continue
        _fill_row(row, scores, model, done)
        models[key] = model
