"""asv benchmarks: start-up cost, each in a fresh interpreter (``timeraw_``).

``import fastem`` (goal: at most 0.2 s on a 2-core machine) and ``fastem --help`` (at most
0.3 s), with scikit-learn importable and with it blocked, so that neither path starts to
import it again unnoticed. asv times the code inside the fresh interpreter, not the
interpreter's own start (``python -c pass``: about 0.04 s more on an idle 2-core machine),
which the goals include. ``from fastem import GaussianMixture`` (NumPy and the estimator, no
kernels) is for reference.

:class:`FirstFit` times the first ``fit`` of a new process (issue #13's problem, 20,000 x 4,
K = 3), per covariance type and dtype: with an empty compiled-kernel cache (a new
``FASTEM_CACHE_DIR`` for every run: Numba compiles), with a warm one (filled by another
process: Numba loads), and, for reference, the same fit once the process has already fitted
(the fit itself). Goals: cold at most 3 s, warm at most 0.1 s above the fit itself.
``benchmarks/cold_start.py`` prints the same with CPU time next to wall time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

# `sys.modules[name] = None` makes any later import of name raise ImportError.
_BLOCK_SKLEARN = "import sys\nsys.modules['sklearn'] = None\n"

_HELP = """
import contextlib, io
from fastem.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        main(["--help"])
    except SystemExit:
        pass
"""


class Startup:
    """Fresh-process start-up: import, CLI help, first estimator import."""

    params = (["installed", "blocked"],)
    param_names = ("sklearn",)
    number = 1
    repeat = 10
    timeout = 300

    @staticmethod
    def _code(sklearn: str, code: str) -> str:
        return (_BLOCK_SKLEARN if sklearn == "blocked" else "") + code

    def timeraw_import_fastem(self, sklearn):
        return self._code(sklearn, "import fastem")

    def timeraw_cli_help(self, sklearn):
        return self._code(sklearn, _HELP)

    def timeraw_import_gaussian_mixture(self, sklearn):
        return self._code(sklearn, "from fastem import GaussianMixture")


# Everything but the fit is set-up (asv runs it in the timed process, untimed); the backend
# and its kernels load inside the timed fit, as for a user's first fit.
_FIT_SETUP = """
import os, warnings
os.environ["FASTEM_CACHE_DIR"] = {cache_dir!r}
import numpy as np
from fastem import GaussianMixture
rng = np.random.default_rng(0)
X = np.concatenate([rng.normal(3.0 * i, 1.0, (20000 // 3 + 1, 4)) for i in range(3)])
X = np.ascontiguousarray(X[:20000], dtype={dtype!r})
warnings.simplefilter("ignore")
def fit():
    GaussianMixture(3, covariance_type={covariance!r}, max_iter=10, random_state=0).fit(X)
"""


class FirstFit:
    """First fit of a new process: empty cache, warm cache, and the fit itself."""

    params = (["full", "diag", "tied", "spherical"], ["float64", "float32"])
    param_names = ("covariance", "dtype")
    number = 1
    repeat = 3
    timeout = 600

    def setup(self, covariance, dtype):
        # One warm cache per parameter set, filled by another process.
        self.warm_dir = os.path.join(
            tempfile.gettempdir(), f"fastem-asv-warm-{covariance}-{dtype}-{os.getpid()}"
        )
        code = _FIT_SETUP.format(cache_dir=self.warm_dir, dtype=dtype, covariance=covariance)
        subprocess.run([sys.executable, "-c", code + "fit()"], check=True)

        self.cold_dirs = []

    def teardown(self, covariance, dtype):
        for folder in [self.warm_dir, *self.cold_dirs]:
            shutil.rmtree(folder, ignore_errors=True)

    def timeraw_cold_cache(self, covariance, dtype):
        cache_dir = tempfile.mkdtemp(prefix="fastem-asv-cold-")  # a new one for every run
        self.cold_dirs.append(cache_dir)
        return "fit()", _FIT_SETUP.format(cache_dir=cache_dir, dtype=dtype, covariance=covariance)

    def timeraw_warm_cache(self, covariance, dtype):
        setup = _FIT_SETUP.format(cache_dir=self.warm_dir, dtype=dtype, covariance=covariance)
        return "fit()", setup

    def timeraw_fit_itself(self, covariance, dtype):
        setup = _FIT_SETUP.format(cache_dir=self.warm_dir, dtype=dtype, covariance=covariance)
        return "fit()", setup + "fit()\n"  # the kernels are loaded: the fit alone
