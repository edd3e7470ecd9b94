"""GaussianMixture: the estimator. Validation, the EM loop, restarts, and
prediction; the per-row work happens in the backend kernels."""

from __future__ import annotations

import math
import numbers
import time
import warnings

import numpy as np

from . import backends
from ._base import ESTIMATOR_BASES, allow_nan_tags
from ._covariance import (
    COVARIANCE_TYPES,
    check_covariance_type,
    covariance_shape,
    covariances_from_cholesky,
    engine_type,
    layout,
    n_parameters,
    precision_cholesky_from_precisions,
    precisions_from_cholesky,
)
from ._data import ArrayData
from ._em import METHODS, STOPPING_RULES, Evaluation, make_stopping_rule, run_fixed_point
from ._events import emit
from ._init import INIT_METHODS, initial_stats
from ._missing import check_fit_coverage, impute_rows
from ._passes import PassParams, log_prob
from ._stats import (
    empty_component_floor,
    lost_to_a_far_shift,
    m_step,
    project,
    to_engine_layout,
    to_public_layout,
)
from ._threads import limit_threads
from ._validation import (
    check_array,
    check_array_like,
    check_feature_names,
    check_nonneg_float,
    check_positive_int,
    check_sample_weight,
    check_verbose,
)
from .backends._numpy import logsumexp_rows
from .exceptions import ConvergenceWarning, InvalidParameterError, NotFittedError

__all__ = ["GaussianMixture"]

# Rows per block in predict/score: bounds the (block, k) temporaries. 64k elements
# (512 KiB) keep a block's log-probabilities in cache through the log-sum-exp's five
# sweeps: predict_proba 1.29x, score_samples 1.21x faster than 1 << 20, same bits
# (P1, session 11: 200k x 16, K=16 diag, numba).
_PREDICT_BLOCK_ELEMENTS = 1 << 16


def _check_random_state(seed, owner: str | None = None):
    """The generator of ``seed`` (scikit-learn's ``check_random_state``, and a Generator).

    ``owner``: the estimator's class name, for scikit-learn's parameter-validation error
    (:class:`~fastem.exceptions.InvalidParameterError`, its message first) on a bad seed,
    an int outside ``[0, 2**32 - 1]`` included."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    integer = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
    if integer and (owner is None or 0 <= seed <= _MAX_SEED):
        return np.random.RandomState(seed)
    if isinstance(seed, (np.random.RandomState, np.random.Generator)):
        return seed
    if owner is not None:
        raise InvalidParameterError(
            f"The 'random_state' parameter of {owner} must be an int in the range "
            f"[0, {_MAX_SEED}], an instance of 'numpy.random.mtrand.RandomState' or None. "
            f"Got {seed!r} instead. (fastem also takes a numpy.random.Generator.)"
        )
    raise ValueError(
        f"random_state must be None, an int, a RandomState or a Generator, got {seed!r}"
    )


_MAX_SEED = 2**32 - 1

# A later restart replaces the best so far only if its final bound is higher by more
# than rounding: restarts that reach the same optimum (often its components in
# another order) end within ~1e-15 of each other, and which one rounding favours
# differed between the in-memory, memory-map and Dask paths (block sums in another
# order). scikit-learn keeps any strictly higher bound; its rounding is not fastem's,
# so on such ties the two agreed only by chance before too (docs/sklearn_suite.md).
_RESTART_TIE = 1e-12


def _improves(bound: float, best: float) -> bool:
    """Whether a restart's final ``bound`` beats the best so far, ``best``, by more
    than ``_RESTART_TIE`` relative (strictly, as scikit-learn's, when best is -inf)."""
    if not math.isfinite(best):
        return bound > best
    return bound > best + _RESTART_TIE * max(1.0, abs(best))


def _is_dask_collection(X) -> bool:
    """A Dask array, detected without importing dask."""
    return type(X).__module__.startswith("dask.") and hasattr(X, "chunks")


def _is_out_of_core(X) -> bool:
    """An array read in row blocks, never loaded whole: a memory map, or any
    2-D array-like with a NumPy ``dtype`` and row slicing (h5py, zarr, ...).

    In-memory arrays, sparse matrices, pandas objects and Dask arrays are not:
    they keep their own paths (and errors).
    """
    if isinstance(X, np.memmap):
        return True
    if isinstance(X, np.ndarray) or _is_dask_collection(X):
        return False
    module = type(X).__module__
    if module.startswith(("pandas", "scipy.sparse")) or hasattr(X, "nnz"):
        return False  # pandas converts itself; sparse input must raise the sparse error
    shape = getattr(X, "shape", None)
    if module.startswith(("h5py", "zarr")):  # whatever their dtype objects are
        return len(shape or ()) == 2
    return (
        isinstance(shape, tuple)
        and len(shape) == 2
        and isinstance(getattr(X, "dtype", None), np.dtype)
        and hasattr(type(X), "__getitem__")
    )


def _about_moved_means(data, kernels, stats, weights, prec_chol, ct, reg_covar, eps):
    """``stats`` of a pass, or, where the means moved so many standard deviations
    (a start far from the data) that centring its moments on them loses more than
    8 digits (:func:`fastem._stats.lost_to_a_far_shift`), the pass taken again about
    the moved means: the weights and means move first, the covariances kept (a
    conditional M-step; the likelihood does not decrease; the moved weights put the
    tied pass's centre at the data, :func:`fastem.backends._tied.centre_of`). At
    most twice; ordinary steps return ``stats`` itself."""
    for _ in range(2):
        if not lost_to_a_far_shift(stats, ct == "tied", reg_covar):
            break
        nk = stats.nk + empty_component_floor(stats, eps)
        means = stats.shift + stats.sx / nk[:, None]
        weights = nk / nk.sum()
        stats = data.em_stats(
            kernels, PassParams.from_model(weights, means, prec_chol, ct, data.dtype)
        )
    return stats


class _MixtureMap:
    """The Gaussian mixture's EM map as a :class:`fastem._em.FixedPointProblem`.

    Parameterization: the driver extrapolates in unconstrained coordinates,
    ``log w_k`` (weights recovered by a softmax), the means, and the precision
    Cholesky factors ``U_k`` with their diagonal as ``log U_kjj`` ('diag' and
    'spherical': ``log U`` whole). Every finite vector is then a mixture: the
    weights are on the simplex and every precision is positive definite by
    construction, so extrapolations rarely leave the space; a weight heading to
    0 decays geometrically, a straight line in ``log w`` that extrapolation
    follows (in ``w`` it would overshoot below 0 and be rejected); log-scales
    make the step length independent of the data's units for the variances;
    and the E-step takes ``U`` directly, so a point costs no factorization.
    The floor ``reg_covar`` that every EM covariance satisfies (eigenvalues
    ``>= reg_covar``, i.e. ``|U|_2^2 <= 1 / reg_covar``) is checked on each
    extrapolated point, which is infeasible (costing no pass) if it breaks it or
    underflows a weight. Points of the EM map are passed with the exact M-step
    parameters they were packed from, so plain EM steps are bit for bit those
    of the plain loop.

    The ten mclust models without a scikit-learn engine are extrapolated in the
    same coordinates of their kernel family ((k, d, d) or (k, d) factors), which
    loses the structure; an extrapolated point is therefore projected back onto
    the model (:func:`fastem._stats.project`, the maximum-likelihood projection:
    one M-step of the model on the pseudo-scatter ``w_k Sigma_k``) before its
    pass, and the projected point is what the driver continues from. EVE and
    VVE carry their common orientation with each point, so the (generalized)
    M-step at a point is warm-started from that point's own orientation.
    """

    def __init__(self, data, kernels, covariance_type: str, reg_covar: float) -> None:
        self.data = data
        self.kernels = kernels
        self.ct = covariance_type
        self.layout = layout(covariance_type)
        self.structured = covariance_type not in COVARIANCE_TYPES
        self._orientation = None
        self.reg_covar = float(reg_covar)
        self.eps = float(np.finfo(data.dtype).eps)
        self._exact: dict[int, tuple[np.ndarray, tuple, np.ndarray | None]] = {}
        d = data.n_features
        self._diag = np.arange(d)
        self._upper = np.triu_indices(d, 1)

    # How the means are extrapolated: "natural", as ``U_k^T mu_k``, or "mean", as
    # ``mu_k``; set per scheme from MEANS_FRAMES (below the class).
    means_frame = "natural"

    # -- coordinates
    def pack(self, weights, means, prec_chol) -> np.ndarray:
        pc = np.asarray(prec_chol, dtype=np.float64)
        if self.means_frame == "natural":
            means = self._natural_means(means, pc)
        with np.errstate(divide="ignore"):
            parts = [np.log(weights), np.ravel(means)]
        if self.layout in ("full", "tied"):
            iu = self._upper
            parts += [np.log(np.diagonal(pc, axis1=-2, axis2=-1)).ravel(), pc[..., iu[0], iu[1]]]
        else:
            parts.append(np.log(pc).ravel())
        return np.concatenate([np.ravel(p) for p in parts])

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        data = self.data
        d = data.n_features
        k = self._k
        log_w, x = x[:k], x[k:]
        weights = np.exp(log_w - log_w.max())
        weights /= weights.sum()
        means, x = x[: k * d].reshape(k, d), x[k * d :]
        if self.layout in ("full", "tied"):
            shape = (k, d, d) if self.layout == "full" else (d, d)
            m = shape[0] if self.layout == "full" else 1
            pc = np.zeros(shape)
            diag, upper = x[: m * d].reshape(m, d), x[m * d :].reshape(m, -1)
            iu = self._upper
            view = pc.reshape(m, d, d)
            view[:, self._diag, self._diag] = np.exp(diag)
            view[:, iu[0], iu[1]] = upper
        else:
            pc = np.exp(x).reshape((k, d) if self.layout == "diag" else (k,))
        if self.means_frame == "natural":
            with np.errstate(all="ignore"):  # judged by feasible()
                try:
                    means = self._natural_means(means, pc, inverse=True)
                except np.linalg.LinAlgError:  # a factor's diagonal under/overflowed
                    means = np.full_like(means, np.nan)
        return weights, means, pc

    def _natural_means(self, means, prec_chol, inverse: bool = False) -> np.ndarray:
        """The means as ``U_k^T mu_k`` (``inverse``: ``mu_k`` back from them).

        The log-density is ``sum_j log U_kjj - |U_k^T x - U_k^T mu_k|^2 / 2``, so
        ``(U_k, U_k^T mu_k)`` are natural parameters in the factor's frame: a mean
        moves with its factor under extrapolation instead of in data units the
        factor no longer has."""
        means = np.asarray(means, dtype=np.float64)
        if self.layout == "full":
            if inverse:
                ut = np.swapaxes(prec_chol, -1, -2)
                return np.linalg.solve(ut, means[..., None])[..., 0]
            return np.einsum("kji,kj->ki", prec_chol, means)
        if self.layout == "tied":
            return np.linalg.solve(prec_chol.T, means.T).T if inverse else means @ prec_chol
        scale = prec_chol if self.layout == "diag" else prec_chol[:, None]
        return means / scale if inverse else means * scale

    def feasible(self, weights, means, prec_chol) -> bool:
        """Finite, no weight underflowed to 0, covariances above the floor."""
        if not (np.isfinite(weights).all() and np.isfinite(means).all()):
            return False
        if not np.isfinite(prec_chol).all() or weights.min() <= 0.0:
            return False
        if self.reg_covar > 0.0:
            # compared as norms, not squares: a huge extrapolated factor entry would
            # overflow a Python float's square (OverflowError, not inf)
            limit = math.sqrt((1.0 + 1e-9) / self.reg_covar)  # beyond rounding
            if self.layout in ("full", "tied"):
                stack = prec_chol.reshape(-1, *prec_chol.shape[-2:])
                # |U|_2 <= |U|_F: the SVD only when the cheap bound is inconclusive
                with np.errstate(over="ignore"):
                    frobenius = float(np.sqrt(np.max(np.einsum("kij,kij->k", stack, stack))))
                if not frobenius <= limit:
                    if not float(np.max(np.linalg.norm(stack, 2, axis=(1, 2)))) <= limit:
                        return False
            elif not float(np.max(np.abs(prec_chol))) <= limit:
                return False
        return True

    def start(self, params, orientation=None) -> np.ndarray:
        """The vector of initial parameters ``(weights, means, cov, prec_chol)``
        (and, for EVE/VVE, their common orientation)."""
        self._k = params[1].shape[0]
        self._orientation = orientation
        return self._remember(params, orientation)

    def _remember(self, params, orientation=None) -> np.ndarray:
        x = self.pack(params[0], params[1], params[3])
        if len(self._exact) >= 4:  # a scheme revisits at most the last few images
            del self._exact[next(iter(self._exact))]
        self._exact[id(x)] = (x, params, orientation)
        return x

    def _project(self, weights, means, prec_chol):
        """An extrapolated point projected onto the model's structure, or None."""
        state = {} if self._orientation is None else {"orientation": self._orientation}
        try:
            with np.errstate(all="ignore"):
                cov = covariances_from_cholesky(prec_chol, self.layout)
                if not np.isfinite(cov).all():
                    return None
                _, _, _, prec_chol = project(weights, means, cov, self.ct, self.eps, state)
        except (ValueError, np.linalg.LinAlgError):
            return None
        return prec_chol, state.get("orientation")

    # -- one pass
    def evaluate(self, x: np.ndarray, extrapolated: bool) -> Evaluation | None:
        entry = self._exact.get(id(x))
        orientation = None
        if entry is not None and entry[0] is x:
            weights, means, _, prec_chol = entry[1]
            orientation = entry[2]
        else:
            with np.errstate(over="ignore", under="ignore"):  # judged by feasible()
                weights, means, prec_chol = self.unpack(x)
            if self.structured:
                if not (np.isfinite(prec_chol).all() and np.isfinite(weights).all()):
                    return None
                if weights.min() <= 0.0:
                    return None
                projected = self._project(weights, means, prec_chol)
                if projected is None:
                    return None
                prec_chol, orientation = projected
                x = self.pack(weights, means, prec_chol)
            if extrapolated and not self.feasible(weights, means, prec_chol):
                return None
        data = self.data
        pass_params = PassParams.from_model(weights, means, prec_chol, self.ct, data.dtype)
        stats = data.em_stats(self.kernels, pass_params)
        objective = stats.loglik / data.weight_sum
        stats = _about_moved_means(data, self.kernels, stats, weights, prec_chol, self.ct,
                                   self.reg_covar, self.eps)  # fmt: skip
        state = {} if orientation is None else {"orientation": orientation}
        try:
            params = m_step(stats, self.ct, self.reg_covar, self.eps, state=state)
        except ValueError:
            if not extrapolated:
                raise  # plain EM failed here: the user's error, as without acceleration
            return Evaluation(x, objective, None)
        image_orientation = state.get("orientation")
        if image_orientation is not None:
            self._orientation = image_orientation
        image = self._remember(params, image_orientation)
        return Evaluation(x, objective, image, (params, image_orientation))


# The means' frame per acceleration, from the convergence sweep (docs/acceleration.md):
# natural means helped SQUAREM (with the x1 reference) and quasi-Newton; Anderson
# did better in data units (25 of 28 problems reached against 21).
# Vector extrapolation ("mpe") as quasi-Newton, whose secant model it shares.
MEANS_FRAMES = {"squarem": "natural", "qn": "natural", "anderson": "mean", "mpe": "natural"}


class GaussianMixture(*ESTIMATOR_BASES):
    """Gaussian mixture model fitted by Expectation-Maximization on fused kernels.

    A drop-in for :class:`sklearn.mixture.GaussianMixture`: the same
    parameters, attributes and results (given the same initial parameters),
    computed by one fused pass over the data per EM iteration on a compiled
    backend, plus weighted fitting (``sample_weight``).

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : str, default='full'
        'full': each component has its own covariance matrix; 'tied': all share
        one; 'diag': each has a diagonal covariance; 'spherical': each has a
        single variance. Or one of mclust's 14 models (any case): 'EII', 'VII',
        'EEI', 'VEI', 'EVI', 'VVI', 'EEE', 'VEE', 'EVE', 'VVE', 'EEV', 'VEV',
        'EVV', 'VVV', with ``Sigma_k = scale_k D_k diag(shape_k) D_k^T`` whose
        volume, shape and orientation are Equal across components, Variable, or
        the Identity (see ``docs/mclust_models.md``). VII, VVI, EEE and VVV are
        'spherical', 'diag', 'tied' and 'full' (fitted bit for bit the same),
        but in mclust's layout: ``covariances_`` and the precisions are (k, d)
        for the six diagonal models and (k, d, d) for the others.
    tol : float, default=1e-3
        Threshold of the ``stopping`` rule; by default EM stops when the average
        log-likelihood gains less than ``tol`` in one iteration.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance, keeping them positive definite.
    max_iter : int, default=100
        EM iterations per initialization.
    n_init : int, default=1
        Initializations to run; the one with the highest lower bound is kept.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data', 'hc', 'emem', \
'best', 'smem'}, default='kmeans'
        How the initial responsibilities are chosen: fastem's weighted k-means
        (k-means++ seeding then Lloyd passes), k-means++ seeds, random
        responsibilities, random rows; 'hc', the K-cluster cut of mclust's
        model-based agglomerative hierarchical clustering (VVV criterion on
        SVD-scaled data, at most 2000 rows; deterministic on unweighted data of
        at most 2000 rows); or 'emem', emEM (Biernacki, Celeux & Govaert 2003):
        the best of 10 short runs of 5 EM passes from k-means++ seeds, continued
        by the fit; or 'best': the hc and k-means starts and 10 random ones, 5 EM
        passes each, then both deterministic runs and the 2 best random ones up to
        40 passes, the best non-degenerate one continued by the fit (about 4x the
        EM passes of a k-means fit); or 'smem': the 'best' start run to
        convergence, then split-and-merge EM (Ueda et al. 2000) moves merging two
        components and splitting a third while one raises the log-likelihood
        (on the suite of ``docs/initialization.md``, median 3.1x the EM passes and
        1.8x the CPU time of 'best'). 'best' where the optimum matters more than
        the cost; 'hc' for one cheap deterministic start. See
        ``docs/initialization.md``.
    weights_init : array-like of shape (n_components,), default=None
        User initial weights (summing to 1).
    means_init : array-like of shape (n_components, n_features), default=None
        User initial means.
    precisions_init : array-like, default=None
        User initial precisions (inverse covariances); shape (k, d, d) for
        'full', (d, d) for 'tied', (k, d) for 'diag', (k,) for 'spherical';
        for an mclust model (k, d) (diagonal models) or (k, d, d), projected
        onto the model's structure (the maximum-likelihood projection, one
        M-step of the model on the scatter ``w_k Sigma_k``; nothing changes for
        a start that has the structure).
    random_state : int, RandomState, Generator or None, default=None
        Seed of the initialization (and of :meth:`sample`); an int in ``[0, 2**32 - 1]``.
    warm_start : bool, default=False
        If True, ``fit`` starts from the previous fit's parameters (and ``n_init``
        is ignored).
    verbose : int, default=0
        1 prints each initialization's progress, 2 also times and lower bounds.
    verbose_interval : int, default=10
        Iterations between progress lines.
    backend : {'numba', 'cython', 'numpy'} or None, default=None
        Kernel backend. None: the ``FASTEM_BACKEND`` environment variable, else the
        first available of numba, cython, numpy.
    n_threads : int or None, default=None
        Cap on the threads the compiled kernels use during ``fit``, ``predict``,
        ``predict_proba`` and ``score_samples``; the previous setting is restored
        afterwards, also when the call raises. None leaves the backend's own
        setting (``NUMBA_NUM_THREADS`` for numba, ``OMP_NUM_THREADS`` for cython,
        else every core). The model does not depend on it: fits are
        bit-identical on any number of threads.
    learning_offset : float, default=10.0
        ``t0`` of :meth:`partial_fit`'s step size ``(t + t0) ** -learning_decay``
        for its ``t``-th batch: larger values give smaller steps, slower and less
        noisy updates. The first batch of an unfitted model starts the stream;
        on a model fitted by :meth:`fit`, the fit counts as batch 1.
    learning_decay : float, default=0.7
        The exponent of that step size, in (0.5, 1].
    acceleration : {None, 'squarem', 'anderson', 'qn', 'mpe'}, default=None
        None: plain EM, step for step scikit-learn's. 'squarem': SQUAREM
        (Varadhan & Roland 2008); 'anderson': damped restarted Anderson
        acceleration (after DAAREM, Henderson & Varadhan 2019); 'qn': the
        quasi-Newton acceleration of Zhou, Alexander & Lange (2011) with 4
        secant pairs; 'mpe': cycled minimal polynomial extrapolation (Smith,
        Ford & Sidi 1987) over the last 4 EM points. All extrapolate from the
        EM iterates and keep an extrapolation only if its log-likelihood is at
        least that of an EM step from the same point (SQUAREM and 'qn': the
        cycle's first, ``F(x0)``; Anderson: ``F(x)``; 'mpe': the last EM
        point), so the log-likelihood never decreases;
        ``max_iter`` and ``n_iter_`` then count data passes, extrapolations
        included. See :mod:`fastem._em` and docs/acceleration.md.
    stopping : {'absolute', 'relative', 'aitken'}, default='absolute'
        When to stop, given ``tol`` and the average log-likelihoods ``l`` of
        consecutive EM steps: 'absolute' (scikit-learn's) when
        ``|l_t - l_{t-1}| < tol``; 'relative' (mclust's) when
        ``|l_t - l_{t-1}| / (1 + |l_t|) < tol``; 'aitken' when the gain still to
        come, as Aitken's extrapolation of the linearly converging sequence
        predicts it, is below ``tol``. See :mod:`fastem._em.stopping`.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
        Shape as ``precisions_init``.
    precisions_ : ndarray
        Inverses of the covariances.
    precisions_cholesky_ : ndarray
        Cholesky factors ``U`` of the precisions (``U @ U.T = precision``).
    scale_ : ndarray of shape (n_components,)
        mclust models only: the volumes ``det(Sigma_k) ** (1 / d)``.
    shape_ : ndarray of shape (n_components, n_features)
        mclust models only: the diagonals of ``A_k`` (product 1), in the order
        of ``orientation_``'s columns.
    orientation_ : ndarray of shape (n_components, n_features, n_features)
        mclust models only: ``D_k`` (the identity for the diagonal models), so
        ``covariances_[k] = scale_[k] * D_k @ diag(shape_[k]) @ D_k.T``. See
        :func:`fastem._mclust.decomposition` for the conventions.
    converged_ : bool
        Whether the best initialization converged; False after :meth:`partial_fit`.
    n_iter_ : int
        EM iterations (data passes) of the best initialization; after
        :meth:`partial_fit`, the batches of the stream (``n_batches_``). A start
        ~1e4+ standard deviations from the data repeats an iteration's pass about
        the moved means (at most twice, only then); the repeat is that
        iteration's E-step, not counted, so plain EM's ``n_iter_`` stays
        scikit-learn's.
    lower_bound_ : float
        Average log-likelihood (the EM lower bound) of the best initialization,
        evaluated at the parameters before its last M-step (``-inf`` with
        ``max_iter=0``, warm start included, as scikit-learn's); after
        :meth:`partial_fit`, the last batch's, at the parameters before its step.
    lower_bounds_ : list of float
        Its lower bound at every pass (with acceleration: the best so far,
        which a rejected extrapolation's pass leaves unchanged); after
        :meth:`partial_fit`, one per batch (a preceding fit's final bound first).
    n_extrapolations_accepted_ : int
        Extrapolations the best initialization kept (0 without acceleration),
        less those it later retracted (see ``n_extrapolations_rejected_``).
    n_extrapolations_rejected_ : int
        Extrapolations it rejected (infeasible, or below the EM step they
        would have replaced); each feasible one cost a pass. A kept
        extrapolation that was later retracted counts here, not as accepted:
        where the EM map fails (a singular M-step) some passes after a kept
        extrapolation, the fit steps back to the EM point that extrapolation
        replaced (further back, one kept extrapolation at a time, while EM
        fails there too; each counts) and goes on from it as plain EM. The
        passes since the retracted extrapolation, the failed one included,
        still count in ``n_iter_``.
    n_features_in_ : int
        Number of features seen in ``fit``.
    backend_ : str
        The backend that fitted the model.
    n_batches_ : int
        Batches of the :meth:`partial_fit` stream so far (a preceding ``fit``
        counts as one). Set by ``partial_fit`` only; ``fit`` removes it.
    sufficient_stats_nk_ : ndarray of shape (n_components,)
        The stream's running statistics per unit weight (they sum to 1):
        responsibilities per component. Set and removed as ``n_batches_``.
    sufficient_stats_sx_ : ndarray of shape (n_components, n_features)
        Running first moments about ``sufficient_stats_shift_``.
    sufficient_stats_sxx_ : ndarray
        Running second moments about ``sufficient_stats_shift_``: shape
        (n_components, n_features, n_features) for 'full' and 'tied', else
        (n_components, n_features) (their diagonals).
    sufficient_stats_shift_ : ndarray of shape (n_components, n_features)
        The centres of those moments.

    Notes
    -----
    Fitting never materializes the (n_samples, n_components) responsibilities:
    each iteration is one pass producing additive sufficient statistics.
    """

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        backend: str | None = None,
        n_threads: int | None = None,
        learning_offset: float = 10.0,
        learning_decay: float = 0.7,
        acceleration: str | None = None,
        stopping: str = "absolute",
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.backend = backend
        self.n_threads = n_threads
        self.learning_offset = learning_offset
        self.learning_decay = learning_decay
        self.acceleration = acceleration
        self.stopping = stopping

    def __sklearn_tags__(self):
        # NaN entries are missing values, handled by EM itself.
        return allow_nan_tags(super().__sklearn_tags__())

    # ------------------------------------------------------------------ checks
    def _check_hyper_parameters(self) -> str:
        """Validate the parameters without looking at any data; return the covariance
        type's canonical name.

        scikit-learn's parameter constraints, with its messages and error class
        (:class:`~fastem.exceptions.InvalidParameterError`, a ``ValueError`` and a
        ``TypeError``); ``fit`` runs this before it reads X, as scikit-learn does, so
        with both X and a parameter wrong the parameter's error comes first."""
        owner = type(self).__name__  # scikit-learn's wording of the errors
        check_positive_int(self.n_components, "n_components", owner=owner)
        check_nonneg_float(self.tol, "tol", owner=owner)
        check_nonneg_float(self.reg_covar, "reg_covar", owner=owner)
        check_positive_int(self.max_iter, "max_iter", minimum=0, owner=owner)
        check_positive_int(self.n_init, "n_init", owner=owner)
        check_positive_int(self.verbose_interval, "verbose_interval", owner=owner)
        if self.n_threads is not None:
            check_positive_int(self.n_threads, "n_threads", owner=owner)
        try:
            ct = check_covariance_type(self.covariance_type)
        except ValueError as exc:
            raise InvalidParameterError(
                f"The 'covariance_type' parameter of {owner} must be a str among "
                f"{{'full', 'tied', 'diag', 'spherical'}} or an mclust model name. Got "
                f"{self.covariance_type!r} instead. ({exc})"
            ) from None
        if self.acceleration not in METHODS:
            raise ValueError(
                f"Invalid value for 'acceleration': {self.acceleration!r}; "
                f"expected one of {METHODS}."
            )
        if self.stopping not in STOPPING_RULES:
            raise ValueError(
                f"Invalid value for 'stopping': {self.stopping!r}; "
                f"expected one of {STOPPING_RULES}."
            )
        if self.init_params not in INIT_METHODS:
            raise InvalidParameterError(
                f"The 'init_params' parameter of {owner} must be a str among "
                f"{set(INIT_METHODS)}. Got {self.init_params!r} instead."
            )
        if not isinstance(self.warm_start, (bool, np.bool_)):
            raise InvalidParameterError(
                f"The 'warm_start' parameter of {owner} must be an instance of 'bool' or "
                f"an instance of 'numpy.bool'. Got {self.warm_start!r} instead."
            )
        check_verbose(self.verbose, owner)
        seed = self.random_state
        valid_int = isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
        if not ((valid_int and 0 <= seed <= _MAX_SEED) or seed is None or seed is np.random):
            _check_random_state(seed, owner)  # raises, unless a RandomState or Generator
        for name in ("weights_init", "means_init", "precisions_init"):
            check_array_like(getattr(self, name), name, owner)
        return ct

    def _check_parameters(self, n_features: int, check_init: bool = True) -> dict:
        """Validate hyper-parameters and user initial parameters (float64 copies).

        ``check_init=False`` skips the initial parameters (an empty dict): a
        ``partial_fit`` batch after the first never uses them, and checking
        ``precisions_init`` (an eigen-decomposition per matrix) cost more than
        the batch's EM step on small batches."""
        ct = self._check_hyper_parameters()
        k, d = self.n_components, n_features
        user: dict = {}
        if not check_init:
            return user
        # The messages start with scikit-learn's own (code matching them keeps working)
        # and end with fastem's wording of the same check.
        if self.weights_init is not None:
            w = self._user_array(self.weights_init, "weights_init", (k,), "weights")
            if (w < 0).any() or (w > 1).any():
                lo, hi = w.min(), w.max()
                raise ValueError(  # scikit-learn's text labels the minimum 'max value'
                    "The parameter 'weights' should be in the range [0, 1], but got "
                    f"max value {lo:.5f}, min value {hi:.5f} (weights_init must lie in "
                    f"[0, 1]; its minimum is {lo:.5g} and its maximum {hi:.5g})."
                )
            # scikit-learn's tolerance: float32 weights stay float32 there
            float32 = np.asarray(self.weights_init).dtype == np.float32
            if abs(1.0 - w.sum()) > (1e-6 if float32 else 1e-8):
                raise ValueError(
                    "The parameter 'weights' should be normalized, but got sum(weights) = "
                    f"{w.sum():.5f} (weights_init must sum to 1, got sum {w.sum():.10g})."
                )
            user["weights"] = w
        if self.means_init is not None:
            user["means"] = self._user_array(self.means_init, "means_init", (k, d), "means")
        if self.precisions_init is not None:
            shape = covariance_shape(ct, k, d)
            label = f"{self.covariance_type} precision"
            p = self._user_array(self.precisions_init, "precisions_init", shape, label)
            if layout(ct) in ("full", "tied"):
                mats = p.reshape(-1, d, d)
                for i, mat in enumerate(mats):
                    if not np.allclose(mat, mat.T) or np.linalg.eigvalsh(mat).min() <= 0:
                        which = "" if layout(ct) == "tied" else f" (component {i})"
                        raise ValueError(
                            f"'{label}' should be symmetric, positive-definite "
                            f"(precisions_init{which} must be symmetric positive definite)."
                        )
            elif (p <= 0).any():
                raise ValueError(
                    f"'{label}' should be positive (precisions_init must be positive "
                    f"for '{ct}' covariances)."
                )
            # mclust models: the model's layout ((k, d) or (k, d, d)); a start that
            # lacks the structure is projected onto it (see _initial_parameters)
            user["prec_chol"] = precision_cholesky_from_precisions(p, ct)
        return user

    @staticmethod
    def _user_array(value, name: str, shape: tuple[int, ...], label: str) -> np.ndarray:
        arr = np.asarray(value)
        if np.iscomplexobj(arr):  # scikit-learn's check_array message first
            raise ValueError(
                f"Complex data not supported\n{arr}\n({name} must be real, got dtype {arr.dtype}.)"
            )
        if arr.dtype.kind not in "biuf":
            # object and string arrays are converted as scikit-learn's check_array does
            # (None becomes NaN, caught below); its error on what does not convert
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"{exc} ({name} must be numeric, got dtype {arr.dtype}.)"
                ) from None
        if arr.ndim > 2 and len(shape) <= 2:  # check_array allows n-d for (k, d, d) only
            raise ValueError(
                f"Found array with dim {arr.ndim}, while dim <= 2 is required. ({name} must "
                f"have shape {shape}.)"
            )
        dtype = arr.dtype if arr.dtype == np.float32 else np.dtype(np.float64)
        arr = arr.astype(np.float64)
        # scikit-learn's check_array, before the shape check as there
        if np.isnan(arr).any():
            raise ValueError(f"Input contains NaN. ({name} contains NaN.)")
        if not np.isfinite(arr).all():
            raise ValueError(
                f"Input contains infinity or a value too large for {dtype!r}. "
                f"({name} contains infinity.)"
            )
        if arr.shape != shape:
            raise ValueError(
                f"The parameter '{label}' should have the shape of {shape}, but got "
                f"{arr.shape} ({name} must have shape {shape})."
            )
        return arr

    def _check_is_fitted(self) -> None:
        if not hasattr(self, "precisions_cholesky_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                "appropriate arguments before using this estimator."
            )

    # --------------------------------------------------------------------- fit
    def fit(self, X, y=None, sample_weight=None) -> GaussianMixture:
        """Fit the mixture by EM, keeping the best of ``n_init`` initializations.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            float32 data is fitted in float32 (float64 accumulators); anything
            else is converted to float64.
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative row weights: an integer weight is equivalent to
            repeating the row, a weight of 0 to dropping it.

        Returns
        -------
        self : GaussianMixture
        """
        self._check_hyper_parameters()  # before X, as scikit-learn's _fit_context
        data = self._fit_data(X, sample_weight)
        self._fit_from(data)
        check_feature_names(self, X, reset=True)  # only once the fit has succeeded
        return self

    def _fit_from(self, data) -> GaussianMixture:
        """The EM fit on validated data (an ``ArrayData`` or an out-of-core/Dask
        equivalent, see :mod:`fastem._data`)."""
        d = data.n_features
        user = self._check_parameters(d)
        warm = self.warm_start and hasattr(self, "converged_")
        if warm and getattr(self, "n_features_in_", d) != d:
            raise ValueError(
                f"X has {d} features, but the warm-started {type(self).__name__} was "
                f"fitted with {self.n_features_in_} features."
            )
        backend_name = backends.resolve_backend_name(self.backend)
        kernels = backends.get_backend(backend_name)
        with limit_threads(backend_name, self.n_threads):
            result = self._fit_em(data, user, kernels, warm)

        # Only now, with everything computed, does the estimator change.
        (
            weights, means, covariances, prec_chol,
            converged, n_iter, lower_bound, bounds, extrapolations, orientation,
        ) = result  # fmt: skip
        if self.max_iter == 0:  # no iteration, no bound (a warm start's too, as scikit-learn)
            lower_bound = -np.inf
        if not converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        dtype = data.dtype
        ct = check_covariance_type(self.covariance_type)
        covariances, prec_chol = self._public_layout(ct, means, covariances, prec_chol)
        self.weights_ = weights.astype(dtype)
        self.means_ = means.astype(dtype)
        self.covariances_ = covariances.astype(dtype)
        self.precisions_cholesky_ = prec_chol.astype(dtype)
        self.precisions_ = precisions_from_cholesky(prec_chol, ct).astype(dtype)
        self.converged_ = converged
        self.n_iter_ = n_iter
        self.lower_bound_ = lower_bound
        self.lower_bounds_ = bounds
        self.n_extrapolations_accepted_, self.n_extrapolations_rejected_ = extrapolations
        self.n_features_in_ = d
        self.backend_ = backend_name
        self._set_decomposition(ct, covariances, orientation, dtype)
        from ._online import clear_online_state

        clear_online_state(self)  # a later partial_fit continues from this fit, as batch 1
        return self

    @staticmethod
    def _public_layout(ct, means, covariances, prec_chol):
        """The engine's covariances and factors in the covariance type's own layout."""
        return to_public_layout(ct, covariances, prec_chol, *means.shape)

    def _set_decomposition(self, ct, covariances, orientation, dtype) -> None:
        """``scale_``, ``shape_`` and ``orientation_`` for an mclust name; removed otherwise."""
        if ct in COVARIANCE_TYPES:
            for name in ("scale_", "shape_", "orientation_"):
                if name in vars(self):
                    delattr(self, name)
            return
        from ._mclust import decomposition

        scale, shape, orient = decomposition(ct, covariances, orientation)
        self.scale_ = scale.astype(dtype)
        self.shape_ = shape.astype(dtype)
        self.orientation_ = orient.astype(dtype)

    def _fit_data(self, X, sample_weight):
        """Validate X and the weights; return what the EM loop iterates over."""
        if _is_dask_collection(X):
            from .dask import dask_fit_data

            return dask_fit_data(self, X, sample_weight)
        if _is_out_of_core(X):
            from ._blocks import block_fit_data

            return block_fit_data(self, X, sample_weight)
        X = check_array(X, min_samples=2, allow_nan=True, estimator_name=type(self).__name__)
        n = X.shape[0]
        sw = check_sample_weight(sample_weight, n)
        check_positive_int(self.n_components, "n_components", owner=type(self).__name__)
        k = self.n_components
        if n < k:
            raise ValueError(
                f"Expected n_samples >= n_components but got n_components = {k}, n_samples = {n}"
            )
        data = ArrayData(X, sw)
        patterns = data.patterns
        informative = sw if patterns is None else sw[patterns.rows]
        check_fit_coverage(
            n_rows=n,
            n_empty=data.n_empty_rows,
            observed_per_feature=None if patterns is None else patterns.observed_per_feature,
            n_informative=int((informative > 0).sum()),
            n_components=k,
            stacklevel=3,  # as seen from _fit_data: the user's call to fit
        )
        return data

    def _initial_parameters(self, data, user, kernels, rng, state=None):
        """float64 (weights, means, covariances, prec_chol) of a fresh start, in the
        layout of the covariance type's engine (:func:`fastem._covariance.engine_type`).

        An mclust model starts from one structured M-step on the initialization's
        statistics; the initialization itself (k-means, hc, emEM, ...) runs on the
        unconstrained model of the same kernel family (VVV or VVI) for the ten
        models that have no scikit-learn equivalent. ``precisions_init`` for an
        mclust model is projected onto the model's structure by
        :func:`fastem._stats.project` (an exact no-op for VVV and VVI).
        """
        ct = check_covariance_type(self.covariance_type)
        engine = engine_type(ct)
        eps = float(np.finfo(data.dtype).eps)
        if {"weights", "means", "prec_chol"} <= user.keys():
            weights, means = user["weights"], user["means"]
        else:
            full = layout(engine) in ("full", "tied")
            init_ct = engine if engine in COVARIANCE_TYPES else ("full" if full else "diag")
            X, sw = data.init_arrays()
            stats = initial_stats(
                X, sw, self.n_components, self.init_params, rng, kernels, full,
                covariance_type=init_ct, reg_covar=self.reg_covar,
            )  # fmt: skip
            weights, means, cov, prec_chol = m_step(stats, engine, self.reg_covar, eps, state=state)
            weights = user.get("weights", weights)
            means = user.get("means", means)
        if "prec_chol" in user:
            prec_chol = user["prec_chol"]
            if ct in COVARIANCE_TYPES or ct in ("VVV", "VVI"):  # no structure to impose
                cov = covariances_from_cholesky(prec_chol, engine)
            else:
                given = covariances_from_cholesky(prec_chol, ct)
                _, _, cov, prec_chol = project(weights, means, given, engine, eps, state)
        return weights, means, cov, prec_chol

    def _fit_em(self, data, user, kernels, warm):
        """Run every initialization; return the best one's parameters and trace.

        Runs on the engine of the covariance type (VII, VVI, EEE and VVV on
        scikit-learn's code paths, bit for bit), in the engine's layout; the
        last item is the EVE/VVE common orientation (None for other models).
        """
        ct = engine_type(self.covariance_type)
        eps = float(np.finfo(data.dtype).eps)
        weight_sum = data.weight_sum
        rng = _check_random_state(self.random_state, type(self).__name__)

        best = None
        n_init = 1 if warm else self.n_init
        for init in range(n_init):
            emit("init_start", init=init, n_init=n_init)
            t_init = t_iter = time.perf_counter()
            if self.verbose:
                print(f"Initialization {init}")
            state: dict = {}  # EVE/VVE: the orientation, warm-starting each M-step
            if warm:
                weights, means, cov, prec_chol = (
                    np.asarray(a, dtype=np.float64)
                    for a in (
                        self.weights_,
                        self.means_,
                        self.covariances_,
                        self.precisions_cholesky_,
                    )
                )
                cov, prec_chol = to_engine_layout(self.covariance_type, cov, prec_chol)
                params = (weights, means, cov, prec_chol)
                if ct in ("EVE", "VVE") and getattr(self, "orientation_", None) is not None:
                    state["orientation"] = np.asarray(self.orientation_[0], dtype=np.float64)
                lower_bound = self.lower_bound_
            else:
                params = self._initial_parameters(data, user, kernels, rng, state)
                lower_bound = -np.inf
            extrapolations = (0, 0)
            if self.acceleration is not None and self.max_iter > 0:
                res = self._accelerated_em(
                    data, kernels, params, lower_bound if warm else None, init, n_init, state
                )
                params, orientation = res.payload
                converged, n_iter = res.converged, res.n_passes
                lower_bound, bounds = res.objective, res.lower_bounds
                extrapolations = (res.n_accepted, res.n_rejected)
                self._report_init_end(init, n_init, converged, n_iter, lower_bound, t_init)
                if best is None or _improves(lower_bound, best[6]):
                    best = (
                        *params, converged, n_iter, lower_bound, bounds, extrapolations,
                        orientation,
                    )  # fmt: skip
                continue
            rule = make_stopping_rule(self.stopping, self.tol)
            rule.reset(lower_bound)
            bounds: list[float] = []
            converged = False
            n_iter = 0
            for n_iter in range(1, self.max_iter + 1):  # noqa: B007 - n_iter used after loop
                prev = lower_bound
                weights, means, _, prec_chol = params
                pass_params = PassParams.from_model(weights, means, prec_chol, ct, data.dtype)
                stats = data.em_stats(kernels, pass_params)
                lower_bound = stats.loglik / weight_sum  # at these parameters, as _MixtureMap
                stats = _about_moved_means(data, kernels, stats, weights, prec_chol, ct,
                                           self.reg_covar, eps)  # fmt: skip
                params = m_step(stats, ct, self.reg_covar, eps, state=state)
                bounds.append(lower_bound)
                change = lower_bound - prev
                emit(
                    "iteration",
                    init=init,
                    n_init=n_init,
                    n_iter=n_iter,
                    max_iter=self.max_iter,
                    lower_bound=lower_bound,
                    change=change,
                )
                if self.verbose and n_iter % self.verbose_interval == 0:
                    if self.verbose > 1:
                        now = time.perf_counter()
                        print(
                            f"  Iteration {n_iter}\t time lapse {now - t_iter:.5f}s\t "
                            f"ll change {change:.5f}"
                        )
                        t_iter = now
                    else:
                        print(f"  Iteration {n_iter}")
                if rule.update(lower_bound):  # 'absolute': abs(change) < tol
                    converged = True
                    break
            self._report_init_end(init, n_init, converged, n_iter, lower_bound, t_init)
            # max_iter=0: no bound to compare; the last start is kept, as scikit-learn's
            if best is None or _improves(lower_bound, best[6]) or self.max_iter == 0:
                best = (
                    *params, converged, n_iter, lower_bound, bounds, extrapolations,
                    state.get("orientation"),
                )  # fmt: skip
        return best

    def _report_init_end(self, init, n_init, converged, n_iter, lower_bound, t_init) -> None:
        emit(
            "init_end",
            init=init,
            n_init=n_init,
            converged=converged,
            n_iter=n_iter,
            lower_bound=lower_bound,
        )
        if self.verbose and self.max_iter > 0:  # scikit-learn: no line without iterations
            status = "converged" if converged else "did not converge"
            if self.verbose > 1:
                print(
                    f"Initialization {status}. time lapse "
                    f"{time.perf_counter() - t_init:.5f}s\t lower bound {lower_bound:.5f}."
                )
            else:
                print(f"Initialization {status}.")

    def _accelerated_em(self, data, kernels, params, previous, init, n_init, state):
        """One initialization's EM with ``self.acceleration``, on the generic driver.

        The result's payload is ``(params, orientation)``.
        """
        problem = _MixtureMap(data, kernels, engine_type(self.covariance_type), self.reg_covar)
        problem.means_frame = MEANS_FRAMES[self.acceleration]
        x0 = problem.start(params, state.get("orientation"))
        clock = [time.perf_counter()]

        def on_pass(n_pass: int, lower_bound: float, change: float) -> None:
            emit(
                "iteration",
                init=init,
                n_init=n_init,
                n_iter=n_pass,
                max_iter=self.max_iter,
                lower_bound=lower_bound,
                change=change,
            )
            if self.verbose and n_pass % self.verbose_interval == 0:
                if self.verbose > 1:
                    now = time.perf_counter()
                    print(
                        f"  Iteration {n_pass}\t time lapse {now - clock[0]:.5f}s\t "
                        f"ll change {change:.5f}"
                    )
                    clock[0] = now
                else:
                    print(f"  Iteration {n_pass}")

        return run_fixed_point(
            problem,
            x0,
            method=self.acceleration,
            max_passes=self.max_iter,
            rule=make_stopping_rule(self.stopping, self.tol),
            previous_objective=previous,
            on_pass=on_pass,
            # x' judged against the cycle's first EM step: with the natural means, the
            # sweep's best figures and no problem ending below plain EM
            # (docs/acceleration.md); the HMMs keep the driver's default, "x2"
            options={"reference": "x1"} if self.acceleration == "squarem" else None,
            # the end of the path, as plain EM: with a reg_covar that matters next to the
            # data's variances, the map lowers l on its way to its fixed point, and the
            # best point seen would be an early iterate (docs/acceleration.md)
            follow_path=True,
        )

    def partial_fit(self, X, y=None, sample_weight=None) -> GaussianMixture:
        """Update the model with one batch of rows by stepwise online EM.

        See :mod:`fastem._online` for the algorithm (Cappe & Moulines, 2009;
        Liang & Klein, 2009). On an unfitted model the first call initializes
        from its batch (or from the ``*_init`` parameters). On a model fitted by
        :meth:`fit` (or loaded without a stream) it continues from the fitted
        parameters: the fit counts as batch 1, so this batch is blended in with
        step ``(2 + learning_offset) ** -learning_decay``. A DataFrame's column
        names are recorded from the first batch (``feature_names_in_``); a later
        batch with other names raises ``ValueError`` and leaves the model unchanged.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One batch; NaN entries are missing values.
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self : GaussianMixture
        """
        from ._online import partial_fit

        self._check_hyper_parameters()  # scikit-learn's errors, as fit's
        return partial_fit(self, X, sample_weight)

    def fit_predict(self, X, y=None, sample_weight=None) -> np.ndarray:
        """Fit the model and return the component label of each row of X.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        return self.fit(X, sample_weight=sample_weight).predict(X)

    # ----------------------------------------------------------------- predict
    def _validate_predict_input(self, X) -> np.ndarray:
        self._check_is_fitted()
        check_feature_names(self, X, reset=False)
        if self.n_threads is not None:
            check_positive_int(self.n_threads, "n_threads")
        if _is_out_of_core(X):  # read and checked block by block, never loaded whole
            from ._blocks import BlockReader

            return BlockReader(X, self.n_features_in_, type(self).__name__)
        return check_array(
            X, n_features=self.n_features_in_, allow_nan=True, estimator_name=type(self).__name__
        )

    def _log_prob_blocks(self, X):
        """Yield ``(start, stop, weighted log-probabilities)`` over row blocks.

        The backend's thread cap holds only while a block is computed, so the
        caller's code between blocks runs with the caller's own settings.
        """
        backend_name = backends.resolve_backend_name(self.backend)
        kernels = backends.get_backend(backend_name)
        params = self._pass_params(X.dtype)
        k = self._n_fitted_components()
        block = max(1024, _PREDICT_BLOCK_ELEMENTS // k)
        for start in range(0, X.shape[0], block):
            xb = X[start : start + block]
            out = np.empty((xb.shape[0], k))
            with limit_threads(backend_name, self.n_threads):
                log_prob(kernels, xb, params, out)
            yield start, start + xb.shape[0], out

    def _n_fitted_components(self) -> int:
        """The fitted model's number of components: predictions follow the fitted
        attributes, as scikit-learn's, whatever ``set_params(n_components=...)`` set since
        (the kernels write one column per fitted component)."""
        return self.weights_.shape[0]

    def _pass_params(self, dtype) -> PassParams:
        return PassParams.from_model(
            self.weights_.astype(np.float64),
            self.means_,
            self.precisions_cholesky_,
            self.covariance_type,
            dtype,
        )

    def impute(self, X) -> np.ndarray:
        """Fill in missing values (NaN) with their expectation under the model.

        Each NaN becomes ``E[x_j | observed values of its row]``: the
        responsibility-weighted conditional means of the components, the
        responsibilities computed from the observed values alone. Observed
        values are returned unchanged; a row with nothing observed gets the
        mixture mean.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        X_imputed : ndarray of shape (n_samples, n_features)
            A copy of X (float32 stays float32, anything else float64).
        """
        if _is_dask_collection(X):
            from .dask import predict_dask

            return predict_dask(self, X, "impute")
        X = self._validate_predict_input(X)
        backend_name = backends.resolve_backend_name(self.backend)
        kernels = backends.get_backend(backend_name)
        params = self._pass_params(X.dtype)
        out = np.empty(X.shape, dtype=X.dtype)
        block = max(1024, _PREDICT_BLOCK_ELEMENTS // self._n_fitted_components())
        for start in range(0, X.shape[0], block):
            xb = X[start : start + block]
            with limit_threads(backend_name, self.n_threads):
                out[start : start + xb.shape[0]] = impute_rows(kernels, xb, params)
        return out

    def score_samples(self, X) -> np.ndarray:
        """Log-density of the mixture at each row of X.

        Returns
        -------
        log_density : ndarray of shape (n_samples,)
        """
        if _is_dask_collection(X):
            from .dask import predict_dask

            return predict_dask(self, X, "score_samples")
        X = self._validate_predict_input(X)
        # float32 data under a float32 model gives float32, as scikit-learn's does
        dtype = np.result_type(X.dtype, self.means_.dtype)
        return self._log_density(X).astype(dtype, copy=False)

    def _log_density(self, X) -> np.ndarray:
        """float64 log-densities of the rows of a validated X."""
        out = np.empty(X.shape[0])
        for a, b, logp in self._log_prob_blocks(X):
            out[a:b] = logsumexp_rows(logp)
        return out

    def score(self, X, y=None) -> float:
        """Average log-likelihood of the rows of X: ``float(score_samples(X).mean())``,
        as scikit-learn's (for float32 data, a float32 mean, so that ``score`` and
        ``score_samples(X).mean()`` agree)."""
        return float(self.score_samples(X).mean())

    def _average_log_likelihood(self, X) -> float:
        """:meth:`score` in float64 whatever the dtypes (for the criteria)."""
        return float(self._log_density(self._validate_predict_input(X)).mean())

    def predict(self, X) -> np.ndarray:
        """Most probable component of each row of X.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        if _is_dask_collection(X):
            from .dask import predict_dask

            return predict_dask(self, X, "predict")
        X = self._validate_predict_input(X)
        labels = np.empty(X.shape[0], dtype=np.int64)
        for a, b, logp in self._log_prob_blocks(X):
            labels[a:b] = logp.argmax(axis=1)
        return labels

    def predict_proba(self, X) -> np.ndarray:
        """Posterior probability (responsibility) of each component for each row.

        Returns
        -------
        resp : ndarray of shape (n_samples, n_components)
            Rows sum to 1; float32 for float32 data under a float32 model, else float64.
        """
        if _is_dask_collection(X):
            from .dask import predict_dask

            return predict_dask(self, X, "predict_proba")
        X = self._validate_predict_input(X)
        # float32 only for float32 data under a float32 model, as scikit-learn's
        dtype = np.result_type(X.dtype, self.means_.dtype)
        resp = np.empty((X.shape[0], self._n_fitted_components()), dtype=dtype)
        for a, b, logp in self._log_prob_blocks(X):
            with np.errstate(under="ignore"):
                resp[a:b] = np.exp(logp - logsumexp_rows(logp)[:, None])
        return resp

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw rows from the fitted mixture.

        Parameters
        ----------
        n_samples : int, default=1

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
            The component each row was drawn from.
        """
        self._check_is_fitted()
        if (
            isinstance(n_samples, bool)
            or not isinstance(n_samples, numbers.Integral)
            or (n_samples < 1)
        ):
            raise ValueError(  # scikit-learn's message, then fastem's
                f"Invalid value for 'n_samples': {n_samples!r} . The sampling requires at "
                f"least one sample (n_samples must be a positive integer, got {n_samples!r})."
            )
        rng = _check_random_state(self.random_state, type(self).__name__)
        weights = self.weights_.astype(np.float64)
        counts = rng.multinomial(n_samples, weights / weights.sum())
        ct, d = layout(self.covariance_type), self.n_features_in_
        means = self.means_.astype(np.float64)
        cov = self.covariances_.astype(np.float64)
        parts = []
        for k, count in enumerate(counts):
            if ct == "full":
                parts.append(rng.multivariate_normal(means[k], cov[k], int(count)))
            elif ct == "tied":
                parts.append(rng.multivariate_normal(means[k], cov, int(count)))
            else:
                scale = np.sqrt(cov[k]) if ct == "diag" else np.sqrt(cov[k]) * np.ones(d)
                parts.append(means[k] + rng.standard_normal((int(count), d)) * scale)
        X = np.vstack(parts)
        y = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        return X, y

    # --------------------------------------------------------- model selection
    def _n_parameters(self) -> int:
        """mclust's ``nMclustParams`` for the covariance type (scikit-learn's counts
        for its four names, which agree)."""
        return n_parameters(self.covariance_type, *self.means_.shape)

    def bic(self, X) -> float:
        """Bayesian information criterion of the model on X (lower is better)."""
        if _is_dask_collection(X):  # n from the data: chunk sizes may be unknown
            from .dask import score_sum

            total, n = score_sum(self, X)
            return float(-2.0 * total + self._n_parameters() * np.log(n))
        n = np.shape(X)[0]  # a Python float, as scikit-learn's
        return float(-2.0 * self._average_log_likelihood(X) * n + self._n_parameters() * np.log(n))

    def save(self, path) -> None:
        """Save the fitted model to ``path`` (a versioned ``.npz``; see :func:`fastem.load`).

        The file holds arrays and JSON metadata only: loading it never unpickles,
        and it loads on any machine and backend.
        """
        from .persistence import save_model

        save_model(self, path)

    def aic(self, X) -> float:
        """Akaike information criterion of the model on X (lower is better)."""
        if _is_dask_collection(X):
            from .dask import score_sum

            return float(-2.0 * score_sum(self, X)[0] + 2.0 * self._n_parameters())
        n = np.shape(X)[0]
        return float(-2.0 * self._average_log_likelihood(X) * n + 2.0 * self._n_parameters())
