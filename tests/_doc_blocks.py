"""Extract the ```python blocks of Markdown files and run them as a user would.

Used by ``tests/test_doc_examples.py``. The blocks of one file run in order, in one
namespace (they build on each other, as the text reads), in one fresh subprocess whose
working directory is a temporary folder (blocks write ``model.npz``, ``bic.png``) and
whose matplotlib backend is Agg.

A block may carry marks: HTML comments (invisible on GitHub) on the lines just above
its fence, blank lines allowed in between::

    <!-- doc-test: skip REASON -->            not run; the test is skipped with REASON
    <!-- doc-test: setup CODE -->             CODE runs in the namespace before the block
                                              (it defines what the text says the reader
                                              has, e.g. ``X``); may span lines
    <!-- doc-test: replace OLD -> NEW -->     the block runs with OLD replaced by NEW (to
                                              shrink data too large for CI, in plain
                                              sight); OLD must occur in the block
    <!-- doc-test: check CODE -->             CODE runs after the block: assertions of
                                              what the text says (a ``# -> value`` comment)
    <!-- doc-test: warns CATEGORY -->         the block may emit this warning (by class
                                              name); any other warning fastem emits fails
    <!-- doc-test: isolated -->               the block sees the names defined so far, but
                                              what it assigns does not reach later blocks

An unlabelled block (bare ```) just below ``<!-- doc-test: output -->`` is the expected
standard output of the nearest python block above it, compared line by line (trailing
spaces ignored). A mark that is attached to nothing, or that this module does not know,
is an error, so that a stale mark cannot silently stop testing anything.

Setup and check code can find the test folder in ``os.environ["FASTEM_DOC_TESTS"]``.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

# Extras a block may need; a block that imports one that is missing is skipped.
OPTIONAL_MODULES = frozenset(
    {
        "dask",
        "distributed",
        "h5py",
        "hmmlearn",
        "matplotlib",
        "pandas",
        "pyarrow",
        "sklearn",
        "threadpoolctl",
        "zarr",
    }
)
# fastem modules that import an optional extra.
_FASTEM_EXTRAS = {"fastem.plotting": "matplotlib", "fastem.dask": "dask"}
_NUMBA_BACKEND = re.compile(r"""backend\s*=\s*["']numba["']""")
_MARK = re.compile(r"<!--\s*doc-test:\s*(\w[\w-]*)\s*(.*?)\s*-->", re.S)
_FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass
class Block:
    """One ```python block of a Markdown file, with its marks."""

    path: str  # the file, as given to ``extract_blocks``
    line: int  # 1-based line of the opening fence
    code: str
    skip: str | None = None
    setup: list[str] = field(default_factory=list)
    replace: list[tuple[str, str]] = field(default_factory=list)
    check: list[str] = field(default_factory=list)
    warns: list[str] = field(default_factory=list)
    expected_output: str | None = None
    isolated: bool = False

    @property
    def id(self) -> str:
        """``file:line``, the test id."""
        return f"{self.path}:{self.line}"

    def source(self) -> str:
        """The code that runs: the block with its replacements applied."""
        code = self.code
        for old, new in self.replace:
            code = code.replace(old, new)
        return code

    def needs(self) -> list[str]:
        """The optional modules the block (and its setup) imports."""
        found: set[str] = set()
        for text in [*self.setup, self.source(), *self.check]:
            try:
                tree = ast.parse(text)
            except SyntaxError:
                continue  # the run reports it, as the block's failure
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                for name in names:
                    if name.split(".")[0] in OPTIONAL_MODULES:
                        found.add(name.split(".")[0])
                    for prefix, extra in _FASTEM_EXTRAS.items():
                        if name == prefix or name.startswith(prefix + "."):
                            found.add(extra)
        if self.names_numba_backend():
            found.add("numba")
        return sorted(found)

    def names_numba_backend(self) -> bool:
        """Whether the block asks for ``backend="numba"`` by name."""
        return bool(_NUMBA_BACKEND.search(self.source()))


def extract_blocks(text: str, path: str) -> list[Block]:
    """Every ```python block of a Markdown text, in order, with its marks.

    Raises
    ------
    ValueError
        For an unknown mark, a mark attached to no block, a ``replace`` whose old text
        is not in its block, an ``output`` block with no python block above it, or an
        unclosed fence.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: list[tuple[int, str, str]] = []  # (line, kind, argument)
    i = 0

    def fail(msg: str, lineno: int) -> ValueError:
        return ValueError(f"{path}:{lineno}: {msg}")

    while i < len(lines):
        line = lines[i]
        if "<!--" in line and "doc-test" in line:
            start = i
            chunk = line
            while "-->" not in chunk:
                i += 1
                if i == len(lines):
                    raise fail("unclosed doc-test comment", start + 1)
                chunk += "\n" + lines[i]
            for m in _MARK.finditer(chunk):
                kind, arg = m.group(1), m.group(2)
                if kind not in {"skip", "setup", "replace", "check", "warns", "isolated", "output"}:
                    raise fail(f"unknown doc-test mark {kind!r}", start + 1)
                pending.append((start + 1, kind, arg))
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence is None:
            if line.strip() and pending:
                raise fail("doc-test mark attached to no code block", pending[0][0])
            i += 1
            continue
        lang, start = fence.group(1), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise fail("unclosed code fence", start + 1)
        i += 1
        content = "\n".join(body) + "\n"
        if lang == "python":
            block = Block(path=path, line=start + 1, code=content)
            for lineno, kind, arg in pending:
                if kind == "skip":
                    block.skip = arg or "marked skip"
                elif kind == "setup":
                    block.setup.append(arg + "\n")
                elif kind == "check":
                    block.check.append(arg + "\n")
                elif kind == "warns":
                    block.warns.append(arg)
                elif kind == "isolated":
                    block.isolated = True
                elif kind == "replace":
                    old, sep, new = arg.partition(" -> ")
                    if not sep or old not in content:
                        raise fail(f"replace {old!r}: not in the block below", lineno)
                    block.replace.append((old, new))
                else:
                    raise fail("an output mark belongs above a bare ``` block", lineno)
            blocks.append(block)
        elif any(kind == "output" for _, kind, _ in pending):
            if len(pending) != 1 or lang:
                raise fail("an output mark stands alone above a bare ``` block", start + 1)
            if not blocks:
                raise fail("expected output with no python block above it", start + 1)
            blocks[-1].expected_output = content
        elif pending:
            raise fail("doc-test mark above a non-python block", pending[0][0])
        pending = []
    if pending:
        raise fail("doc-test mark attached to no code block", pending[0][0])
    return blocks


def run_blocks(
    blocks: list[Block],
    *,
    timeout: float = 120.0,
    block_timeout: int = 60,
    env: dict[str, str] | None = None,
) -> dict[str, dict]:
    """Run the blocks in order in one namespace, in a fresh subprocess.

    Blocks that are marked ``skip`` are left out (their ids are absent from the result).
    Returns a dict ``id -> {"status": "ok"|"error"|"skip", "stdout", "error", "seconds",
    "warnings"}``; a block the subprocess never reached (it timed out or died) is absent
    too, and ``"__stderr__"`` holds the end of the subprocess's standard error.
    """
    todo = [
        {
            "id": b.id,
            "setup": b.setup,
            "code": b.source(),
            "check": b.check,
            "needs": b.needs(),
            "isolated": b.isolated,
        }
        for b in blocks
        if b.skip is None
    ]
    with tempfile.TemporaryDirectory(prefix="fastem-doc-") as cwd:
        spec = Path(cwd, "_blocks.json")
        out = Path(cwd, "_results.json")
        spec.write_text(json.dumps({"blocks": todo, "block_timeout": block_timeout}))
        child_env = dict(os.environ if env is None else env)
        child_env["MPLBACKEND"] = "Agg"
        child_env["FASTEM_DOC_TESTS"] = str(Path(__file__).resolve().parent)
        try:
            proc = subprocess.run(
                [sys.executable, __file__, str(spec), str(out)],
                cwd=cwd,
                env=child_env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            tail = proc.stderr[-3000:]
        except subprocess.TimeoutExpired as exc:
            err = exc.stderr or ""
            err = err.decode(errors="replace") if isinstance(err, bytes) else err
            tail = f"the file's blocks ran past {timeout} s\n{err}"[-3000:]
        results: dict[str, dict] = {}
        if out.exists():
            for rec in out.read_text().splitlines():
                rec = json.loads(rec)
                results[rec.pop("id")] = rec
        results["__stderr__"] = {"status": "meta", "error": tail}
        return results


def check(block: Block, result: dict | None) -> str | None:
    """Why a block's run contradicts its doc, or None if it does not.

    A skip (a missing optional module) is reported by the caller, not here.
    """
    if result is None:
        return "never reached: the subprocess timed out or died before this block"
    if result["status"] == "error":
        return f"raised:\n{result['error']}"
    unexpected = [w for w in result["warnings"] if w["fastem"] and w["category"] not in block.warns]
    if unexpected:
        return "emitted a warning the doc does not mention:\n" + "\n".join(
            f"{w['category']}: {w['message']}" for w in unexpected
        )
    if block.expected_output is not None:
        got = [ln.rstrip() for ln in result["stdout"].rstrip("\n").splitlines()]
        want = [ln.rstrip() for ln in block.expected_output.rstrip("\n").splitlines()]
        if got != want:
            return (
                "printed output differs from the doc's:\n--- doc\n"
                + "\n".join(want)
                + "\n--- run\n"
                + "\n".join(got)
            )
    return None


def missing_modules(block: Block) -> list[str]:
    """The optional modules a block imports that are not installed here."""
    return [m for m in block.needs() if importlib.util.find_spec(m) is None]


def _warning_record(w) -> dict:
    """A recorded warning as JSON. ``fastem`` says whether it counts against the block:
    fastem emitted it (its class or the line that warns is fastem's), or it points at
    the block's own code (``stacklevel``), where a user sees it."""
    cat = w.category
    pkg = sys.modules.get("fastem")
    pkg_dir = os.path.dirname(pkg.__file__) if pkg is not None and pkg.__file__ else None
    filename = str(w.filename)
    ours = (
        cat.__module__.startswith("fastem")
        or (pkg_dir is not None and filename.startswith(pkg_dir))
        or filename.startswith("<")
    )
    return {"category": cat.__name__, "message": str(w.message), "fastem": ours}


def _child(spec_path: str, out_path: str) -> None:
    """Subprocess side: run each block, append one JSON line per block to out_path."""
    import contextlib
    import io
    import signal
    import time
    import traceback
    import warnings

    spec = json.loads(Path(spec_path).read_text())
    namespace: dict = {"__name__": "__main__"}

    def on_alarm(signum, frame):
        raise TimeoutError(f"block ran past {spec['block_timeout']} s")

    signal.signal(signal.SIGALRM, on_alarm)
    with open(out_path, "w") as out:
        for blk in spec["blocks"]:
            missing = [m for m in blk["needs"] if importlib.util.find_spec(m) is None]
            rec = {"id": blk["id"], "stdout": "", "error": "", "seconds": 0.0, "warnings": []}
            if missing:
                rec.update(status="skip", error=f"needs {', '.join(missing)} (not installed)")
            else:
                buf = io.StringIO()
                t0 = time.perf_counter()
                signal.alarm(spec["block_timeout"])
                try:
                    # The warnings a user would see (default filters), recorded.
                    with (
                        contextlib.redirect_stdout(buf),
                        warnings.catch_warnings(record=True) as ws,
                    ):
                        try:
                            ns = dict(namespace) if blk["isolated"] else namespace
                            for setup in blk["setup"]:
                                exec(compile(setup, f"<{blk['id']} setup>", "exec"), ns)
                            exec(compile(blk["code"], f"<{blk['id']}>", "exec"), ns)
                            for check in blk["check"]:
                                exec(compile(check, f"<{blk['id']} check>", "exec"), ns)
                        finally:
                            rec["warnings"] = [_warning_record(w) for w in ws]
                    rec["status"] = "ok"
                except ModuleNotFoundError as exc:
                    top = (exc.name or "").split(".")[0]
                    rec["status"] = "skip" if top in OPTIONAL_MODULES else "error"
                    rec["error"] = f"needs {top} (not installed)" if top else str(exc)
                    if rec["status"] == "error":
                        rec["error"] = traceback.format_exc()
                except BaseException as exc:  # noqa: BLE001 - any failure is the block's result
                    rec["status"] = "error"
                    # Leave out this runner's frame: the trace starts in the block.
                    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
                    rec["error"] = "".join(traceback.format_exception(type(exc), exc, tb))
                finally:
                    signal.alarm(0)
                rec["stdout"] = buf.getvalue()
                rec["seconds"] = time.perf_counter() - t0
            out.write(json.dumps(rec) + "\n")
            out.flush()
            # Close figures between blocks, as a script's end would.
            if "matplotlib.pyplot" in sys.modules:
                sys.modules["matplotlib.pyplot"].close("all")


if __name__ == "__main__":
    # Blocks see what a user's ``python`` in that folder sees: the working directory on
    # sys.path, not tests/ (this file's folder).
    sys.path[0] = ""
    _child(sys.argv[1], sys.argv[2])
    # Every result is written: do not wait for threads a block left running (a Dask
    # client, a pool), which would hold the test until its timeout.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
