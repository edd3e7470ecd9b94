"""Baum-Welch on fastem's generic fixed-point driver (:mod:`fastem._em`).

Used when an HMM has an ``acceleration`` (``"squarem"``, ``"anderson"``, ``"qn"``,
``"mpe"``: every scheme of :data:`fastem._em.METHODS`) or a ``stopping`` rule;
plain Baum-Welch with hmmlearn's rule (the default) keeps its own loop.

The driver extrapolates a flat vector of unconstrained coordinates, so that any
finite vector is a valid model:

- probability rows (``startprob_``, ``transmat_`` rows, GMM ``weights_`` rows,
  ``emissionprob_`` rows) as log-probabilities, mapped back by a softmax per
  row (SQUAREM, Anderson); for qn and MPE as the probabilities themselves (rows
  renormalized; a negative entry is infeasible, and an extrapolated entry is
  first cut at a tenth of its value at the last EM point: see
  :data:`SIMPLEX_FRAMES`). Zeros of ``startprob_`` and ``transmat_`` at the
  start of the fit are structural: they are left out of the vector and stay
  exactly zero;
- means as they are;
- full and tied covariances as their Cholesky factors with a log diagonal;
  diagonal and spherical variances and Poisson rates as logs.

Only the parameters the fit updates (``params``) are in the vector; the others
stay as they are. One pass at a point sets the model to it, runs the fit's
E-step (``_estep``: forward-backward and emission statistics, fused where the
model has such a kernel), then the M-step, whose result is the point's image;
the M-step's parameters ride along as the payload, so the fitted model is an
exact M-step result, as in plain EM.

The objective the driver judges points by is the one the M-step ascends: the
weighted log-likelihood plus the log prior of the point's parameters
(:func:`fastem.hmm._prior.log_prior`; the log-likelihood alone when the priors
are flat). Judged by the log-likelihood alone, a Baum-Welch step with priors
can lose, so extrapolations were accepted or rejected against a quantity the
M-step does not ascend (docs/acceleration.md, "Why reference=x1 broke the HMM
driver tests"). fastem's ``reg_covar`` floor is in no objective: with it the
map ascends neither (docs/hmm.md). ``monitor_.history`` keeps the
log-likelihood, per pass, of the best point so far by the objective
(hmmlearn's quantity); ``objective_history_`` the objective itself.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from .._em import Evaluation, StoppingRule, make_stopping_rule, run_fixed_point
from ._prior import log_prior_function

_TINY = np.finfo(np.float64).tiny
# The probability rows' frame per scheme, and how far one extrapolation may shrink a
# probability (a fraction of its value at the last EM point; None: no limit). qn and
# MPE, and any scheme not listed, extrapolate the probabilities themselves: in
# log-probabilities an entry that Baum-Welch sends to zero moves by a constant step
# each pass (a rate of 1, the fixed point at -inf), and their Newton-like steps along
# it lost on nearly every proposal (benchmarks/hmm_convergence.py --quick:
# categorical, 2,475 plain passes to the maximum; qn and MPE > 3,000 in logs, 129 and
# 113 here). An overshoot below zero is cut at a tenth of the EM point's value instead
# of being infeasible (without the cut nearly every proposal there was: 1,707 and
# 1,983 passes). SQUAREM and Anderson keep log rows (docs/hmm.md has both frames).
SIMPLEX_FRAMES: dict[str | None, str] = {None: "log", "squarem": "log", "anderson": "log"}
SHRINK: dict[str | None, float | None] = {}
DEFAULT_SHRINK = 0.1  # where the frame is "prob" and SHRINK has no entry


def _frame(acceleration: str | None) -> tuple[str, float | None]:
    """The probability rows' frame and the shrink limit for ``acceleration``."""
    frame = SIMPLEX_FRAMES.get(acceleration, "prob")
    default = DEFAULT_SHRINK if frame == "prob" else None
    return frame, SHRINK.get(acceleration, default)


class _GainBelowTol(StoppingRule):
    """hmmlearn's rule on consecutive EM steps: the (signed) gain is below ``tol``."""

    def __init__(self, tol: float) -> None:
        super().__init__("absolute", tol)

    def update(self, value: float) -> bool:
        h = self._history
        h.append(float(value))
        if len(h) > 2:
            del h[0]
        if len(h) < 2:
            return False
        self.criterion = h[-1] - h[-2]
        return self.criterion < self.tol


class _Block:
    """One parameter array's slice of the flat vector and its transform."""

    def __init__(
        self, attr: str, kind: str, value: np.ndarray, structural: bool, simplex: str = "log"
    ) -> None:
        self.attr = attr
        self.kind = kind
        self.simplex = simplex
        self.shape = value.shape
        if kind == "simplex":
            rows = value.reshape(-1, value.shape[-1]) if value.ndim else value.reshape(1, -1)
            self.mask = rows > 0 if structural else np.ones(rows.shape, dtype=bool)
            self.size = int(self.mask.sum())
        elif kind == "chol":
            d = value.shape[-1]
            self.tril = np.tril_indices(d)
            self.diag = np.diag_indices(d)
            self.n_mat = int(np.prod(value.shape[:-2], dtype=np.int64))
            self.size = self.n_mat * len(self.tril[0])
        else:
            self.size = int(value.size)

    def pack(self, value: np.ndarray) -> np.ndarray:
        if self.kind == "simplex":
            rows = value.reshape(self.mask.shape)
            if self.simplex == "prob":
                return np.array(rows[self.mask], dtype=np.float64)
            return np.log(np.maximum(rows, _TINY))[self.mask]
        if self.kind == "log":
            return np.log(np.maximum(value, _TINY)).ravel()
        if self.kind == "chol":
            mats = value.reshape(self.n_mat, *value.shape[-2:])
            L = np.linalg.cholesky(mats)
            L[:, self.diag[0], self.diag[1]] = np.log(L[:, self.diag[0], self.diag[1]])
            return L[:, self.tril[0], self.tril[1]].ravel()
        return np.asarray(value, dtype=np.float64).ravel()

    def unpack(self, v: np.ndarray) -> np.ndarray:
        if self.kind == "simplex" and self.simplex == "prob":
            # Probabilities as they are: a negative entry is outside the simplex (the
            # caller sees NaN: infeasible); rows sum to 1 up to rounding.
            p = np.zeros(self.mask.shape)
            p[self.mask] = v
            if (p < 0).any():
                return np.full(self.shape, np.nan)
            p /= p.sum(axis=1, keepdims=True)
            return p.reshape(self.shape)
        if self.kind == "simplex":
            logp = np.full(self.mask.shape, -np.inf)
            logp[self.mask] = v
            logp -= logp.max(axis=1, keepdims=True)
            p = np.exp(logp)
            p /= p.sum(axis=1, keepdims=True)
            return p.reshape(self.shape)
        if self.kind == "log":
            return np.exp(v).reshape(self.shape)
        if self.kind == "chol":
            d = self.shape[-1]
            L = np.zeros((self.n_mat, d, d))
            L[:, self.tril[0], self.tril[1]] = v.reshape(self.n_mat, -1)
            L[:, self.diag[0], self.diag[1]] = np.exp(L[:, self.diag[0], self.diag[1]])
            return np.matmul(L, np.swapaxes(L, -1, -2)).reshape(self.shape)
        return v.reshape(self.shape).copy()


class _Packer:
    """The model's updated parameters <-> one flat float64 vector."""

    def __init__(self, model, simplex: str = "log") -> None:
        self.blocks = [
            _Block(
                attr, kind, np.asarray(getattr(model, attr), dtype=np.float64), structural, simplex
            )
            for code, attr, kind, structural in model._packing()
            if code in model.params
        ]
        self.bounds = np.cumsum([0] + [b.size for b in self.blocks])
        self.simplex = simplex
        spans = zip(self.blocks, self.bounds[:-1], self.bounds[1:], strict=True)
        index = [np.arange(lo, hi) for b, lo, hi in spans if b.kind == "simplex"]
        self.simplex_index = np.concatenate(index) if index else np.empty(0, dtype=np.int64)

    def limit(self, x: np.ndarray, reference: np.ndarray, shrink: float) -> np.ndarray:
        """``x`` with no probability below ``shrink`` times its value at ``reference``."""
        i = self.simplex_index
        if not i.size:
            return x
        x = x.copy()
        if self.simplex == "prob":
            x[i] = np.maximum(x[i], shrink * reference[i])
        else:
            x[i] = np.maximum(x[i], reference[i] + math.log(shrink))
        return x

    def pack(self, model) -> np.ndarray:
        parts = [b.pack(np.asarray(getattr(model, b.attr), dtype=np.float64)) for b in self.blocks]
        return np.concatenate(parts) if parts else np.empty(0)

    def unpack(self, model, x: np.ndarray) -> bool:
        """Set the model to ``x``; False (nothing set) if a value is not finite."""
        values = []
        with np.errstate(over="ignore", invalid="ignore"):
            for b, lo, hi in zip(self.blocks, self.bounds[:-1], self.bounds[1:], strict=True):
                value = b.unpack(x[lo:hi])
                if not np.isfinite(value).all():
                    return False
                values.append(value)
        for b, value in zip(self.blocks, values, strict=True):
            setattr(model, b.attr, value)
        return True


class _BaumWelchProblem:
    """The driver's view of one HMM fit: one pass per point."""

    def __init__(self, model, kernels, X, offsets, seq_weight, packer: _Packer) -> None:
        self.model = model
        self.kernels = kernels
        self.X = X
        self.offsets = offsets
        self.seq_weight = seq_weight
        self.packer = packer
        self.attrs = model._param_attrs()
        # log_prior(model) for the fixed hyperparameters, prepared once (same bits)
        self.log_prior = log_prior_function(model)
        # (objective, log-likelihood, has an image) of the last pass, for the monitor
        self.last: tuple[float, float, bool] | None = None
        self.shrink = _frame(model.acceleration)[1]
        self.em_x: np.ndarray | None = None  # the last EM point visited

    def evaluate(self, x: np.ndarray, extrapolated: bool) -> Evaluation | None:
        if not extrapolated:
            self.em_x = x
        elif self.shrink is not None and self.em_x is not None:
            x = self.packer.limit(x, self.em_x, self.shrink)
        return self._evaluate(x, extrapolated)

    def _evaluate(self, x: np.ndarray, extrapolated: bool) -> Evaluation | None:
        model = self.model
        if not self.packer.unpack(model, x):
            if extrapolated:
                return None
            raise FloatingPointError("Baum-Welch produced non-finite parameters")
        # The fit's own E-step (a fused kernel where the model has one). An EM
        # point gets hmmlearn's singular-covariance fallback as plain Baum-Welch
        # does; an extrapolated one that is not positive definite is infeasible.
        estep = model._estep if extrapolated else model._estep_floored
        try:
            fb, stats = estep(self.kernels, self.X, self.offsets, self.seq_weight)
            loglik = float(self.seq_weight @ fb.loglik)
        except (ValueError, ArithmeticError):
            if extrapolated:
                return None
            raise
        if not math.isfinite(loglik):
            if extrapolated:
                return None
            raise FloatingPointError("the log-likelihood is not finite")
        # the objective at x: log prior of the parameters the pass ran at
        objective = loglik + self.log_prior(model)
        if math.isnan(objective):
            if extrapolated:
                return None
            raise FloatingPointError("the log prior is not a number")
        try:
            model._do_mstep(fb, stats)
            try:
                image = self.packer.pack(model)
            except np.linalg.LinAlgError:
                # An EM image whose covariance is not positive definite (its packing
                # factors it) takes the fallback the next plain E-step would take;
                # where none helps, that E-step raises the model's own error.
                if extrapolated:
                    raise
                if not model._floor_singular():
                    model._estep(self.kernels, self.X, self.offsets, self.seq_weight)
                    raise
                image = self.packer.pack(model)
            if not np.isfinite(image).all():
                raise FloatingPointError("non-finite M-step")
        # ArithmeticError: a compiled M-step divides without NumPy's error model
        # (ZeroDivisionError on an extrapolated point whose state lost its mass)
        except (ValueError, ArithmeticError):  # LinAlgError is a ValueError
            if extrapolated:
                self.last = (objective, loglik, False)
                return Evaluation(x, objective, None)
            raise
        payload = {name: np.array(getattr(model, name), copy=True) for name in self.attrs}
        self.last = (objective, loglik, True)
        return Evaluation(x, objective, image, payload)


def run_driver(model, kernels, X, offsets, seq_weight) -> None:
    """Fit ``model`` (already initialized, with a fresh ``monitor_``) with the driver."""
    packer = _Packer(model, _frame(model.acceleration)[0])
    if model.stopping is None:
        rule: StoppingRule = _GainBelowTol(model.tol)
    else:
        rule = make_stopping_rule(model.stopping, model.tol)
    monitor = model.monitor_
    problem = _BaumWelchProblem(model, kernels, X, offsets, seq_weight, packer)
    best_loglik: list[float] = []  # per pass: the log-likelihood of the best point so far

    def on_pass(n_passes: int, lower_bound: float, change: float) -> None:
        # The driver made the last pass's point the best iff the bound is its
        # objective and its M-step succeeded (it sets the best on >=, so a tie
        # moves it too); else the best point, and its log-likelihood, stay.
        objective, loglik, has_image = problem.last
        if has_image and objective == lower_bound or not best_loglik:
            best_loglik.append(loglik)
        else:
            best_loglik.append(best_loglik[-1])
        if model.verbose:
            print(
                monitor._template.format(iter=n_passes, log_prob=lower_bound, delta=change),
                file=sys.stderr,
            )

    start = {name: np.array(getattr(model, name), copy=True) for name in model._param_attrs()}
    result = run_fixed_point(
        problem,
        packer.pack(model),
        method=model.acceleration,
        max_passes=model.n_iter,
        rule=rule,
        on_pass=on_pass,
    )
    final = result.payload if result.payload is not None else start
    for name, value in final.items():
        setattr(model, name, value)
    monitor.history.extend(best_loglik)
    monitor.objective_history.extend(result.lower_bounds)
    monitor.iter = result.n_passes
    monitor._converged = bool(result.converged)
    monitor.n_extrapolations_accepted = result.n_accepted
    monitor.n_extrapolations_rejected = result.n_rejected
