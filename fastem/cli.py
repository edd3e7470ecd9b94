"""The ``fastem`` command (also ``python -m fastem``).

Subcommands: ``fit`` a mixture to a data file and save it, ``predict`` labels or
probabilities with a saved model, ``select`` the number of components and
covariance type by BIC/AIC/ICL, ``segment`` an image by pixel colour, ``impute``
missing values, and ``demo`` on built-in synthetic data. Run ``fastem CMD --help``.

Bad input (a missing file, a non-numeric column, a model for other data, a
missing optional dependency, ...) exits with status 2 and one line on stderr,
``fastem: error: ...``; outputs are written to temporary files and renamed
into place only once every output of the command is complete, so a failed
command writes nothing. ``--quiet`` drops progress, summaries and warnings
(stderr, or stdout for summaries); results on stdout (``select``'s table,
``-o -`` data) stay.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager

from ._version import __version__

# NumPy, the estimator, the I/O helpers (and inspect, pathlib) are imported by
# _import_command_modules once the arguments are parsed (a subcommand's when it is chosen):
# `fastem --help` and usage errors then never pay for them.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (type checkers know it)
if TYPE_CHECKING:
    import inspect
    from pathlib import Path

    import numpy as np

    from ._io import (
        DATA_FORMATS,
        InputError,
        atomic_output,
        atomic_outputs,
        check_output_path,
        data_format,
        read_data,
        write_table,
    )
    from ._progress import choose_mode, show_progress
    from .backends import available_backends, resolve_backend_name
    from .datasets import make_mixture
    from .mixture import GaussianMixture

# Copies of the library's choices, so that parsing imports no NumPy (tested equal).
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
MCLUST_MODELS = ("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV",
                 "VEV", "EVV", "VVV")  # fmt: skip
SKLEARN_ALIASES = {"spherical": "VII", "diag": "VVI", "tied": "EEE", "full": "VVV"}
INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data", "hc", "emem", "best", "smem")
ACCELERATIONS = ("squarem", "anderson", "qn", "mpe")  # and "none": plain EM
STOPPING_RULES = ("absolute", "relative", "aitken")
REFINE = ("contenders", "all")  # select_model's two-stage search, or every candidate
# Fit settings that reach the maximum (issue #14): fastem.selection.DEFAULT_FIT_SETTINGS.
FIT_DEFAULTS = {"tol": 1e-8, "stopping": "aitken", "acceleration": "squarem", "max_iter": 1000}
# select's shared starts: fastem.selection.DEFAULT_INIT (one hc tree for every K and
# model, and emEM per K; each candidate keeps its better fit).
SELECT_INIT = "hc+emem"
HC_USE = ("SVD", "VARS", "STD")  # select_model's hc_use (fastem._hc.HC_TRANSFORMS)
BACKENDS = ("numba", "cython", "numpy")
CRITERIA = ("bic", "aic", "icl")
_PLOT_HINT = 'pip install "fastem[plot]"'
# Pixels predicted per block in `segment`: bounds the float copy of the image.
_SEGMENT_BLOCK = 1 << 18


class CommandError(Exception):
    """A user error: the one-line message says what is wrong and how to fix it."""


def _import_command_modules() -> None:
    """Bind the modules the commands use as this module's globals (see the imports above)."""
    global np, DATA_FORMATS, InputError, atomic_output, atomic_outputs, check_output_path
    global data_format, read_data, write_table, choose_mode, show_progress
    global available_backends, resolve_backend_name, make_mixture, GaussianMixture, inspect, Path
    import inspect
    from pathlib import Path

    import numpy as np

    from ._io import (
        DATA_FORMATS,
        InputError,
        atomic_output,
        atomic_outputs,
        check_output_path,
        data_format,
        read_data,
        write_table,
    )
    from ._progress import choose_mode, show_progress
    from .backends import available_backends, resolve_backend_name
    from .datasets import make_mixture
    from .mixture import GaussianMixture


# ----------------------------------------------------------------------------- argument types
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _k_list(text: str) -> list[range]:
    """``'1-10'``, ``'2,4,8'`` or a mix (``'1-3,5'``) as sorted, disjoint ranges.

    Ranges, not lists: ``1-99999999999`` costs nothing until it is checked
    against the number of rows (:func:`_k_values`).
    """
    spans = []
    try:
        for part in text.split(","):
            lo, sep, hi = part.strip().partition("-")
            a = int(lo)
            b = int(hi) if sep else a
            if a < 1 or b < a:
                raise ValueError
            spans.append((a, b))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected component counts like 1-10 or 2,4,8 (each at least 1), got {text!r}"
        ) from None
    merged: list[list[int]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [range(a, b + 1) for a, b in merged]


def _k_values(ranges: list[range], n_rows: int, source: str) -> list[int]:
    """The component counts of ``--k``, once none exceeds the rows (so the list is small)."""
    _check_k(ranges[-1][-1], n_rows, source, flag="--k")
    return [k for r in ranges for k in r]


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**32 - 1, got {value}")
    return value


def _covariance_name(text: str) -> str:
    """One covariance model: scikit-learn's names (lower case) or mclust's (upper case)."""
    name = text.strip()
    if name.lower() in COVARIANCE_TYPES:
        return name.lower()
    if name.upper() in MCLUST_MODELS:
        return name.upper()
    raise argparse.ArgumentTypeError(
        f"unknown covariance type {text!r}; choose from {','.join(COVARIANCE_TYPES)} or "
        f"mclust's {','.join(MCLUST_MODELS)} (any case)"
    )


def _covariance_list(text: str) -> list[str] | str:
    """'all' (mclust's 14 models), or a comma list of models (duplicates and aliases of
    one model, such as full and VVV, kept once)."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(
            f"expected 'all' or a comma-separated list of covariance types, got {text!r}"
        )
    if [p.lower() for p in parts] == ["all"]:
        return "all"
    names: list[str] = []
    for part in parts:
        names.extend(MCLUST_MODELS if part.lower() == "all" else [_covariance_name(part)])
    kept: dict[str, str] = {}
    for name in names:
        kept.setdefault(SKLEARN_ALIASES.get(name, name), name)
    return list(kept.values())


def _init_spec(text: str) -> str:
    """A start, or several joined by '+' ("hc+emem"), each once (the library's parser)."""
    from .selection import check_init

    try:
        methods = check_init(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid start {text!r}; choose from {','.join(INIT_METHODS)}, or several joined "
            "by '+' (each once), e.g. hc+emem"
        ) from None
    return "+".join(methods)


class _Parser(argparse.ArgumentParser):
    """argparse with the command's one-line error format."""

    def error(self, message: str):
        self.exit(2, f"fastem: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- shared helpers
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _info(args: argparse.Namespace, *lines: str) -> None:
    """Print the command's summary: on stdout, unless stdout carries the data (``-o -``)."""
    if getattr(args, "quiet", False):
        return
    stream = sys.stderr if getattr(args, "output", None) == "-" else sys.stdout
    for line in lines:
        print(line, file=stream)


def _progress_mode(args: argparse.Namespace) -> str:
    return choose_mode(quiet=args.quiet, verbose=args.verbose, stream=sys.stderr)


def _looks_like_an_index(X: np.ndarray, columns: list[str] | None) -> bool:
    """An unnamed first column of increasing whole numbers: what pandas' ``to_csv``
    writes for the index unless told ``index=False``."""
    if not columns or columns[0] != "" or X.shape[0] < 2 or X.shape[1] < 2:
        return False
    first = X[:, 0]
    return bool(np.all(first == np.round(first)) and np.all(np.diff(first) > 0))


def _read(path: str, quiet: bool = False) -> tuple[np.ndarray, list[str] | None]:
    X, columns = read_data(path)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise CommandError(f"'{path}' holds no data (shape {X.shape})")
    if not quiet and _looks_like_an_index(X, columns):
        print(
            f"fastem: warning: the first column of '{path}' has no name and holds increasing "
            "whole numbers, like the index pandas' to_csv writes; it is used as a feature: if "
            "it is the index, save with index=False or drop that column",
            file=sys.stderr,
        )
    infinite = np.isinf(X)
    if infinite.any():
        rows, cols = np.nonzero(infinite)
        raise CommandError(
            f"'{path}' holds {rows.size:,} infinite value(s), the first in row {rows[0] + 1}, "
            f"column {cols[0] + 1}; fastem needs finite numbers: replace them, or mark them "
            "missing (an empty field or NaN) if they stand for unknown values"
        )
    return X, columns


def _record_names(model: GaussianMixture, columns: list[str] | None) -> None:
    """Keep the data file's header as the model's ``feature_names_in_`` (what a fit on
    a DataFrame with these columns records), so that ``predict``/``impute`` refuse a
    file whose header names other columns or the same in another order."""
    if columns is not None:
        model.feature_names_in_ = np.asarray(columns, dtype=object)


def _check_backend(name: str | None) -> None:
    try:
        resolve_backend_name(name)
    except ValueError as exc:
        raise CommandError(_one_line(exc)) from exc


def _check_k(k: int, n_rows: int, source: str, flag: str = "-k") -> None:
    if k > n_rows:
        raise CommandError(
            f"{flag} {k} is more components than the {n_rows} rows of {source}; "
            f"use {flag} {n_rows} or less, or more data"
        )


def _check_model_output(path: str, data: str | None = None) -> None:
    if path == "-":
        raise CommandError("a model cannot go to stdout; give -o a file name such as model.npz")
    check_output_path(path, what="model")
    _check_not_the_input("-o", path, data, "the model")


def _check_not_the_input(flag: str, path: str | None, source: str | None, what: str) -> None:
    """An output must not replace the command's input (a slip of the output's name)."""
    if path is None or source is None or "-" in (path, source):
        return
    if os.path.isfile(path) and os.path.isfile(source) and os.path.samefile(path, source):
        raise CommandError(
            f"{flag} '{path}' is the input file itself; {what} would replace it: give "
            "the output its own name"
        )


def _load_model(path: str, backend: str | None = None, *, quiet: bool = False) -> GaussianMixture:
    if not os.path.exists(path):
        raise CommandError(f"no such model file: '{path}'; give a model saved by 'fastem fit -o'")
    _check_backend(backend)
    try:
        from .persistence import load
    except ImportError as exc:  # pragma: no cover - persistence ships with fastem
        raise CommandError(f"this fastem cannot load models: {exc}") from exc
    try:
        with _one_line_warnings(quiet):
            model = load(path, backend=backend)
    except ValueError as exc:  # load's one line already says "cannot load PATH: why"
        raise CommandError(f"{_one_line(exc)}; give a model saved by 'fastem fit -o'") from exc
    if not isinstance(model, GaussianMixture):
        raise CommandError(
            f"'{path}' holds a hidden Markov model ({type(model).__name__}); "
            "use 'fastem hmm decode' or 'fastem hmm sample'"
        )
    return model


def _shown_names(names) -> str:
    names = [str(name) for name in names]
    return ", ".join(names[:8] + (["..."] if len(names) > 8 else []))


def _check_features(
    model: GaussianMixture, X: np.ndarray, model_path: str, data: str, columns=None
) -> None:
    """X must have the model's feature count and, when both the file (a header) and the
    model (fitted on a DataFrame) name the columns, the model's names in its order."""
    d = model.n_features_in_
    if X.shape[1] != d:
        raise CommandError(
            f"the model '{model_path}' was fitted on {d} feature(s) but '{data}' has "
            f"{X.shape[1]} column(s); give data with the same columns as the training data"
        )
    names = getattr(model, "feature_names_in_", None)
    if names is not None and columns is not None and list(columns) != [str(n) for n in names]:
        raise CommandError(
            f"the columns of '{data}' ({_shown_names(columns)}) are not the features the "
            f"model '{model_path}' was fitted on ({_shown_names(names)}); give the data "
            "with these columns, in this order"
        )


@contextmanager
def _scoring(args: argparse.Namespace):
    """Warnings of predict/impute as one line each; the model's feature names were
    checked against the file's header (:func:`_check_features`), and a file without
    one is read by position, so the library's warning about names is not repeated."""
    with _one_line_warnings(args.quiet), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "X does not have valid feature names", UserWarning)
        yield


def _apply_runtime_options(model: GaussianMixture, args: argparse.Namespace) -> None:
    """--threads of predict/impute overrides what the saved model says."""
    if args.threads is not None:
        model.n_threads = args.threads


@contextmanager
def _one_line_warnings(quiet: bool = False):
    """Show the block's user-facing warnings as one ``fastem: warning:`` line each
    (none with ``--quiet``)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    if quiet:
        return
    # Only UserWarnings (ConvergenceWarning, ...); library deprecations are noise here.
    shown = (w for w in caught if issubclass(w.category, UserWarning))
    for message in dict.fromkeys(_one_line(w.message) for w in shown):
        print(f"fastem: warning: {message}", file=sys.stderr)


def _fit_quietly(fit: Callable[[], object], args: argparse.Namespace, total_fits=None):
    """Run ``fit()`` with the progress display and one-line warnings."""
    with _one_line_warnings(args.quiet):
        with show_progress(_progress_mode(args), sys.stderr, total_fits=total_fits):
            return fit()


def _acceleration(args: argparse.Namespace) -> str | None:
    return None if args.acceleration == "none" else args.acceleration


def _estimator(args: argparse.Namespace, n_components: int, **overrides) -> GaussianMixture:
    params = dict(
        covariance_type=args.covariance,
        n_init=args.n_init,
        max_iter=args.max_iter,
        tol=args.tol,
        reg_covar=args.reg_covar,
        init_params=args.init,
        random_state=args.seed,
        backend=args.backend,
        n_threads=args.threads,
        acceleration=_acceleration(args),
        stopping=args.stopping,
    )
    params.update(overrides)
    return GaussianMixture(n_components, **params)


def _require_matplotlib(purpose: str) -> None:
    """Raise a CommandError naming the extra to install when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CommandError(
            f"{purpose} needs matplotlib, which is not installed: {_PLOT_HINT}"
        ) from None


def _check_figure_path(path: str) -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    ext = Path(path).suffix.lower().lstrip(".")
    supported = FigureCanvasBase.get_supported_filetypes()
    if ext not in supported:
        raise CommandError(
            f"cannot tell the figure format of '{path}'; use a name ending in "
            f"{', '.join('.' + e for e in ('png', 'pdf', 'svg'))} (or another of: "
            f"{', '.join(sorted(supported))})"
        )
    check_output_path(path, what="figure")


def _save_figure(fig, path: str) -> None:
    """Write ``fig`` to ``path`` as is (the caller makes it atomic)."""
    fig.savefig(path, dpi=100, format=Path(path).suffix.lower().lstrip("."))


def _check_distinct_outputs(outputs: dict[str, str | None]) -> None:
    """Two flags naming one file would have the second output overwrite the first."""
    seen: dict[str, str] = {}
    for flag, path in outputs.items():
        if path is None or path == "-":
            continue
        key = os.path.normcase(os.path.realpath(path))
        for other_flag, other in seen.items():
            same = key == other or (
                os.path.exists(path) and os.path.exists(other) and os.path.samefile(path, other)
            )
            if same:
                raise CommandError(
                    f"{other_flag} and {flag} name the same file '{path}'; give each output "
                    "its own name"
                )
        seen[flag] = key


def _format_weights(weights) -> str:
    return ", ".join(f"{w:.3f}" for w in np.asarray(weights, dtype=float))


# ----------------------------------------------------------------------------- fit
def run_fit(args: argparse.Namespace) -> int:
    """``fastem fit``: fit a mixture to DATA and save it to MODEL."""
    output = args.output
    _check_model_output(output, args.data)
    _check_backend(args.backend)
    X, columns = _read(args.data, args.quiet)
    _check_k(args.n_components, X.shape[0], args.data)
    model = _estimator(args, args.n_components)
    start = time.perf_counter()
    _fit_quietly(lambda: model.fit(X), args)
    elapsed = time.perf_counter() - start
    bic = model.bic(X)  # with NaN: the observed values' likelihood, as select reports
    _record_names(model, columns)  # after scoring X, an array without names
    model.save(output)  # atomic: never a partial file
    n, d = X.shape
    n_missing = int(np.isnan(X).sum())
    missing = f" ({n_missing:,} missing values)" if n_missing else ""
    status = (
        f"converged after {model.n_iter_} EM iterations"
        if model.converged_
        else f"did NOT converge in {model.n_iter_} EM iterations (raise --max-iter or --tol)"
    )
    restarts = f", best of {model.n_init} initializations" if model.n_init > 1 else ""
    _info(
        args,
        f"Fitted a {model.n_components}-component {model.covariance_type}-covariance Gaussian "
        f"mixture to {n:,} rows x {d} features of '{args.data}'{missing} in {elapsed:.2f} s "
        f"(backend {model.backend_}{restarts}): {status}; average log-likelihood "
        f"{model.lower_bound_:.5f}, BIC {bic:.2f}. "
        f"Component weights: {_format_weights(model.weights_)}. Model saved to '{output}'.",
    )
    return 0


# ----------------------------------------------------------------------------- predict
def run_predict(args: argparse.Namespace) -> int:
    """``fastem predict``: labels (or probabilities with --proba) of DATA's rows."""
    data_format(args.output)
    check_output_path(args.output)
    what = "the probabilities" if args.proba else "the labels"
    _check_not_the_input("-o", args.output, args.data, what)
    model = _load_model(args.model, args.backend, quiet=args.quiet)
    _apply_runtime_options(model, args)
    X, names = _read(args.data, args.quiet)
    _check_features(model, X, args.model, args.data, names)
    with _scoring(args):
        if args.proba:
            out = model.predict_proba(X)
            columns = [f"proba_{j}" for j in range(model.n_components)]
        else:
            out = model.predict(X)
            columns = ["label"]
    write_table(args.output, out, columns)
    what = "component probabilities" if args.proba else "labels"
    where = "stdout" if args.output == "-" else f"'{args.output}'"
    labels = out.argmax(axis=1) if args.proba else out
    counts = np.bincount(labels, minlength=model.n_components)
    _info(
        args,
        f"Wrote {what} of {X.shape[0]:,} rows to {where}; rows per component: "
        + ", ".join(f"{j}: {c:,}" for j, c in enumerate(counts)),
    )
    return 0


# ----------------------------------------------------------------------------- select
def _select_model_function():
    import fastem

    select_model = getattr(fastem, "select_model", None)
    if select_model is None:
        try:
            from .selection import select_model
        except ImportError as exc:
            raise CommandError(f"this fastem has no model selection: {exc}") from exc
    return select_model


def _call_select(select_model, X, ks: list[int], args: argparse.Namespace):
    """Call select_model with the options it accepts (its signature may grow)."""
    options = dict(
        n_init=args.n_init,
        max_iter=args.max_iter,
        tol=args.tol,
        reg_covar=args.reg_covar,
        init_params=args.init,
        random_state=args.seed,
        backend=args.backend,
        n_threads=args.threads,
        acceleration=_acceleration(args),
        stopping=args.stopping,
        refine=args.refine,
    )
    if args.hc_use is not None:
        options["hc_use"] = args.hc_use
    params = inspect.signature(select_model).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {key: value for key, value in options.items() if key in params}
    return select_model(
        X,
        n_components=ks,
        covariance_types=args.covariance,
        criterion=args.criterion,
        **options,
    )


def run_select(args: argparse.Namespace) -> int:
    """``fastem select``: fit a grid of candidates, print the table, keep the best."""
    select_model = _select_model_function()
    output = None
    _check_distinct_outputs({"-o": args.output, "--plot": args.plot})
    if args.output is not None:
        output = args.output
        _check_model_output(output, args.data)
    if args.plot is not None:
        _require_matplotlib("--plot")
        _check_figure_path(args.plot)
    _check_backend(args.backend)
    if args.hc_use is not None and "hc" not in args.init.split("+"):
        raise CommandError(f"--hc-use applies to hc starts; --init {args.init} has none")
    X, columns = _read(args.data, args.quiet)
    ks = _k_values(args.k, X.shape[0], args.data)
    n_models = (
        len(args.covariance)
        if args.covariance != "all"
        else (2 if X.shape[1] == 1 else len(MCLUST_MODELS))
    )  # with one feature "all" is mclust's E and V
    total = len(ks) * n_models  # candidates; each may be fitted from several starts
    selection = _fit_quietly(
        lambda: _call_select(select_model, X, ks, args), args, total_fits=total
    )
    best = getattr(selection, "best_", None)
    if best is None:
        raise CommandError(
            "every candidate model failed to fit; "
            "try other --k or --covariance values, or a larger --reg-covar"
        )
    # mclust's summary: the K x model grid, its best three marked (or one line per candidate).
    print(selection.to_text(sign=args.sign, layout=args.layout))
    targets = [path for path in (output, args.plot) if path is not None]
    with atomic_outputs(*targets) as tmps:
        written = dict(zip(targets, tmps, strict=True))
        if output is not None:
            _record_names(best, columns)
            best.save(written[output])
        if args.plot is not None:
            from .plotting import plot_selection

            figure = plot_selection(selection, criterion=args.criterion, sign=args.sign)
            _save_figure(figure, written[args.plot])
    lines = []
    if output is not None:
        lines.append(f"Best model saved to '{output}'.")
    if args.plot is not None:
        lines.append(f"Figure saved to '{args.plot}'.")
    if lines:
        _info(args, " ".join(lines))
    return 0


# ----------------------------------------------------------------------------- segment
def _import_pillow():
    try:
        from PIL import Image
    except ImportError:
        raise CommandError(
            "image segmentation needs Pillow, which is not installed: pip install pillow "
            f"(it also comes with matplotlib: {_PLOT_HINT})"
        ) from None
    return Image


def _read_image(Image, path: str) -> np.ndarray:
    """The image as uint8 (height, width, 3) RGB, or (height, width) for a grey image."""
    if not os.path.isfile(path):
        raise CommandError(f"no such image file: '{path}'; check the path")
    try:
        with Image.open(path) as img:
            grey = img.mode in ("1", "L", "LA", "I", "I;16", "F")
            if img.mode in ("I", "I;16", "F"):  # high bit depth: scale to 8 bits
                arr = np.asarray(img, dtype=np.float64)
                span = max(float(arr.max() - arr.min()), 1e-12)
                return np.round(255 * (arr - arr.min()) / span).astype(np.uint8)
            return np.asarray(img.convert("L" if grey else "RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise CommandError(
            f"cannot read the image '{path}': {_one_line(exc)}; give a PNG, JPEG or other "
            "image file that Pillow reads"
        ) from exc


_LOSSLESS = (".png", ".tif", ".tiff", ".bmp")
_LOSSLESS_16 = (".png", ".tif", ".tiff")  # label maps of more than 256 components (uint16)


def _check_image_path(Image, path: str, labels: bool, n_components: int = 1) -> str:
    ext = Path(path).suffix.lower()
    formats = Image.registered_extensions()
    if ext not in formats:
        raise CommandError(
            f"cannot tell the image format of '{path}'; use a name ending in .png "
            "(or .jpg, .tif, .bmp, ...)"
        )
    if labels and ext not in _LOSSLESS:
        raise CommandError(
            f"--labels needs a lossless format to keep label values exact; use a name ending "
            f"in {', '.join(_LOSSLESS)} instead of '{path}'"
        )
    if labels and n_components > 256 and ext not in _LOSSLESS_16:
        # more than 256 labels need 16-bit pixels, which BMP does not have: say so now,
        # not after the fit
        raise CommandError(
            f"--labels with -k {n_components} needs 16-bit pixels, which '{path}' cannot "
            f"hold; use a name ending in {', '.join(_LOSSLESS_16)}, or -k 256 or less"
        )
    check_output_path(path, what="image")
    return formats[ext]


def run_segment(args: argparse.Namespace) -> int:
    """``fastem segment``: paint each pixel with its colour component's mean."""
    Image = _import_pillow()
    _check_distinct_outputs({"-o": args.output, "--plot": args.plot})
    _check_not_the_input("-o", args.output, args.image, "the segmented image")
    _check_not_the_input("--plot", args.plot, args.image, "the figure")
    image_format = _check_image_path(Image, args.output, args.labels, args.n_components)
    if args.plot is not None:
        _require_matplotlib("--plot")
        _check_figure_path(args.plot)
    _check_backend(args.backend)
    image = _read_image(Image, args.image)
    h, w = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    pixels = image.reshape(-1, channels)
    n = pixels.shape[0]
    n_fit = min(n, args.max_pixels)
    if args.n_components > n_fit:
        raise CommandError(
            f"-k {args.n_components} is more components than the {n_fit:,} pixels the fit uses "
            f"(image {w}x{h}, --max-pixels {args.max_pixels}); use a smaller -k"
        )

    rng = np.random.default_rng(args.seed)
    if n <= args.max_pixels:
        sample = pixels
    else:
        sample = pixels[rng.choice(n, args.max_pixels, replace=False)]
    # Colours scaled to [0, 1]: reg_covar then means the same as for other data of unit scale.
    model = _estimator(args, args.n_components)
    start = time.perf_counter()
    _fit_quietly(lambda: model.fit(sample / 255.0), args)
    fit_time = time.perf_counter() - start
    labels = np.empty(n, dtype=np.int64)
    for a in range(0, n, _SEGMENT_BLOCK):
        labels[a : a + _SEGMENT_BLOCK] = model.predict(pixels[a : a + _SEGMENT_BLOCK] / 255.0)

    colours = np.clip(np.round(np.asarray(model.means_, dtype=np.float64) * 255), 0, 255)
    colours = colours.astype(np.uint8)
    if args.labels:
        dtype = np.uint8 if args.n_components <= 256 else np.uint16
        result = labels.astype(dtype).reshape(h, w)
    else:
        result = colours[labels].reshape(image.shape)
    targets = [args.output] + ([args.plot] if args.plot is not None else [])
    with atomic_outputs(*targets) as tmps:
        Image.fromarray(result).save(tmps[0], format=image_format)
        if args.plot is not None:
            from .plotting import plot_segmentation

            titles = ("original", "labels" if args.labels else f"{args.n_components} colours")
            figure = plot_segmentation(image, result, titles=titles, labels=args.labels)
            _save_figure(figure, tmps[1])

    share = np.bincount(labels, minlength=args.n_components) / n
    palette = ", ".join(
        "#" + "".join(f"{v:02x}" for v in (c if channels == 3 else np.repeat(c, 3))) + f" {s:.1%}"
        for c, s in zip(colours, share, strict=True)
    )
    fitted = f"{sample.shape[0]:,} sampled pixels" if sample.shape[0] < n else "every pixel"
    wrote = "a label map" if args.labels else "the segmented image"
    _info(
        args,
        f"Segmented '{args.image}' ({w}x{h}, {n:,} pixels) into {args.n_components} colours "
        f"({model.covariance_type} covariance, fitted on {fitted} in {fit_time:.2f} s): "
        f"{palette}. Wrote {wrote} to '{args.output}'"
        + (f" and a figure to '{args.plot}'." if args.plot is not None else "."),
    )
    return 0


# ----------------------------------------------------------------------------- impute
def run_impute(args: argparse.Namespace) -> int:
    """``fastem impute``: replace NaN by its conditional expectation under MODEL."""
    data_format(args.output)
    check_output_path(args.output)
    # Writing over the input would lose which values were missing.
    _check_not_the_input("-o", args.output, args.data, "the completed data")
    model = _load_model(args.model, args.backend, quiet=args.quiet)
    if not hasattr(model, "impute"):
        raise CommandError("this fastem's GaussianMixture cannot impute; upgrade fastem")
    _apply_runtime_options(model, args)
    X, columns = _read(args.data, args.quiet)
    _check_features(model, X, args.model, args.data, columns)
    missing = np.isnan(X)
    with _scoring(args):
        filled = model.impute(X)
    write_table(args.output, filled, columns)
    where = "stdout" if args.output == "-" else f"'{args.output}'"
    _info(
        args,
        f"Replaced {int(missing.sum()):,} missing values in {int(missing.any(axis=1).sum()):,} "
        f"of {X.shape[0]:,} rows by their conditional expectation; wrote {where}.",
    )
    return 0


# ----------------------------------------------------------------------------- demo
def _match_components(true_means: np.ndarray, found_means: np.ndarray) -> np.ndarray:
    """Greedy nearest matching of found components to true ones (k is small).

    A true component with no rows drawn (NaN mean; tiny --n-samples) is matched
    last, to a found component left over: NaN would otherwise win argmin.
    """
    k = true_means.shape[0]
    dist = ((true_means[:, None, :] - found_means[None, :, :]) ** 2).sum(axis=2)
    undrawn = np.isnan(dist).any(axis=1)
    dist[undrawn] = np.inf
    order = np.full(k, -1)
    for _ in range(int((~undrawn).sum())):
        i, j = np.unravel_index(np.argmin(dist), dist.shape)
        order[i] = j
        dist[i, :] = np.inf
        dist[:, j] = np.inf
    left = [j for j in range(k) if j not in set(order.tolist())]
    order[undrawn] = left
    return order


def _have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _demo_figure(gm: GaussianMixture, X: np.ndarray, path: str) -> None:
    """The clusters (PCA projection beyond 2 features) beside the lower bound per iteration."""
    from matplotlib.figure import Figure

    from .plotting import plot_clusters, plot_lower_bound

    if X.shape[1] < 2:  # nothing to scatter in 2-D
        fig = Figure(figsize=(6.0, 4.0), layout="constrained")
        plot_lower_bound(gm, ax=fig.subplots())
    else:
        fig = Figure(figsize=(11.0, 4.5), layout="constrained")
        left, right = fig.subplots(1, 2, width_ratios=(1.2, 1.0))
        plot_clusters(gm, X, projection="pca" if X.shape[1] > 2 else None, ax=left)
        plot_lower_bound(gm, ax=right)
    with atomic_output(path) as tmp:
        _save_figure(fig, tmp)


def run_demo(args: argparse.Namespace) -> int:
    """``fastem demo``: fit built-in synthetic data, report, and draw a figure."""
    # Without matplotlib the demo still runs, and says at the end how to get the figure.
    draw = not args.no_plot and _have_matplotlib()
    if draw:
        _check_figure_path(args.plot)
    X, labels = make_mixture(
        args.n_samples, args.n_features, args.n_components, random_state=args.seed
    )
    print(
        f"fastem {__version__} demo: {args.n_samples:,} rows, {args.n_features} features, "
        f"{args.n_components} components (seed {args.seed})"
    )
    gm = GaussianMixture(
        args.n_components,
        covariance_type=args.covariance,
        random_state=args.seed,
        backend=args.backend,
        **FIT_DEFAULTS,  # as `fastem fit`: run to the maximum (SQUAREM, Aitken stopping)
    )
    start = time.perf_counter()
    _fit_quietly(lambda: gm.fit(X), args)
    elapsed = time.perf_counter() - start
    print(
        f"backend {gm.backend_}: {gm.n_iter_} EM passes (SQUAREM), "
        f"{'converged' if gm.converged_ else 'NOT converged'}, {elapsed:.2f} s "
        "(includes k-means initialization and any first-call compilation)"
    )
    print(f"average log-likelihood: {gm.lower_bound_:.5f}")
    counts = np.bincount(labels, minlength=args.n_components)
    true_means = np.full((args.n_components, X.shape[1]), np.nan)
    for k in np.flatnonzero(counts):  # a component may draw no row when rows are few
        true_means[k] = X[labels == k].mean(axis=0)
    true_weights = counts / labels.size
    order = _match_components(true_means, gm.means_)
    agreement = (order[labels] == gm.predict(X)).mean()
    print("component  true weight  fitted weight  distance between true and fitted mean")
    for k in range(args.n_components):
        j = order[k]
        dist = float(np.linalg.norm(true_means[k] - gm.means_[j]))
        shown = f"{dist:.4f}" if counts[k] else "- (no row drawn)"
        print(f"{k:9d}  {true_weights[k]:11.4f}  {gm.weights_[j]:13.4f}  {shown}")
    print(f"rows assigned to the component they were drawn from: {agreement:.1%}")
    if draw:
        _demo_figure(gm, X, args.plot)
        print(f"figure saved to '{args.plot}'")
    elif not args.no_plot:
        print(f"the figure needs matplotlib, which is not installed: {_PLOT_HINT}")
    return 0


# ----------------------------------------------------------------------------- parser
def _add_progress_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print no progress, summary or warnings (results on stdout and errors stay)",
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", help="print one line per EM iteration (stderr)"
    )


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help=f"kernel backend (available here: {', '.join(available_backends())})",
    )
    p.add_argument("--threads", type=_positive_int, default=None, help="cap on compute threads")


def _add_fit_options(
    p: argparse.ArgumentParser, *, covariance: bool = True, select: bool = False
) -> None:
    if covariance:
        p.add_argument(
            "--covariance",
            type=_covariance_name,
            default="full",
            help="covariance model: full, tied, diag, spherical or one of mclust's 14 "
            "(EII ... VVV, any case); default full",
        )
    p.add_argument("--n-init", type=_positive_int, default=1, help="initializations (default 1)")
    p.add_argument(
        "--max-iter",
        type=_positive_int,
        default=FIT_DEFAULTS["max_iter"],
        help=f"EM passes at most (default {FIT_DEFAULTS['max_iter']})",
    )
    p.add_argument(
        "--tol",
        type=_nonneg_float,
        default=FIT_DEFAULTS["tol"],
        help=f"convergence tolerance (default {FIT_DEFAULTS['tol']:g}; see --stopping)",
    )
    p.add_argument(
        "--stopping",
        choices=STOPPING_RULES,
        default=FIT_DEFAULTS["stopping"],
        help="stopping rule (default aitken: stop when the predicted remaining gain of the "
        "average log-likelihood is below --tol; absolute with --tol 1e-3 is scikit-learn's)",
    )
    p.add_argument(
        "--acceleration",
        choices=(*ACCELERATIONS, "none"),
        default=FIT_DEFAULTS["acceleration"],
        help="EM acceleration (default squarem; qn: quasi-Newton; mpe: minimal polynomial "
        "extrapolation; none: plain EM, as scikit-learn)",
    )
    p.add_argument(
        "--reg-covar",
        type=_nonneg_float,
        default=1e-6,
        help="added to the covariances' diagonal (default 1e-06)",
    )
    if select:
        p.add_argument(
            "--init",
            type=_init_spec,
            default=SELECT_INIT,
            help="starts shared by every model at each K: one of "
            f"{','.join(INIT_METHODS)} or several joined by '+' (default {SELECT_INIT})",
        )
    else:
        p.add_argument("--init", choices=INIT_METHODS, default="kmeans", help="initialization")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    _add_runtime_options(p)


def _add_fit_command(fit: argparse.ArgumentParser) -> None:
    fit.add_argument("data", metavar="DATA", help=_data_help())
    fit.add_argument("-k", "--n-components", type=_positive_int, required=True)
    fit.add_argument("-o", "--output", metavar="MODEL", required=True, help="model file (.npz)")
    _add_fit_options(fit)
    _add_progress_options(fit)
    fit.set_defaults(func=run_fit)


def _add_predict_command(predict: argparse.ArgumentParser) -> None:
    predict.add_argument("model", metavar="MODEL", help="model saved by 'fastem fit'")
    predict.add_argument("data", metavar="DATA", help=_data_help())
    predict.add_argument("-o", "--output", metavar="OUT", required=True, help=_out_help())
    predict.add_argument("--proba", action="store_true", help="write probabilities, not labels")
    _add_runtime_options(predict)
    predict.add_argument("-q", "--quiet", action="store_true", help="print no summary or warnings")
    predict.set_defaults(func=run_predict)


def _add_select_command(select: argparse.ArgumentParser) -> None:
    select.add_argument("data", metavar="DATA", help=_data_help())
    select.add_argument(
        "-k", "--k", type=_k_list, default=_k_list("1-10"), help="component counts (default 1-10)"
    )
    select.add_argument(
        "--covariance",
        type=_covariance_list,
        default="all",
        help="'all' (mclust's 14 models, the default) or a comma-separated list of mclust "
        "names (EII ... VVV, any case) and full, tied, diag, spherical",
    )
    select.add_argument("--criterion", choices=CRITERIA, default="bic")
    select.add_argument(
        "--sign",
        choices=("sklearn", "mclust"),
        default="sklearn",
        help="print and plot -2 log L + penalty (sklearn, lower is better, the default) or "
        "mclust's 2 log L - penalty (larger is better)",
    )
    select.add_argument(
        "--layout",
        choices=("grid", "table"),
        default="grid",
        help="grid: K x model grid, best three marked (mclust's summary); table: one line "
        "per candidate with every criterion",
    )
    select.add_argument(
        "--refine",
        choices=REFINE,
        default="contenders",
        help="contenders (default): screen every candidate, then fit to the maximum only "
        "those that could be among the best three (the others are marked ~); all: fit "
        "every candidate to the maximum",
    )
    select.add_argument(
        "--hc-use",
        type=str.upper,
        choices=HC_USE,
        default=None,
        help="data the hc tree is built on, mclust's hcUse (any case): SVD (default, mclust "
        ">= 5.3), VARS (the variables as given, mclust 5.0-5.2) or STD (each standardized)",
    )
    select.add_argument("-o", "--output", metavar="MODEL", help="save the best model (.npz)")
    select.add_argument("--plot", metavar="FIGURE", help="save the criterion plot (.png, ...)")
    _add_fit_options(select, covariance=False, select=True)
    _add_progress_options(select)
    select.set_defaults(func=run_select)


def _add_segment_command(segment: argparse.ArgumentParser) -> None:
    segment.add_argument("image", metavar="IMAGE", help="image file (PNG, JPEG, ...)")
    segment.add_argument("-k", "--n-components", type=_positive_int, required=True)
    segment.add_argument("-o", "--output", metavar="OUT", required=True, help="image (.png)")
    segment.add_argument("--labels", action="store_true", help="write a label map, not colours")
    segment.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=100_000,
        help="fit on a random sample of at most this many pixels (default 100000)",
    )
    segment.add_argument("--plot", metavar="FIGURE", help="also save original beside segmented")
    _add_fit_options(segment)
    _add_progress_options(segment)
    segment.set_defaults(func=run_segment)


def _add_impute_command(impute: argparse.ArgumentParser) -> None:
    impute.add_argument("model", metavar="MODEL", help="model saved by 'fastem fit'")
    impute.add_argument(
        "data", metavar="DATA", help=_data_help() + "; empty fields/NaN are missing"
    )
    impute.add_argument("-o", "--output", metavar="OUT", required=True, help=_out_help())
    _add_runtime_options(impute)
    impute.add_argument("-q", "--quiet", action="store_true", help="print no summary or warnings")
    impute.set_defaults(func=run_impute)


def _add_demo_command(demo: argparse.ArgumentParser) -> None:
    demo.add_argument(
        "--n-samples", type=int, default=100_000, help="rows drawn (default %(default)s)"
    )
    demo.add_argument("--n-features", type=int, default=2, help="features (default %(default)s)")
    demo.add_argument(
        "--n-components",
        type=int,
        default=5,
        help="components drawn from and fitted (default %(default)s)",
    )
    demo.add_argument(
        "--covariance",
        type=_covariance_name,
        default="full",
        help="covariance model fitted: full, tied, diag, spherical or one of mclust's 14 "
        "(default full)",
    )
    demo.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help=f"kernel backend (available here: {', '.join(available_backends())})",
    )
    demo.add_argument(
        "--seed", type=_seed, default=0, help="seed of the data and the fit (default 0)"
    )
    demo.add_argument(
        "--plot", metavar="FIGURE", default="fastem-demo.png", help="figure (default %(default)s)"
    )
    demo.add_argument("--no-plot", action="store_true", help="do not draw the figure")
    _add_progress_options(demo)
    demo.set_defaults(func=run_demo)


def run_cache(args: argparse.Namespace) -> int:
    """``fastem cache``: where the compiled kernels are cached, or ``--clear`` it."""
    try:
        from .backends import _numba_cache
    except ImportError:
        print("numba is not installed here: fastem caches no compiled kernels")
        return 0
    numba_dir = os.environ.get("NUMBA_CACHE_DIR")
    if numba_dir:  # Numba's own setting wins, and that folder is not only fastem's
        if args.clear:
            raise CommandError(
                f"NUMBA_CACHE_DIR is set ({numba_dir}): Numba caches every package's "
                "kernels there, fastem's included; delete what you want of it yourself"
            )
        print(f"NUMBA_CACHE_DIR is set: Numba caches fastem's kernels in {numba_dir}")
        return 0
    folder = _numba_cache.cache_directory()
    if args.clear:
        if not folder.is_dir():
            if folder.exists():  # FASTEM_CACHE_DIR naming a file: never delete it
                raise CommandError(f"the kernel cache {folder} is not a folder; nothing removed")
            print(f"{folder} does not exist: nothing to remove")
            return 0
        # fastem's kernels are its entries in the 'numba' subfolder; a folder the user
        # chose with FASTEM_CACHE_DIR (~/.cache, say, whose 'numba' is Numba's own
        # user-wide cache) may hold anything else, which is not ours (clear_cache).
        _numba_cache.clear_cache()
        if not folder.exists():
            print(f"removed {folder}")
            return 0
        others = sorted(p.name for p in folder.iterdir())
        kernels = folder / "numba"
        if kernels.is_dir():
            others = [n for n in others if n != "numba"]
            others += [f"numba/{p.name}" for p in sorted(kernels.iterdir())]
        print(
            f"removed fastem's kernels from {folder} (the other {len(others)} entries "
            f"are not fastem's and stay: {_shown_names(others)})"
        )
        return 0
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    size = sum(p.stat().st_size for p in files) / 2**20
    print(f"{folder}: {len(files)} files, {size:.1f} MiB (FASTEM_CACHE_DIR moves it)")
    return 0


def _add_cache_command(cache: argparse.ArgumentParser) -> None:
    cache.add_argument(
        "--clear", action="store_true", help="delete the cache (the next fit compiles again)"
    )
    cache.set_defaults(func=run_cache)


def _add_hmm_command(hmm: argparse.ArgumentParser) -> None:
    from .hmm import _cli  # imports NumPy and the HMM module only when `hmm` is chosen

    _cli.add_arguments(hmm)


def _data_help() -> str:
    return f"data file ({', '.join(DATA_FORMATS)}), or - for CSV on stdin"


def _out_help() -> str:
    return f"output file ({', '.join(DATA_FORMATS)}), or - for CSV on stdout"


# name -> (one-line help, adds the command's arguments)
_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "fit": ("fit a mixture to a data file and save the model", _add_fit_command),
    "predict": ("component labels or probabilities of each row", _add_predict_command),
    "select": ("choose n_components and covariance type", _add_select_command),
    "segment": ("segment an image by pixel colour", _add_segment_command),
    "impute": ("replace missing values by their expectation", _add_impute_command),
    "demo": ("fit built-in synthetic data and report the result", _add_demo_command),
    "cache": ("show or clear the compiled-kernel cache", _add_cache_command),
    "hmm": ("hidden Markov models: fit, decode (states) and sample", _add_hmm_command),
}


class _LazySubcommands(argparse._SubParsersAction):
    """Subcommands whose arguments are added when the subcommand is parsed.

    Their help texts name the available backends and data formats, which imports NumPy
    and the kernels; ``fastem --help`` and ``fastem --version`` need none of that.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pending: dict[str, Callable[[argparse.ArgumentParser], None]] = {}

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        add_arguments = self.pending.pop(values[0], None)
        if add_arguments is not None:
            _import_command_modules()
            add_arguments(self.choices[values[0]])
        super().__call__(parser, namespace, values, option_string)


def build_parser(*, lazy: bool = False) -> argparse.ArgumentParser:
    """The argument parser of the ``fastem`` command.

    Parameters
    ----------
    lazy : bool, default=False
        Add a subcommand's arguments only when parsing reaches it (what :func:`main`
        does, so that ``fastem --help`` imports neither NumPy nor the kernels).

    Returns
    -------
    parser : argparse.ArgumentParser
    """
    parser = _Parser(prog="fastem", description="Gaussian mixture models by EM, fast.")
    parser.add_argument("--version", action="version", version=f"fastem {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", action=_LazySubcommands
    )
    if not lazy:
        _import_command_modules()
    for name, (help_text, add_arguments) in _COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if lazy:
            sub.pending[name] = add_arguments
        else:
            add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fastem`` console script.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments (``sys.argv[1:]`` when None).

    Returns
    -------
    status : int
        0 on success, 2 on bad input or usage (after one ``fastem: error:`` line
        on stderr), 130 when interrupted.
    """
    parser = build_parser(lazy=True)
    args = parser.parse_args(argv)
    _import_command_modules()
    if args.command == "demo":

        def demo_error(message: str):  # the pointer names demo's help, not fastem's
            parser.exit(2, f"fastem: error: {message} (see 'fastem demo --help')\n")

        for name in ("n_samples", "n_features", "n_components"):
            if getattr(args, name) < 1:
                demo_error(f"--{name.replace('_', '-')} must be at least 1")
        if args.n_samples < args.n_components:
            demo_error("--n-samples must be at least --n-components")
    try:
        return args.func(args)
    except BrokenPipeError:
        # The reader of our stdout went away (`fastem predict ... -o - | head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("fastem: interrupted", file=sys.stderr)
        return 130
    except (CommandError, InputError, ValueError, TypeError, ImportError, OSError) as exc:
        if os.environ.get("FASTEM_TRACEBACK"):  # for debugging fastem itself
            raise
        message = _one_line(exc)
        if isinstance(exc, OSError) and exc.strerror and exc.filename:
            message = f"{exc.strerror}: '{exc.filename}'"
        print(f"fastem: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
