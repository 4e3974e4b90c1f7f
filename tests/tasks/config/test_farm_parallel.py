"""farm.yaml's ``max_parallel``: a bad value is one line naming the key and the range;
absent, the default follows its stated rule from the machine's CPUs and open-file limit
and says so."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tasks.config import default_parallelism, load_farm
from tasks.config.farm import MAX_PARALLEL
from tasks.core.errors import ConfigError


def farm_file(tmp_path: Path, max_parallel: str | None) -> Path:
    path = tmp_path / "farm.yaml"
    head = "" if max_parallel is None else f"max_parallel: {max_parallel}\n"
    path.write_text(head + textwrap.dedent("""\
        devices:
          local: {threads: 1}
        """), encoding="utf-8")
    return path


@pytest.mark.parametrize("value, shown", [
    ("0", "0"), (str(MAX_PARALLEL + 1), str(MAX_PARALLEL + 1)), ("many", "'many'"),
    ("2.5", "2.5"), ("-3", "-3")])
def test_a_bad_max_parallel_is_one_line_naming_the_key_and_the_range(
        tmp_path: Path, value: str, shown: str) -> None:
    path = farm_file(tmp_path, value)
    with pytest.raises(ConfigError) as caught:
        load_farm(path)
    assert str(caught.value) == (f"{path}: max_parallel: must be an integer from 1 to "
                                 f"{MAX_PARALLEL}, got {shown}")
    assert caught.value.exit_code == 2


def test_farm_yaml_max_parallel_is_what_the_fan_out_uses_and_says(tmp_path: Path) -> None:
    parallelism = load_farm(farm_file(tmp_path, "7")).parallelism
    assert parallelism.boards == 7
    assert parallelism.line() == "at most 7 boards at once (farm.yaml max_parallel: 7)"
    assert load_farm(farm_file(tmp_path, str(MAX_PARALLEL))).parallelism.boards == MAX_PARALLEL
    assert load_farm(farm_file(tmp_path, "1")).parallelism.boards == 1


@pytest.mark.parametrize("cpus, open_files, boards", [
    (2, 20000, 128),      # 64 boards per CPU
    (8, 1 << 20, 256),    # capped
    (8, 1024, 64),        # 16 open files per board
    (1, 8, 1),            # never below one
])
def test_the_default_follows_its_rule(cpus: int, open_files: int, boards: int) -> None:
    parallelism = default_parallelism(cpus, open_files)
    assert parallelism.boards == boards
    assert parallelism.rule == (f"max_parallel default: min(256, 64 x {cpus} CPUs, "
                                f"{open_files} open files / 16)")


def test_without_max_parallel_the_farm_takes_this_machines_default(tmp_path: Path) -> None:
    farm = load_farm(farm_file(tmp_path, None))
    assert farm.max_parallel is None
    assert farm.parallelism == default_parallelism()
