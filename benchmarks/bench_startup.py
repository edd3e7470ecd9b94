"""asv benchmarks: start-up cost, each in a fresh interpreter (``timeraw_``).

``import fastem`` (goal: at most 0.2 s on a 2-core machine) and ``fastem --help`` (at most
0.3 s), with scikit-learn importable and with it blocked, so that neither path starts to
import it again unnoticed. asv times the code inside the fresh interpreter, not the
interpreter's own start (``python -c pass``: about 0.04 s more on an idle 2-core machine),
which the goals include. ``from fastem import GaussianMixture`` (NumPy and the estimator, no
kernels) is for reference.
"""

from __future__ import annotations

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
