"""The HMM estimator base: Baum-Welch loop, decoding, scoring and sampling.

Emission models subclass :class:`BaseHMM` and provide the emission
log-densities, their sufficient statistics, their M-step and initialization.
The fit loop is hmmlearn's (:class:`ConvergenceMonitor`, ``params`` and
``init_params``, the log-likelihood before each M-step in ``monitor_.history``)
so that a fit from the same initial parameters gives hmmlearn's model.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from dataclasses import dataclass

import numpy as np

from .._base import ESTIMATOR_BASES
from .._em import METHODS, STOPPING_RULES
from .._missing import has_nan
from .._threads import limit_threads
from ..exceptions import NotFittedError
from ._backend import HMMKernels, get_hmm_kernels
from ._prior import log_prior_function

_log = logging.getLogger(__name__)
DECODER_ALGORITHMS = ("viterbi", "map")
IMPLEMENTATIONS = ("log", "scaling")


class ConvergenceMonitor:
    """Record the log-likelihood of each Baum-Welch iteration and decide when to stop.

    Same attributes and rule as hmmlearn's: converged when ``iter == n_iter``
    or the last gain is below ``tol``.

    Parameters
    ----------
    tol : float
        Stop when the log-likelihood gains less than this.
    n_iter : int
        Maximum number of iterations.
    verbose : bool
        Print one line per iteration to stderr.

    Attributes
    ----------
    history : deque
        Log-likelihood (log-posterior with priors not included, as hmmlearn)
        at the parameters each M-step started from.
    objective_history : list of float
        The objective the M-step ascends, ``log-likelihood + log prior`` (see
        :mod:`fastem.hmm._prior`), at the same parameters (fastem extension).
    iter : int
        Iterations done.
    """

    _template = "{iter:>10d} {log_prob:>16.8f} {delta:>+16.8f}"
    _precision = np.finfo(float).eps ** 0.5  # the decrease that counts as one

    def __init__(self, tol: float, n_iter: int, verbose: bool):
        self.tol = tol
        self.n_iter = n_iter
        self.verbose = verbose
        self.history: deque = deque()
        self.objective_history: list[float] = []
        self.iter = 0
        # Set by an accelerated fit or a fastem stopping rule: the driver's verdict.
        self._converged: bool | None = None
        # The settings it was made with: a model's own monitor whose settings were
        # edited since (``model.monitor_.tol = ...``) is used by the next fit, as
        # hmmlearn's fit uses its monitor (see BaseHMM._users_monitor).
        self._made_with = (tol, n_iter, verbose)

    def __repr__(self) -> str:
        # hmmlearn's layout (its tutorial prints ``model.monitor_``): the public
        # attributes sorted, one per line; fastem's objective_history left out.
        attrs = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        attrs.pop("objective_history", None)
        attrs["history"] = list(self.history)
        lines = "".join(f"    {k}={v},\n" for k, v in sorted(attrs.items()))
        return f"{type(self).__name__}(\n{lines})"

    def _reset(self) -> None:
        self.iter = 0
        self.history.clear()
        self.objective_history.clear()
        self._converged = None

    def report(self, log_prob: float) -> None:
        """Record one iteration's log-likelihood (and print it if verbose)."""
        if self.verbose:
            delta = log_prob - self.history[-1] if self.history else np.nan
            print(
                self._template.format(iter=self.iter + 1, log_prob=log_prob, delta=delta),
                file=sys.stderr,
            )
        if self.history and (log_prob - self.history[-1]) < -self._precision:
            _log.warning(  # hmmlearn's message
                "Model is not converging.  Current: %s is not greater than %s. Delta is %s",
                log_prob,
                self.history[-1],
                log_prob - self.history[-1],
            )
        self.history.append(log_prob)
        self.iter += 1

    @property
    def converged(self) -> bool:
        """Whether the EM loop should stop (hmmlearn's rule)."""
        if getattr(self, "_converged", None) is not None:
            return self._converged
        return self.iter == self.n_iter or (
            len(self.history) >= 2 and self.history[-1] - self.history[-2] < self.tol
        )


def _random_state(seed) -> np.random.RandomState:
    """scikit-learn's ``check_random_state``, as hmmlearn uses it: None is NumPy's
    global stream (so ``np.random.seed`` makes a fit or a sample repeatable), an
    int a fresh ``RandomState``, a ``RandomState`` itself."""
    if isinstance(seed, np.random.RandomState):
        return seed
    if seed is None:
        return np.random.mtrand._rand
    if isinstance(seed, (int, np.integer)):
        return np.random.RandomState(seed)
    raise ValueError(f"random_state must be None, an int or a RandomState, got {seed!r}")


def _offsets(lengths, n_samples: int, allow_empty: bool = False) -> np.ndarray:
    """Sequence boundaries (S + 1,) int64 from ``lengths`` (None: one sequence).

    Any shape is read flat, as hmmlearn's ``np.cumsum(lengths)`` reads it: an int
    is one sequence of that length, a column of lengths is a list of them.
    ``allow_empty``: a length may be 0 (the models' methods then drop that
    sequence, :func:`_nonempty`)."""
    if lengths is None:
        lengths = np.array([n_samples])
    lengths = np.ravel(lengths)
    if lengths.size == 0:
        raise ValueError("lengths must be a non-empty 1-D array of sequence lengths")
    if not np.issubdtype(lengths.dtype, np.integer):
        if not np.all(np.mod(lengths, 1) == 0):
            raise ValueError("lengths must be integers")
    lengths = lengths.astype(np.int64)
    if (lengths < (0 if allow_empty else 1)).any():
        raise ValueError("every sequence length must be at least " + ("0" if allow_empty else "1"))
    if int(lengths.sum()) != n_samples:
        raise ValueError(f"lengths sum to {int(lengths.sum())}, but X has {n_samples} samples")
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _nonempty(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The boundaries of the sequences with at least one frame, and the mask of
    those among all (None where every sequence has a frame).

    hmmlearn 0.3.3 runs its forward pass on a zero-length sequence as on any
    other and reads and writes past the end of its empty arrays: its
    ``score`` then adds an arbitrary number, ``"scaling"`` and ``"map"`` raise,
    ``fit`` raises IndexError. An empty sequence has probability 1 and no
    frame to label: fastem leaves it out of every pass (it adds 0 to the
    log-likelihood and nothing to any statistic)."""
    mask = offsets[1:] > offsets[:-1]
    if mask.all():
        return offsets, None
    return np.concatenate([offsets[:-1][mask], offsets[-1:]]), mask


def _seq_weights(sample_weight, n_sequences: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n_sequences)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n_sequences,):
        raise ValueError(
            f"sample_weight must have one weight per sequence ({n_sequences}), got shape {w.shape}"
        )
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError("sample_weight must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError("sample_weight must have a positive sum")
    return w


def _normalize_rows(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """Rows of ``new`` divided by their sums; a row that sums to 0 keeps ``old``'s."""
    new = np.atleast_2d(new)
    s = new.sum(axis=1, keepdims=True)
    if s.min() > 0:  # the usual case (all rows > 0; NaN fails): one division
        return np.divide(new, s, dtype=np.float64)
    ok = s[:, 0] > 0
    out = np.atleast_2d(old).astype(np.float64, copy=True)
    out[ok] = new[ok] / s[ok]
    return out


def _dirichlet_counts(am1, counts: np.ndarray, old: np.ndarray) -> np.ndarray:
    """``max(alpha - 1 + counts, 0)`` with the zeros of ``old`` kept (structural
    zeros); ``am1`` is ``alpha - 1``, None for the flat prior (``alpha = 1``)."""
    new = np.maximum(counts if am1 is None else am1 + counts, 0)
    if old.all():  # no zero to keep (the usual case): no masked copy
        return new
    return np.where(old == 0, 0, new)


class _FitData:
    """What a fit's data gives every Baum-Welch iteration alike (the per-frame
    sequence weights, whether X has a NaN), computed once per fit instead of
    once per iteration. Held by the model only while ``fit`` iterates."""

    __slots__ = ("X", "offsets", "seq_weight", "_row_weight", "_has_nan", "plans", "buffers")

    def __init__(self, X: np.ndarray, offsets: np.ndarray, seq_weight: np.ndarray) -> None:
        self.X, self.offsets, self.seq_weight = X, offsets, seq_weight
        self._row_weight = None
        self._has_nan = None
        # M-step plans: what the fixed hyperparameters give every iteration alike
        self.plans: dict = {}
        # per-iteration (N, K) arrays, made once per fit (``_fit_buffer``)
        self.buffers: dict = {}

    def row_weight(self) -> np.ndarray:
        if self._row_weight is None:
            self._row_weight = np.repeat(self.seq_weight, np.diff(self.offsets))
        return self._row_weight

    def has_nan(self) -> bool:
        if self._has_nan is None:
            self._has_nan = has_nan(self.X)
        return self._has_nan


def _row_weight(model, X, offsets, seq_weight) -> np.ndarray:
    """Each frame's sequence weight: the fit's cached copy when these are the
    arrays the fit iterates on (same objects), else computed."""
    d = getattr(model, "_fit_data", None)
    if d is not None and d.X is X and d.offsets is offsets and d.seq_weight is seq_weight:
        return d.row_weight()
    return np.repeat(seq_weight, np.diff(offsets))


def _x_has_nan(model, X) -> bool:
    """``has_nan(X)``, scanned once per fit for the fit's own X."""
    d = getattr(model, "_fit_data", None)
    if d is not None and d.X is X:
        return d.has_nan()
    return has_nan(X)


def _fit_buffer(model, X, name: str, shape: tuple) -> np.ndarray:
    """``np.empty(shape)``, or within a fit on its own ``X`` the fit's float64
    array ``name``, made once per fit and handed out again every iteration.

    A fresh (N, K) array costs a page fault per 4 KiB on first touch (~1.7 us
    each on the benchmark VM: ~0.5 ms per iteration at N=20,000, K=8); reusing
    one costs none. Only for arrays an iteration consumes before the next one
    asks for the same name (the emission log-densities, the posteriors): what
    is returned to the user is made outside a fit, where this is a fresh array.
    """
    d = getattr(model, "_fit_data", None)
    if d is None or d.X is not X:
        return np.empty(shape)
    a = d.buffers.get(name)
    if a is None or a.shape != shape:
        a = d.buffers[name] = np.empty(shape)
    return a


def _fit_plan(model, key: str, build):
    """``build()``, once per fit (cached for the fit's duration); computed afresh
    outside a fit. For what depends only on hyperparameters, which a fit does
    not change."""
    d = getattr(model, "_fit_data", None)
    if d is None:
        return build()
    try:
        return d.plans[key]
    except KeyError:
        plan = d.plans[key] = build()
        return plan


@dataclass
class _FBResult:
    loglik: np.ndarray  # (S,) per sequence
    gamma: np.ndarray | None  # (N, K); None from a fused E-step
    xi: np.ndarray  # (K, K)
    start: np.ndarray  # (K,)
    logB: np.ndarray | None  # (N, K) emission log-densities the pass used (or None)


class BaseHMM(*ESTIMATOR_BASES):
    """Shared machinery of the HMM estimators.

    fastem's models implement ``_emission_logprob``, ``_emission_stats`` (which
    may reuse the pass's emission log-densities ``logB``),
    ``_emission_mstep``, ``_init_emissions``, ``_check_emissions``,
    ``_validate_X``, ``_generate_sample_from_state`` and
    ``_get_n_fit_scalars_per_param``.

    hmmlearn's extension idiom also works, for inference: a subclass that
    overrides ``_compute_log_likelihood(X)`` (returning the
    (n_samples, n_components) emission log-densities) and, to sample,
    ``_generate_sample_from_state(state, random_state)``, then sets
    ``startprob_`` and ``transmat_``, can ``score``, ``score_samples``,
    ``decode``, ``predict``, ``predict_proba`` and ``sample`` on fastem's
    kernels. ``fit`` raises ``NotImplementedError`` for such a subclass.

    Parameters
    ----------
    n_components : int, default=1
    startprob_prior, transmat_prior : float or array, default=1.0
    algorithm : {"viterbi", "map"}, default="viterbi"
    random_state : int, RandomState or None
    n_iter : int, default=10
    tol : float, default=1e-2
    verbose : bool, default=False
    params, init_params : str, default="st"
    implementation : {"log", "scaling"}, default="log"
        Accepted and ignored (see docs/hmm.md).
    """

    _emission_params = ""
    _emission_attrs: tuple[str, ...] = ()
    # Whether the first restart draws the emissions from a fresh
    # _random_state(random_state), as hmmlearn's CategoricalHMM and PoissonHMM do.
    _reseed_emissions = False

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior=1.0,
        transmat_prior=1.0,
        algorithm: str = "viterbi",
        random_state=None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "st",
        init_params: str = "st",
        implementation: str = "log",
    ) -> None:
        """hmmlearn's ``BaseHMM`` constructor, for a custom-emission subclass
        (see ``_compute_log_likelihood``); fastem's own models have their own."""
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        # A subclass of one of fastem's models that overrides hmmlearn's
        # _compute_log_likelihood hook (hmmlearn's passes all read it): its
        # emissions feed scoring, decoding and sampling here too, through the
        # custom-emission path; super()._compute_log_likelihood(X) still gives
        # the model's own densities. Fitting such a model raises (as for any
        # custom emission model).
        if (
            "_compute_log_likelihood" in cls.__dict__
            and "_emission_logprob" not in cls.__dict__
            and cls._emission_logprob is not BaseHMM._emission_logprob
        ):
            cls._own_emission_logprob = cls._emission_logprob
            cls._emission_logprob = BaseHMM._emission_logprob

    # ------------------------------------------------------------ custom emissions
    # hmmlearn's documented way to add an emission model is to subclass BaseHMM
    # and override _compute_log_likelihood(X) -> (n_samples, n_components) (and
    # _generate_sample_from_state for sampling). fastem supports that for
    # inference: score, score_samples, decode, predict(_proba), sample and the
    # filtered probabilities run on fastem's kernels. Fitting such a model is
    # not supported (hmmlearn's sufficient-statistics hooks are not offered).
    def _emission_logprob(self, kernels, X) -> np.ndarray:
        compute = getattr(self, "_compute_log_likelihood", None)
        if compute is None or type(self)._compute_log_likelihood is BaseHMM._compute_log_likelihood:
            raise NotImplementedError(
                f"{type(self).__name__} defines no emission model: override "
                "_compute_log_likelihood(X) (hmmlearn's hook)"
            )
        logB = np.ascontiguousarray(compute(X), dtype=np.float64)
        if logB.shape != (X.shape[0], self.n_components):
            raise ValueError(
                f"_compute_log_likelihood returned shape {logB.shape}, expected "
                f"{(X.shape[0], self.n_components)}"
            )
        return logB

    def _compute_log_likelihood(self, X) -> np.ndarray:
        """Per-frame emission log-densities ``log p(x_t | z_t = k)``.

        hmmlearn's hook, which code calls on a fitted model to get the emission
        log-likelihoods; here the kernels' values. A custom-emission subclass
        overrides it (see the class docstring).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        own = getattr(type(self), "_own_emission_logprob", type(self)._emission_logprob)
        if own is BaseHMM._emission_logprob:
            raise NotImplementedError(
                f"{type(self).__name__} defines no emission model: override "
                "_compute_log_likelihood(X) (hmmlearn's hook)"
            )
        self._check_emissions()
        X = self._validate_X(X, fitting=False)
        kernels = self._kernels()
        with self._limit_threads(kernels):
            return np.array(own(self, kernels, X), dtype=np.float64)

    def _compute_likelihood(self, X) -> np.ndarray:
        """``exp`` of :meth:`_compute_log_likelihood` (hmmlearn's hook)."""
        return np.exp(self._compute_log_likelihood(X))

    def _validate_X(self, X, fitting: bool) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
        return X

    def _check_emissions(self) -> None:
        """Validate the emission parameters (none for a custom-emission model)."""

    def _emission_packing(self) -> list[tuple[str, str, str, bool]]:
        return []

    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        nc = self.n_components
        return {"s": nc - 1, "t": nc * (nc - 1)}

    def _init_emissions(self, X, offsets, seq_weight, kernels, rs) -> None:
        """Initialize the emission parameters (none for a custom-emission model)."""

    def _generate_sample_from_state(self, state: int, random_state):
        return ()  # hmmlearn's default: a custom model without sampling draws no features

    # ------------------------------------------------------------ validation
    def _kernels(self) -> HMMKernels:
        return get_hmm_kernels(getattr(self, "backend", None))

    def _check_constructor(self) -> None:
        if int(self.n_components) < 1:
            raise ValueError(f"n_components must be at least 1, got {self.n_components}")
        if self.algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"Unknown decoder {self.algorithm!r}")
        self._check_implementation()
        if int(getattr(self, "n_init", 1)) < 1:
            raise ValueError(f"n_init must be at least 1, got {self.n_init}")
        n_threads = getattr(self, "n_threads", None)
        if n_threads is not None and (
            isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer))
            or n_threads < 1
        ):  # fmt: skip
            raise ValueError(f"n_threads must be None or an integer >= 1, got {n_threads!r}")
        # Every scheme the generic driver runs (fastem._em.METHODS): Baum-Welch is
        # one more fixed-point map to it (fastem/hmm/_accel.py).
        if getattr(self, "acceleration", None) not in METHODS:
            raise ValueError(f"acceleration must be one of {METHODS}, got {self.acceleration!r}")
        if getattr(self, "stopping", None) not in (None, *STOPPING_RULES):
            raise ValueError(
                f"stopping must be one of {(None, *STOPPING_RULES)}, got {self.stopping!r}"
            )

    def _check_implementation(self) -> None:
        # Checked by fit and by every scoring path on a fitted model (hmmlearn's
        # score paths fail on an unknown one with a KeyError, its decode ignores it).
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(
                f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}"
            )

    def _limit_threads(self, kernels: HMMKernels):
        """The kernels capped at ``n_threads`` for the body (restored afterwards)."""
        return limit_threads(kernels.name, getattr(self, "n_threads", None))

    def _check_fitted(self) -> None:
        if not hasattr(self, "startprob_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' first."
            )

    def _check_sum_1(self, name: str) -> None:
        p = getattr(self, name)
        if (p < 0).any():  # hmmlearn takes the log of a negative entry: NaN scores
            raise ValueError(f"{name} must be non-negative (got a minimum of {p.min()})")
        s = p.sum(axis=-1)
        if not np.allclose(s, 1):  # hmmlearn's messages
            if s.ndim == 0:
                raise ValueError(f"{name} must sum to 1 (got {s:.4f})")
            if s.ndim == 1:
                raise ValueError(f"{name} rows must sum to 1 (got row sums of {s})")
            raise ValueError(f"{name} must sum to 1 along its last axis (got {s})")

    def _check(self) -> None:
        """Validate the model parameters (shapes, sums) before use."""
        K = self.n_components
        self.startprob_ = np.asarray(self.startprob_, dtype=np.float64)
        if self.startprob_.shape != (K,):
            raise ValueError("startprob_ must have length n_components")
        self._check_sum_1("startprob_")
        self.transmat_ = np.asarray(self.transmat_, dtype=np.float64)
        if self.transmat_.shape != (K, K):
            raise ValueError("transmat_ must have shape (n_components, n_components)")
        self._check_sum_1("transmat_")
        self._check_emissions()

    # ------------------------------------------------------------ passes
    def _forward_backward(
        self, kernels: HMMKernels, X, offsets, seq_weight, logB=None
    ) -> _FBResult:
        if logB is None:
            logB = self._emission_logprob(kernels, X)
        K = self.n_components
        S = offsets.shape[0] - 1
        gamma = _fit_buffer(self, X, "gamma", logB.shape)
        res = _FBResult(np.empty(S), gamma, np.empty((K, K)), np.empty(K), logB)
        kernels.hmm.forward_backward(
            logB, offsets, self.startprob_, self.transmat_, seq_weight,
            res.gamma, res.loglik, res.xi, res.start,
        )  # fmt: skip
        return res

    def _estep(self, kernels: HMMKernels, X, offsets, seq_weight) -> tuple[_FBResult, tuple]:
        """One Baum-Welch E-step: the forward-backward result (its ``loglik``,
        ``xi`` and ``start``) and the emission statistics. Emission models with
        a fused kernel override it (their ``gamma`` and ``logB`` may be None)."""
        fb = self._forward_backward(kernels, X, offsets, seq_weight)
        stats = self._emission_stats(kernels, X, fb.gamma, offsets, seq_weight, logB=fb.logB)
        return fb, stats

    def _prepare(self, X, lengths):
        """``X`` validated and the boundaries of its non-empty sequences."""
        X, offsets, _ = self._prepare_masked(X, lengths)
        return X, offsets

    def _prepare_masked(self, X, lengths):
        """``_prepare``'s, and the mask of the non-empty sequences among all
        (None where none is empty)."""
        self._check_fitted()
        self._check_implementation()
        self._check()
        X = self._validate_X(X, fitting=False)
        offsets, mask = _nonempty(_offsets(lengths, X.shape[0], allow_empty=True))
        return X, offsets, mask

    # ------------------------------------------------------------ fit
    def fit(self, X, lengths=None, sample_weight=None):
        """Estimate the model parameters by Baum-Welch (EM).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            The frames of all sequences, one after the other.
        lengths : array-like of int, shape (n_sequences,), optional
            Length of each sequence (they sum to ``n_samples``); one sequence
            if omitted.
        sample_weight : array-like of shape (n_sequences,), optional
            One non-negative weight per sequence: an integer weight counts as
            that many copies of the sequence (fastem extension).

        Returns
        -------
        self
        """
        if type(self)._emission_logprob is BaseHMM._emission_logprob:
            raise NotImplementedError(
                "fastem fits its own emission models; a model whose emissions come from "
                "an overridden _compute_log_likelihood (hmmlearn's hook) supports "
                "scoring, decoding and sampling only"
            )
        self._check_constructor()
        X = self._validate_X(X, fitting=True)
        offsets, seq_weight = self._fit_sequences(X, lengths, sample_weight)
        kernels = self._kernels()
        n_init = int(getattr(self, "n_init", 1))
        rs = _random_state(self.random_state)
        self._warn_overwritten()
        # Given initial parameters (not in init_params) are the start of every restart.
        given = {name: getattr(self, name) for name in self._param_attrs() if hasattr(self, name)}
        best = None
        with self._limit_threads(kernels):
            best = self._fit_restarts(X, offsets, seq_weight, kernels, n_init, rs, given)
        for name, value in best[1].items():
            setattr(self, name, value)
        # The last M-step's covariances are used by score/decode with hmmlearn's fallback.
        self._floor_singular()
        self._set_fit_monitor(best[2])
        objective = getattr(self.monitor_, "objective_history", [])
        self.objective_history_ = np.asarray(objective, dtype=np.float64)
        self.objective_ = float(objective[-1]) if len(objective) else -np.inf
        return self

    @staticmethod
    def _fit_sequences(X, lengths, sample_weight) -> tuple[np.ndarray, np.ndarray]:
        """The boundaries and weights of the non-empty sequences of a fit."""
        offsets = _offsets(lengths, X.shape[0], allow_empty=True)
        seq_weight = _seq_weights(sample_weight, offsets.shape[0] - 1)
        offsets, mask = _nonempty(offsets)
        if mask is not None:
            seq_weight = seq_weight[mask]
            if seq_weight.sum() <= 0:
                raise ValueError("sample_weight must have a positive sum over non-empty sequences")
        return offsets, seq_weight

    def _fit_restarts(self, X, offsets, seq_weight, kernels, n_init, rs, given):
        best = None
        template = None  # an installed monitor as it was, for the restarts after the first
        if n_init > 1 and self._users_monitor():
            import copy

            template = copy.deepcopy(self.__dict__["_monitor"])
        for restart in range(n_init):
            for name in self._param_attrs():
                if name in given:
                    setattr(self, name, np.array(given[name], copy=True))
                elif hasattr(self, name):
                    delattr(self, name)  # drawn afresh by each restart
            self._initialize(X, offsets, seq_weight, kernels, rs, first=restart == 0)
            self._check()
            self._set_fit_monitor(self._new_monitor(template if restart else None))
            self._fit_data = _FitData(X, offsets, seq_weight)
            try:
                if (
                    getattr(self, "acceleration", None) is None
                    and getattr(self, "stopping", None) is None
                ):
                    self._em_loop(kernels, X, offsets, seq_weight)
                else:
                    from ._accel import run_driver

                    run_driver(self, kernels, X, offsets, seq_weight)
            finally:
                del self._fit_data
            # Keep the restart with the best objective the fit ascends (log-likelihood +
            # log prior; the log-likelihood itself under flat priors).
            objective = self.monitor_.objective_history
            final = objective[-1] if objective else -np.inf
            if best is None or final > best[0]:
                best = (final, {n: getattr(self, n) for n in self._param_attrs()}, self.monitor_)
        return best

    # ------------------------------------------------------------ monitor
    @property
    def monitor_(self) -> ConvergenceMonitor:
        """The :class:`ConvergenceMonitor` of the last fit.

        Before any fit, one built from ``tol``, ``n_iter`` and ``verbose``, as
        hmmlearn's constructor makes. A monitor assigned here (hmmlearn's way to
        install a custom one, e.g. a subclass) is the one ``fit`` uses, reset
        first (a copy per restart with ``n_init``); otherwise each fit builds a
        fresh one from ``tol``, ``n_iter`` and ``verbose``.
        """
        monitor = self.__dict__.get("_monitor")
        if monitor is None:
            monitor = self.__dict__["_monitor"] = ConvergenceMonitor(
                self.tol, self.n_iter, self.verbose
            )
        return monitor

    @monitor_.setter
    def monitor_(self, monitor) -> None:
        self.__dict__["_monitor"] = monitor
        self.__dict__["_monitor_installed"] = True

    def _users_monitor(self) -> bool:
        """Whether ``fit`` reports to the monitor ``monitor_`` holds: one
        assigned to ``monitor_``, or the model's own whose ``tol``, ``n_iter``
        or ``verbose`` the user changed (hmmlearn's fit reuses the monitor its
        constructor made, so such an edit takes effect there). Otherwise a fit
        builds a fresh monitor from the model's ``tol``, ``n_iter`` and
        ``verbose`` (so ``set_params`` takes effect, which hmmlearn's does not
        for a monitor made before)."""
        if self.__dict__.get("_monitor_installed"):
            return True
        monitor = self.__dict__.get("_monitor")
        made_with = getattr(monitor, "_made_with", None)
        return made_with is not None and (monitor.tol, monitor.n_iter, monitor.verbose) != made_with

    def _set_fit_monitor(self, monitor) -> None:
        """Store a monitor made by ``fit`` or ``load`` (not a user-installed one)."""
        self.__dict__["_monitor"] = monitor

    def _new_monitor(self, template=None):
        """The monitor for one restart: the installed one itself (reset), or
        with ``template`` (restarts after the first) a reset copy of it, else a
        fresh one. An installed monitor may be hmmlearn's own class: it gets
        the ``objective_history`` list fastem records."""
        if not self._users_monitor():
            return ConvergenceMonitor(self.tol, self.n_iter, self.verbose)
        if template is None:
            monitor = self.__dict__["_monitor"]
        else:
            import copy

            monitor = copy.deepcopy(template)
        monitor._reset()
        monitor.objective_history = []  # hmmlearn's class has none
        return monitor

    def _em_loop(self, kernels, X, offsets, seq_weight) -> None:
        prior = log_prior_function(self)  # the hyperparameters are fixed during a fit
        monitor = self.monitor_
        log_prior = None  # of the current parameters, where the M-step computed it
        for _ in range(self.n_iter):
            fb, stats = self._estep_floored(kernels, X, offsets, seq_weight)
            loglik = float(seq_weight @ fb.loglik)
            if log_prior is None:
                log_prior = prior(self)
            # the objective the M-step ascends, at the parameters of this E-step
            monitor.objective_history.append(loglik + log_prior)
            log_prior = self._do_mstep(fb, stats)
            self._report_outside_fit(monitor, loglik)
            if monitor.converged:
                break

    def _report_outside_fit(self, monitor, loglik: float) -> None:
        """``monitor.report(loglik)`` with the fit's per-fit state hidden: a
        custom monitor may call the model (``score``, ``predict_proba``) on any
        data, which must then run as outside a fit (fresh arrays, no plans made
        for the fit's own X)."""
        fit_data = self.__dict__.pop("_fit_data", None)
        try:
            monitor.report(loglik)
        finally:
            if fit_data is not None:
                self._fit_data = fit_data

    def _estep_floored(self, kernels, X, offsets, seq_weight):
        """``_estep``; where it fails on a covariance that is not positive
        definite, hmmlearn's fallback (``_floor_singular``) and the E-step again."""
        try:
            return self._estep(kernels, X, offsets, seq_weight)
        except ValueError:
            if not self._floor_singular():
                raise
        return self._estep(kernels, X, offsets, seq_weight)

    def _floor_singular(self) -> bool:
        """Make the covariances usable where they are not positive definite;
        True where something changed (emission models with covariances)."""
        return False

    def _do_mstep(self, fb: _FBResult, stats) -> float | None:
        """The M-step; returns the log prior of the new parameters where it came
        with them (the compiled M-step), else None."""
        # A negative prior - 1 + count is clipped to 0 (hmmlearn); zeros stay zeros
        # (structural zeros of a left-right model); a row with no count at all keeps
        # its previous value instead of becoming 0/0.
        log_prior = self._compiled_mstep(fb, stats)
        if log_prior is not None:
            return log_prior
        start_am1, trans_am1 = _fit_plan(self, "dirichlet", self._dirichlet_plan)
        if "s" in self.params:
            new = _dirichlet_counts(start_am1, fb.start, self.startprob_)
            self.startprob_ = _normalize_rows(new, self.startprob_)[0]
        if "t" in self.params:
            new = _dirichlet_counts(trans_am1, fb.xi, self.transmat_)
            self.transmat_ = _normalize_rows(new, self.transmat_)
        self._emission_mstep(stats)
        return None

    def _dirichlet_plan(self):
        """``alpha - 1`` of the start and transition priors, None where flat."""

        def am1(alpha):
            alpha = np.asarray(alpha)
            return None if alpha.ndim == 0 and alpha == 1 else alpha - 1

        return am1(self.startprob_prior), am1(self.transmat_prior)

    def _compiled_mstep(self, fb: _FBResult, stats) -> float | None:
        """A whole M-step in one compiled call where the model has one: then the
        log prior of the new parameters, else None (nothing done)."""
        return None

    def _init(self, X, lengths=None) -> None:
        """Initialize the parameters from ``X`` as ``fit`` does before its first
        iteration: those in ``init_params`` and those not set.

        hmmlearn's hook with hmmlearn's signature, for code (and hmmlearn's
        tests) that initializes a model without fitting it. It logs the same
        warnings as hmmlearn: a set parameter that ``init_params`` overwrites,
        and fewer data points than free parameters.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int or int, optional
            Sequence lengths (an int is one sequence of that length).
        """
        self._check_constructor()
        X = self._validate_X(X, fitting=True)
        offsets, seq_weight = self._fit_sequences(X, lengths, None)
        kernels = self._kernels()
        self._warn_overwritten()
        with self._limit_threads(kernels):
            self._initialize(X, offsets, seq_weight, kernels, _random_state(self.random_state))

    def _initialize(self, X, offsets, seq_weight, kernels, rs, first: bool = True) -> None:
        """Draw the parameters to initialize; ``first``: the fit's first restart
        (it logs hmmlearn's warning, and may re-seed the emissions)."""
        K = self.n_components
        init = 1.0 / K
        if self._needs_init("s", "startprob_"):
            self.startprob_ = rs.dirichlet(np.full(K, init))
        if self._needs_init("t", "transmat_"):
            self.transmat_ = rs.dirichlet(np.full(K, init), size=K)
        if (
            first
            and self._reseed_emissions
            and not isinstance(self.random_state, np.random.RandomState)
        ):
            # hmmlearn's CategoricalHMM, PoissonHMM and MultinomialHMM draw their
            # emissions from check_random_state(random_state) again: an int seed
            # starts afresh there, so the same seed gives hmmlearn's initial model.
            # Later restarts continue the stream (else every restart would share
            # them). hmmlearn also stores that generator as the random_state
            # parameter (self.random_state = check_random_state(...)), so sample()
            # and a second fit continue its stream: the same here.
            rs = self.random_state = _random_state(self.random_state)
        self._init_emissions(X, offsets, seq_weight, kernels, rs)
        if first:
            # hmmlearn's warning, on the same count (X.size, NaN included).
            per_param = self._get_n_fit_scalars_per_param()
            unknown = sorted(set(self.params) - set(per_param))
            if unknown:  # hmmlearn fails here too (a KeyError on the first such letter)
                raise ValueError(
                    f"params holds {''.join(unknown)!r}, which {type(self).__name__} has "
                    f"no parameter for; its letters are {''.join(per_param)!r}"
                )
            n_fit = sum(per_param[code] for code in self.params)
            if X.size < n_fit:
                _log.warning(
                    "Fitting a model with %d free scalar parameters with only "
                    "%d data points will result in a degenerate solution.",
                    n_fit,
                    X.size,
                )

    # init_params code -> the attribute it initializes (hmmlearn's names).
    _init_attrs = {
        "s": "startprob_", "t": "transmat_", "m": "means_", "c": "covars_",
        "w": "weights_", "e": "emissionprob_", "l": "lambdas_",
    }  # fmt: skip

    def _warn_overwritten(self) -> None:
        """hmmlearn's log warning for each set parameter that ``init_params``
        will overwrite (once per fit, not per restart)."""
        for code, name in self._init_attrs.items():
            if code in self.init_params and hasattr(self, name):
                _log.warning(
                    "Even though the %r attribute is set, it will be overwritten "
                    "during initialization because 'init_params' contains %r",
                    name,
                    code,
                )

    def _needs_init(self, code: str, name: str) -> bool:
        return code in self.init_params or not hasattr(self, name)

    def _param_attrs(self) -> tuple[str, ...]:
        return ("startprob_", "transmat_", *self._emission_attrs)

    def _packing(self) -> list[tuple[str, str, str, bool]]:
        """``(params code, attribute, transform, zeros are structural)`` of each
        parameter array, for the fixed-point driver (see ``_accel``)."""
        return [
            ("s", "startprob_", "simplex", True),
            ("t", "transmat_", "simplex", True),
            *self._emission_packing(),
        ]

    # ------------------------------------------------------------ inference
    def score_samples(self, X, lengths=None) -> tuple[float, np.ndarray]:
        """Log-likelihood of ``X`` and the smoothed state posteriors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int, optional

        Returns
        -------
        log_prob : float
        posteriors : ndarray of shape (n_samples, n_components)
            NaN on the frames of a sequence of probability 0 (log-likelihood
            -inf), whose posteriors are 0/0, as hmmlearn's.
        """
        X, offsets = self._prepare(X, lengths)
        kernels = self._kernels()
        with self._limit_threads(kernels):
            fb = self._forward_backward(kernels, X, offsets, np.ones(offsets.size - 1))
        gamma = fb.gamma
        impossible = fb.loglik == -np.inf
        if impossible.any():  # the kernels leave zeros there
            gamma[np.repeat(impossible, np.diff(offsets))] = np.nan
        return float(fb.loglik.sum()), gamma

    def score_sequences(self, X, lengths=None) -> np.ndarray:
        """Log-likelihood of each sequence (fastem extension).

        Returns
        -------
        log_prob : ndarray of shape (n_sequences,)
        """
        return self._filter(X, lengths)[1]

    def _filter(self, X, lengths) -> tuple[np.ndarray, np.ndarray]:
        """The forward pass: filtered posteriors (n_samples, n_components) and the
        log-likelihood of each sequence."""
        X, offsets, mask = self._prepare_masked(X, lengths)
        kernels = self._kernels()
        with self._limit_threads(kernels):
            logB = self._emission_logprob(kernels, X)
            filt = np.empty_like(logB)
            loglik = np.empty(offsets.size - 1)
            kernels.hmm.forward_filter(logB, offsets, self.startprob_, self.transmat_, filt, loglik)
        if mask is not None:  # an empty sequence: log-likelihood 0
            full = np.zeros(mask.size)
            full[mask] = loglik
            loglik = full
        return filt, loglik

    def score(self, X, lengths=None) -> float:
        """Log-likelihood of ``X`` under the model (summed over sequences)."""
        return float(self.score_sequences(X, lengths).sum())

    def predict_proba(self, X, lengths=None) -> np.ndarray:
        """Smoothed posteriors ``P(z_t | whole sequence)``, shape (n_samples, n_components)."""
        return self.score_samples(X, lengths)[1]

    def predict_filtered_proba(self, X, lengths=None) -> np.ndarray:
        """Filtered (causal) posteriors ``P(z_t | x_1..x_t)`` (fastem extension).

        Each row uses only the frames up to and including its own, as an online
        detector would.

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        return self._filter(X, lengths)[0]

    def decode(self, X, lengths=None, algorithm: str | None = None) -> tuple[float, np.ndarray]:
        """Most likely state sequence.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        lengths : array-like of int, optional
        algorithm : {"viterbi", "map"}, optional
            "viterbi": the jointly most likely path; "map": the most likely
            state of each frame (posterior argmax). Default: ``self.algorithm``.

        Returns
        -------
        log_prob : float
            ``log p(X, states)`` of the returned path, for both algorithms
            (hmmlearn returns a sum of posterior probabilities for "map").
        state_sequence : ndarray of shape (n_samples,)
        """
        algorithm = algorithm or self.algorithm
        if algorithm not in DECODER_ALGORITHMS:
            raise ValueError(f"Unknown decoder {algorithm!r}")
        X, offsets = self._prepare(X, lengths)
        kernels = self._kernels()
        with self._limit_threads(kernels):
            return self._decode(kernels, X, offsets, algorithm)

    def _decode(self, kernels, X, offsets, algorithm):
        logB = self._emission_logprob(kernels, X)
        with np.errstate(divide="ignore"):
            log_start = np.log(self.startprob_)
            log_trans = np.log(self.transmat_)
        if algorithm == "viterbi":
            path = np.empty(X.shape[0], dtype=np.int64)
            logprob = np.empty(offsets.size - 1)
            kernels.hmm.viterbi(logB, offsets, log_start, log_trans, path, logprob)
            return float(logprob.sum()), path
        fb = self._forward_backward(kernels, X, offsets, np.ones(offsets.size - 1), logB=logB)
        path = np.argmax(fb.gamma, axis=1)
        first = np.zeros(X.shape[0], dtype=bool)
        first[offsets[:-1]] = True
        rows = np.arange(X.shape[0])
        joint = logB[rows, path].sum() + log_start[path[first]].sum()
        joint += log_trans[path[:-1], path[1:]][~first[1:]].sum()
        return float(joint), path

    def predict(self, X, lengths=None) -> np.ndarray:
        """Most likely state of each frame, by ``self.algorithm``."""
        return self.decode(X, lengths)[1]

    # ------------------------------------------------------------ sampling
    def sample(self, n_samples: int = 1, random_state=None, currstate: int | None = None):
        """Draw a sequence from the model.

        Parameters
        ----------
        n_samples : int
        random_state : int, RandomState or None
            Defaults to the model's ``random_state``.
        currstate : int, optional
            State of the first sample (else drawn from ``startprob_``).

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        state_sequence : ndarray of shape (n_samples,)
        """
        self._check_fitted()
        self._check()
        rs = _random_state(self.random_state if random_state is None else random_state)
        transmat_cdf = np.cumsum(self.transmat_, axis=1)
        if currstate is None:
            currstate = int((np.cumsum(self.startprob_) > rs.rand()).argmax())
        states = [currstate]
        X = [self._generate_sample_from_state(currstate, rs)]
        for _ in range(n_samples - 1):
            currstate = int((transmat_cdf[currstate] > rs.rand()).argmax())
            states.append(currstate)
            X.append(self._generate_sample_from_state(currstate, rs))
        return np.atleast_2d(X), np.array(states, dtype=int)

    # ------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Save the fitted model to ``path`` in fastem's versioned, pickle-free format.

        Load it back with :func:`fastem.hmm.load` (or :func:`fastem.load`).

        Parameters
        ----------
        path : str or os.PathLike
            The file, exactly as given (no suffix is added); replaced atomically.
        """
        from ._persistence import save_hmm

        save_hmm(self, path)

    # ------------------------------------------------------------ model selection
    def get_stationary_distribution(self) -> np.ndarray:
        """Stationary distribution of the state chain (left eigenvector of eigenvalue 1).

        Needs ``transmat_`` only (as hmmlearn)."""
        if not hasattr(self, "transmat_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance has no transmat_. Call 'fit' first."
            )
        eigvals, eigvecs = np.linalg.eig(np.asarray(self.transmat_, dtype=np.float64).T)
        vec = np.real_if_close(eigvecs[:, np.argmax(eigvals.real)])
        return vec / vec.sum()

    def _n_parameters(self) -> int:
        return int(sum(self._get_n_fit_scalars_per_param().values()))

    def aic(self, X, lengths=None) -> float:
        """Akaike information criterion, ``-2 log L + 2 p`` (lower is better)."""
        return -2 * self.score(X, lengths) + 2 * self._n_parameters()

    def bic(self, X, lengths=None) -> float:
        """Bayesian information criterion, ``-2 log L + p log n`` (lower is better)."""
        return -2 * self.score(X, lengths) + self._n_parameters() * np.log(len(X))
