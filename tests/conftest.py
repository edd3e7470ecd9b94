"""Shared fixtures and helpers for the test suite."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "fastem",
    deadline=None,
    max_examples=int(os.environ.get("FASTEM_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.too_slow],
)
# CI (.ci/run) draws the same examples every run, so a landing is not decided by
# a random draw; developers' runs keep exploring new ones. A case a random run
# finds is pinned with @example.
settings.register_profile("fastem-ci", parent=settings.get_profile("fastem"), derandomize=True)
settings.load_profile(os.environ.get("FASTEM_HYPOTHESIS_PROFILE", "fastem"))

from _helpers import BACKENDS  # noqa: E402


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Every backend that imports here."""
    return request.param


@pytest.fixture
def restore_cython_threads():
    """Put the cython backend's OpenMP thread count back after a test that sets it."""
    cy = pytest.importorskip("fastem.backends._cython")
    before = cy.get_num_threads()
    yield
    cy.set_num_threads(before)
