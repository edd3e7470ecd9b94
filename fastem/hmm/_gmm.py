"""GMMHMM: hidden Markov model whose states emit Gaussian mixtures (hmmlearn-compatible).

The K states x M mixture components are one flat mixture of K*M Gaussians for
the kernels: fastem's mixture log-density kernels give the (N, K*M) weighted
component log-densities, a log-sum-exp over each state's M columns gives the
state emissions, and the component posteriors ``gamma_tk * r_tkm`` feed the
same moment kernels as GaussianHMM. Rows go through in blocks, so a fit holds
O(N*K) beyond X plus O(block*K*M); nothing is (T, K, M, D, D), unlike hmmlearn.
"""

from __future__ import annotations

import numpy as np

from .._covariance import COVARIANCE_TYPES, precision_cholesky
from .._init import kmeans
from .._missing import find_patterns, has_nan
from .._passes import PassParams, log_prob
from ._base import BaseHMM, _fit_buffer, _row_weight, _x_has_nan
from ._gaussian import GaussianHMM, floor_singular

_BLOCK_ROWS = 8192  # rows per block of component densities (memory O(block * K * M))


class GMMHMM(BaseHMM):
    """Hidden Markov model with Gaussian-mixture emissions, fitted by Baum-Welch.

    A drop-in for ``hmmlearn.hmm.GMMHMM`` (0.3.3): same parameters, defaults
    and M-step with its priors; from the same initial parameters a fit gives
    hmmlearn's model.

    Parameters
    ----------
    n_components : int, default=1
        Number of states.
    n_mix : int, default=1
        Mixture components per state.
    min_covar : float, default=1e-3
        Added to the diagonal of the data covariance that initializes ``covars_``.
    startprob_prior, transmat_prior : float or array, default=1.0
    weights_prior : float or array, default=1.0
        Dirichlet prior of each state's mixture weights.
    means_prior, means_weight : float or array, default=0.0
        Normal prior on the component means.
    covars_prior, covars_weight : float, array or None
        Inverse-Wishart ("full", "tied") or inverse-gamma ("diag",
        "spherical") prior in hmmlearn's parametrization; None takes hmmlearn's
        defaults for the covariance type (a flat prior).
    algorithm, random_state, n_iter, tol, verbose, implementation
        As in :class:`~fastem.hmm.GaussianHMM`.
    covariance_type : {"spherical", "diag", "full", "tied"}, default="diag"
        "tied": all components of a state share one covariance (hmmlearn's meaning).
    params, init_params : str, default="stmcw"
        's' startprob, 't' transmat, 'm' means, 'c' covars, 'w' mixture weights.
    n_init : int, default=1
    reg_covar : float, default=0.0
        Added to the diagonal of every covariance after each M-step.
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
    weights_ : ndarray of shape (n_components, n_mix)
    means_ : ndarray of shape (n_components, n_mix, n_features)
    covars_ : ndarray
        (n_components, n_mix) spherical, (n_components, n_mix, n_features)
        diag, (n_components, n_mix, n_features, n_features) full,
        (n_components, n_features, n_features) tied.

    Notes
    -----
    ``X`` may contain NaN (marginal densities, expected statistics). A
    component with no posterior weight keeps its mean and covariance.
    """

    _emission_attrs = ("weights_", "means_", "covars_")

    def __init__(
        self,
        n_components: int = 1,
        n_mix: int = 1,
        min_covar: float = 1e-3,
        startprob_prior=1.0,
        transmat_prior=1.0,
        weights_prior=1.0,
        means_prior=0.0,
        means_weight=0.0,
        covars_prior=None,
        covars_weight=None,
        algorithm: str = "viterbi",
        covariance_type: str = "diag",
        random_state=None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stmcw",
        init_params: str = "stmcw",
        implementation: str = "log",
        n_init: int = 1,
        reg_covar: float = 0.0,
        backend: str | None = None,
        n_threads: int | None = None,
        acceleration: str | None = None,
        stopping: str | None = None,
    ):
        self.n_components = n_components
        self.n_mix = n_mix
        self.min_covar = min_covar
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.weights_prior = weights_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.algorithm = algorithm
        self.covariance_type = covariance_type
        self.random_state = random_state
        self.n_iter = n_iter
        self.tol = tol
        self.verbose = verbose
        self.params = params
        self.init_params = init_params
        self.implementation = implementation
        self.n_init = n_init
        self.reg_covar = reg_covar
        self.backend = backend
        self.n_threads = n_threads
        self.acceleration = acceleration
        self.stopping = stopping

    # ------------------------------------------------------------ parameters
    def _check_constructor(self) -> None:
        super()._check_constructor()
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}")
        if int(self.n_mix) < 1:
            raise ValueError(f"n_mix must be at least 1, got {self.n_mix}")

    _validate_X = GaussianHMM._validate_X

    def _floor_singular(self) -> bool:
        if self.covariance_type not in ("full", "tied"):
            return False
        new = floor_singular(self.covars_)
        if new is not None:
            self.covars_ = new
        return new is not None

    def _check_emissions(self) -> None:
        K, M = self.n_components, self.n_mix
        self.weights_ = np.asarray(self.weights_, dtype=np.float64)
        if self.weights_.shape != (K, M):
            raise ValueError(f"weights_ must have shape (n_components, n_mix) = {(K, M)}")
        self._check_sum_1("weights_")
        self.means_ = np.asarray(self.means_, dtype=np.float64)
        if self.means_.ndim != 3 or self.means_.shape[:2] != (K, M):
            raise ValueError("means_ must have shape (n_components, n_mix, n_features)")
        D = self.n_features = self.means_.shape[2]
        self.covars_ = np.asarray(self.covars_, dtype=np.float64)
        if self.covariance_type not in COVARIANCE_TYPES:  # set after construction
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}")
        need = {
            "spherical": (K, M),
            "diag": (K, M, D),
            "full": (K, M, D, D),
            "tied": (K, D, D),
        }[self.covariance_type]
        if self.covars_.shape != need:
            raise ValueError(f"{self.covariance_type!r} covars_ must have shape {need}")

    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        nc, nf, nm = self.n_components, self.n_features, self.n_mix
        return {
            "s": nc - 1,
            "t": nc * (nc - 1),
            "m": nc * nm * nf,
            "c": {
                "spherical": nc * nm,
                "diag": nc * nm * nf,
                "full": nc * nm * nf * (nf + 1) // 2,
                "tied": nc * nf * (nf + 1) // 2,
            }[self.covariance_type],
            # Each state's weights are free but for their sum: nc * (nm - 1).
            # hmmlearn 0.3.3 counts nm - 1 (one state's), which undercounts its
            # aic/bic by (nc - 1)(nm - 1) parameters (docs/hmmlearn_suite.md).
            "w": nc * (nm - 1),
        }

    def _priors(self):
        """hmmlearn's effective priors, broadcast (without touching the parameters)."""
        K, M, D = self.n_components, self.n_mix, self.n_features
        ct = self.covariance_type
        default_prior, default_weight = {
            "full": (0.0, -(1.0 + D + 1.0)),
            "tied": (0.0, -(M + D + 1.0)),
            "diag": (-1.5, 0.0),
            "spherical": (-(M + 2.0) / 2.0, 0.0),
        }[ct]
        cp = default_prior if self.covars_prior is None else self.covars_prior
        cw = default_weight if self.covars_weight is None else self.covars_weight
        shape_p, shape_w = {
            "full": ((K, M, D, D), (K, M)),
            "tied": ((K, D, D), (K,)),
            "diag": ((K, M, D), (K, M, D)),
            "spherical": ((K, M), (K, M)),
        }[ct]
        return (
            np.broadcast_to(np.asarray(self.weights_prior, dtype=float), (K, M)),
            np.broadcast_to(np.asarray(self.means_prior, dtype=float), (K, M, D)),
            np.broadcast_to(np.asarray(self.means_weight, dtype=float), (K, M)),
            np.broadcast_to(np.asarray(cp, dtype=float), shape_p),
            np.broadcast_to(np.asarray(cw, dtype=float), shape_w),
        )

    # ------------------------------------------------------------ kernels
    def _flat_params(self, dtype) -> PassParams:
        K, M, D = self.means_.shape
        ct = self.covariance_type
        c = self.covars_
        if ct == "tied":
            pc = np.repeat(precision_cholesky(c, "full"), M, axis=0)
        elif ct == "full":
            pc = precision_cholesky(c.reshape(K * M, D, D), "full")
        elif ct == "diag":
            pc = precision_cholesky(c.reshape(K * M, D), "diag")
        else:
            pc = np.repeat(precision_cholesky(c.reshape(K * M), "spherical")[:, None], D, axis=1)
        kind = "full" if ct in ("full", "tied") else "diag"
        return PassParams.from_model(
            self.weights_.ravel(), self.means_.reshape(K * M, D), pc, kind, dtype
        )

    def _component_block(self, kernels, X, params, comp, state):
        """Weighted component log-densities (rows, K*M) and state emissions (rows, K)
        of a block of rows, into ``comp`` and ``state``."""
        self._component_logprob(kernels, X, params, comp)
        kernels.hmm.gmm_state_logprob(comp, self.n_mix, state)

    @staticmethod
    def _component_logprob(kernels, X, params, comp) -> None:
        """Weighted component log-densities (rows, K*M) of a block into ``comp``:
        the HMM backend's own diagonal kernel where it has one (the Cython backend's
        is vectorized over components, 0.7x the mixture kernel's time on HB4's
        blocks), for float64 rows without NaN; else the mixture kernels."""
        own = getattr(kernels.hmm, "component_logprob_diag", None)
        if (
            own is not None
            and not params.full
            and params.tied_chol is None
            and X.dtype == np.float64
            and not has_nan(X)
        ):
            own(X, params.means, params.prec_chol, params.comp_const, comp)
            return
        log_prob(kernels.mixture, X, params, comp)

    def _emission_packing(self) -> list[tuple[str, str, str, bool]]:
        cov = "chol" if self.covariance_type in ("full", "tied") else "log"
        return [
            ("w", "weights_", "simplex", False),
            ("m", "means_", "identity", False),
            ("c", "covars_", cov, False),
        ]

    def _emission_logprob(self, kernels, X) -> np.ndarray:
        K, M = self.n_components, self.n_mix
        N = X.shape[0]
        params = self._flat_params(X.dtype)
        out = _fit_buffer(self, X, "logB", (N, K))
        comp = _fit_buffer(self, X, "gmm_comp", (min(N, _BLOCK_ROWS), K * M))
        for lo in range(0, N, _BLOCK_ROWS):
            hi = min(N, lo + _BLOCK_ROWS)
            self._component_block(kernels, X[lo:hi], params, comp[: hi - lo], out[lo:hi])
        return out

    def _emission_stats(self, kernels, X, gamma, offsets, seq_weight, logB=None):
        """Component-posterior-weighted moments, one block of rows at a time: the
        block's component densities are recomputed rather than kept, so a fit holds
        O(N*K) beyond X whatever the number of mixture components. ``logB``, the
        state log-densities of the same parameters (the forward-backward's), saves
        their log-sum-exp; without it they are recomputed."""
        K, M, D = self.means_.shape
        C = K * M
        N = X.shape[0]
        full = self.covariance_type in ("full", "tied")
        params = self._flat_params(X.dtype)
        row_weight = _row_weight(self, X, offsets, seq_weight)
        shift = np.ascontiguousarray(self.means_.reshape(C, D))
        B = min(N, _BLOCK_ROWS)
        comp, state, g = np.empty((B, C)), np.empty((B, K)), np.empty((B, C))
        ones = np.ones(B)
        nk, sx = np.zeros(C), np.zeros((C, D))
        sxx = np.zeros((C, D, D) if full else (C, D))
        bnk, bsx, bsxx = np.empty_like(nk), np.empty_like(sx), np.empty_like(sxx)
        any_nan = _x_has_nan(self, X)  # one scan per fit, not one per block
        for lo in range(0, N, _BLOCK_ROWS):
            hi = min(N, lo + _BLOCK_ROWS)
            n = hi - lo
            Xb = X[lo:hi]
            if logB is None:
                self._component_block(kernels, Xb, params, comp[:n], state[:n])
                st = state[:n]
            else:
                self._component_logprob(kernels, Xb, params, comp[:n])
                st = logB[lo:hi]
            kernels.hmm.gmm_posteriors(comp[:n], M, st, gamma[lo:hi], row_weight[lo:hi], g[:n])
            if not any_nan or not has_nan(Xb):
                fn = kernels.hmm.moments_full if full else kernels.hmm.moments_diag
                fn(Xb, g[:n], ones[:n], shift, bnk, bsx, bsxx)
            else:
                self._missing_moments(kernels, Xb, g[:n], params, full, bnk, bsx, bsxx)
            nk += bnk
            sx += bsx
            sxx += bsxx
        return (
            nk.reshape(K, M),
            sx.reshape(K, M, D),
            sxx.reshape((K, M, D, D) if full else (K, M, D)),
            self.means_.copy(),
        )

    @staticmethod
    def _missing_moments(kernels, X, g, p, full, nk, sx, sxx):
        """Expected moments with NaN: each component is a one-component mixture
        weighted by its posteriors, so the mixture's missing-data kernels apply."""
        D = X.shape[1]
        patterns = find_patterns(X)
        nk[:] = 0.0
        sx[:] = 0.0
        sxx[:] = 0.0
        if patterns.rows.size == 0:
            return
        rows, ptr = patterns.rows, patterns.pattern_ptr
        for c in range(g.shape[1]):
            w = np.ascontiguousarray(g[:, c])
            nk1, sx1 = np.zeros(1), np.zeros((1, D))
            sxx1 = np.zeros((1, D, D) if full else (1, D))
            cc = np.zeros(1)
            if full:
                kernels.mixture.em_pass_missing_full(
                    X, w, rows, ptr, p.means[c : c + 1], p.prec_chol[c : c + 1],
                    p.precisions[c : c + 1], cc, nk1, sx1, sxx1,
                )  # fmt: skip
            else:
                kernels.mixture.em_pass_missing_diag(
                    X, w, rows, ptr, p.means[c : c + 1], p.prec_chol[c : c + 1], cc,
                    nk1, sx1, sxx1,
                )  # fmt: skip
            nk[c], sx[c], sxx[c] = nk1[0], sx1[0], sxx1[0]

    # ------------------------------------------------------------ M-step (hmmlearn's)
    def _emission_mstep(self, stats) -> None:
        nk, sx, sxx, shift = stats
        K, M, D = self.means_.shape
        ct = self.covariance_type
        wp, mp, mw, cp, cw = self._priors()
        post_sum = nk.sum(axis=1)
        empty = nk <= 0
        if "w" in self.params:
            am1 = wp - 1
            w_n = nk + am1
            w_d = (post_sum + am1.sum(axis=1))[:, None]
            neg = (w_n < 0).any(axis=1)
            if neg.any():
                # weights_prior < 1: hmmlearn's update is not clipped, so it makes
                # negative weights (then NaN); clipped at 0 as the start, transition
                # and emission updates are (rows without a negative term unchanged)
                w_n = np.where(neg[:, None], np.maximum(w_n, 0), w_n)
                w_d = np.where(neg[:, None], w_n.sum(axis=1, keepdims=True), w_d)
            with np.errstate(divide="ignore", invalid="ignore"):
                new = w_n / w_d
            self.weights_ = np.where(w_d > 0, new, self.weights_)  # empty state: keep
        # An empty component keeps its previous covariance only where hmmlearn's
        # update is undefined (0/0: NaN means, a zero denominator); where its priors
        # define one (the prior's mode), fastem's equals it.
        undefined = np.zeros((K, M), dtype=bool)  # hmmlearn's NaN means
        if "m" in self.params:
            m_n = mw[:, :, None] * mp + sx + nk[:, :, None] * shift
            m_d = nk + mw
            with np.errstate(divide="ignore", invalid="ignore"):
                new = m_n / m_d[:, :, None]
            undefined = ~(m_d > 0)
            self.means_ = np.where(undefined[:, :, None], self.means_, new)
        if "c" not in self.params:
            return
        # hmmlearn's covariance statistics are centred on the means *before* this
        # M-step (the shift), with the prior term on the new means.
        cm = self.means_ - mp
        old = self.covars_
        eye = np.eye(D)
        if ct == "full":
            c_n = np.swapaxes(cp, 2, 3) + mw[:, :, None, None] * cm[..., :, None] * cm[..., None, :]
            c_n = c_n + sxx
            c_d = (nk + 1 + cw + D + 1)[:, :, None, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                new = c_n / c_d + self.reg_covar * eye
            keep = empty & (undefined | ~(c_d[:, :, 0, 0] > 0))
            self.covars_ = np.where(keep[:, :, None, None], old, new)
        elif ct == "diag":
            c_n = mw[:, :, None] * cm**2 + 2 * cw + sxx
            c_d = nk[:, :, None] + 1 + 2 * (cp + 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                new = c_n / c_d + self.reg_covar
            keep = empty[:, :, None] & (undefined[:, :, None] | ~(c_d > 0))
            self.covars_ = np.where(keep, old, new)
        elif ct == "spherical":
            c_n = mw * (cm**2).sum(axis=2) + 2 * cw + sxx.sum(axis=2)
            c_d = D * (nk + 1) + 2 * (cp + 1)
            with np.errstate(divide="ignore", invalid="ignore"):
                new = c_n / c_d + self.reg_covar
            self.covars_ = np.where(empty & (undefined | ~(c_d > 0)), old, new)
        else:  # tied: one covariance per state, shared by its components
            c_n = np.einsum("ij,ijkl->ikl", mw, cm[..., :, None] * cm[..., None, :])
            c_n = c_n + np.swapaxes(cp, 1, 2) + sxx.sum(axis=1)
            c_d = (post_sum + M + cw + D + 1)[:, None, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                new = c_n / c_d + self.reg_covar * eye
            keep = (post_sum <= 0) & (undefined.any(axis=1) | ~(c_d[:, 0, 0] > 0))
            self.covars_ = np.where(keep[:, None, None], old, new)

    # ------------------------------------------------------------ init
    def _init_emissions(self, X, offsets, seq_weight, kernels, rs) -> None:
        K, M = self.n_components, self.n_mix
        D = X.shape[1]
        known = getattr(self, "means_", None)
        if not self._needs_init("m", "means_") and np.ndim(known) == 3 and known.shape[2] != D:
            # kept means for other data: the kernels would read the wrong columns
            # (hmmlearn fails too: "Unexpected number of dimensions" after a fit,
            # else a broadcasting error)
            raise ValueError(f"X has {D} features, means_ has {known.shape[2]}")
        self.n_features = D
        row_weight = np.repeat(seq_weight, np.diff(offsets))
        complete = ~np.isnan(X).any(axis=1)
        if complete.sum() >= K * M:
            Xc, wc = X[complete], row_weight[complete]
        else:
            Xc = np.where(np.isnan(X), np.nanmean(X, axis=0), X).astype(X.dtype)
            wc = row_weight
        Xc = np.ascontiguousarray(Xc)
        cv = np.atleast_2d(np.cov(Xc.astype(np.float64).T)) + self.min_covar * np.eye(D)
        if self._needs_init("m", "means_"):
            if Xc.shape[0] < K:
                raise ValueError(f"n_samples={Xc.shape[0]} should be >= n_components={K}")
            rng = np.random.default_rng(rs.randint(2**31 - 1))
            centres, labels = kmeans(Xc, wc, K, rng, kernels.mixture)
            means = np.empty((K, M, D))
            for k in range(K):
                members = labels == k
                if members.sum() >= M:
                    means[k], _ = kmeans(
                        np.ascontiguousarray(Xc[members]), wc[members], M, rng, kernels.mixture
                    )
                else:  # too few points: components spread around the state's centre
                    means[k] = rng.multivariate_normal(centres[k], cv, size=M)
            self.means_ = means
        if self._needs_init("w", "weights_"):
            self.weights_ = np.full((K, M), 1.0 / M)
        if self._needs_init("c", "covars_"):
            ct = self.covariance_type
            if ct == "tied":
                self.covars_ = np.tile(cv, (K, 1, 1))
            elif ct == "full":
                self.covars_ = np.tile(cv, (K, M, 1, 1))
            elif ct == "diag":
                self.covars_ = np.tile(np.diag(cv), (K, M, 1))
            else:
                self.covars_ = np.full((K, M), cv.mean())

    def _generate_sample_from_state(self, state: int, random_state) -> np.ndarray:
        m = random_state.choice(self.n_mix, p=self.weights_[state])
        ct = self.covariance_type
        if ct == "tied":
            cov = self.covars_[state]
        elif ct == "full":
            cov = self.covars_[state, m]
        elif ct == "diag":
            cov = np.diag(self.covars_[state, m])
        else:
            cov = np.eye(self.n_features) * self.covars_[state, m]
        return random_state.multivariate_normal(self.means_[state, m], cov)
