"""Print the README's quick-start commands, one per line, exactly as written.

CI runs them (``.ci/run``) so that the README cannot drift from what CI proves.
The commands are the non-blank lines of the first ```bash block under the
"## Quick start" heading; a trailing ``# comment`` stays (bash ignores it).
"""

from __future__ import annotations

import re
import sys


def quickstart_commands(readme: str) -> list[str]:
    """The quick-start commands of a README's text; an error if there are none."""
    match = re.search(r"^## Quick start\s*$(.*?)^## ", readme + "\n## ", re.S | re.M)
    if match is None:
        raise SystemExit("README has no '## Quick start' section")
    block = re.search(r"^```bash\n(.*?)^```", match.group(1), re.S | re.M)
    if block is None:
        raise SystemExit("README's quick start has no ```bash block")
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    if len(commands) != 2:
        raise SystemExit(f"expected the 2 quick-start commands, found {len(commands)}")
    return commands


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8") as f:
        print("\n".join(quickstart_commands(f.read())))
