"""README.md's Layout section names every code folder, so it cannot go stale: a package
added under tasks/ or flows/ fails this test until the README says what it holds."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def layout_section(readme: str) -> str:
    """The text of the ``## Layout`` section (up to the next ``## `` heading)."""
    match = re.search(r"^## Layout\n(.*?)(?=^## )", readme, flags=re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Layout' section"
    return match.group(1)


def named_folders(section: str) -> set[str]:
    """The folders the section's indented listing names first on a line (``tasks/farm/``)."""
    return {match.group(1).rstrip("/")
            for match in re.finditer(r"^ {4}([\w./-]+/)\s", section, flags=re.MULTILINE)}


def code_folders(root: Path) -> set[str]:
    """Every folder under tasks/ and flows/ that holds Python code, repo-relative."""
    return {path.parent.relative_to(root).as_posix()
            for top in ("tasks", "flows") for path in (root / top).rglob("*.py")
            if "__pycache__" not in path.parts}


def unnamed(readme: str, root: Path) -> list[str]:
    return sorted(code_folders(root) - named_folders(layout_section(readme)))


def test_every_code_folder_is_named_in_the_readme_layout() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert {"tasks", "flows", "tasks/compare", "tasks/config"} <= code_folders(REPO)
    missing = unnamed(readme, REPO)
    assert not missing, f"README.md's Layout section does not name: {', '.join(missing)}"


def test_a_folder_missing_from_the_layout_is_caught(tmp_path: Path) -> None:
    for folder in ("tasks/farm", "tasks/newkind", "flows"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "__init__.py").write_text("")
    readme = ("# x\n\n## Layout\n\n    tasks/farm/     devices\n    flows/   wiring\n"
              "    mentions tasks/newkind/ only in prose\n\n## Next\n\n    tasks/newkind/  later\n")
    assert unnamed(readme, tmp_path) == ["tasks/newkind"]
    assert unnamed(readme.replace("## Next", "    tasks/newkind/  a kind\n\n## Next"),
                   tmp_path) == []
