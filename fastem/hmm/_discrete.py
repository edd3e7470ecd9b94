"""CategoricalHMM and PoissonHMM (hmmlearn-compatible)."""

from __future__ import annotations

import numpy as np

from ._base import BaseHMM, _normalize_rows


def _check_counts(X, name: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
    if X.dtype.kind not in "biu":
        if X.dtype.kind != "f" or not np.all(np.isfinite(X)) or np.any(X != np.round(X)):
            raise ValueError(f"{name} should be integers")
    if (X < 0).any():
        raise ValueError(f"{name} should be nonnegative")
    return np.ascontiguousarray(X, dtype=np.int64)


def _weighted_posteriors(gamma, offsets, seq_weight) -> np.ndarray:
    return gamma * np.repeat(seq_weight, np.diff(offsets))[:, None]


class CategoricalHMM(BaseHMM):
    """Hidden Markov model with categorical (discrete) emissions.

    A drop-in for ``hmmlearn.hmm.CategoricalHMM`` (0.3.3). ``X`` has shape
    (n_samples, 1) and holds symbols 0 .. n_features - 1.

    Parameters
    ----------
    n_components : int, default=1
    startprob_prior, transmat_prior : float or array, default=1.0
        Dirichlet priors of ``startprob_`` and the rows of ``transmat_``.
    emissionprob_prior : float or array, default=1.0
        Dirichlet prior of each row of ``emissionprob_``.
    n_features : int, optional
        Number of symbols; inferred from the data (largest symbol + 1) if None.
    algorithm, random_state, n_iter, tol, verbose, implementation
        As in :class:`~fastem.hmm.GaussianHMM`.
    params, init_params : str, default="ste"
        's' startprob, 't' transmat, 'e' emissionprob.
    n_init : int, default=1
        Restarts, keeping the best final objective (log-likelihood + log prior,
        ``objective_``; fastem extension).
    backend : {"numba", "cython", "numpy"} or None
    n_threads : int or None, default=None
        Cap on the kernels' threads (None: the backend's default). Results are
        bit-identical on any number of threads.
    acceleration : {None, "squarem", "anderson", "qn", "mpe"}, default=None
        None: plain Baum-Welch; else fastem's fixed-point accelerator (docs/hmm.md).
    stopping : {None, "absolute", "relative", "aitken"}, default=None
        None: hmmlearn's rule (an iteration gains less than ``tol``); else
        fastem's rules (docs/acceleration.md) on the objective
        (log-likelihood + log prior).

    Attributes
    ----------
    startprob_, transmat_, monitor_
    objective_history_ : ndarray of shape (n_iter_done,)
        Log-likelihood + log prior of the parameters at each E-step: the
        objective the M-step ascends (fastem extension; docs/hmm.md).
    objective_ : float
        Its last value.
    emissionprob_ : ndarray of shape (n_components, n_features)
    """

    _emission_attrs = ("emissionprob_",)
    _reseed_emissions = True  # hmmlearn's _init re-seeds: the same seed, its model

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior=1.0,
        transmat_prior=1.0,
        *,
        emissionprob_prior=1.0,
        n_features: int | None = None,
        algorithm: str = "viterbi",
        random_state=None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "ste",
        init_params: str = "ste",
        implementation: str = "log",
        n_init: int = 1,
        backend: str | None = None,
        n_threads: int | None = None,
        acceleration: str | None = None,
        stopping: str | None = None,
    ):
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.emissionprob_prior = emissionprob_prior
        self.n_features = n_features
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.n_init = n_init
        self.backend = backend
        self.n_threads = n_threads
        self.acceleration = acceleration
        self.stopping = stopping

    def _validate_X(self, X, fitting: bool) -> np.ndarray:
        X = _check_counts(X, "Symbols")
        if X.shape[1] != 1:
            raise ValueError(f"X must have shape (n_samples, 1), got {X.shape}")
        n_symbols = getattr(self, "emissionprob_", None)
        n_symbols = self.n_features if n_symbols is None else n_symbols.shape[1]
        if n_symbols is not None and X.max() >= n_symbols:
            raise ValueError(
                f"Largest symbol is {X.max()} but the model only emits symbols up to "
                f"{n_symbols - 1}"
            )
        return X

    def _check_emissions(self) -> None:
        self.emissionprob_ = np.atleast_2d(np.asarray(self.emissionprob_, dtype=np.float64))
        if self.n_features is None:
            self.n_features = self.emissionprob_.shape[1]
        if self.emissionprob_.shape != (self.n_components, self.n_features):
            raise ValueError(
                f"emissionprob_ must have shape ({self.n_components}, {self.n_features})"
            )
        self._check_sum_1("emissionprob_")

    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        nc, nf = self.n_components, self.n_features
        return {"s": nc - 1, "t": nc * (nc - 1), "e": nc * (nf - 1)}

    def _emission_packing(self) -> list[tuple[str, str, str, bool]]:
        return [("e", "emissionprob_", "simplex", False)]

    def _emission_logprob(self, kernels, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.ascontiguousarray(np.log(self.emissionprob_)[:, X[:, 0]].T)

    def _emission_stats(self, kernels, X, gamma, offsets, seq_weight, logB=None):
        g = _weighted_posteriors(gamma, offsets, seq_weight)
        obs = np.zeros((self.n_components, self.n_features))
        for k in range(self.n_components):
            obs[k] = np.bincount(X[:, 0], weights=g[:, k], minlength=self.n_features)
        return obs

    def _emission_mstep(self, obs) -> None:
        if "e" in self.params:
            new = np.maximum(np.asarray(self.emissionprob_prior) - 1 + obs, 0)
            self.emissionprob_ = _normalize_rows(new, self.emissionprob_)

    def _init_emissions(self, X, offsets, seq_weight, kernels, rs) -> None:
        if self.n_features is None and not hasattr(self, "emissionprob_"):
            self.n_features = int(X.max()) + 1
        elif self.n_features is None:
            self.n_features = self.emissionprob_.shape[1]
        if self._needs_init("e", "emissionprob_"):
            e = rs.rand(self.n_components, self.n_features)
            self.emissionprob_ = e / e.sum(axis=1, keepdims=True)

    def _generate_sample_from_state(self, state: int, random_state) -> list[int]:
        cdf = np.cumsum(self.emissionprob_[state])
        return [int((cdf > random_state.rand()).argmax())]


class PoissonHMM(BaseHMM):
    """Hidden Markov model with independent Poisson emissions per feature.

    A drop-in for ``hmmlearn.hmm.PoissonHMM`` (0.3.3). ``X`` holds
    non-negative integer counts, shape (n_samples, n_features).

    Parameters
    ----------
    n_components : int, default=1
    startprob_prior, transmat_prior : float or array, default=1.0
    lambdas_prior, lambdas_weight : float or array, default=0.0
        Gamma prior (alpha, beta) on the rates, in hmmlearn's form
        ``lambdas = (alpha + n * ybar_k) / (beta + n)`` with ``n`` the total
        posterior weight (hmmlearn's formula, kept for parity).
    algorithm, random_state, n_iter, tol, verbose, implementation
        As in :class:`~fastem.hmm.GaussianHMM`.
    params, init_params : str, default="stl"
        's' startprob, 't' transmat, 'l' lambdas.
    n_init : int, default=1
    backend : {"numba", "cython", "numpy"} or None
    n_threads : int or None, default=None
        Cap on the kernels' threads (None: the backend's default). Results are
        bit-identical on any number of threads.
    acceleration : {None, "squarem", "anderson", "qn", "mpe"}, default=None
        None: plain Baum-Welch; else fastem's fixed-point accelerator (docs/hmm.md).
    stopping : {None, "absolute", "relative", "aitken"}, default=None
        None: hmmlearn's rule (an iteration gains less than ``tol``); else
        fastem's rules (docs/acceleration.md) on the objective
        (log-likelihood + log prior).

    Attributes
    ----------
    startprob_, transmat_, monitor_
    objective_history_ : ndarray of shape (n_iter_done,)
        Log-likelihood + log prior of the parameters at each E-step: the
        objective the M-step ascends (fastem extension; docs/hmm.md).
    objective_ : float
        Its last value.
    lambdas_ : ndarray of shape (n_components, n_features)

    Notes
    -----
    A state with no posterior weight keeps its rates (hmmlearn gives NaN).
    """

    _emission_attrs = ("lambdas_",)
    _reseed_emissions = True  # hmmlearn's _init re-seeds: the same seed, its model

    def __init__(
        self,
        n_components: int = 1,
        startprob_prior=1.0,
        transmat_prior=1.0,
        lambdas_prior=0.0,
        lambdas_weight=0.0,
        algorithm: str = "viterbi",
        random_state=None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stl",
        init_params: str = "stl",
        implementation: str = "log",
        n_init: int = 1,
        backend: str | None = None,
        n_threads: int | None = None,
        acceleration: str | None = None,
        stopping: str | None = None,
    ):
        self.n_components = n_components
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.lambdas_prior = lambdas_prior
        self.lambdas_weight = lambdas_weight
        self.algorithm = algorithm
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.n_init = n_init
        self.backend = backend
        self.n_threads = n_threads
        self.acceleration = acceleration
        self.stopping = stopping

    def _validate_X(self, X, fitting: bool) -> np.ndarray:
        X = _check_counts(X, "Counts")
        if not fitting and X.shape[1] != self.lambdas_.shape[1]:
            raise ValueError(f"X has {X.shape[1]} features, the model {self.lambdas_.shape[1]}")
        return X

    def _check_emissions(self) -> None:
        self.lambdas_ = np.atleast_2d(np.asarray(self.lambdas_, dtype=np.float64))
        if self.lambdas_.shape[0] != self.n_components:
            raise ValueError("lambdas_ must have shape (n_components, n_features)")
        if (self.lambdas_ < 0).any():
            raise ValueError("lambdas_ must be non-negative")
        self.n_features = self.lambdas_.shape[1]

    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        nc, nf = self.n_components, self.n_features
        return {"s": nc - 1, "t": nc * (nc - 1), "l": nc * nf}

    def _emission_packing(self) -> list[tuple[str, str, str, bool]]:
        return [("l", "lambdas_", "log", False)]

    def _emission_logprob(self, kernels, X) -> np.ndarray:
        # sum_d x log(lam) - lam - log(x!), with 0 * log(0) = 0 (a zero rate emits 0)
        lam = self.lambdas_
        log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, X.max() + 1)))])
        with np.errstate(divide="ignore"):
            log_lam = np.log(lam)
        xf = X.astype(np.float64)
        if (lam > 0).all():
            out = xf @ log_lam.T
        else:
            out = np.zeros((X.shape[0], self.n_components))
            with np.errstate(invalid="ignore"):  # 0 * log(0): NaN, masked to 0
                for k in range(self.n_components):
                    terms = np.where(X > 0, xf * log_lam[k], 0.0)
                    out[:, k] = terms.sum(axis=1)
        out -= lam.sum(axis=1)
        out -= log_fact[X].sum(axis=1)[:, None]
        return np.ascontiguousarray(out)

    def _emission_stats(self, kernels, X, gamma, offsets, seq_weight, logB=None):
        g = _weighted_posteriors(gamma, offsets, seq_weight)
        return g.sum(axis=0), g.T @ X.astype(np.float64)

    def _emission_mstep(self, stats) -> None:
        if "l" not in self.params:
            return
        post, obs = stats
        alphas, betas = self.lambdas_prior, self.lambdas_weight
        n = post.sum()
        with np.errstate(divide="ignore", invalid="ignore"):
            y_bar = obs / post[:, None]
            new = (alphas + n * y_bar) / (betas + n)
        self.lambdas_ = np.where((post > 0)[:, None], new, self.lambdas_)

    def _init_emissions(self, X, offsets, seq_weight, kernels, rs) -> None:
        known = getattr(self, "lambdas_", None)
        if not self._needs_init("l", "lambdas_") and np.shape(known)[-1] != X.shape[1]:
            # kept rates for other data (hmmlearn: "Unexpected number of dimensions"
            # after a fit, else a broadcasting error)
            raise ValueError(f"X has {X.shape[1]} features, lambdas_ has {np.shape(known)[-1]}")
        self.n_features = X.shape[1]
        if self._needs_init("l", "lambdas_"):
            mean, var = X.mean(), X.var()
            self.lambdas_ = rs.gamma(
                shape=mean**2 / var, scale=var / mean, size=(self.n_components, self.n_features)
            )

    def _generate_sample_from_state(self, state: int, random_state) -> np.ndarray:
        return random_state.poisson(self.lambdas_[state])


class MultinomialHMM(BaseHMM):
    """Hidden Markov model with multinomial emissions.

    A drop-in for ``hmmlearn.hmm.MultinomialHMM`` (0.3.3): each frame is a
    vector of non-negative integer counts over ``n_features`` symbols, drawn
    from ``Multinomial(n_trials, emissionprob_[state])`` where ``n_trials`` is
    the frame's total count. (hmmlearn's pre-0.2.8 ``MultinomialHMM`` is
    :class:`CategoricalHMM`.)

    Parameters
    ----------
    n_components : int, default=1
    n_trials : int, array of int or None, default=None
        Number of trials of each frame. None: ``fit`` sets it to the frames'
        row sums, as hmmlearn does; given, every row of ``X`` must sum to it.
        Sampling needs a single value.
    startprob_prior, transmat_prior : float or array, default=1.0
        Dirichlet priors of ``startprob_`` and the rows of ``transmat_``
        (``emissionprob_`` has none: hmmlearn's M-step is the maximum
        likelihood one).
    algorithm, random_state, n_iter, tol, verbose, implementation
        As in :class:`~fastem.hmm.GaussianHMM`.
    params, init_params : str, default="ste"
        's' startprob, 't' transmat, 'e' emissionprob.
    n_init : int, default=1
        Restarts, keeping the best final objective (fastem extension).
    backend : {"numba", "cython", "numpy"} or None
    n_threads : int or None, default=None
    acceleration : {None, "squarem", "anderson", "qn", "mpe"}, default=None
    stopping : {None, "absolute", "relative", "aitken"}, default=None
        As in :class:`~fastem.hmm.CategoricalHMM`.

    Attributes
    ----------
    startprob_, transmat_, monitor_, objective_history_, objective_
    emissionprob_ : ndarray of shape (n_components, n_features)
    n_features : int

    Notes
    -----
    A state with no posterior weight keeps its emission row (hmmlearn gives
    NaN). ``save``/``fastem.load`` keep it, ``n_trials`` included.
    """

    _emission_attrs = ("emissionprob_",)
    _reseed_emissions = True  # hmmlearn's _init re-seeds: the same seed, its model

    def __init__(
        self,
        n_components: int = 1,
        n_trials=None,
        startprob_prior=1.0,
        transmat_prior=1.0,
        algorithm: str = "viterbi",
        random_state=None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "ste",
        init_params: str = "ste",
        implementation: str = "log",
        n_init: int = 1,
        backend: str | None = None,
        n_threads: int | None = None,
        acceleration: str | None = None,
        stopping: str | None = None,
    ):
        self.n_components = n_components
        self.n_trials = n_trials
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
        self.n_init = n_init
        self.backend = backend
        self.n_threads = n_threads
        self.acceleration = acceleration
        self.stopping = stopping

    def _validate_X(self, X, fitting: bool) -> np.ndarray:
        X = _check_counts(X, "Symbol counts")
        known = getattr(self, "emissionprob_", None)
        if known is not None and np.ndim(known) == 2 and X.shape[1] != np.shape(known)[1]:
            raise ValueError(f"X has {X.shape[1]} features, the model {np.shape(known)[1]}")
        if fitting:  # hmmlearn's _check_and_set_n_features: it also sets n_trials
            totals = X.sum(axis=1)
            if self.n_trials is None:
                self.n_trials = totals
            elif not (totals == self.n_trials).all():
                raise ValueError(
                    "Total count for each sample should add up to the number of trials"
                )
        return X

    def _check_emissions(self) -> None:
        self.emissionprob_ = np.atleast_2d(np.asarray(self.emissionprob_, dtype=np.float64))
        self.n_features = self.emissionprob_.shape[1]
        if self.emissionprob_.shape[0] != self.n_components:
            raise ValueError("emissionprob_ must have shape (n_components, n_features)")
        self._check_sum_1("emissionprob_")
        if self.n_trials is None:
            raise ValueError("n_trials must be set")

    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        nc, nf = self.n_components, self.n_features
        return {"s": nc - 1, "t": nc * (nc - 1), "e": nc * (nf - 1)}

    def _emission_packing(self) -> list[tuple[str, str, str, bool]]:
        return [("e", "emissionprob_", "simplex", False)]

    def _emission_logprob(self, kernels, X) -> np.ndarray:
        # log n! - sum_d log x_d! + sum_d x_d log p_d (0 log 0 = 0), n the row's total
        # (scipy's multinomial.logpmf, which hmmlearn calls)
        from math import lgamma

        totals = X.sum(axis=1)
        log_fact = np.array([lgamma(i + 1.0) for i in range(int(totals.max()) + 1)])
        with np.errstate(divide="ignore"):
            log_p = np.log(self.emissionprob_)
        xf = X.astype(np.float64)
        if (self.emissionprob_ > 0).all():
            out = xf @ log_p.T
        else:
            out = np.zeros((X.shape[0], self.n_components))
            with np.errstate(invalid="ignore"):  # 0 * log(0): NaN, masked to 0
                for k in range(self.n_components):
                    out[:, k] = np.where(X > 0, xf * log_p[k], 0.0).sum(axis=1)
        out += (log_fact[totals] - log_fact[X].sum(axis=1))[:, None]
        return np.ascontiguousarray(out)

    def _emission_stats(self, kernels, X, gamma, offsets, seq_weight, logB=None):
        return _weighted_posteriors(gamma, offsets, seq_weight).T @ X.astype(np.float64)

    def _emission_mstep(self, obs) -> None:
        if "e" in self.params:
            self.emissionprob_ = _normalize_rows(obs, self.emissionprob_)

    def _init_emissions(self, X, offsets, seq_weight, kernels, rs) -> None:
        self.n_features = X.shape[1]
        if self._needs_init("e", "emissionprob_"):
            e = rs.rand(self.n_components, self.n_features)
            self.emissionprob_ = e / e.sum(axis=1, keepdims=True)

    def _generate_sample_from_state(self, state: int, random_state) -> np.ndarray:
        n_trials = np.unique(self.n_trials)
        if n_trials.size != 1:
            raise ValueError("For sampling, a single n_trials must be given")
        return random_state.multinomial(int(n_trials[0]), self.emissionprob_[state])
