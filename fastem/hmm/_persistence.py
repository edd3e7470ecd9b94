"""Saving and loading fitted HMMs in fastem's versioned, pickle-free model format.

The file is the one :mod:`fastem.persistence` writes for
:class:`~fastem.GaussianMixture` (format ``"fastem-model"``, version 1: an
uncompressed ``.npz`` archive of numeric arrays plus one JSON metadata member,
every array and the metadata under SHA-256 digests), with ``"estimator"``
naming the HMM class (``"GaussianHMM"``, ``"GMMHMM"``, ``"CategoricalHMM"``,
``"PoissonHMM"`` or ``"MultinomialHMM"``). The archive is written and read with
:mod:`fastem.persistence`'s own helpers, so the same checks apply: no
unpickling, every member's ``.npy`` header checked against the metadata and
its size before its data is read, names, types and shapes checked before the
model is built.

Fitted attributes stored: ``startprob_``, ``transmat_``, the emission
parameters (``means_``, ``covars_`` in the class's internal layout,
``weights_``, ``emissionprob_``, ``lambdas_``), ``n_features`` (a fitted
attribute except for ``CategoricalHMM``, where it is a parameter) and the
convergence monitor (``monitor_history_``, ``monitor_iter_`` and
``monitor_converged_``, its verdict, which an accelerated fit or a fastem
stopping rule decides and the history alone cannot reproduce), from which
``monitor_`` is rebuilt. A file written before ``monitor_converged_`` was
stored loads with the verdict of hmmlearn's rule on the history.
``objective_history_`` (log-likelihood + log prior per iteration, see
:mod:`fastem.hmm._prior`) is stored with the monitor when the fit recorded it;
a file without it loads without ``objective_`` and ``objective_history_``.
A ``random_state`` that is a ``RandomState`` (the discrete models' ``fit``
stores one, as hmmlearn's do) is stored as its generator state
(``random_state_mt19937_``: the 624 keys, the position, the cached Gaussian)
with the parameter None; the loaded model gets the generator back.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from typing import Any

import numpy as np

from .. import persistence as _p
from .._version import __version__
from ._backend import HMM_BACKENDS, available_hmm_backends
from ._base import BaseHMM, ConvergenceMonitor
from ._discrete import CategoricalHMM, MultinomialHMM, PoissonHMM
from ._gaussian import GaussianHMM
from ._gmm import GMMHMM

__all__ = [
    "HMM_ESTIMATORS",
    "save_hmm",
    "load_hmm",
    "build_hmm",
    "set_loaded_backend",
    "read_hmm_metadata",
]

#: The estimator names an HMM file may carry, and their classes.
HMM_ESTIMATORS: dict[str, type[BaseHMM]] = {
    "GaussianHMM": GaussianHMM,
    "GMMHMM": GMMHMM,
    "CategoricalHMM": CategoricalHMM,
    "PoissonHMM": PoissonHMM,
    "MultinomialHMM": MultinomialHMM,
}
# File attribute name -> model attribute name, per class (the Gaussian HMM keeps its
# covariances in `_covars_`, in the layout of its covariance type).
_EMISSION_ATTRIBUTES: dict[str, dict[str, str]] = {
    "GaussianHMM": {"means_": "means_", "covars_": "_covars_"},
    "GMMHMM": {"weights_": "weights_", "means_": "means_", "covars_": "covars_"},
    "CategoricalHMM": {"emissionprob_": "emissionprob_"},
    "PoissonHMM": {"lambdas_": "lambdas_"},
    "MultinomialHMM": {"emissionprob_": "emissionprob_"},
}
_COMMON_ATTRIBUTES = ("startprob_", "transmat_", "monitor_history_", "monitor_iter_")
# Stored since the monitor's verdict was saved; optional when reading older files.
_OPTIONAL_ATTRIBUTES = ("monitor_converged_", "objective_history_", "random_state_mt19937_")


def _generator_state(rs: np.random.RandomState) -> np.ndarray | None:
    """A ``RandomState``'s whole state as one float64 array (624 keys, the
    position, the cached Gaussian flag and value; every value exact in
    float64), or None where it is not a Mersenne Twister."""
    state = rs.get_state(legacy=False)
    if state["bit_generator"] != "MT19937":
        return None
    mt = state["state"]
    rest = [mt["pos"], state["has_gauss"], state["gauss"]]
    return np.concatenate([mt["key"].astype(np.float64), np.array(rest, dtype=np.float64)])


def _generator_from(values) -> np.random.RandomState:
    """The ``RandomState`` :func:`_generator_state` describes (raises ValueError)."""
    if not isinstance(values, np.ndarray) or values.shape != (627,) or values.dtype != np.float64:
        raise _p._Invalid("random_state_mt19937_ must be a float64 array of 627 values")
    keys, rest = values[:624], values[624:]
    if (
        not np.isfinite(values).all() or (keys != np.round(keys)).any()
        or keys.min() < 0 or keys.max() >= 2**32 or not 0 <= rest[0] <= 624
        or rest[0] != round(rest[0]) or rest[1] not in (0, 1)
    ):  # fmt: skip
        raise _p._Invalid("random_state_mt19937_ does not describe a generator state")
    rs = np.random.RandomState()
    rs.set_state(("MT19937", keys.astype(np.uint32), int(rest[0]), int(rest[1]), float(rest[2])))
    return rs


def _attribute_map(estimator: str) -> dict[str, str]:
    names = {name: name for name in _COMMON_ATTRIBUTES[:2]}
    names.update(_EMISSION_ATTRIBUTES[estimator])
    if estimator != "CategoricalHMM":
        names["n_features"] = "n_features"
    return names


# --------------------------------------------------------------------- save
def save_hmm(model: BaseHMM, path: str | os.PathLike) -> None:
    """Write a fitted HMM to ``path`` in fastem's model format.

    Parameters
    ----------
    model : GaussianHMM, GMMHMM, CategoricalHMM, PoissonHMM or MultinomialHMM
        A fitted model.
    path : str or os.PathLike
        The file, exactly as given (no ``.npz`` suffix is added); replaced
        atomically, so an error never leaves a partial file.

    Raises
    ------
    NotFittedError
        If the model is not fitted (a subclass of ValueError).
    ValueError
        If a parameter has a type the format cannot store exactly.
    OSError
        If the file cannot be written.

    Notes
    -----
    ``random_state`` is saved when it is None, an integer or a ``RandomState``
    (its whole state: the loaded model's ``sample`` continues the same
    stream; NumPy's global one is saved as None). Anything else is saved as
    None with a ``UserWarning`` and a note in the file.
    """
    estimator = type(model).__name__
    if estimator not in HMM_ESTIMATORS or type(model) is not HMM_ESTIMATORS[estimator]:
        raise ValueError(f"save_hmm expects a fastem.hmm model, got {estimator}.")
    if estimator not in _p._HMM_ESTIMATORS:  # the format's reader would refuse the file
        raise ValueError(f"fastem's model format does not hold a {estimator} yet.")
    model._check_fitted()
    model._check()
    arrays: dict[str, np.ndarray] = {}
    notes: list[str] = []
    params: dict[str, dict] = {}
    generator = None
    for name, value in model.get_params(deep=False).items():
        if name == "random_state" and isinstance(value, numbers.Integral):
            value = int(value)
        elif name == "random_state" and value is np.random.mtrand._rand:
            value = None  # NumPy's global stream (hmmlearn's discrete fit stores it)
        elif (
            name == "random_state"
            and isinstance(value, np.random.RandomState)
            and ((generator := _generator_state(value)) is not None)
        ):
            # A generator (hmmlearn's discrete models store one in fit): its state,
            # so that the loaded model's sample() continues the same stream.
            value = None
        elif name == "random_state" and value is not None:
            notes.append(f"random_state of type {type(value).__name__} was saved as None")
            warnings.warn(
                f"random_state of type {type(value).__name__} is not saved; the loaded "
                "model has random_state=None.",
                UserWarning,
                stacklevel=3,
            )
            value = None
        try:
            params[name] = _p._encode(value, f"param.{name}", arrays)
        except _p._UnsafeValue as exc:
            raise ValueError(f"cannot save parameter {name!r}: {exc}.") from None

    values: dict[str, Any] = {
        stored: getattr(model, attr) for stored, attr in _attribute_map(estimator).items()
    }
    monitor = getattr(model, "monitor_", None)
    history = [] if monitor is None else [float(v) for v in monitor.history]
    values["monitor_history_"] = np.asarray(history, dtype=np.float64)
    values["monitor_iter_"] = 0 if monitor is None else int(monitor.iter)
    values["monitor_converged_"] = False if monitor is None else bool(monitor.converged)
    if generator is not None:
        values["random_state_mt19937_"] = generator
    objective = getattr(model, "objective_history_", None)
    if objective is not None:
        values["objective_history_"] = np.asarray(objective, dtype=np.float64)
    if "n_features" in values:
        values["n_features"] = int(values["n_features"])
    attributes = {
        name: _p._encode(value, f"attr.{name}", arrays) for name, value in sorted(values.items())
    }
    metadata = {
        "format": _p.FORMAT_NAME,
        "format_version": _p.FORMAT_VERSION,
        "estimator": estimator,
        "fastem_version": __version__,
        "numpy_version": np.__version__,
        "params": params,
        "attributes": attributes,
        "arrays": {
            member: {
                "dtype": arr.dtype.str,
                "shape": list(arr.shape),
                "sha256": _p._array_digest(arr),
            }
            for member, arr in arrays.items()
        },
        "notes": notes,
    }
    metadata["metadata_sha256"] = _p._metadata_digest(metadata)
    encoded = np.frombuffer(_p._canonical_json(metadata), dtype=np.uint8)
    _p._write_archive(os.fspath(path), {_p._METADATA: encoded, **arrays})


# --------------------------------------------------------------------- load
_Invalid = _p._Invalid


def _read_archive(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """:func:`fastem.persistence._read_archive` (every check of the format), for an HMM's file."""
    metadata, arrays = _p._read_archive(path)
    if metadata["estimator"] not in HMM_ESTIMATORS:
        if metadata["estimator"] == "GaussianMixture":
            raise _Invalid(
                "it holds a GaussianMixture, not a hidden Markov model; load it with fastem.load"
            )
        raise _Invalid(f"unknown estimator {metadata['estimator']!r}")
    return metadata, arrays


def read_hmm_metadata(path: str | os.PathLike) -> dict:
    """The checked metadata of an HMM file (raises ValueError ``cannot load PATH: ...``)."""
    path = os.fspath(path)
    try:
        return _read_archive(path)[0]
    except ValueError as exc:
        raise ValueError(f"cannot load {path!r}: {str(exc).splitlines()[0]}") from None


def _check_int(value: Any, name: str, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise _Invalid(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_hmm(model: BaseHMM, estimator: str) -> None:
    """Shapes, dtypes and finiteness of the fitted state, before the model is used."""
    model._check_constructor()
    K = model.n_components
    for name in ("startprob_", "transmat_", *_EMISSION_ATTRIBUTES[estimator].values()):
        value = getattr(model, name)
        if not isinstance(value, np.ndarray) or value.dtype != np.float64:
            raise _Invalid(f"{name.lstrip('_')} must be a float64 array")
        if not np.isfinite(value).all():
            raise _Invalid(f"{name.lstrip('_')} must hold finite values")
    if estimator in ("CategoricalHMM", "MultinomialHMM"):
        shape = (K, model.n_features)
        if model.emissionprob_.shape != shape:
            raise _Invalid(f"emissionprob_ must have shape {shape}")
        if estimator == "MultinomialHMM":
            trials = np.asarray(model.n_trials)
            if trials.ndim > 1 or trials.dtype.kind not in "iu" or (trials < 0).any():
                raise _Invalid("n_trials must be a non-negative integer or 1-D integer array")
    elif estimator == "PoissonHMM":
        if model.lambdas_.shape != (K, model.n_features):
            raise _Invalid(f"lambdas_ must have shape {(K, model.n_features)}")
    else:
        if model.means_.ndim < 1 or model.means_.shape[-1] != model.n_features:
            raise _Invalid(f"means_ must have {model.n_features} features")
    try:
        model._check()  # sums to one, emission shapes and positive definiteness
    except (ValueError, np.linalg.LinAlgError) as exc:
        raise _Invalid(str(exc).splitlines()[0] if str(exc) else "invalid parameters") from None


def load_hmm(path: str | os.PathLike, *, backend: str | None = None) -> BaseHMM:
    """Load an HMM written by ``save`` (:func:`save_hmm`).

    Parameters
    ----------
    path : str or os.PathLike
        The file, exactly as given.
    backend : {'numba', 'cython', 'numpy'} or None, default=None
        Sets the loaded model's ``backend``. None keeps the saved one, unless it
        is not available here: then it becomes None with a ``UserWarning``.

    Returns
    -------
    model : GaussianHMM, GMMHMM, CategoricalHMM, PoissonHMM or MultinomialHMM
        The fitted model; its scores, posteriors and decoded paths are
        bit-identical to the saved model's on the same backend.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        One line, ``cannot load PATH: reason``, for any file that is not an HMM
        this fastem can load (foreign, truncated, modified, a GaussianMixture,
        an unsupported version, unknown names, bad shapes), and for an unknown
        ``backend``.
    """
    path = os.fspath(path)
    if backend is not None and backend not in HMM_BACKENDS:
        raise ValueError(f"unknown HMM backend {backend!r}; known: {', '.join(HMM_BACKENDS)}")
    try:
        metadata, arrays = _read_archive(path)
        model = build_hmm(metadata, arrays)
    except ValueError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot load {path!r}: {message}") from None
    except (TypeError, KeyError, AttributeError, IndexError) as exc:
        raise ValueError(f"cannot load {path!r}: malformed model file ({exc})") from None
    return set_loaded_backend(model, backend)


def set_loaded_backend(model: BaseHMM, backend: str | None) -> BaseHMM:
    """Apply :func:`load_hmm`'s ``backend`` rule to a freshly built ``model``.

    ``backend`` (an HMM backend name) replaces the saved one; None keeps the
    saved one, or None with a ``UserWarning`` when it is not available here.
    """
    if backend is not None:
        if backend not in HMM_BACKENDS:
            raise ValueError(f"unknown HMM backend {backend!r}; known: {', '.join(HMM_BACKENDS)}")
        model.backend = backend
    elif model.backend is not None and model.backend not in available_hmm_backends():
        warnings.warn(
            f"the saved backend {model.backend!r} is not available here; the loaded model "
            "uses the automatic choice (backend=None).",
            UserWarning,
            stacklevel=3,
        )
        model.backend = None
    return model


def build_hmm(metadata: dict, arrays: dict[str, np.ndarray]) -> BaseHMM:
    """The HMM described by checked ``metadata`` and ``arrays`` (raises ValueError).

    ``metadata`` and ``arrays`` as :func:`fastem.persistence._read_archive`
    returns them, so that :func:`fastem.load` can hand an HMM file over here.
    """
    estimator = metadata["estimator"]
    if estimator not in HMM_ESTIMATORS:
        raise _Invalid(f"unknown estimator {estimator!r}")
    cls = HMM_ESTIMATORS[estimator]
    referenced = set()
    valid_params = set(cls().get_params(deep=False))
    params = {}
    for name, desc in metadata["params"].items():
        if name not in valid_params:
            raise _Invalid(f"unknown parameter {name!r}")
        params[name] = _p._decode(desc, f"param.{name}", arrays)
        if "array" in desc:
            referenced.add(desc["array"])
    names = _attribute_map(estimator)
    known = {*names, *_COMMON_ATTRIBUTES, *_OPTIONAL_ATTRIBUTES}
    attributes = {}
    for name, desc in metadata["attributes"].items():
        if name not in known:
            raise _Invalid(f"unknown fitted attribute {name!r}")
        attributes[name] = _p._decode(desc, f"attr.{name}", arrays)
        if "array" in desc:
            referenced.add(desc["array"])
    missing = sorted(known - set(_OPTIONAL_ATTRIBUTES) - set(attributes))
    if missing:
        raise _Invalid(f"missing fitted attributes {missing}")
    if referenced != set(arrays):
        raise _Invalid(f"unreferenced arrays {sorted(set(arrays) - referenced)}")
    model = cls(**params)
    for stored, attr in names.items():
        if stored == "n_features":
            _check_int(attributes[stored], "n_features", 1)
        setattr(model, attr, attributes[stored])
    history = attributes["monitor_history_"]
    if not isinstance(history, np.ndarray) or history.ndim != 1 or history.dtype != np.float64:
        raise _Invalid("monitor_history_ must be a 1-D float64 array")
    n_iter = _check_int(attributes["monitor_iter_"], "monitor_iter_", 0)
    if n_iter != history.shape[0]:
        raise _Invalid("monitor_iter_ does not match monitor_history_")
    monitor = ConvergenceMonitor(model.tol, model.n_iter, model.verbose)
    monitor.history.extend(float(v) for v in history)
    monitor.iter = n_iter
    if "monitor_converged_" in attributes:
        converged = attributes["monitor_converged_"]
        if type(converged) is not bool:
            raise _Invalid(f"monitor_converged_ must be true or false, got {converged!r}")
        monitor._converged = converged
    if "objective_history_" in attributes:
        objective = attributes["objective_history_"]
        if (
            not isinstance(objective, np.ndarray) or objective.ndim != 1
            or objective.dtype != np.float64 or objective.shape != history.shape
        ):  # fmt: skip
            raise _Invalid("objective_history_ must be a float64 array as long as the history")
        if np.isnan(objective).any() or (objective == np.inf).any():
            raise _Invalid("objective_history_ must not hold NaN or +inf")
        monitor.objective_history.extend(float(v) for v in objective)
        model.objective_history_ = objective
        model.objective_ = float(objective[-1]) if objective.size else -np.inf
    model._set_fit_monitor(monitor)
    if "random_state_mt19937_" in attributes:
        if model.random_state is not None:
            raise _Invalid("random_state_mt19937_ goes with random_state None")
        model.random_state = _generator_from(attributes["random_state_mt19937_"])
    if estimator == "CategoricalHMM":
        if model.n_features is None:
            raise _Invalid("n_features must be set")
        _check_int(model.n_features, "n_features", 1)
    _check_hmm(model, estimator)
    if any(not math.isfinite(v) for v in history):
        raise _Invalid("monitor_history_ must hold finite values")
    return model
