"""What goes into a step's cache key beyond its files and params: the versions of the
libraries its code imports."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from flows import code_deps
from flows.caching import input_key
from flows.code_deps import NOT_INSTALLED, library_versions
from flows.steps import STEPS, Context, code_dependencies
from tests.tiny import write_tiny_config


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    write_tiny_config(tmp_path)
    return Context.load(tmp_path / "params.yaml", tmp_path / "farm.yaml")


def test_library_versions_are_the_installed_distributions_of_the_imported_modules() -> None:
    versions = library_versions(code_dependencies(STEPS["train"]).libraries)
    assert versions["keras"] == metadata.version("keras")
    assert versions["scikit-learn"] == metadata.version("scikit-learn")  # sklearn, via prepare
    assert "mlflow" not in versions and "fabric" not in versions
    assert library_versions(("no_such_module_anywhere",)) == {
        "no_such_module_anywhere": NOT_INSTALLED}


@pytest.mark.parametrize("module, distribution, importers", [
    # tasks.core.config imports the architectures: every step but track reaches Keras.
    ("keras", "keras", ["prepare", "train", "optimize", "convert", "benchmark", "select"]),
    ("mlflow", "mlflow", ["track"]),
    ("fabric", "fabric", ["benchmark"]),
])
def test_a_new_version_of_a_library_changes_the_keys_of_exactly_the_steps_that_import_it(
        ctx: Context, monkeypatch: pytest.MonkeyPatch, module: str, distribution: str,
        importers: list[str]) -> None:
    before = {name: input_key(ctx, name) for name in STEPS}
    installed = code_deps.distribution_version
    monkeypatch.setattr(code_deps, "distribution_version",
                        lambda name: "99.0" if name == distribution else installed(name))
    changed = [name for name in STEPS if input_key(ctx, name) != before[name]]
    assert changed == importers
    assert importers == [name for name in STEPS
                         if module in code_dependencies(STEPS[name]).libraries]
