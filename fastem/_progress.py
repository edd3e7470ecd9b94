"""Progress display of fits for the ``fastem`` command, built on :mod:`fastem._events`.

Three modes: ``"bar"`` rewrites one status line in place (for a terminal),
``"lines"`` prints one line per EM iteration (``--verbose``), ``"off"`` prints
nothing (piped output, ``--quiet``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import numpy as np

from ._events import fit_listener

__all__ = ["FitProgress", "choose_mode", "show_progress"]

MODES = ("bar", "lines", "off")


def choose_mode(
    *, quiet: bool = False, verbose: bool = False, stream: IO[str] | None = None
) -> str:
    """The progress mode for the command's flags and where progress would go.

    ``--quiet`` wins over ``--verbose``; otherwise a terminal gets the updating
    line and anything else (a pipe, a file) gets nothing.
    """
    stream = sys.stderr if stream is None else stream
    if quiet:
        return "off"
    if verbose:
        return "lines"
    isatty = getattr(stream, "isatty", None)
    return "bar" if isatty is not None and isatty() else "off"


class FitProgress:
    """Listener for :func:`fastem._events.fit_listener` that reports fit progress.

    Parameters
    ----------
    mode : {'bar', 'lines', 'off'}
    stream : text file, default=None
        Where progress goes (``sys.stderr`` when None).
    total_fits : int or None, default=None
        Number of separate fits the command runs (model selection runs many):
        shown as ``fit i/n`` when above 1. A ``"candidate_start"`` event (from
        :func:`fastem.select_model`) overrides it and sets the fit number, and
        its ``restart``/``n_restarts`` replace the fit's own restart count:
        shared restarts are separate fits with ``n_init=1``.
    min_interval : float, default=0.1
        Seconds between redraws of the ``'bar'`` line: redrawing every
        iteration of a fast fit would cost more than the fit.
    """

    def __init__(
        self,
        mode: str = "bar",
        stream: IO[str] | None = None,
        *,
        total_fits: int | None = None,
        min_interval: float = 0.1,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.stream = sys.stderr if stream is None else stream
        self.total_fits = total_fits
        self.min_interval = min_interval
        self.n_fits = 0
        # Set by "candidate_start": then candidates, not init_start events, count fits.
        self._candidates = False
        self._restart: tuple[int, int] | None = None
        self._width = 0
        self._last_draw = 0.0
        # Fits may run in threads (model selection); keep lines whole.
        self._lock = threading.Lock()

    # The listener protocol: listener(event, **info).
    def __call__(self, event: str, **info) -> None:
        if self.mode == "off":
            return
        with self._lock:
            if event == "candidate_start":
                self._candidates = True
                self.n_fits = info["candidate"] + 1
                self.total_fits = info["n_candidates"]
                restart = info.get("restart")
                self._restart = None if restart is None else (restart, info["n_restarts"])
                return  # drawn by the fit's own init_start, which follows
            if event == "init_start" and info.get("init", 0) == 0 and not self._candidates:
                self.n_fits += 1
            text = self._describe(event, info)
            if text is None:
                return
            if self.mode == "lines":
                self.stream.write(text + "\n")
                self.stream.flush()
            else:
                now = time.monotonic()
                if event == "iteration" and now - self._last_draw < self.min_interval:
                    return
                self._last_draw = now
                self._draw(text)

    def _prefix(self, info: dict) -> str:
        parts = []
        if self.total_fits is not None and self.total_fits > 1:
            parts.append(f"fit {self.n_fits}/{self.total_fits}")
        if self._restart is not None:
            parts.append(f"restart {self._restart[0] + 1}/{self._restart[1]}")
        elif "init" in info:
            parts.append(f"restart {info['init'] + 1}/{info.get('n_init', '?')}")
        return "  ".join(parts)

    def _describe(self, event: str, info: dict) -> str | None:
        prefix = self._prefix(info)
        if event == "init_start":
            return f"{prefix}  initializing" if self.mode == "bar" else None
        if event == "iteration":
            max_iter = info.get("max_iter")
            it = f"{info.get('n_iter', '?')}/{max_iter}" if max_iter else f"{info.get('n_iter')}"
            text = (
                f"{prefix}  iteration {it}  lower bound {info.get('lower_bound', float('nan')):.6f}"
            )
            change = info.get("change")
            # The first iteration's change is infinite (no previous bound): not worth showing.
            if change is not None and np.isfinite(change) and self.mode == "lines":
                text += f"  change {change:.3g}"
            return text
        if event == "init_end":
            status = "converged" if info.get("converged") else "did not converge"
            return (
                f"{prefix}  {status} after {info.get('n_iter', '?')} iterations, "
                f"lower bound {info.get('lower_bound', float('nan')):.6f}"
            )
        return None

    def _draw(self, text: str) -> None:
        # Pad with spaces to erase the tail of a longer previous line.
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        """Erase the status line (``'bar'`` mode), leaving the terminal clean."""
        with self._lock:
            if self.mode == "bar" and self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
                self._width = 0


@contextmanager
def show_progress(
    mode: str, stream: IO[str] | None = None, *, total_fits: int | None = None
) -> Iterator[FitProgress]:
    """Report the progress of every fit inside the block; clean up the line afterwards."""
    progress = FitProgress(mode, stream, total_fits=total_fits)
    try:
        if mode == "off":
            yield progress
        else:
            with fit_listener(progress):
                yield progress
    finally:
        progress.close()
