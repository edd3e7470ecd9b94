"""GaussianHMM: hidden Markov model with Gaussian emissions (hmmlearn-compatible)."""

from __future__ import annotations

import numpy as np

from .._covariance import _LOG_2PI, COVARIANCE_TYPES, log_det_cholesky, precision_cholesky
from .._init import kmeans
from .._missing import find_patterns
from .._passes import PassParams, log_prob
from ._backend import estep_diag
from ._base import BaseHMM, _FBResult, _fit_buffer, _fit_plan, _row_weight, _x_has_nan
from ._prior import mean_prior_arrays

_FULL = ("full", "tied")


def _validate_covars(covars: np.ndarray, covariance_type: str, K: int, D: int | None):
    """Check hmmlearn-shaped covariances; spherical may be (K,), (K, D) (tiled),
    (K, D, D) (multiples of the identity, the ``covars_`` getter's form) or any
    (K, 1, ...) with one value per state (hmmlearn accepts these too). ``D``, the
    means' number of features, is checked where given (None: not known yet)."""
    c = covars
    shape = {"spherical": None, "diag": (K, D), "tied": (D, D), "full": (K, D, D)}
    if D is not None and covariance_type in shape:
        want = shape[covariance_type]
        # spherical: a (K, D) or (K, D, D) form must be the means' D too
        bad = (
            c.shape[1:] not in ((), (1,), (1, 1), (D,), (D, D))
            if covariance_type == "spherical"
            else c.shape != want
        )
        if bad:
            # hmmlearn fails with a broadcasting error in its density; fastem's
            # kernels would read the wrong rows, so a clear error here
            raise ValueError(
                f"{covariance_type!r} covars of shape {c.shape} do not fit means_ with {D} features"
            )
    if covariance_type == "spherical":
        if c.ndim >= 2 and c.shape[0] == K and c[0].size == 1:
            c = c.reshape(K)
        elif c.ndim == 2:
            # hmmlearn's M-step stores (K, D) with each row one value repeated;
            # rows that differ would be per-feature variances to hmmlearn's density
            # (a diagonal model), which "spherical" cannot hold: refused, not cut.
            if not (c == c[:, :1]).all():
                raise ValueError(
                    "'spherical' covars of shape (n_components, n_features) must repeat "
                    "one value per state; use covariance_type='diag' for per-feature variances"
                )
            c = c[:, 0]
        elif c.ndim == 3 and c.shape[0] == K and c.shape[1] == c.shape[2]:
            iso = c[:, 0, 0]
            if not np.allclose(c, iso[:, None, None] * np.eye(c.shape[1])):
                raise ValueError("'spherical' covars of shape (K, D, D) must be multiples of I")
            c = iso
        if c.shape != (K,) or (c <= 0).any():
            raise ValueError("'spherical' covars must be positive, of shape (n_components,)")
        return c
    if covariance_type == "diag":
        if c.ndim != 2 or c.shape[0] != K or (c <= 0).any():
            raise ValueError("'diag' covars must be positive, of shape (n_components, n_features)")
        return c
    if covariance_type == "tied":
        if c.ndim != 2 or c.shape[0] != c.shape[1] or not np.allclose(c, c.T):
            raise ValueError("'tied' covars must be symmetric, of shape (n_features, n_features)")
        return c
    if c.ndim != 3 or c.shape[0] != K or c.shape[1] != c.shape[2]:
        raise ValueError("'full' covars must have shape (n_components, n_features, n_features)")
    if not np.allclose(c, np.swapaxes(c, 1, 2)):
        raise ValueError("'full' covars must be symmetric")
    return c


# hmmlearn's density adds this to the diagonal of a full or tied covariance
# whose Cholesky factorization fails (``min_covar`` of its
# ``_log_multivariate_normal_density_full``).
SINGULAR_FLOOR = 1e-7


def floor_singular(covars: np.ndarray) -> np.ndarray | None:
    """hmmlearn's fallback for full or tied covariances that are not positive
    definite: ``SINGULAR_FLOOR`` on the diagonal of each such matrix. hmmlearn
    adds it at each density evaluation and keeps the singular matrix; fastem
    stores the floored one, so the densities and the next M-step are the same.

    Returns the new array, or None where no matrix is singular (or one is not
    finite: no floor helps, the caller's error stands)."""
    c = np.array(covars, dtype=np.float64, copy=True)
    stack = c.reshape(-1, c.shape[-2], c.shape[-1])
    if not np.isfinite(stack).all():
        return None
    eye = np.eye(stack.shape[-1])
    changed = False
    for k in range(stack.shape[0]):
        try:
            np.linalg.cholesky(stack[k])
        except np.linalg.LinAlgError:
            stack[k] += SINGULAR_FLOOR * eye
            changed = True
    return c if changed else None


def _read_only(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


class _FusedPlan:
    """A fit's fused diag/spherical E-step on the numba backend with float64 X
    (built once per fit by ``_fit_plan``): the buffers the kernels read and
    write, made once, with their read-only views (the kernels' argument
    types), so that an iteration makes no array, view or copy in Python. Per
    iteration one compiled call (:func:`fastem.hmm._mstep_numba.estep_params_diag`)
    writes the precision factors and copies the parameters into the buffers,
    three or four NumPy calls with ``out=`` give the constants (the operations
    of ``log_det_cholesky``, so the same bits), and the E-step writes the
    statistics into the same arrays every iteration. The caller uses them
    before the next E-step (the loop's M-step)."""

    __slots__ = (
        "X", "mstep", "spherical", "half_d_log_2pi", "pcs", "logs", "pc", "means", "start",
        "trans", "comp_const", "bases", "views", "fb", "stats", "workspace",
    )  # fmt: skip

    @classmethod
    def build(cls, model, kernels, X):
        """The plan, or None where the fit does not take it (other backends,
        float32 X: the general code runs)."""
        if kernels.name != "numba" or X.dtype != np.float64:
            return None
        try:
            from ._mstep_numba import estep_params_diag
        except ImportError:  # pragma: no cover - numba present but broken
            return None
        self = cls()
        K, D = model.means_.shape
        self.X = X
        self.mstep = estep_params_diag
        self.spherical = model.covariance_type == "spherical"
        self.half_d_log_2pi = 0.5 * D * _LOG_2PI
        C = 1 if self.spherical else D
        self.pcs, self.logs = np.empty((K, C)), np.empty((K, C))
        self.pc, self.means = np.empty((K, D)), np.empty((K, D))
        self.start, self.trans, self.comp_const = np.empty(K), np.empty((K, K)), np.empty(K)
        self.bases = (self.means, self.pc, self.comp_const, self.start, self.trans)
        self.views = tuple(_read_only(a) for a in self.bases)
        self.fb = _FBResult(np.empty(0), None, np.empty((K, K)), np.empty(K), None)
        self.stats = (np.empty(K), np.empty((K, D)), np.empty((K, D)), self.means)
        self.workspace = {}
        return self

    def run(self, model, kernels, X, offsets, seq_weight):
        """The E-step's ``(fb, stats)``, or None (nothing done) where a variance is
        not finite and positive: the general code raises its error then."""
        cov = model._covars_
        if not self.mstep(
            cov.reshape(cov.shape[0], -1), model.means_, model.startprob_, model.transmat_,
            self.pcs, self.pc, self.means, self.start, self.trans,
        ):  # fmt: skip
            return None
        # log_det_cholesky's operations: log, the row sums (diag) or D times (spherical)
        cc = self.comp_const
        np.log(self.pcs, out=self.logs)
        np.add.reduce(self.logs, axis=1, out=cc)
        if self.spherical:
            np.multiply(self.pc.shape[1], cc, out=cc)  # n_features * log(pc)
        np.subtract(cc, self.half_d_log_2pi, out=cc)
        fb = self.fb
        if fb.loglik.shape[0] != offsets.shape[0] - 1:
            fb.loglik = np.empty(offsets.shape[0] - 1)
        nk, sx, sxx, _ = self.stats
        # The read-only views once the fused kernel has taken the shape (it keeps
        # its entry in the workspace); the writable arrays before, and for the
        # fallback kernels, whose compiled types are those of writable inputs.
        fused = "estep_diag" in self.workspace
        means, pc, comp_const, start, trans = self.views if fused else self.bases
        estep_diag(
            kernels, X, offsets, means, pc, comp_const, start, trans, seq_weight,
            _row_weight(model, X, offsets, seq_weight), means,
            fb.loglik, fb.xi, fb.start, nk, sx, sxx, self.workspace,
        )  # fmt: skip
        return fb, self.stats


class GaussianHMM(BaseHMM):
    """Hidden Markov model with Gaussian emissions, fitted by Baum-Welch.

    A drop-in for ``hmmlearn.hmm.GaussianHMM`` (0.3.3): same parameters,
    defaults, attributes and methods; from the same initial parameters a fit
    gives hmmlearn's model. The forward-backward pass is scaled with a
    per-frame shift (never underflows where the log form would not) and runs
    in parallel over sequences.

    Parameters
    ----------
    n_components : int, default=1
        Number of states.
    covariance_type : {"spherical", "diag", "full", "tied"}, default="diag"
    min_covar : float, default=1e-3
        Added to the diagonal of the data covariance that initializes
        ``covars_`` (as in hmmlearn, at initialization only; see ``reg_covar``).
    startprob_prior, transmat_prior : float or array, default=1.0
        Dirichlet prior parameters of ``startprob_`` and each row of ``transmat_``.
    means_prior, means_weight : float or array, default=0
        Mean and precision (pseudo-count) of the Normal prior on ``means_``.
    covars_prior, covars_weight : float or array, default=1e-2 and 1
        Inverse-gamma ("spherical", "diag") or inverse-Wishart ("full", "tied")
        prior on the covariances, in hmmlearn's parametrization.
    algorithm : {"viterbi", "map"}, default="viterbi"
        Decoder used by ``decode`` and ``predict``.
    random_state : int, RandomState or None
    n_iter : int, default=10
        Maximum number of Baum-Welch iterations.
    tol : float, default=1e-2
        Stop when the log-likelihood gains less than this.
    verbose : bool, default=False
    params, init_params : str, default="stmc"
        Parameters updated by the fit ('s' startprob, 't' transmat, 'm' means,
        'c' covars) and initialized before it (others are taken as set).
    implementation : {"log", "scaling"}, default="log"
        Accepted for compatibility; fastem always runs its scaled kernels,
        which agree with hmmlearn's "log" results.
    n_init : int, default=1
        Restarts from fresh initializations; the one with the highest final
        objective (log-likelihood + log prior, ``objective_``) is kept (fastem
        extension).
    reg_covar : float, default=0.0
        Added to the diagonal of every covariance after each M-step: a floor
        that keeps states from collapsing (fastem extension).
    backend : {"numba", "cython", "numpy"} or None
        Kernels; default numba where it imports.
    n_threads : int or None, default=None
        Cap on the kernels' threads (None: the backend's default). Results are
        bit-identical on any number of threads.
    acceleration : {None, "squarem", "anderson", "qn", "mpe"}, default=None
        None: plain Baum-Welch. Otherwise fastem's generic fixed-point
        accelerator (:mod:`fastem._em`) extrapolates the parameters, keeping an
        extrapolation only if its objective (log-likelihood + log prior) is at
        least that of the EM step it replaces (see docs/hmm.md).
    stopping : {None, "absolute", "relative", "aitken"}, default=None
        None: hmmlearn's rule (stop when an iteration gains less than ``tol``).
        The others are fastem's rules (docs/acceleration.md) applied to the
        objective (total log-likelihood + log prior).

    Attributes
    ----------
    startprob_ : ndarray of shape (n_components,)
    transmat_ : ndarray of shape (n_components, n_components)
    means_ : ndarray of shape (n_components, n_features)
    covars_ : ndarray of shape (n_components, n_features, n_features)
        Full covariance matrices for every ``covariance_type`` (hmmlearn's
        getter); setting it takes the compact shape of the type:
        (n_components,) spherical, (n_components, n_features) diag,
        (n_features, n_features) tied, (n_components, n_features, n_features) full.
    n_features : int
    monitor_ : ConvergenceMonitor
    objective_history_ : ndarray of shape (n_iter_done,)
        Log-likelihood + log prior of the parameters at each E-step: the
        objective the M-step ascends (fastem extension; docs/hmm.md).
    objective_ : float
        Its last value.

    Notes
    -----
    ``X`` may contain NaN: a frame's emission density is the marginal of its
    observed coordinates and the M-step uses expected statistics (fastem
    extension). A state with no posterior weight keeps its previous mean and
    covariance (hmmlearn produces NaN).
    """

    _emission_attrs = ("means_", "_covars_")

    def __init__(
        self,
        n_components: int = 1,
        covariance_type: str = "diag",
        min_covar: float = 1e-3,
        startprob_prior=1.0,
        transmat_prior=1.0,
        means_prior=0,
        means_weight=0,
        covars_prior=1e-2,
        covars_weight=1,
        algorithm: str = "viterbi",
        random_state=None,
        n_iter: int = 10,
        tol: float = 1e-2,
        verbose: bool = False,
        params: str = "stmc",
        init_params: str = "stmc",
        implementation: str = "log",
        n_init: int = 1,
        reg_covar: float = 0.0,
        backend: str | None = None,
        n_threads: int | None = None,
        acceleration: str | None = None,
        stopping: str | None = None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.min_covar = min_covar
        self.startprob_prior = startprob_prior
        self.transmat_prior = transmat_prior
        self.means_prior = means_prior
        self.means_weight = means_weight
        self.covars_prior = covars_prior
        self.covars_weight = covars_weight
        self.algorithm = algorithm
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
    @property
    def covars_(self) -> np.ndarray:
        """Covariance matrices, (n_components, n_features, n_features)."""
        c = self._covars_
        K, D = self.n_components, self.means_.shape[1]
        if self.covariance_type == "full":
            return c
        if self.covariance_type == "tied":
            return np.tile(c, (K, 1, 1))
        if self.covariance_type == "diag":
            return np.array([np.diag(row) for row in c])
        return c[:, None, None] * np.eye(D)[None]

    @covars_.setter
    def covars_(self, covars) -> None:
        covars = np.array(covars, dtype=np.float64, copy=True)
        self._covars_ = _validate_covars(covars, self.covariance_type, self.n_components, None)
        # A spherical (K, D') or (K, D', D') form is kept as (K,), which loses D':
        # its shape is checked against the means at the next _check_emissions (they
        # may be set after it). Cleared there and where 'c' is initialized.
        if self.covariance_type == "spherical" and covars.ndim >= 2:
            self._covars_form = covars.shape
        else:
            self.__dict__.pop("_covars_form", None)

    def _floor_singular(self) -> bool:
        if self.covariance_type not in _FULL:
            return False
        new = floor_singular(self._covars_)
        if new is not None:
            self._covars_ = new
        return new is not None

    def _check_constructor(self) -> None:
        super()._check_constructor()
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"covariance_type must be one of {COVARIANCE_TYPES}")
        if self.reg_covar < 0:
            raise ValueError(f"reg_covar must be non-negative, got {self.reg_covar}")

    def _validate_X(self, X, fitting: bool) -> np.ndarray:
        X = np.asarray(X)
        if X.dtype.kind not in "biuf":
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        # float64 always: hmmlearn computes float32 X in float64 (its float64
        # parameters upcast it); fastem's float32 kernels round the means and
        # precision factors to float32 (~1e-8 relative, enough for spurious
        # "not converging" warnings near convergence) and are no faster here.
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] == 0:
            raise ValueError(f"X must be a non-empty 2-D array, got shape {X.shape}")
        if np.isinf(X).any():
            raise ValueError("X contains infinity")
        if fitting and np.isnan(X).all(axis=0).any():
            raise ValueError("X has a feature with no observed value (all NaN)")
        if not fitting and X.shape[1] != self.means_.shape[-1]:  # GMMHMM: (K, M, D)
            raise ValueError(f"X has {X.shape[1]} features, the model {self.means_.shape[-1]}")
        return X

    def _check_emissions(self) -> None:
        self.means_ = np.asarray(self.means_, dtype=np.float64)
        K = self.n_components
        if self.means_.ndim != 2 or self.means_.shape[0] != K:
            raise ValueError("means_ must have shape (n_components, n_features)")
        self.n_features = self.means_.shape[1]
        form = self.__dict__.pop("_covars_form", None)
        if form is not None and self.covariance_type == "spherical":
            D = self.n_features
            if np.prod(form[1:]) != 1 and form[1:] not in ((D,), (D, D)):  # (K, 1, ...): any D
                self._covars_form = form  # still wrong until covars_ or means_ change
                raise ValueError(
                    f"'spherical' covars of shape {form} do not fit means_ with {D} features"
                )
        self._covars_ = _validate_covars(
            np.asarray(self._covars_), self.covariance_type, K, self.n_features
        )

    def _emission_packing(self) -> list[tuple[str, str, str, bool]]:
        cov = "chol" if self.covariance_type in ("full", "tied") else "log"
        return [("m", "means_", "identity", False), ("c", "_covars_", cov, False)]

    def _get_n_fit_scalars_per_param(self) -> dict[str, int]:
        nc, nf = self.n_components, self.n_features
        return {
            "s": nc - 1,
            "t": nc * (nc - 1),
            "m": nc * nf,
            "c": {
                "spherical": nc,
                "diag": nc * nf,
                "full": nc * nf * (nf + 1) // 2,
                "tied": nf * (nf + 1) // 2,
            }[self.covariance_type],
        }

    # ------------------------------------------------------------ kernels
    def _kernel_precisions(self) -> np.ndarray:
        """Precision Cholesky factors in the kernels' full (K, D, D) or diag (K, D) form."""
        K, D = self.means_.shape
        ct = self.covariance_type
        pc = precision_cholesky(self._covars_, ct)
        if ct == "tied":
            return np.broadcast_to(pc, (K, D, D))
        if ct == "spherical":
            return np.broadcast_to(pc[:, None], (K, D))
        return pc

    def _pass_params(self, dtype, means=None, pc=None) -> PassParams:
        if means is None and pc is None and dtype == np.float64 and self.covariance_type in _FULL:
            # Within a fit on the numba backend, X without NaN: the precision
            # factors and constants in one compiled call into the fit's buffers
            # (:func:`fastem.hmm._mstep_numba.estep_params_full`, NumPy's LAPACK
            # calls and values bit for bit) instead of ~100 us of NumPy calls.
            # ``precisions`` (for the missing-data kernels only) is left None.
            # The buffers are rewritten by the next call: the E-step consumes them.
            d = getattr(self, "_fit_data", None)
            if d is not None and not d.has_nan():

                def build():
                    if self._kernels().name != "numba":
                        return None
                    try:
                        from ._mstep_numba import HAVE_LAPACK, PAIRWISE_MAX, estep_params_full
                    except ImportError:  # pragma: no cover - numba present but broken
                        return None
                    K, D = self.means_.shape
                    if not HAVE_LAPACK or D > PAIRWISE_MAX:
                        return None
                    C = 1 if self.covariance_type == "tied" else K
                    bufs = (np.empty((C, D, D)), np.empty((C, D, D)), np.empty((K, D, D)))
                    half = 0.5 * D * _LOG_2PI  # kernel_arguments' constant
                    return estep_params_full, half, bufs, np.empty((D, D)), np.empty(K)

                plan = _fit_plan(self, "full_pass_params", build)
                if plan is not None:
                    fn, half, (chol, inv, pcs), tied_pc, cc = plan
                    cov = self._covars_
                    if fn(cov.reshape(-1, *cov.shape[-2:]), half, chol, inv, pcs, tied_pc, cc):
                        # The constants again as kernel_arguments computes them: NumPy's
                        # SIMD log and the libm log Numba calls differ in the last bit for
                        # some inputs (1 of 7 on a 7-D case), the factors never do.
                        # (``pcs`` holds a tied factor K times, as the reference's "full").
                        cc[:] = (0.0 + log_det_cholesky(pcs, "full", pcs.shape[-1])) - half
                        m = np.ascontiguousarray(self.means_, dtype=np.float64)
                        return PassParams(True, m, pcs, cc, None, m)  # tied: as "full", below
        means = self.means_ if means is None else means
        pc = self._kernel_precisions() if pc is None else pc
        kind = "full" if self.covariance_type in _FULL else "diag"
        return PassParams.from_model(np.ones(means.shape[0]), means, pc, kind, dtype)

    def _emission_logprob(self, kernels, X) -> np.ndarray:
        out = _fit_buffer(self, X, "logB", (X.shape[0], self.n_components))
        # the fit's NaN scan is done once, not in every iteration's log_prob
        log_prob(kernels.mixture, X, self._pass_params(X.dtype), out, check_nan=_x_has_nan(self, X))
        return out

    def _estep(self, kernels, X, offsets, seq_weight):
        """Diagonal and spherical covariances without missing values: one fused
        kernel (:func:`fastem.hmm._backend.estep_diag`) where the backend has
        it; otherwise, and for the other cases, the separate kernels."""
        if self.covariance_type in _FULL or _x_has_nan(self, X):
            return super()._estep(kernels, X, offsets, seq_weight)
        plan = _fit_plan(self, "fused_estep", lambda: _FusedPlan.build(self, kernels, X))
        if plan is not None and plan.X is X:
            res = plan.run(self, kernels, X, offsets, seq_weight)
            if res is not None:
                return res
        K, D = self.means_.shape
        shift = np.ascontiguousarray(self.means_, dtype=np.float64)
        if X.dtype == np.float64:
            # _pass_params' values (unit weights: log 1 + log det is log det, a
            # fresh (K,) array for both types), without its general-case work
            ct = self.covariance_type
            pc = precision_cholesky(self._covars_, ct)
            comp_const = log_det_cholesky(pc, ct, D) - 0.5 * D * _LOG_2PI
            if ct == "spherical":
                pc = np.repeat(pc, D).reshape(K, D)
            means = shift
        else:
            p = self._pass_params(X.dtype)
            means, pc, comp_const = p.means, p.prec_chol, p.comp_const
        fb = _FBResult(np.empty(offsets.shape[0] - 1), None, np.empty((K, K)), np.empty(K), None)
        nk, sx, sxx = np.empty(K), np.empty((K, D)), np.empty((K, D))
        estep_diag(
            kernels, X, offsets, means, pc, comp_const, self.startprob_, self.transmat_,
            seq_weight, _row_weight(self, X, offsets, seq_weight), shift,
            fb.loglik, fb.xi, fb.start, nk, sx, sxx,
        )  # fmt: skip
        return fb, (nk, sx, sxx, shift)

    def _emission_stats(self, kernels, X, gamma, offsets, seq_weight, logB=None):
        """(nk, sx, sxx, shift): posterior-weighted moments centred on the current means."""
        K, D = self.means_.shape
        full = self.covariance_type in _FULL
        row_weight = _row_weight(self, X, offsets, seq_weight)
        shift = np.ascontiguousarray(self.means_, dtype=np.float64)
        nk = np.zeros(K)
        sx = np.zeros((K, D))
        sxx = np.zeros((K, D, D) if full else (K, D))
        if not _x_has_nan(self, X):
            fn = kernels.hmm.moments_full if full else kernels.hmm.moments_diag
            fn(X, gamma, row_weight, shift, nk, sx, sxx)
            return nk, sx, sxx, shift
        # Missing values: each state is a one-component mixture whose rows are
        # weighted by the posteriors, so the mixture's missing-data kernels give
        # the expected statistics (frames with nothing observed add nothing).
        patterns = find_patterns(X)
        pc = self._kernel_precisions()
        mix = kernels.mixture
        for k in range(K):
            p = self._pass_params(X.dtype, self.means_[k : k + 1], pc[k : k + 1])
            w = np.ascontiguousarray(gamma[:, k] * row_weight)
            rows, ptr = patterns.rows, patterns.pattern_ptr
            nk1, sx1 = np.zeros(1), np.zeros((1, D))
            sxx1 = np.zeros((1, D, D) if full else (1, D))
            if full:
                mix.em_pass_missing_full(
                    X, w, rows, ptr, p.means, p.prec_chol, p.precisions, p.comp_const,
                    nk1, sx1, sxx1,
                )  # fmt: skip
            else:
                mix.em_pass_missing_diag(
                    X, w, rows, ptr, p.means, p.prec_chol, p.comp_const, nk1, sx1, sxx1
                )
            nk[k], sx[k], sxx[k] = nk1[0], sx1[0], sxx1[0]
        return nk, sx, sxx, shift

    # ------------------------------------------------------------ M-step
    def _compiled_mstep(self, fb, stats) -> float | None:
        """Diagonal and spherical covariances on the numba backend: the whole
        M-step (start, transitions, means, covariances) and the log prior of its
        result in one compiled call (:func:`fastem.hmm._mstep_numba.mstep_diag`:
        the NumPy M-step's values bit for bit; the log prior to rounding)
        instead of ~35 NumPy calls. Returns that log prior, or None where the
        NumPy M-step is to run. (So on that path ``_emission_mstep`` is not
        called.)"""
        plan = _fit_plan(self, "compiled_mstep", self._compiled_mstep_plan)
        nk, sx, sxx, shift = stats
        if plan is None or not nk.all():  # an empty state: the NumPy M-step's rule
            return None
        fn, hyper, flags = plan
        cov = self._covars_
        start, trans, means, cov_new, log_prior = fn(
            fb.start, fb.xi, nk, sx, sxx, shift, self.startprob_, self.transmat_,
            self.means_, cov.reshape(cov.shape[0], -1), hyper, float(self.reg_covar),
            flags, self.covariance_type == "spherical",
        )  # fmt: skip
        self._set_mstep_result(flags, start, trans, means, cov_new.reshape(cov.shape))
        return log_prior

    def _set_mstep_result(self, flags: int, start, trans, means, covars) -> None:
        """Keep what a compiled M-step updated (``flags``: 1 start, 2 transitions,
        4 means, 8 covariances, as ``params`` selects)."""
        if flags & 1:
            self.startprob_ = start
        if flags & 2:
            self.transmat_ = trans
        if flags & 4:
            self.means_ = means
        if flags & 8:
            self._covars_ = covars

    def _compiled_mstep_plan(self):
        """(kernel, prior arrays, flag bits), or None where the NumPy M-step runs:
        other covariance types, other backends, priors that do not broadcast to
        (K, D) (the NumPy code raises its own error then)."""
        if self.covariance_type not in ("diag", "spherical") or self._kernels().name != "numba":
            return None
        try:
            from ._mstep_numba import PAIRWISE_MAX, mstep_diag
        except ImportError:  # pragma: no cover - numba present but broken
            return None
        K, D = self.means_.shape
        if max(K, D if self.covariance_type == "spherical" else 0) > PAIRWISE_MAX:
            return None  # rows it does not sum in NumPy's order
        mw, mp = self._mean_priors()
        hyper = np.zeros((5, K + 1, max(K, D)))
        try:
            hyper[0, 0, :K] = np.asarray(self.startprob_prior, dtype=np.float64) - 1
            hyper[0, 1:, :K] = np.asarray(self.transmat_prior, dtype=np.float64) - 1
            cw1 = np.maximum(np.asarray(self.covars_weight, dtype=np.float64) - 1, 0)
            for i, a in enumerate((mw, mp, np.asarray(self.covars_prior, np.float64), cw1)):
                hyper[i + 1, :K, :D] = np.broadcast_to(a, (K, D))
        except ValueError:
            return None
        flags = sum(1 << i for i, code in enumerate("stmc") if code in self.params)
        # the log prior's terms that are not identically 0
        flags |= 16 * hyper[0, 0].any() | 32 * hyper[0, 1:].any() | 64 * hyper[4].any()
        return mstep_diag, hyper, int(flags)

    def _do_mstep(self, fb, stats) -> float | None:
        """Full and tied covariances on the numba backend: the whole M-step in
        one compiled call (:func:`fastem.hmm._mstep_numba.mstep_full`, the NumPy
        M-step's values bit for bit) instead of ~40 NumPy calls on (K, D, D)
        arrays; the loop evaluates the log prior (None returned). Otherwise
        the general M-step."""
        if self.covariance_type not in _FULL:
            return super()._do_mstep(fb, stats)
        plan = _fit_plan(self, "compiled_mstep_full", self._compiled_mstep_full_plan)
        nk, sx, sxx, shift = stats
        if plan is None or not nk.all():  # an empty state: the NumPy M-step's rule
            return super()._do_mstep(fb, stats)
        fn, hyper, cp, cvw, flags = plan
        cov = self._covars_
        start, trans, means, cov_new = fn(
            fb.start, fb.xi, nk, sx, sxx, shift, self.startprob_, self.transmat_,
            self.means_, cov.reshape(-1, *cov.shape[-2:]), hyper, cp, cvw,
            float(self.reg_covar), flags, self.covariance_type == "tied",
        )  # fmt: skip
        self._set_mstep_result(flags, start, trans, means, cov_new.reshape(cov.shape))
        return None

    def _compiled_mstep_full_plan(self):
        """(kernel, prior arrays, flag bits) for :func:`mstep_full`, or None where
        the NumPy M-step runs: other backends, K above ``PAIRWISE_MAX``, priors
        that do not broadcast as the NumPy M-step's (it raises its own error)."""
        if self._kernels().name != "numba":
            return None
        try:
            from ._mstep_numba import PAIRWISE_MAX, mstep_full
        except ImportError:  # pragma: no cover - numba present but broken
            return None
        K, D = self.means_.shape
        if K > PAIRWISE_MAX:
            return None  # nk.sum() not in NumPy's order
        tied = self.covariance_type == "tied"
        C = 1 if tied else K
        mw, mp = self._mean_priors()
        if not (mw == mw[:, :1]).all():
            return None  # a per-feature weight: the kernel weights rows, hmmlearn columns
        hyper = np.zeros((3, K + 1, max(K, D)))
        try:
            hyper[0, 0, :K] = np.asarray(self.startprob_prior, dtype=np.float64) - 1
            hyper[0, 1:, :K] = np.asarray(self.transmat_prior, dtype=np.float64) - 1
            for i, a in enumerate((mw, mp)):
                hyper[i + 1, :K, :D] = np.broadcast_to(a, (K, D))
            cp = np.asarray(self.covars_prior, dtype=np.float64)
            if cp.ndim > 2 + (not tied):
                return None
            cp = np.ascontiguousarray(np.broadcast_to(cp, (C, D, D)), dtype=np.float64)
            cw = np.asarray(self.covars_weight, dtype=np.float64)
            if cw.ndim > (0 if tied else 1):
                return None
            cvw = np.ascontiguousarray(np.broadcast_to(np.maximum(cw - D, 0), (C,)))
        except ValueError:
            return None
        flags = sum(1 << i for i, code in enumerate("stmc") if code in self.params)
        return mstep_full, hyper, cp, cvw, int(flags)

    def _mean_priors(self) -> tuple[np.ndarray, np.ndarray]:
        """``means_weight`` and ``means_prior`` broadcast to (K, D), as hmmlearn
        broadcasts them (:func:`~fastem.hmm._prior.mean_prior_arrays`)."""
        K, D = self.means_.shape
        return mean_prior_arrays(self.means_weight, self.means_prior, K, D)

    def _emission_mstep(self, stats) -> None:
        nk, sx, sxx, shift = stats
        K, D = self.means_.shape
        ct = self.covariance_type
        mw, mp = _fit_plan(self, "mean_priors", self._mean_priors)
        # Where hmmlearn's update is 0/0 (a state with no posterior weight and no
        # prior weight) it gives NaN; fastem keeps the previous value there, and
        # elsewhere (an empty state that the priors define) follows hmmlearn.
        undefined = np.zeros((K, D), dtype=bool)  # hmmlearn's NaN means
        if "m" in self.params:
            obs = sx + nk[:, None] * shift
            denom = np.broadcast_to(mw + nk[:, None], (K, D))
            with np.errstate(divide="ignore", invalid="ignore"):
                new = (mw * mp + obs) / denom
            undefined = ~(denom > 0)
            self.means_ = np.where(undefined, self.means_, new)  # empty state: keep
        if "c" not in self.params:
            return
        mu = self.means_
        delta = mu - shift
        meandiff = mu - mp
        cp = np.asarray(self.covars_prior, dtype=np.float64)
        cw = np.asarray(self.covars_weight, dtype=np.float64)
        if ct in ("spherical", "diag"):
            # sum_t g (x - mu)^2 from moments about the shift: sxx - 2 d sx + nk d^2
            c_n = mw * meandiff**2 + sxx - 2 * delta * sx + nk[:, None] * delta**2
            c_d = np.maximum(cw - 1, 0) + nk[:, None]
            cov = (cp + c_n) / np.maximum(c_d, 1e-5)
            if ct == "spherical":
                cov = cov.mean(axis=1)
                old = self._covars_
                new = np.where(undefined.any(axis=1), old, cov + self.reg_covar)
            else:
                new = np.where(undefined, self._covars_, cov + self.reg_covar)
            self._covars_ = new
            return
        dd = delta[:, :, None] * sx[:, None, :]
        c_n = (
            # hmmlearn's means_weight * np.outer(md, md): column j takes weight j
            mw[:, None, :] * meandiff[:, :, None] * meandiff[:, None, :]
            + sxx
            - dd
            - np.swapaxes(dd, 1, 2)
            + nk[:, None, None] * delta[:, :, None] * delta[:, None, :]
        )
        if not (mw == mw[:, :1]).all():
            # a per-feature weight makes hmmlearn's term non-symmetric; its density reads
            # the lower triangle (cholesky(lower=True)), so keep that and mirror it: the
            # same likelihoods, and a covariance that score() and save() accept
            c_n = np.tril(c_n) + np.swapaxes(np.tril(c_n, -1), 1, 2)
        cvweight = np.maximum(cw - D, 0)
        eye = np.eye(D)
        if ct == "tied":
            cov = (cp + c_n.sum(axis=0)) / (cvweight + nk.sum())
            self._covars_ = cov + self.reg_covar * eye
            return
        denom = cvweight + nk
        keep = (denom <= 0) | undefined.any(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cov = (cp + c_n) / np.where(keep, 1.0, denom)[:, None, None]
        cov = cov + self.reg_covar * eye
        self._covars_ = np.where(keep[:, None, None], self._covars_, cov)

    # ------------------------------------------------------------ init
    def _init_emissions(self, X, offsets, seq_weight, kernels, rs) -> None:
        K = self.n_components
        D = X.shape[1]
        row_weight = np.repeat(seq_weight, np.diff(offsets))
        complete = ~np.isnan(X).any(axis=1)
        # k-means and the data covariance on the complete frames, else on a
        # column-mean imputation when too few frames are complete.
        if complete.sum() >= K:
            Xc, wc = X[complete], row_weight[complete]
        else:
            Xc = np.where(np.isnan(X), np.nanmean(X, axis=0), X).astype(X.dtype)
            wc = row_weight
        if hasattr(self, "means_") and self.means_.shape[1] != D:
            raise ValueError(f"X has {D} features, means_ has {self.means_.shape[1]}")
        self.n_features = D
        if self._needs_init("m", "means_"):
            if Xc.shape[0] < K:
                raise ValueError(f"n_samples={Xc.shape[0]} should be >= n_components={K}")
            rng = np.random.default_rng(rs.randint(2**31 - 1))
            centres, _ = kmeans(np.ascontiguousarray(Xc), wc, K, rng, kernels.mixture)
            self.means_ = centres
        if self._needs_init("c", "covars_"):
            self.__dict__.pop("_covars_form", None)  # the given form is replaced
            xc = Xc.astype(np.float64)
            cv = np.atleast_2d(np.cov(xc.T, aweights=wc if wc.sum() > 0 else None))
            cv = cv + self.min_covar * np.eye(D)
            ct = self.covariance_type
            if ct == "spherical":
                self._covars_ = np.full(K, cv.mean())
            elif ct == "tied":
                self._covars_ = cv
            elif ct == "diag":
                self._covars_ = np.tile(np.diag(cv), (K, 1))
            else:
                self._covars_ = np.tile(cv, (K, 1, 1))

    def _generate_sample_from_state(self, state: int, random_state) -> np.ndarray:
        return random_state.multivariate_normal(self.means_[state], self.covars_[state])
