"""``fastem hmm fit|decode|sample``: hidden Markov models from the command line.

Added to ``fastem``'s parser by :func:`add_arguments` (``fastem.cli`` imports
this module only when the ``hmm`` command is chosen). Errors follow the
command's conventions: bad input raises :class:`fastem.cli.CommandError`,
:class:`fastem._io.InputError` or :class:`ValueError`, which ``fastem``'s
``main`` prints as one ``fastem: error:`` line before exiting with status 2.

Sequences: a data file holds the frames of all sequences one after the other.
``--lengths FILE`` gives their lengths (a one-column table of positive whole
numbers summing to the number of rows), or ``--sequence-column COL`` names a
column (by header name, or by index, 0 for the first column) whose value
identifies each row's sequence: consecutive rows with the same value form one
sequence, and the column is not a feature. Without either, the file is one
sequence.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .. import cli as fc
from .._em import METHODS
from .._io import check_output_path, data_format, write_table
from ._backend import HMM_BACKENDS

MODEL_KINDS = {
    "gaussian": "GaussianHMM",
    "gmm": "GMMHMM",
    "categorical": "CategoricalHMM",
    "poisson": "PoissonHMM",
    "multinomial": "MultinomialHMM",
}
_DISCRETE = ("categorical", "poisson", "multinomial")
_COVARIANCE_TYPES = ("diag", "full", "tied", "spherical")


# ----------------------------------------------------------------------------- parser
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fit``, ``decode`` and ``sample`` sub-subcommands to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``fastem hmm`` parser.
    """
    sub = parser.add_subparsers(dest="hmm_command", required=True, metavar="HMM_COMMAND")

    fit = sub.add_parser("fit", help="fit an HMM to a data file and save the model")
    fit.add_argument("data", metavar="DATA", help=fc._data_help())
    fit.add_argument(
        "-k", "--n-components", type=fc._positive_int, required=True, help="number of hidden states"
    )
    fit.add_argument("-o", "--output", metavar="MODEL", required=True, help="model file (.npz)")
    fit.add_argument(
        "--kind",
        choices=tuple(MODEL_KINDS),
        default="gaussian",
        help="emission model: gaussian (default), gmm (a Gaussian mixture per state), "
        "categorical (one column of symbols 0, 1, ...), poisson (counts), "
        "multinomial (a row of counts over the columns' symbols)",
    )
    fit.add_argument(
        "--covariance",
        choices=_COVARIANCE_TYPES,
        default="diag",
        help="covariance type of gaussian/gmm emissions (default diag)",
    )
    fit.add_argument(
        "--n-mix",
        type=fc._positive_int,
        default=2,
        help="mixture components per state for --kind gmm (default 2)",
    )
    fit.add_argument(
        "--n-iter",
        type=fc._positive_int,
        default=100,
        help="Baum-Welch iterations at most (default 100)",
    )
    fit.add_argument(
        "--tol",
        type=fc._nonneg_float,
        default=1e-2,
        help="stop when the log-likelihood gains less (default 0.01, hmmlearn's)",
    )
    fit.add_argument(
        "--n-init", type=fc._positive_int, default=1, help="restarts, best kept (default 1)"
    )
    fit.add_argument(
        "--reg-covar",
        type=fc._nonneg_float,
        default=0.0,
        help="added to variances after each M-step (gaussian/gmm)",
    )
    fit.add_argument(
        "--acceleration",
        choices=tuple(m for m in METHODS if m is not None),
        default=None,
        help="accelerate Baum-Welch (default: plain; docs/hmm.md)",
    )
    fit.add_argument(
        "--stopping",
        choices=("absolute", "relative", "aitken"),
        default=None,
        help="stopping rule (default: hmmlearn's gain < tol)",
    )
    fit.add_argument("--seed", type=fc._seed, default=0, help="random seed (default 0)")
    _add_sequence_options(fit)
    _add_runtime_options(fit)
    _add_quiet_verbose(fit)
    fit.set_defaults(func=run_fit)

    decode = sub.add_parser("decode", help="most likely state of each frame (and posteriors)")
    decode.add_argument("model", metavar="MODEL", help="model saved by 'fastem hmm fit'")
    decode.add_argument("data", metavar="DATA", help=fc._data_help())
    decode.add_argument(
        "-o", "--output", metavar="OUT", default="-", help=fc._out_help() + " (default -)"
    )
    decode.add_argument(
        "--algorithm",
        choices=("viterbi", "map"),
        default=None,
        help="viterbi: best path; map: best state per frame (default: the model's)",
    )
    decode.add_argument(
        "--proba",
        action="store_true",
        help="also write each frame's state probabilities (smoothed)",
    )
    decode.add_argument(
        "--filtered",
        action="store_true",
        help="with --proba: causal probabilities, from past frames only",
    )
    _add_sequence_options(decode)
    _add_runtime_options(decode)
    decode.add_argument("-q", "--quiet", action="store_true", help="print no summary or warnings")
    decode.set_defaults(func=run_decode)

    sample = sub.add_parser("sample", help="draw sequences from a saved HMM")
    sample.add_argument("model", metavar="MODEL", help="model saved by 'fastem hmm fit'")
    sample.add_argument(
        "-n", "--n-samples", type=fc._positive_int, required=True, help="frames per sequence"
    )
    sample.add_argument(
        "--n-sequences",
        type=fc._positive_int,
        default=1,
        help="sequences to draw (default 1); adds a 'sequence' column",
    )
    sample.add_argument("-o", "--output", metavar="OUT", required=True, help=fc._out_help())
    sample.add_argument("--states", action="store_true", help="add a 'state' column")
    sample.add_argument("--seed", type=fc._seed, default=0, help="random seed (default 0)")
    sample.add_argument("-q", "--quiet", action="store_true", help="print no summary or warnings")
    sample.set_defaults(func=run_sample)


def _add_sequence_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--lengths",
        metavar="FILE",
        help="sequence lengths, one per row (a .csv/.npy/.parquet table)",
    )
    group.add_argument(
        "--sequence-column",
        metavar="COL",
        help="column naming each row's sequence (header name, or index from 0)",
    )


def _add_runtime_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=HMM_BACKENDS,
        default=None,
        help="HMM kernels (default: numba where it imports, else cython, else numpy)",
    )
    p.add_argument("--threads", type=fc._positive_int, default=None, help="cap on compute threads")


def _add_quiet_verbose(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "-q", "--quiet", action="store_true", help="print no summary or warnings (errors stay)"
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="print one line per Baum-Welch iteration (stderr)",
    )


# ----------------------------------------------------------------------------- helpers
def _read_sequences(args: argparse.Namespace) -> tuple[np.ndarray, list[str] | None, np.ndarray]:
    """DATA's feature columns, their names, and the sequence lengths."""
    X, columns = fc._read(args.data)
    n = X.shape[0]
    if args.sequence_column is not None:
        j = _column_index(args.sequence_column, columns, X.shape[1], args.data)
        ids = X[:, j]
        if np.isnan(ids).any():
            row = int(np.flatnonzero(np.isnan(ids))[0]) + 1
            raise fc.CommandError(
                f"the sequence column of '{args.data}' is empty in row {row}; "
                "every row needs its sequence's identifier"
            )
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        seen = ids[starts]
        if np.unique(seen).size != seen.size:
            _, first = np.unique(seen, return_index=True)
            repeated = seen[np.setdiff1d(np.arange(seen.size), first)[0]]
            raise fc.CommandError(
                f"the rows of sequence {repeated:g} in '{args.data}' are not consecutive; "
                "sort the file by its sequence column (frames in order within each sequence)"
            )
        lengths = np.diff(np.r_[starts, n])
        X = np.delete(X, j, axis=1)
        if columns is not None:
            columns = [c for i, c in enumerate(columns) if i != j]
        if X.shape[1] == 0:
            raise fc.CommandError(f"'{args.data}' has no column besides the sequence column")
        return X, columns, lengths
    if args.lengths is not None:
        L, _ = fc._read(args.lengths)
        if L.shape[1] != 1:
            raise fc.CommandError(
                f"'{args.lengths}' has {L.shape[1]} columns; give the lengths in one column"
            )
        L = L[:, 0]
        if np.isnan(L).any() or (L != np.round(L)).any() or (L < 1).any():
            raise fc.CommandError(
                f"'{args.lengths}' must hold whole numbers >= 1 (one sequence length per row)"
            )
        lengths = L.astype(np.int64)
        if lengths.sum() != n:
            raise fc.CommandError(
                f"the lengths in '{args.lengths}' sum to {lengths.sum():,} but '{args.data}' "
                f"has {n:,} rows; they must match"
            )
        return X, columns, lengths
    return X, columns, np.array([n], dtype=np.int64)


def _column_index(spec: str, columns: list[str] | None, n_columns: int, path: str) -> int:
    if columns is not None and spec in columns:
        return columns.index(spec)
    try:
        j = int(spec)
    except ValueError:
        names = f"its columns are {', '.join(columns)}" if columns else "it has no header"
        raise fc.CommandError(
            f"'{path}' has no column named {spec!r} ({names}); give a name or an index from 0"
        ) from None
    if not 0 <= j < n_columns:
        raise fc.CommandError(
            f"--sequence-column {j} is out of range: '{path}' has {n_columns} column(s), "
            f"indices 0 to {n_columns - 1}"
        )
    return j


def _check_discrete(X: np.ndarray, kind: str, path: str) -> np.ndarray:
    if np.isnan(X).any():
        raise fc.CommandError(f"'{path}' has missing values, which {kind} HMMs cannot use")
    if (X < 0).any() or (X != np.round(X)).any():
        raise fc.CommandError(
            f"{kind} HMMs need whole numbers >= 0, and '{path}' holds other values"
        )
    if kind == "categorical" and X.shape[1] != 1:
        raise fc.CommandError(
            f"a categorical HMM reads one column of symbols; '{path}' has {X.shape[1]}"
        )
    return X.astype(np.int64)


def _model_kind(model) -> str:
    return {v: k for k, v in MODEL_KINDS.items()}[type(model).__name__]


def _load_hmm(args: argparse.Namespace):
    from ._persistence import load_hmm

    path = args.model
    if not os.path.exists(path):
        raise fc.CommandError(
            f"no such model file: '{path}'; give a model saved by 'fastem hmm fit -o'"
        )
    try:
        with fc._one_line_warnings(args.quiet):
            model = load_hmm(path, backend=getattr(args, "backend", None))
    except ValueError as exc:
        raise fc.CommandError(
            f"{fc._one_line(exc)}; give a model saved by 'fastem hmm fit -o'"
        ) from exc
    if getattr(args, "threads", None) is not None:
        model.n_threads = args.threads
    return model


def _info(args: argparse.Namespace, line: str) -> None:
    if args.quiet:
        return
    print(line, file=sys.stderr if args.output == "-" else sys.stdout)


# ----------------------------------------------------------------------------- commands
def run_fit(args: argparse.Namespace) -> int:
    """``fastem hmm fit``: fit an HMM to DATA and save it to MODEL."""
    from . import GMMHMM, CategoricalHMM, GaussianHMM, MultinomialHMM, PoissonHMM

    fc._check_model_output(args.output, args.data)
    fc._check_not_the_input("-o", args.output, args.lengths, "the model")
    X, _, lengths = _read_sequences(args)
    common = dict(
        n_components=args.n_components,
        n_iter=args.n_iter,
        tol=args.tol,
        n_init=args.n_init,
        random_state=args.seed,
        verbose=args.verbose,
        backend=args.backend,
        n_threads=args.threads,
        acceleration=args.acceleration,
        stopping=args.stopping,
    )
    if args.kind == "multinomial":
        X = _check_discrete(X, args.kind, args.data)
        totals = np.unique(X.sum(axis=1))
        # One total: n_trials is that number (sample can draw); else None, which
        # fit sets to the rows' totals (hmmlearn's), and sample refuses.
        model = MultinomialHMM(n_trials=int(totals[0]) if totals.size == 1 else None, **common)
    elif args.kind in _DISCRETE:
        X = _check_discrete(X, args.kind, args.data)
        cls = CategoricalHMM if args.kind == "categorical" else PoissonHMM
        model = cls(**common)
    elif args.kind == "gmm":
        model = GMMHMM(
            n_mix=args.n_mix, covariance_type=args.covariance, reg_covar=args.reg_covar, **common
        )
    else:
        model = GaussianHMM(covariance_type=args.covariance, reg_covar=args.reg_covar, **common)
    if args.n_components > X.shape[0]:
        raise fc.CommandError(
            f"-k {args.n_components} is more states than the {X.shape[0]} rows of "
            f"'{args.data}'; use fewer states or more data"
        )
    start = time.perf_counter()
    with fc._one_line_warnings(args.quiet):
        model.fit(X, lengths)
    elapsed = time.perf_counter() - start
    model.save(args.output)
    monitor = model.monitor_
    status = (
        f"converged after {monitor.iter} iterations"
        if monitor.converged and monitor.iter < model.n_iter
        else f"stopped after {monitor.iter} iterations (the --n-iter cap)"
    )
    _info(
        args,
        f"Fitted a {args.n_components}-state {MODEL_KINDS[args.kind]} to {X.shape[0]:,} rows x "
        f"{X.shape[1]} features in {lengths.size:,} sequence(s) of '{args.data}' in "
        f"{elapsed:.2f} s: {status}; log-likelihood {monitor.history[-1]:.4f}. "
        f"Model saved to '{args.output}'.",
    )
    return 0


def run_decode(args: argparse.Namespace) -> int:
    """``fastem hmm decode``: the state of each frame (and optionally probabilities)."""
    data_format(args.output)
    check_output_path(args.output)
    fc._check_not_the_input("-o", args.output, args.data, "the states")
    fc._check_not_the_input("-o", args.output, args.lengths, "the states")
    if args.filtered and not args.proba:
        raise fc.CommandError("--filtered goes with --proba (it chooses which probabilities)")
    model = _load_hmm(args)
    X, _, lengths = _read_sequences(args)
    kind = _model_kind(model)
    if kind in _DISCRETE:
        X = _check_discrete(X, kind, args.data)
    d = 1 if kind == "categorical" else int(model.n_features)
    if X.shape[1] != d:
        raise fc.CommandError(
            f"the model '{args.model}' was fitted on {d} feature(s) but '{args.data}' has "
            f"{X.shape[1]}; give data with the same columns as the training data"
        )
    if kind == "categorical" and X.max() >= model.n_features:
        raise fc.CommandError(
            f"'{args.data}' holds symbol {X.max()}, but the model '{args.model}' knows "
            f"symbols 0 to {model.n_features - 1} only"
        )
    with fc._one_line_warnings(args.quiet):
        logprob, states = model.decode(X, lengths, algorithm=args.algorithm)
        table = [states[:, None].astype(np.float64)]
        columns = ["state"]
        if args.proba:
            proba = (
                model.predict_filtered_proba(X, lengths)
                if args.filtered
                else (model.predict_proba(X, lengths))
            )
            table.append(proba)
            columns += [f"proba_{k}" for k in range(model.n_components)]
    # States alone are written as integers; beside probabilities the table is float.
    out = states.astype(np.int64) if len(table) == 1 else np.hstack(table)
    write_table(args.output, out, columns)
    counts = np.bincount(states, minlength=model.n_components)
    _info(
        args,
        f"Decoded {X.shape[0]:,} frames in {lengths.size:,} sequence(s) "
        f"({args.algorithm or model.algorithm}): log p(X, states) {logprob:.4f}; frames per "
        f"state {', '.join(map(str, counts.tolist()))}.",
    )
    return 0


def run_sample(args: argparse.Namespace) -> int:
    """``fastem hmm sample``: draw sequences from MODEL."""
    data_format(args.output)
    check_output_path(args.output)
    model = _load_hmm(args)
    if _model_kind(model) == "multinomial" and np.unique(model.n_trials).size != 1:
        raise fc.CommandError(
            f"the multinomial model '{args.model}' was fitted on rows with different totals; "
            "sampling needs one total (number of trials) for every row"
        )
    rs = np.random.RandomState(args.seed)
    parts = []
    for s in range(args.n_sequences):
        X, states = model.sample(args.n_samples, random_state=rs)
        cols = [np.asarray(X, dtype=np.float64)]
        if args.n_sequences > 1:
            cols.insert(0, np.full((X.shape[0], 1), float(s)))
        if args.states:
            cols.append(states[:, None].astype(np.float64))
        parts.append(np.hstack(cols))
    columns = [f"x{j}" for j in range(np.asarray(X).shape[1])]
    if args.n_sequences > 1:
        columns.insert(0, "sequence")
    if args.states:
        columns.append("state")
    out = np.vstack(parts)
    if _model_kind(model) in _DISCRETE:
        out = out.astype(np.int64)  # counts and symbols: every column is whole numbers
    write_table(args.output, out, columns)
    _info(
        args,
        f"Drew {args.n_sequences:,} sequence(s) of {args.n_samples:,} frames from "
        f"'{args.model}' into '{args.output}'.",
    )
    return 0


__all__ = ["add_arguments", "run_fit", "run_decode", "run_sample"]
