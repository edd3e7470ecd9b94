"""Per-covariance-type algebra: precision Cholesky factors, log-determinants,
parameter counts, and the arguments the kernels take.

Conventions follow scikit-learn: ``precisions_cholesky_`` holds upper
triangular ``U`` with ``U @ U.T == precision`` ('full': (k, d, d), 'tied':
(d, d)), or inverse standard deviations ('diag': (k, d), 'spherical': (k,)).
"""

from __future__ import annotations

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
#: mclust's 14 covariance structures, in mclust's order (see ``docs/mclust_models.md``).
MCLUST_MODELS = (
    "EII",
    "VII",
    "EEI",
    "VEI",
    "EVI",
    "VVI",
    "EEE",
    "VEE",
    "EVE",
    "VVE",
    "EEV",
    "VEV",
    "EVV",
    "VVV",
)
#: The mclust models whose covariances are diagonal (diag kernels, (k, d) layouts).
DIAGONAL_MODELS = MCLUST_MODELS[:6]
#: The mclust model each scikit-learn name is.
SKLEARN_ALIASES = {"spherical": "VII", "diag": "VVI", "tied": "EEE", "full": "VVV"}
#: The scikit-learn code path ("engine") each of those four mclust models runs on.
SKLEARN_ENGINES = {"VII": "spherical", "VVI": "diag", "EEE": "tied", "VVV": "full"}
_LOG_2PI = np.log(2.0 * np.pi)


def check_covariance_type(name) -> str:
    """Validate a covariance type; return its canonical name.

    The four scikit-learn names ('full', 'tied', 'diag', 'spherical') are kept
    as they are; mclust's 14 names (:data:`MCLUST_MODELS`) are accepted in any
    case and returned in upper case.

    Parameters
    ----------
    name : str

    Returns
    -------
    str

    Raises
    ------
    ValueError
        Anything else, with the valid names in the message.
    """
    if isinstance(name, str):
        if name in COVARIANCE_TYPES:
            return name
        if name.upper() in MCLUST_MODELS:
            return name.upper()
    raise ValueError(
        f"Invalid value for 'covariance_type': {name!r}; expected one of "
        f"{COVARIANCE_TYPES} or an mclust model name ({', '.join(MCLUST_MODELS)}, any case)."
    )


def mclust_name(covariance_type: str) -> str:
    """The mclust model of a covariance type (the scikit-learn names mapped)."""
    name = check_covariance_type(covariance_type)
    return SKLEARN_ALIASES.get(name, name)


def engine_type(covariance_type: str) -> str:
    """The code path a canonical covariance type is fitted on.

    The scikit-learn names and the mclust models equal to them (VII, VVI,
    EEE, VVV) run scikit-learn's path ('spherical', 'diag', 'tied', 'full'),
    bit for bit; the other ten mclust models run their own (their name).
    """
    name = check_covariance_type(covariance_type)
    return SKLEARN_ENGINES.get(name, name)


def layout(covariance_type: str) -> str:
    """The array layout of a canonical covariance type's parameters.

    The scikit-learn names are their own layout; an mclust model is 'diag'
    ((k, d) variances and inverse standard deviations) when diagonal, else
    'full' ((k, d, d) matrices and upper precision Cholesky factors).
    """
    if covariance_type in COVARIANCE_TYPES:
        return covariance_type
    return "diag" if check_covariance_type(covariance_type) in DIAGONAL_MODELS else "full"


def covariance_shape(covariance_type: str, n_components: int, n_features: int) -> tuple:
    """Shape of ``covariances_`` (and precisions) for a canonical covariance type."""
    k, d = n_components, n_features
    return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
        layout(covariance_type)
    ]


def _singular_error(component: int | None, reg_covar: float | None) -> ValueError:
    which = "the shared (tied) covariance" if component is None else f"component {component}"
    reg = "" if reg_covar is None else f" reg_covar is currently {reg_covar:g}."
    # fastem's diagnosis (short: model-selection tables show the start), then
    # scikit-learn's message word for word (code matching it keeps working)
    return ValueError(
        f"Fitting failed: {which} has an ill-defined covariance (singular or not "
        "positive definite). Fitting the mixture model failed because some components "
        "have ill-defined empirical covariance (for instance caused by singleton or "
        "collapsed samples). Try to decrease the number of components, increase "
        f"reg_covar, or scale the input data.{reg}"
    )


def _inverse_lower(L: np.ndarray) -> np.ndarray:
    """Inverse of (a stack of) lower-triangular matrices by forward substitution."""
    d = L.shape[-1]
    inv = np.zeros_like(L)
    eye = np.eye(d, dtype=L.dtype)
    for i in range(d):
        acc = eye[i] - np.einsum("...j,...jc->...c", L[..., i, :i], inv[..., :i, :])
        inv[..., i, :] = acc / L[..., i, i, None]
    return inv


def _cholesky_lower(covariances: np.ndarray, reg_covar: float | None) -> np.ndarray:
    """Lower Cholesky factor of a (stack of) covariance matrices, or a clear error."""
    stack = covariances.reshape(-1, *covariances.shape[-2:])
    tied = covariances.ndim == 2
    for k in range(stack.shape[0]):
        if not np.isfinite(stack[k]).all():
            raise _singular_error(None if tied else k, reg_covar)
    try:
        return np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        for k in range(stack.shape[0]):
            try:
                np.linalg.cholesky(stack[k])
            except np.linalg.LinAlgError:
                raise _singular_error(None if tied else k, reg_covar) from None
        raise  # pragma: no cover - the batch failed, so some component must


def precision_cholesky(
    covariances: np.ndarray, covariance_type: str, reg_covar: float | None = None
) -> np.ndarray:
    """Cholesky factors of the precisions from covariances (float64)."""
    cov = np.asarray(covariances, dtype=np.float64)
    covariance_type = layout(covariance_type)
    if covariance_type in ("full", "tied"):
        return np.swapaxes(_inverse_lower(_cholesky_lower(cov, reg_covar)), -1, -2)
    bad = ~(np.isfinite(cov) & (cov > 0))
    if bad.any():
        component = int(np.argwhere(bad)[0][0])
        raise _singular_error(component, reg_covar)
    return 1.0 / np.sqrt(cov)


def precision_cholesky_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    """Upper factor ``U`` with ``U U^T = precision`` (float64)."""
    prec = np.asarray(precisions, dtype=np.float64)
    if layout(covariance_type) in ("full", "tied"):
        # Cholesky of the row/column-reversed matrix, reversed back, is upper.
        flipped = prec[..., ::-1, ::-1]
        return np.linalg.cholesky(flipped)[..., ::-1, ::-1].copy()
    return np.sqrt(prec)


def precisions_from_cholesky(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    """Precision matrices (or vectors) from their Cholesky factors."""
    if layout(covariance_type) in ("full", "tied"):
        return prec_chol @ np.swapaxes(prec_chol, -1, -2)
    return prec_chol**2


def covariances_from_cholesky(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    """Covariances from precision Cholesky factors (inverse of the precisions)."""
    pc = np.asarray(prec_chol, dtype=np.float64)
    if layout(covariance_type) in ("full", "tied"):
        # precision = U U^T, so covariance = U^-T U^-1 with U^-T lower triangular.
        inv_lower = _inverse_lower(np.swapaxes(pc, -1, -2))
        return inv_lower @ np.swapaxes(inv_lower, -1, -2)
    return 1.0 / pc**2


def log_det_cholesky(prec_chol: np.ndarray, covariance_type: str, n_features: int):
    """log det of the precision Cholesky factor(s): (k,) or a scalar for 'tied'."""
    covariance_type = layout(covariance_type)
    if covariance_type == "full":
        return np.log(np.diagonal(prec_chol, axis1=1, axis2=2)).sum(axis=1)
    if covariance_type == "tied":
        return float(np.log(np.diagonal(prec_chol)).sum())
    if covariance_type == "diag":
        return np.log(prec_chol).sum(axis=1)
    return n_features * np.log(prec_chol)


def n_parameters(covariance_type: str, n_components: int, n_features: int) -> int:
    """Number of free parameters of a mixture (weights, means, covariances).

    For an mclust name, mclust's ``nMclustParams`` (``nVarParams`` for the
    covariances); the scikit-learn names count the same as their mclust models.
    """
    if covariance_type not in COVARIANCE_TYPES:
        from ._mclust import n_parameters as mclust_n_parameters

        return mclust_n_parameters(check_covariance_type(covariance_type), n_components, n_features)
    k, d = n_components, n_features
    cov_params = {
        "full": k * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": k * d,
        "spherical": k,
    }[covariance_type]
    return cov_params + k * d + k - 1


def kernel_arguments(
    weights: np.ndarray,
    means: np.ndarray,
    prec_chol: np.ndarray,
    covariance_type: str,
    dtype: np.dtype,
) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    """Arguments of the full/diag kernels for any covariance type.

    Returns ``(full, means, prec_chol, comp_const)``: ``full`` says which kernel
    family to call; tied factors are broadcast to (k, d, d) and spherical ones
    to (k, d); ``comp_const[k] = log w_k + log det U_k - d/2 log 2 pi``.
    """
    k, d = means.shape
    covariance_type = layout(covariance_type)
    with np.errstate(divide="ignore"):  # a weight of exactly 0 gives -inf: never chosen
        log_w = np.log(np.asarray(weights, dtype=np.float64))
    comp_const = log_w + log_det_cholesky(prec_chol, covariance_type, d) - 0.5 * d * _LOG_2PI
    comp_const = np.ascontiguousarray(np.broadcast_to(comp_const, (k,)), dtype=np.float64)
    if covariance_type == "tied":
        pc = np.broadcast_to(prec_chol, (k, d, d))
    elif covariance_type == "spherical":
        pc = np.broadcast_to(np.asarray(prec_chol)[:, None], (k, d))
    else:
        pc = prec_chol
    full = covariance_type in ("full", "tied")
    return (
        full,
        np.ascontiguousarray(means, dtype=dtype),
        np.ascontiguousarray(pc, dtype=dtype),
        comp_const,
    )
