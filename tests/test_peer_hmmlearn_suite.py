"""hmmlearn 0.3.3's own test suite, run against fastem.hmm.

The installed ``hmmlearn/tests`` files that test the four models fastem offers
are copied to a temporary package whose ``hmm`` module is fastem's
(``from hmmlearn import hmm`` -> fastem's ``GaussianHMM``, ``GMMHMM``,
``CategoricalHMM``, ``PoissonHMM``; ``BaseHMM`` and ``ConvergenceMonitor`` ->
fastem's);
everything else in them is kept (hmmlearn's helpers ``normalize`` and
``DECODER_ALGORITHMS`` included). pytest runs them in a subprocess with a fixed
seed, and every outcome that is not a pass must be listed below with its
reason: tests excluded because they test hmmlearn's internals, tests that fail
on a documented difference, and hmmlearn's own xfail marks (whose outcome with
fastem is pinned too: an unexpected pass or failure fails this test).
docs/hmmlearn_suite.md has the counts and the reasons.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HMMLEARN_VERSION = "0.3.3"
REPO = Path(__file__).resolve().parents[1]

# The files that test the models fastem offers (the variational and
# KL-divergence files test models fastem does not have; test_utils.py tests
# hmmlearn.utils).
FILES = (
    "__init__.py",
    "conftest.py",
    "test_base.py",
    "test_categorical_hmm.py",
    "test_gaussian_hmm.py",
    "test_gmm_hmm.py",
    "test_gmm_hmm_new.py",
    "test_gmm_hmm_multisequence.py",
    "test_poisson_hmm.py",
    "test_multinomial_hmm.py",
)

# (file, old, new, how many times old must occur): the whole rewrite (old == new:
# an import that already resolves to the package's fastem ``hmm`` module, only
# checked). A change in hmmlearn's files that makes one not apply skips the test.
REWRITES = (
    ("test_gaussian_hmm.py", "from .. import hmm\n", "from .. import hmm\n", 1),
    ("test_gmm_hmm_new.py", "from ..hmm import GMMHMM\n", "from ..hmm import GMMHMM\n", 1),
    ("test_categorical_hmm.py", "from hmmlearn import hmm\n", "from .. import hmm\n", 1),
    ("test_gmm_hmm.py", "from hmmlearn import hmm\n", "from .. import hmm\n", 1),
    ("test_gmm_hmm_multisequence.py", "from hmmlearn import hmm\n", "from .. import hmm\n", 1),
    ("test_poisson_hmm.py", "from hmmlearn import hmm\n", "from .. import hmm\n", 1),
    ("test_multinomial_hmm.py", "from hmmlearn import hmm\n", "from .. import hmm\n", 1),
    (
        "test_gmm_hmm_multisequence.py",
        "from hmmlearn.base import ConvergenceMonitor\n",
        "from fastem.hmm import ConvergenceMonitor\n",
        1,
    ),
    (
        "test_base.py",
        "from hmmlearn.base import BaseHMM, ConvergenceMonitor\n",
        # hmmlearn's custom-emission idiom (a BaseHMM subclass overriding
        # _compute_log_likelihood) runs on fastem's BaseHMM.
        "from fastem.hmm import BaseHMM, ConvergenceMonitor\n",
        1,
    ),
)

HMM_MODULE = (
    "from fastem.hmm import (  # noqa: F401\n"
    "    CategoricalHMM, GMMHMM, GaussianHMM, MultinomialHMM, PoissonHMM,\n"
    ")\n"
)

_B = "test_base.py::TestBaseAgainstWikipedia::"
_HMMC = (
    "tests hmmlearn's C forward/backward/Viterbi functions (hmmlearn._hmmc) directly; "
    "fastem's kernels are tested against hmmlearn in tests/test_hmm_parity.py"
)
# Deselected: they test hmmlearn's internals, which fastem does not have.
EXCLUDED = {
    **{
        _B + name: _HMMC
        for name in (
            "test_do_forward_scaling_pass",
            "test_do_forward_pass",
            "test_do_backward_scaling_pass",
            "test_do_backward_log_pass",
            "test_do_viterbi_pass",
        )
    },
    **{
        "test_categorical_hmm.py::TestCategoricalHMM::"
        f"test__check_and_set_categorical_n_features[{impl}]": (
            "calls hmmlearn's private _check_and_set_n_features; fastem checks symbols "
            "in fit/score (negative and non-integral values raise ValueError; integral "
            "floats are accepted, hmmlearn refuses any float dtype)"
        )
        for impl in ("scaling", "log")
    },
    **{
        "test_multinomial_hmm.py::TestMultinomialHMM::"
        f"test__check_and_set_multinomial_n_features_n_trials[{impl}]": (
            "calls hmmlearn's private _check_and_set_n_features; fastem checks counts and "
            "n_trials in fit/score"
        )
        for impl in ("scaling", "log")
    },
}

# Run, and must fail: a documented difference (docs/hmm.md).
EXPECTED_FAILURES = {
    "test_gaussian_hmm.py::TestGaussianHMMWithSphericalCovars::"
    "test_underflow_from_scaling[scaling]": (
        "expects hmmlearn's scaling implementation to raise on underflow; fastem's "
        "scaled forward pass does not underflow (docs/hmm.md, 'Scaling that does not "
        "underflow')"
    ),
}

_OLD_API = "hmmlearn's own xfail: the test uses the pre-0.2.8 GMMHMM API (gmms_)"
_ZERO_VAR = "hmmlearn's own xfail (issue #2 example on GMMHMM)"
# hmmlearn's xfail marks, and what they give with fastem.
UPSTREAM_XFAIL = {
    **{
        f"test_gmm_hmm.py::TestGMMHMMWith{ct}Covars::{name}": ("xfailed", _OLD_API)
        for ct in ("Diag", "Tied", "Full")
        for name in (
            "test_score_samples_and_decode",
            "test_sample",
            "test_fit[stmwc]",
            "test_fit[wt]",
            "test_fit[m]",
        )
    },
    "test_gmm_hmm.py::TestGMMHMMWithFullCovars::test_fit_works_on_sequences_of_different_length": (
        "xpassed",
        "hmmlearn's own xfail (module-wide); passes with fastem: the singular-covariance "
        "fallback keeps the fit going",
    ),
    "test_gmm_hmm.py::TestGMMHMMWithTiedCovars::test_fit_works_on_sequences_of_different_length": (
        "xpassed",
        "hmmlearn's own xfail (module-wide); passes with fastem",
    ),
    "test_gmm_hmm.py::TestGMMHMMWithDiagCovars::test_fit_works_on_sequences_of_different_length": (
        ("xfailed", "xpassed"),
        "hmmlearn's own xfail (module-wide). 12 random frames, 3 states, random_state=None: "
        "with some initializations (18 of 200 seeds) a state's variance collapses to "
        "exactly 0 and fastem raises its ill-defined-covariance error, where hmmlearn "
        "goes on with a zero variance; which one the global NumPy stream gives here "
        "depends on the tests run before it",
    ),
    **{
        f"test_gmm_hmm_new.py::TestGMMHMMWith{ct}Covars::test_fit_zero_variance[{impl}]": (
            "xfailed",
            _ZERO_VAR + ": a constant feature gives a zero variance; fastem raises its "
            "ill-defined-covariance error (reg_covar > 0 fits it)",
        )
        for ct in ("Spherical", "Diag")
        for impl in ("scaling", "log")
    },
    **{
        f"test_gmm_hmm_new.py::TestGMMHMMWith{ct}Covars::test_fit_zero_variance[{impl}]": (
            "xpassed",
            _ZERO_VAR + ": passes with fastem (hmmlearn's 1e-7 fallback for a covariance "
            "that is not positive definite, which hmmlearn's GMMHMM path does not reach)",
        )
        for ct in ("Tied", "Full")
        for impl in ("scaling", "log")
    },
}

N_PASSED = 232  # every other collected test (268 collected, 9 deselected)


def _hmmlearn_tests() -> Path:
    spec = importlib.util.find_spec("hmmlearn")
    if spec is None or spec.origin is None:
        pytest.skip("hmmlearn is not installed")
    version = importlib.metadata.version("hmmlearn")
    if version != HMMLEARN_VERSION:
        pytest.skip(f"the expected outcomes are for hmmlearn {HMMLEARN_VERSION}, not {version}")
    src = Path(spec.origin).parent / "tests"
    missing = [f for f in FILES if not (src / f).is_file()]
    if missing:
        pytest.skip(f"hmmlearn's tests are not installed ({', '.join(missing)} missing)")
    return src


def _build(src: Path, root: Path) -> Path:
    """The rewritten suite as package ``peerhmm`` under ``root``."""
    pkg = root / "peerhmm"
    (pkg / "tests").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "hmm.py").write_text(HMM_MODULE)
    texts = {f: (src / f).read_text() for f in FILES}
    for name, old, new, count in REWRITES:
        if texts[name].count(old) != count:
            pytest.skip(f"the rewrite does not apply: {old.strip()!r} in {name}")
        texts[name] = texts[name].replace(old, new)
    leftover = [f for f, t in texts.items() if re.search(r"hmmlearn(\.| import) ?hmm\b", t)]
    if leftover:
        pytest.skip(f"the rewrite does not apply: hmmlearn's models still imported by {leftover}")
    for name, text in texts.items():
        (pkg / "tests" / name).write_text(text)
    (root / "pytest.ini").write_text("[pytest]\n")
    return pkg / "tests"


def _outcomes(output: str) -> dict[str, str]:
    """nodeid (relative to the tests folder) -> outcome, from ``-rA``'s summary."""
    words = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error"}
    words |= {"XFAIL": "xfailed", "XPASS": "xpassed"}
    found = {}
    for line in output.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR|XFAIL|XPASS) peerhmm/tests/(\S+)", line)
        if m:
            found[m.group(2)] = words[m.group(1)]
    return found


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory):
    src = _hmmlearn_tests()
    root = tmp_path_factory.mktemp("hmmlearn_suite")
    tests = _build(src, root)
    env = dict(os.environ, HMMLEARN_SEED="0")  # hmmlearn's conftest seeds NumPy from it
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "pytest", str(tests.relative_to(root)), "-q", "-rA"]
    cmd += ["--tb=line", "-p", "no:cacheprovider", "-c", str(root / "pytest.ini")]
    cmd += ["-W", "ignore"]  # hmmlearn's tests set np.seterr(all="warn")
    for nodeid in EXCLUDED:
        cmd += ["--deselect", f"peerhmm/tests/{nodeid}"]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    return proc, _outcomes(proc.stdout)


def test_rewrite_leaves_hmmlearns_models_out(tmp_path):
    """The rewritten files import no hmmlearn model, so the suite tests fastem's."""
    tests = _build(_hmmlearn_tests(), tmp_path)
    for path in tests.glob("*.py"):
        text = path.read_text()
        assert "from hmmlearn import hmm" not in text
        assert "from hmmlearn.base import BaseHMM" not in text
        assert "from hmmlearn.base import ConvergenceMonitor" not in text
    assert "from fastem.hmm import" in (tests.parent / "hmm.py").read_text()


def test_hmmlearn_suite_outcomes_are_the_listed_ones(suite_run):
    proc, found = suite_run
    tail = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert found, f"no outcome parsed from the suite's output:\n{tail}"
    problems = []
    for nodeid in EXCLUDED:
        if nodeid in found:
            problems.append(f"{nodeid}: excluded but ran ({found[nodeid]})")
    expected = {n: "failed" for n in EXPECTED_FAILURES}
    expected |= {n: outcome for n, (outcome, _) in UPSTREAM_XFAIL.items()}
    for nodeid, outcome in expected.items():
        got = found.get(nodeid)
        if got not in ((outcome,) if isinstance(outcome, str) else outcome):
            what = "UNEXPECTED PASS" if got in ("passed", "xpassed") else "changed"
            problems.append(f"{nodeid}: expected {outcome}, got {got} ({what})")
    for nodeid, outcome in sorted(found.items()):
        if nodeid not in expected and outcome != "passed":
            problems.append(f"{nodeid}: {outcome} (not listed)")
    passed = sum(1 for n, o in found.items() if o == "passed" and n not in expected)
    if not problems and passed != N_PASSED:
        problems.append(f"{passed} passed, expected {N_PASSED} (collection changed?)")
    assert not problems, "\n".join(problems) + "\n--- output tail ---\n" + tail
