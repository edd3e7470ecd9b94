"""``fastem.show_config()``: what a user pastes into a bug report."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import TextIO

from . import backends
from ._threads import get_backend_threads
from ._version import __version__

_LIBRARIES = ("numpy", "numba", "llvmlite", "scikit-learn", "threadpoolctl", "Cython")
_THREAD_VARIABLES = (
    "FASTEM_BACKEND",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
)


def config_info() -> dict:
    """fastem's configuration as a dictionary (see :func:`show_config`)."""
    status = backends.backend_status()
    try:
        chosen: str | None = backends.resolve_backend_name()
        chosen_error = None
    except ValueError as exc:  # FASTEM_BACKEND names an unknown or broken backend
        chosen, chosen_error = None, str(exc)
    threads = {name: get_backend_threads(name) for name, why in status.items() if why is None}
    extras = {}
    if status.get("cython") is None:
        extras["cython_openmp"] = bool(backends.get_backend("cython").openmp_enabled())
    if status.get("numba") is None:
        import numba

        extras["numba_threading_layer_requested"] = numba.config.THREADING_LAYER
        extras["numba_max_threads"] = numba.config.NUMBA_NUM_THREADS
        from .backends import _numba_cache

        extras["numba_cache_dir"] = os.environ.get("NUMBA_CACHE_DIR") or str(
            _numba_cache.cache_directory()
        )
    versions = {}
    for lib in _LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    return {
        "fastem": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "backends": status,
        "chosen_backend": chosen,
        "chosen_backend_error": chosen_error,
        "threads": threads,
        **extras,
        "environment": {v: os.environ[v] for v in _THREAD_VARIABLES if v in os.environ},
        "libraries": versions,
    }


def show_config(file: TextIO | None = None) -> None:
    """Print fastem's version, backends (and why any is unavailable), the backend
    chosen automatically, thread counts, relevant environment variables and
    library versions.

    Parameters
    ----------
    file : text stream, default=sys.stdout
    """
    info = config_info()
    out = file if file is not None else sys.stdout
    lines = [
        f"fastem {info['fastem']} on Python {info['python']} ({info['platform']}), "
        f"{info['cpu_count']} CPUs",
        "backends:",
    ]
    for name, why in info["backends"].items():
        lines.append(f"  {name:7s} {'available' if why is None else 'unavailable: ' + why}")
    if info["chosen_backend"] is not None:
        lines.append(f"chosen backend: {info['chosen_backend']}")
    else:
        lines.append(f"chosen backend: none ({info['chosen_backend_error']})")
    threads = ", ".join(f"{k} {v}" for k, v in info["threads"].items())
    lines.append(f"threads: {threads}")
    if "cython_openmp" in info:
        lines.append(f"cython built with OpenMP: {info['cython_openmp']}")
    if "numba_max_threads" in info:
        lines.append(
            f"numba thread pool: {info['numba_max_threads']} threads, threading layer "
            f"{info['numba_threading_layer_requested']!r} requested"
        )
    if "numba_cache_dir" in info:
        lines.append(f"compiled-kernel cache: {info['numba_cache_dir']} (fastem cache --clear)")
    env = ", ".join(f"{k}={v}" for k, v in info["environment"].items()) or "none set"
    lines.append(f"environment: {env}")
    libs = ", ".join(f"{k} {v or 'not installed'}" for k, v in info["libraries"].items())
    lines.append(f"libraries: {libs}")
    print("\n".join(lines), file=out)
