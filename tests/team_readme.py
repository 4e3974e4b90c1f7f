"""The commands of README.md's "For a team" section, as the tests of that section run
them: each indented block is a list of shell lines; a test picks a block by a text it
holds and runs its lines with bash, its servers' values in the variables the README
names (``$DVC_HOST``...)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def team_blocks(readme: Path = README) -> list[list[str]]:
    """Every indented command block of the ``## For a team`` section, in order."""
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"^## For a team\n(.*?)(?=^## )", text, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## For a team' section"
    blocks: list[list[str]] = []
    in_block = False
    for line in match.group(1).splitlines():
        command = line.startswith("    ") and bool(line.strip())
        if command:
            if not in_block:
                blocks.append([])
            blocks[-1].append(line[4:])
        in_block = command
    return blocks


def team_block(holding: str) -> list[str]:
    """The one block with a line holding ``holding``."""
    found = [block for block in team_blocks() if any(holding in line for line in block)]
    assert len(found) == 1, f"{len(found)} blocks of README's 'For a team' hold {holding!r}"
    return found[0]


def run_lines(lines: list[str], cwd: Path, env: dict[str, str],
              timeout: float = 300) -> list[subprocess.CompletedProcess[str]]:
    """Run each line with bash in ``cwd`` (``env`` added to this environment); an
    AssertionError with its output when one fails."""
    done = []
    for line in lines:
        result = subprocess.run(["bash", "-c", line], cwd=cwd, env={**os.environ, **env},
                                capture_output=True, text=True, timeout=timeout, check=False)
        assert result.returncode == 0, (f"README line failed: {line}\n{result.stdout[-2000:]}"
                                        f"{result.stderr[-2000:]}")
        done.append(result)
    return done
