"""Input validation: every check runs before any work starts."""

from __future__ import annotations

import numbers

import numpy as np

from .exceptions import InvalidParameterError

FLOAT_DTYPES = (np.float64, np.float32)


def _is_sparse(X) -> bool:
    return hasattr(X, "toarray") and hasattr(X, "nnz")


def nullable_to_nan(X):
    """pandas' nullable numeric columns (``Float64``, ``Int64``, ``boolean``: missing is
    ``pd.NA``) as a float64 array with NaN, as scikit-learn's ``check_array`` converts
    them; anything else is returned as is (``check_array`` judges it)."""
    dtypes = getattr(X, "dtypes", None)
    if dtypes is None or not hasattr(X, "to_numpy"):
        return X
    dtypes = [dtypes] if getattr(X, "ndim", 2) == 1 else list(dtypes)  # a Series has one
    if all(isinstance(dt, np.dtype) for dt in dtypes):
        return X  # NumPy columns: no pd.NA
    if not all(getattr(dt, "kind", "O") in "biuf" for dt in dtypes):
        return X  # strings, categories, ...: check_array's error
    return X.to_numpy(dtype=np.float64, na_value=np.nan)


def check_array(
    X,
    *,
    name: str = "X",
    estimator_name: str = "GaussianMixture",
    n_features: int | None = None,
    allow_nan: bool = False,
    min_samples: int = 1,
) -> np.ndarray:
    """Return ``X`` as a C-contiguous 2-D float32/float64 array or raise.

    float32 and float64 input keep their dtype; anything else numeric becomes
    float64. Raises ``TypeError`` for sparse input and ``ValueError`` for
    complex, non-numeric, wrongly shaped, empty, infinite or (unless
    ``allow_nan``) NaN input, and for a feature count other than
    ``n_features``.
    """
    if _is_sparse(X):
        raise TypeError(
            f"{estimator_name} does not support sparse input; pass a dense array "
            "(for example X.toarray())."
        )
    X = nullable_to_nan(X)
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and other unconvertible input
        raise ValueError(f"{name} could not be converted to a numeric array: {exc}") from exc
    if np.iscomplexobj(arr):
        raise ValueError(f"Complex data not supported: {name} has dtype {arr.dtype}.")
    if arr.dtype not in FLOAT_DTYPES:
        if arr.dtype.kind not in "biuf" and arr.dtype != object:
            raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}.")
        try:
            arr = arr.astype(np.float64)
        except TypeError as exc:  # an element that is no number at all (a dict, say)
            raise TypeError(f"{name} could not be converted to float64: {exc}") from exc
        except ValueError as exc:  # a string that does not parse as a number
            raise ValueError(f"{name} could not be converted to float64: {exc}") from exc
    if arr.ndim != 2:  # scikit-learn's check_array message, word for word
        raise_not_2d(arr.ndim, name, estimator_name, f":\narray={arr}.\n")
    n_rows, n_cols = arr.shape
    if n_rows < min_samples:
        raise ValueError(
            f"Found array with {n_rows} sample(s) (shape={arr.shape}) while a minimum "
            f"of {min_samples} is required by {estimator_name}."
        )
    if n_cols < 1:
        raise ValueError(
            f"Found array with 0 feature(s) (shape={arr.shape}) while a minimum of 1 "
            f"is required by {estimator_name}."
        )
    if n_features is not None and n_cols != n_features:
        raise ValueError(
            f"X has {n_cols} features, but {estimator_name} is expecting {n_features} "
            "features as input."
        )
    # Scan in row blocks: no (n, d) boolean temporary for large (or memory-mapped) X.
    block = max(1, (1 << 20) // n_cols)
    for start in range(0, n_rows, block):
        part = arr[start : start + block]
        if np.isfinite(part).all():
            continue
        if np.isinf(part).any():
            raise ValueError(
                f"Input {name} contains infinity or a value too large for {arr.dtype!r}."
            )
        if not allow_nan:
            raise ValueError(
                f"Input {name} contains NaN. {estimator_name} does not accept missing "
                "values encoded as NaN here."
            )
    return np.ascontiguousarray(arr)


def check_sample_weight(sample_weight, n_samples: int) -> np.ndarray:
    """Return sample weights as a float64 array of shape (n_samples,) or raise.

    ``None`` means unit weights. Weights must be finite and non-negative with a
    positive sum; a scalar applies to every row.
    """
    if sample_weight is None:
        return np.ones(n_samples, dtype=np.float64)
    if isinstance(sample_weight, numbers.Number):
        sw = np.full(n_samples, float(sample_weight), dtype=np.float64)
    else:
        sw = np.asarray(sample_weight)
        if sw.dtype.kind not in "biuf":
            raise ValueError(f"sample_weight must be numeric, got dtype {sw.dtype}.")
        sw = np.ascontiguousarray(sw, dtype=np.float64)
    if sw.shape != (n_samples,):
        raise ValueError(
            f"sample_weight.shape == {sw.shape}, expected {(n_samples,)} (one weight per row of X)."
        )
    if not np.isfinite(sw).all():
        raise ValueError("sample_weight contains NaN or infinity.")
    if (sw < 0).any():
        raise ValueError("Negative values in sample_weight are not allowed.")
    if sw.sum() <= 0:
        raise ValueError("sample_weight sums to zero: there is nothing to fit.")
    return sw


def raise_not_2d(ndim: int, name: str, estimator_name: str, shown: str) -> None:
    """scikit-learn's ``check_array`` error for data of ``ndim != 2`` dimensions.

    ``shown``: what the message says of the data between "instead" and
    "Reshape" (the values of an in-memory array; the shape of out-of-core input).
    """
    if ndim < 2:
        raise ValueError(
            f"Expected 2D array, got {'scalar' if ndim == 0 else '1D'} array instead{shown}"
            "Reshape your data either using array.reshape(-1, 1) if your data has a single "
            "feature or array.reshape(1, -1) if it contains a single sample."
        )
    raise ValueError(
        f"Found array with dim {ndim}, while dim <= 2 is required by {estimator_name}. "
        f"(Expected 2D array for {name}, got {ndim}D array instead.)"
    )


def check_positive_int(value, name: str, minimum: int = 1, owner: str | None = None) -> int:
    """Validate an integer parameter ``>= minimum``.

    ``owner``: the estimator's class name, for scikit-learn's wording of the error
    (``The 'n_init' parameter of GaussianMixture must be an int in the range ...``) and
    class (:class:`~fastem.exceptions.InvalidParameterError`, a ``ValueError``). A bool
    is refused, where scikit-learn takes it for 0 or 1 (a slip, not a count).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        if owner is not None:
            raise InvalidParameterError(
                f"The {name!r} parameter of {owner} must be an int in the range "
                f"[{minimum}, inf). Got {value!r} instead."
            )
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_nonneg_float(value, name: str, owner: str | None = None) -> float:
    """Validate a finite real parameter ``>= 0`` (``owner``: as :func:`check_positive_int`)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or value < 0
    ):
        if owner is not None:
            raise InvalidParameterError(
                f"The {name!r} parameter of {owner} must be a float in the range "
                f"[0.0, inf). Got {value!r} instead."
            )
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)


def check_verbose(value, owner: str) -> None:
    """scikit-learn's ``"verbose"`` constraint: an int >= 0 or a bool."""
    if isinstance(value, (bool, np.bool_)):
        return
    if not isinstance(value, numbers.Integral) or value < 0:
        raise InvalidParameterError(
            f"The 'verbose' parameter of {owner} must be an int in the range [0, inf), an "
            f"instance of 'bool' or an instance of 'numpy.bool'. Got {value!r} instead."
        )


def check_array_like(value, name: str, owner: str) -> None:
    """scikit-learn's ``"array-like"`` constraint (with None allowed): no scalar, no
    string (``sklearn.utils.validation._is_arraylike_not_scalar``)."""
    if value is None:
        return
    array_like = hasattr(value, "__len__") or hasattr(value, "shape") or hasattr(value, "__array__")
    if not array_like or np.isscalar(value):
        raise InvalidParameterError(
            f"The {name!r} parameter of {owner} must be an array-like or None. "
            f"Got {value!r} instead."
        )


def string_column_names(X) -> np.ndarray | None:
    """The column names of a DataFrame-like X if they are all strings, else None
    (scikit-learn's rule for ``feature_names_in_``)."""
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    names = np.asarray(list(columns), dtype=object)
    if names.ndim != 1 or not all(isinstance(name, str) for name in names):
        return None
    return names


def check_feature_names(estimator, X, *, reset: bool) -> None:
    """scikit-learn's ``feature_names_in_`` protocol, without scikit-learn.

    ``reset`` (in ``fit``): record X's string column names, or forget earlier ones.
    Otherwise (predicting): names that differ from the fitted ones are an error;
    names on one side only are a warning, as in scikit-learn.
    """
    names = string_column_names(X)
    if reset:
        if names is not None:
            estimator.feature_names_in_ = names
        elif hasattr(estimator, "feature_names_in_"):
            del estimator.feature_names_in_
        return
    fitted = getattr(estimator, "feature_names_in_", None)
    if fitted is None and names is None:
        return
    import warnings

    which = type(estimator).__name__
    if names is None:
        warnings.warn(
            f"X does not have valid feature names, but {which} was fitted with feature names",
            UserWarning,
            stacklevel=3,
        )
        return
    if fitted is None:
        warnings.warn(
            f"X has feature names, but {which} was fitted without feature names",
            UserWarning,
            stacklevel=3,
        )
        return
    if len(fitted) != len(names) or np.any(fitted != names):
        # scikit-learn's message, word for word (its estimator checks match on it)
        unseen = sorted(set(names) - set(fitted))
        missing = sorted(set(fitted) - set(names))

        def listed(items) -> str:
            shown = [f"- {name}\n" for name in items[:5]]
            return "".join(shown) + ("- ...\n" if len(items) > 5 else "")

        message = "The feature names should match those that were passed during fit.\n"
        if unseen:
            message += "Feature names unseen at fit time:\n" + listed(unseen)
        if missing:
            message += "Feature names seen at fit time, yet now missing:\n" + listed(missing)
        if not unseen and not missing:
            message += "Feature names must be in the same order as they were in fit.\n"
        raise ValueError(message)
