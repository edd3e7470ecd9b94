"""``fastem hmm fit|decode|sample``: hidden Markov models from the command line.

Added to ``fastem``'s parser by :func:`add_arguments` (``fastem.cli`` imports
this module only when the ``hmm`` command is chosen). Errors follow the
command's conventions: bad input raises :class:`fastem.cli.CommandError`,
:class:`fastem._io.InputError` or :class:`ValueError`, which ``fastem``'s
``main`` prints as one ``fastem: error:`` line before exiting with status 2.
"""

from __future__ import annotations

import argparse

MODEL_KINDS = ("gaussian", "gmm", "categorical", "poisson")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``fit``, ``decode`` and ``sample`` sub-subcommands to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``fastem hmm`` parser.
    """
    sub = parser.add_subparsers(dest="hmm_command", required=True, metavar="HMM_COMMAND")
    fit = sub.add_parser("fit", help="fit an HMM to a data file and save the model")
    fit.set_defaults(func=_not_ready)
    decode = sub.add_parser("decode", help="most likely states (and posteriors) of each frame")
    decode.set_defaults(func=_not_ready)
    sample = sub.add_parser("sample", help="draw sequences from a saved HMM")
    sample.set_defaults(func=_not_ready)


def _not_ready(args: argparse.Namespace) -> int:
    raise ValueError("fastem hmm is being built")
