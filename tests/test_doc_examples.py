"""Every ```python block of README.md and docs/*.md runs, and says what the text says.

The blocks of one file run in order in one namespace (they build on each other: the README's
``X`` and ``gm``), in a fresh subprocess per file, in a temporary working directory, with
matplotlib on Agg (``tests/_doc_blocks.py``). A block fails the test if it raises, if it
prints something other than the ``<!-- doc-test: output -->`` block below it, if a
``<!-- doc-test: check ... -->`` assertion fails, or if it emits a fastem warning the doc
does not declare. Data too large for CI is shrunk only by a visible mark in the doc
(``<!-- doc-test: replace 200_000 -> 5_000 -->``). A block that imports a missing optional
extra is skipped with the reason; one that names ``backend="numba"`` is skipped without
numba.

README.md belongs to the project lead: the changes it needs (marks, and fixes of the text
itself) are in ``PENDING_README`` below. Until they are in the README, the test applies them
to its copy, so the blocks are tested as they will read; each has an xfail(strict) test
that turns red once the README has it, so that the entry gets removed.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from _doc_blocks import Block, check, extract_blocks, missing_modules, run_blocks
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = ["README.md", *(f"docs/{p.name}" for p in sorted((ROOT / "docs").glob("*.md")))]
FILE_TIMEOUT = 300.0  # seconds for one file's blocks; a block alone gets BLOCK_TIMEOUT
BLOCK_TIMEOUT = 120


@dataclass(frozen=True)
class Pending:
    """A change the README needs: ``marks`` (lines) to put just above the fence of the
    block that contains ``snippet``, and/or ``(old, new)`` replacements of that block's
    text (``fixes``)."""

    snippet: str
    reason: str
    marks: tuple[str, ...] = ()
    fixes: tuple[tuple[str, str], ...] = ()


PENDING_README: list[Pending] = []


def _fence_of(text: str, snippet: str) -> tuple[int, int, int]:
    """Offsets of the one README python block containing snippet: its fence line, its
    code and its closing fence."""
    hits = [
        m for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M) if snippet in m.group(1)
    ]
    if len(hits) != 1:
        raise ValueError(f"{len(hits)} README python blocks contain {snippet!r}")
    return hits[0].start(), hits[0].start(1), hits[0].end(1)


def _marks_above(text: str, fence: int) -> str:
    """The HTML comments (and blank lines) just above a fence: the block's marks."""
    return re.search(r"(?:<!--(?:(?!-->).)*-->\s*)*\Z", text[:fence], re.S).group(0)


def is_applied(text: str, p: Pending) -> bool:
    """Whether the README already has every part of a pending change."""
    fence, start, end = _fence_of(text, p.snippet)
    above = _marks_above(text, fence)
    return all(m in above for m in p.marks) and all(new in text[start:end] for _, new in p.fixes)


def apply_pending(text: str, pending: list[Pending]) -> str:
    """The README with the parts of the pending changes it lacks."""
    for p in pending:
        fence, start, end = _fence_of(text, p.snippet)
        code = text[start:end]
        for old, new in p.fixes:
            if new not in code:
                assert old in code, f"{old!r} is no longer in the README block"
                code = code.replace(old, new)
        above = _marks_above(text, fence)
        marks = "".join(m + "\n" for m in p.marks if m not in above)
        text = text[:fence] + marks + text[fence:start] + code + text[end:]
    return text


def _doc_text(path: str) -> str:
    text = (ROOT / path).read_text(encoding="utf-8")
    return apply_pending(text, PENDING_README) if path == "README.md" else text


BLOCKS: list[Block] = [b for path in DOC_FILES for b in extract_blocks(_doc_text(path), path)]


@functools.cache
def _results(path: str) -> dict[str, dict]:
    """Run one file's blocks once (the first of its tests to need them)."""
    blocks = [b for b in BLOCKS if b.path == path]
    return run_blocks(blocks, timeout=FILE_TIMEOUT, block_timeout=BLOCK_TIMEOUT)


def test_every_doc_has_its_blocks():
    """The parser finds the blocks a reader sees (a broken fence would hide some)."""
    counts = {p: sum(b.path == p for b in BLOCKS) for p in DOC_FILES}
    for path in DOC_FILES:
        raw = (ROOT / path).read_text(encoding="utf-8")
        # Any python fence, indented or spaced, counts: the parser must see each one.
        assert counts[path] == len(re.findall(r"^[ \t]*```[ \t]*python", raw, re.M)), path
    assert counts["README.md"] >= 11 and counts["docs/hmm.md"] >= 4


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_doc_block(block: Block):
    if block.skip is not None:
        pytest.skip(block.skip)
    missing = missing_modules(block)
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not installed)")
    results = _results(block.path)
    result = results.get(block.id)
    if result is not None and result["status"] == "skip":
        pytest.skip(result["error"])
    problem = check(block, result)
    if problem is not None:
        if result is None:
            problem += "\n" + results["__stderr__"]["error"]
        pytest.fail(f"{block.id} {problem}", pytrace=False)


@pytest.mark.parametrize("pending", PENDING_README, ids=lambda p: p.snippet[:40])
@pytest.mark.xfail(strict=True, reason="README change not applied yet (the lead's file)")
def test_readme_has_pending_change(pending: Pending):
    """Red once the README has the change: then delete its PENDING_README entry."""
    assert is_applied((ROOT / "README.md").read_text(encoding="utf-8"), pending), pending.reason


# ---------------------------------------------------------------- negative controls

BROKEN_DOC = """\
Text.

```python
x = 21
```

A block that raises:

```python
1 / 0
```

Output that the text gets wrong:

```python
print(x * 2)
```

<!-- doc-test: output -->
```
41
```

A fastem warning the text does not mention, then the same one declared:

```python
import warnings
from fastem.exceptions import ConvergenceWarning
warnings.warn("did not converge", ConvergenceWarning)
```

<!-- doc-test: warns ConvergenceWarning -->
```python
warnings.warn("did not converge", ConvergenceWarning)
```

<!-- doc-test: check assert y == 3 -->
<!-- doc-test: replace 3 -> 4 -->
```python
y = x // 7 + 3       # blocks share one namespace, even after a failure
```

<!-- doc-test: skip (never runs) -->
```python
raise SystemExit(1)
```
"""


def test_negative_control_broken_blocks_are_reported():
    """A doc whose blocks raise, print the wrong output, warn undeclared or fail a check
    is reported block by block, and the good and declared ones pass."""
    blocks = extract_blocks(BROKEN_DOC, "broken.md")
    assert [b.line for b in blocks] == [3, 9, 15, 26, 33, 39, 44]
    results = run_blocks(blocks, timeout=120)
    verdicts = [check(b, results.get(b.id)) for b in blocks[:-1]]
    assert verdicts[0] is None
    assert "ZeroDivisionError" in verdicts[1]
    assert "printed output differs" in verdicts[2] and "42" in verdicts[2]
    assert "ConvergenceWarning: did not converge" in verdicts[3]
    assert verdicts[4] is None
    # The replace mark ran `y = x // 7 + 4`, so the check (y == 3) fails.
    assert "AssertionError" in verdicts[5]
    assert blocks[6].skip == "(never runs)" and blocks[6].id not in results


@pytest.mark.parametrize(
    "doc, message",
    [
        ("<!-- doc-test: frobnicate -->\n```python\npass\n```\n", "unknown doc-test mark"),
        ("<!-- doc-test: skip why -->\n\nSome text.\n", "attached to no code block"),
        ("<!-- doc-test: replace 5 -> 6 -->\n```python\nx = 7\n```\n", "not in the block"),
        ("<!-- doc-test: output -->\n```\n1\n```\n", "no python block above"),
        ("```python\npass\n", "unclosed code fence"),
    ],
)
def test_negative_control_stale_marks_are_errors(doc: str, message: str):
    """A mark that would silently stop testing something is an error, not ignored."""
    with pytest.raises(ValueError, match=message):
        extract_blocks(doc, "stale.md")


def test_missing_optional_extra_skips(monkeypatch):
    """A block importing a missing extra (or fastem.plotting without matplotlib) is
    skipped with the reason; a block asking for the numba backend needs numba."""
    (block,) = extract_blocks(
        "```python\nimport pandas\nfrom fastem.plotting import plot_clusters\n"
        'GaussianMixture(backend="numba")\n```\n',
        "extras.md",
    )
    assert block.needs() == ["matplotlib", "numba", "pandas"]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("matplotlib", "numba") else real(name, *a),
    )
    assert missing_modules(block) == ["matplotlib", "numba"]
    (bad,) = extract_blocks("```python\nimport pandas as\n```\n", "syntax.md")
    assert bad.needs() == []  # a syntax error is the run's to report, not collection's


_code_line = st.from_regex(r"[a-z]{1,6} = [0-9]{1,3}", fullmatch=True)
_text_line = st.from_regex(r"[A-Za-z ,.]{0,30}", fullmatch=True)


@given(
    st.lists(
        st.tuples(
            st.lists(_text_line, max_size=3),
            st.lists(_code_line, min_size=1, max_size=4),
            st.booleans(),
            st.booleans(),
        ),
        max_size=5,
    )
)
def test_parser_finds_each_block_its_line_and_marks(parts):
    """Text, optional marks (and a blank line), then a block, repeated: the parser returns
    every block with its code, fence line and marks."""
    lines: list[str] = []
    expected = []
    for text, code, skip, blank in parts:
        lines += [t for t in text if t.strip()] + [""]
        if skip:
            lines.append("<!-- doc-test: skip (why) -->")
        if blank:
            lines.append("")
        lines.append("```python")
        expected.append((len(lines), "\n".join(code) + "\n", "(why)" if skip else None))
        lines += [*code, "```", ""]
    blocks = extract_blocks("\n".join(lines), "gen.md")
    assert [(b.line, b.code, b.skip) for b in blocks] == expected


def test_pending_readme_changes_apply_to_one_block_each():
    """Each pending change names exactly one README block, and applying them all keeps
    the README's blocks (and only adds marks and the fixes)."""
    raw = (ROOT / "README.md").read_text(encoding="utf-8")
    for p in PENDING_README:
        _fence_of(raw, p.snippet)
    patched = apply_pending(raw, PENDING_README)
    assert len(extract_blocks(patched, "README.md")) == len(re.findall(r"^```python$", raw, re.M))
    assert apply_pending(patched, PENDING_README) == patched
