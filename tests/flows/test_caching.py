"""flows/caching.py on small real inputs: a tiny experiment's config and the files a key
hashes, written here (nothing is trained). Keys are compared with each other, never with
fixed values. A step's own code is hashed from a copy of the code files, so a test can
change a module without touching the repository (tests/flows/test_code_deps.py runs the
real flow on an edited copy: the slow end-to-end check of the same)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows import code_manifests
from flows.caching import (StepContentPolicy, cache_dir, input_key, record_run,
                           relocate_record, results_dir, will_be_cached)
from flows.steps import STEPS, Context, code_dependencies
from tests.helpers import with_field
from tests.tiny import TINY_FARM, TINY_PARAMS, write_tiny_config

TWO_DEVICES = "devices:\n  local: {threads: 1}\n  other: {threads: 2}\n"


def _merged(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in patch.items():
        merged[key] = (_merged(base[key], value) if isinstance(value, dict)
                       and isinstance(base.get(key), dict) else value)
    return merged


def experiment(root: Path, patch: dict[str, Any] | None = None,
               farm: str = TINY_FARM) -> Context:
    """The tiny experiment in ``root``, its params patched, with small stand-ins for the
    files the steps read (what a key hashes is their content, not their meaning)."""
    params = _merged(yaml.safe_load(TINY_PARAMS), patch or {})
    write_tiny_config(root, yaml.safe_dump(params), farm)
    for relative, content in (("data/prepared/train.npz", b"train"),
                              ("data/prepared/test.npz", b"test"),
                              ("models/base/model.keras", b"keras"),
                              ("models/base/reference.json", b"{}"),
                              ("models/variants/index.json", b'{"variants": []}'),
                              ("results/local/onnx-fp32.json", b"{}"),
                              ("reports/summary.json", b"{}"),
                              ("metrics/train.json", b"{}"),
                              ("metrics/train_history.json", b"[]")):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.write_bytes(content)
    return Context.load(root / "params.yaml", root / "farm.yaml")


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize("step, device, patch, changes", [
    ("prepare", None, {"data": {"seed": 1}}, True),
    ("prepare", None, {"train": {"epochs": 7}}, False),
    ("train", None, {"train": {"epochs": 7}}, True),
    ("train", None, {"model": {"dropout": 0.2}}, True),
    ("train", None, {"benchmark": {"runs": 11}}, False),
    ("train", None, {"formats": {"onnx": ["fp32", "int8-dynamic"]}}, False),
    # A dotted key: optimize reads train.seed, not the rest of train.
    ("optimize", None, {"train": {"seed": 43}}, True),
    ("optimize", None, {"train": {"epochs": 7}}, False),
    ("convert", None, {"formats": {"onnx": ["fp32", "int8-dynamic"]}}, True),
    ("convert", None, {"formats": {"onnx": ["int8-dynamic"]}}, True),  # as many, others
    ("convert", None, {"requirements": {"max_accuracy_drop": 0.02}}, True),
    ("convert", None, {"requirements": {"min_accuracy": 0.6}}, False),
    ("benchmark", "local", {"benchmark": {"runs": 11}}, True),
    ("benchmark", "local", {"requirements": {"min_accuracy": 0.6}}, False),
    ("select", None, {"requirements": {"min_accuracy": 0.6}}, True),
    ("select", None, {"train": {"epochs": 7}}, False),
    ("track", None, {"benchmark": {"runs": 11}}, True),  # track records every section
    # The firmware sources' pin keys the benchmark; where they and the cache lie does not.
    ("benchmark", "local", {"benchmark": {"firmware": {"sources_sha256": "ab" * 32}}}, True),
    ("benchmark", "local", {"benchmark": {"firmware": {"sources": "/elsewhere/third_party",
                                                       "cache": "/elsewhere/cache"}}}, False),
])
def test_a_key_changes_with_the_params_sections_its_step_reads_only(
        tmp_path: Path, step: str, device: str | None, patch: dict[str, Any],
        changes: bool) -> None:
    base = experiment(tmp_path)
    before = input_key(base, step, device)
    patched = experiment(tmp_path, patch)
    assert patched.params != base.params, "a patch that changes nothing tests nothing"
    assert (input_key(patched, step, device) != before) == changes


@pytest.mark.parametrize("step, device, farm, changes", [
    ("benchmark", "local", TWO_DEVICES, False),  # another device is not this one's input
    ("select", None, TWO_DEVICES, True),
    ("train", None, TWO_DEVICES, False),
])
def test_a_key_changes_with_the_farm_only_where_the_step_reads_it(
        tmp_path: Path, step: str, device: str | None, farm: str, changes: bool) -> None:
    base = experiment(tmp_path)
    before = input_key(base, step, device)
    patched = experiment(tmp_path, farm=farm)
    assert patched.farm != base.farm, "a farm that changes nothing tests nothing"
    assert (input_key(patched, step, device) != before) == changes


def _board(**changes: object) -> str:
    """A farm of one SSH board ``pi`` (keys are only read when connecting)."""
    fields: dict[str, object] = {"transport": "ssh", "host": "10.0.0.5", "user": "pi",
                                 "key_file": "id_ed25519", "known_hosts": "known_hosts",
                                 **changes}
    return yaml.safe_dump({"devices": {"pi": fields}})


# Every setting of a device can change what its benchmark measures: a board re-imaged
# with more threads, moved to another address or given an accelerator must be measured
# again, never answered with the old results.
@pytest.mark.parametrize("device, farm, changed", [
    ("local", "devices:\n  local: {threads: 1}\n", "devices:\n  local: {threads: 2}\n"),
    ("pi", _board(), _board(host="10.0.0.6")),
    ("pi", _board(), _board(port=2222)),
    ("local", "devices:\n  local: {}\n",
     "devices:\n  local: {accelerators: {onnxruntime_providers: [CUDAExecutionProvider]}}\n"),
    ("local", "devices:\n  local: {}\n",
     "devices:\n  local: {accelerators: {openvino_device: GPU}}\n"),
    ("local", "devices:\n  local: {}\n", "devices:\n  local: {runtimes: [onnxruntime]}\n"),
], ids=["threads", "host", "port", "onnxruntime-providers", "openvino-device", "runtimes"])
def test_a_benchmark_key_changes_with_each_setting_of_its_device(
        tmp_path: Path, device: str, farm: str, changed: str) -> None:
    before = input_key(experiment(tmp_path, farm=farm), "benchmark", device)
    patched = experiment(tmp_path, farm=changed)
    assert input_key(patched, "benchmark", device) != before


@pytest.mark.parametrize("path, changes", [
    ("data/prepared/train.npz", True),
    ("models/variants/index.json", False),  # train does not read it
])
def test_a_key_changes_with_the_content_of_the_files_its_step_reads(
        tmp_path: Path, path: str, changes: bool) -> None:
    ctx = experiment(tmp_path)
    before = input_key(ctx, "train")
    (tmp_path / path).write_bytes(b"rewritten")
    assert (input_key(ctx, "train") != before) == changes


def test_a_key_names_its_step_and_device(tmp_path: Path) -> None:
    """Prefect names each cache record after its key: a person looking in
    .edgeflow/prefect/keys can tell which step, and which device, each one is for."""
    ctx = experiment(tmp_path)
    assert re.fullmatch(r"train-all-[0-9a-f]{32}", input_key(ctx, "train"))
    assert re.fullmatch(r"benchmark-local-[0-9a-f]{32}", input_key(ctx, "benchmark", "local"))


def test_a_missing_input_file_changes_the_key(tmp_path: Path) -> None:
    ctx = experiment(tmp_path)
    before = input_key(ctx, "benchmark", "local")
    (tmp_path / "data" / "prepared" / "test.npz").unlink()
    assert input_key(ctx, "benchmark", "local") != before


def test_a_missing_input_and_an_empty_one_have_different_keys(tmp_path: Path) -> None:
    ctx = experiment(tmp_path)
    (tmp_path / "data" / "prepared" / "test.npz").write_bytes(b"")
    empty = input_key(ctx, "benchmark", "local")
    (tmp_path / "data" / "prepared" / "test.npz").unlink()
    assert input_key(ctx, "benchmark", "local") != empty


def test_the_order_of_a_mapping_in_the_config_files_is_not_in_the_key(tmp_path: Path) -> None:
    """params.yaml's formats and farm.yaml's devices are mappings whose order is the
    file's: rewriting a file in another order changes no setting, and reruns nothing."""
    def loaded(root: Path, formats: str, farm: str) -> Context:
        experiment(root)
        write_tiny_config(root, TINY_PARAMS.replace(
            "formats: {tflite: [fp32], onnx: [fp32], openvino: [fp32]}", formats), farm)
        return Context.load(root / "params.yaml", root / "farm.yaml")

    first = loaded(tmp_path / "a", "formats: {tflite: [fp32], onnx: [fp32]}", TWO_DEVICES)
    second = loaded(tmp_path / "b", "formats: {onnx: [fp32], tflite: [fp32]}",
                    "devices:\n  other: {threads: 2}\n  local: {threads: 1}\n")
    assert list(first.params.formats) != list(second.params.formats)
    assert list(first.farm.devices) != list(second.farm.devices)
    for step in ("convert", "select", "track"):
        assert input_key(first, step) == input_key(second, step), step


def test_a_moved_experiment_keeps_its_keys(tmp_path: Path) -> None:
    """The local device's workdir and an SSH board's key files resolve inside the
    experiment folder: paths that move with it, so they must not change the keys (the
    cache is kept)."""
    farm = ("devices:\n  local: {threads: 1}\n  pi: {transport: ssh, host: 10.0.0.5, "
            "user: pi, key_file: keys/id, known_hosts: keys/known_hosts}\n")
    here = experiment(tmp_path / "here", farm=farm)
    shutil.copytree(tmp_path / "here", tmp_path / "moved")
    moved = Context.load(tmp_path / "moved" / "params.yaml", tmp_path / "moved" / "farm.yaml")
    assert str(here.farm.devices["local"].workdir).startswith(str(tmp_path / "here"))
    assert str(here.farm.devices["pi"].key_file) == str(tmp_path / "here" / "keys" / "id")
    for step, device in (("prepare", None), ("train", None), ("benchmark", "local"),
                         ("benchmark", "pi"), ("select", None), ("track", None)):
        assert input_key(moved, step, device) == input_key(here, step, device), step


def test_a_path_outside_the_experiment_stays_in_the_key(tmp_path: Path) -> None:
    def key(workdir: Path) -> str:
        ctx = experiment(tmp_path / "exp", farm=f"devices:\n  local: {{workdir: '{workdir}'}}\n")
        return input_key(ctx, "benchmark", "local")

    assert key(tmp_path / "boards" / "a") != key(tmp_path / "boards" / "b")


@pytest.mark.parametrize("uri, same_as", [
    ("http://team-server:5000", None),
    ("http://alice:secret@team-server:5000", "http://team-server:5000"),
    ("postgresql://mlflow.lan/mlflow?sslmode=require&password=x",
     "postgresql://mlflow.lan/mlflow?sslmode=require"),
])
def test_the_tracking_store_is_in_tracks_key_without_its_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uri: str, same_as: str | None) -> None:
    """Another MLflow store (``MLFLOW_TRACKING_URI``) is another key for track, and only
    for track (it alone logs there); the same store reached with other credentials is
    the same key: a password is no destination."""
    ctx = experiment(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    local = _all_keys(ctx)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    elsewhere = _all_keys(ctx)
    assert {name for name in STEPS if elsewhere[name] != local[name]} == {"track"}
    if same_as is not None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", same_as)
        assert input_key(ctx, "track") == elsewhere["track"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://another-server:5000")
    assert input_key(ctx, "track") not in (local["track"], elsewhere["track"])


def test_the_experiments_own_store_named_outright_is_the_same_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = experiment(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    default = input_key(ctx, "track")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path.resolve()}/mlflow/mlflow.db")
    assert input_key(ctx, "track") == default
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path.resolve()}/other.db")
    assert input_key(ctx, "track") != default


@pytest.fixture
def code_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every step's code files copied to a folder the keys then hash instead of the
    repository's (the closures themselves are still the repository's)."""
    root = tmp_path / "code"
    for step in STEPS.values():
        for path in code_dependencies(step).files:
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(code_manifests.PACKAGE_ROOT / path, root / path)
    monkeypatch.setattr(code_manifests, "PACKAGE_ROOT", root)  # where code_manifest hashes them
    return root


def _all_keys(ctx: Context) -> dict[str, str]:
    return {name: input_key(ctx, name, "local" if STEPS[name].per_device else None)
            for name in STEPS}


def test_how_many_boards_run_at_once_is_in_no_key(tmp_path: Path) -> None:
    """farm.yaml's ``max_parallel`` changes how a run goes, never what it produces: no
    step runs again for it (select and release read the whole farm)."""
    before = _all_keys(experiment(tmp_path / "a"))
    for max_parallel in (1, 7):
        ctx = experiment(tmp_path / "a", farm=f"max_parallel: {max_parallel}\n" + TINY_FARM)
        assert ctx.farm.max_parallel == max_parallel
        assert _all_keys(ctx) == before
    with_device = experiment(tmp_path / "a", farm=TINY_FARM.replace("{threads: 1}",
                                                                    "{threads: 2}"))
    assert _all_keys(with_device)["select"] != before["select"]  # the farm still counts


# Only select reaches the report and only the steps that talk to boards untrusted.py; the
# device package (the harness among it) is in the closure of every step that reaches
# tasks.core.device_code, which imports it by name and ships it (code_deps.LOADED_BY_PATH);
# every step reaches files.py.
@pytest.mark.parametrize("module, steps", [
    ("tasks/select/report/markdown.py", {"select"}),
    ("tasks/farm/untrusted.py", {"benchmark", "release"}),
    ("tasks/device/harness.py", {"convert", "benchmark", "select", "track", "release"}),
    # Only prepare reaches the pre-processing's loader, so only it and the steps that ship
    # all of the device code (the predictor loads it) change with it.
    ("tasks/device/preprocess.py", {"prepare", "convert", "benchmark", "select", "track",
                                    "release"}),
    ("tasks/core/files.py", set(STEPS)),
    # Not a module: compiled into the firmware of an emulated microcontroller by
    # tasks.targets.firmware.build, which declares its templates (code_deps.DATA_DECLARATION).
    ("tasks/targets/firmware/templates/harness.cc", {"benchmark", "release"}),
    ("tasks/targets/firmware/templates/mps2_an386.ld", {"benchmark", "release"}),
])
def test_a_key_changes_with_the_code_its_step_reaches_only(
        tmp_path: Path, code_copy: Path, module: str, steps: set[str]) -> None:
    ctx = experiment(tmp_path / "exp")
    before = _all_keys(ctx)
    assert (code_copy / module).is_file()  # in a closure: copied
    with open(code_copy / module, "a", encoding="utf-8") as handle:
        handle.write("# a comment: the file changed, what it does did not\n")
    after = _all_keys(ctx)
    assert {name for name in STEPS if after[name] != before[name]} == steps


# ------------------------------------------------- every input, changed one at a time
# Property tests over the whole config and every file a step may read: each leaf of
# params.yaml and farm.yaml, changed alone, changes exactly the keys of the steps that
# read it; each file changes exactly the keys of the steps whose deps hold it.


def _other(value: Any) -> Any:
    """A value of ``value``'s kind that differs from it."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    return "x"  # None


class _Dumped:
    """A config model whose dump is ``document`` (what a key reads of it); every other
    attribute is the real model's."""

    def __init__(self, model: Any, document: dict[str, Any]) -> None:
        self._model, self._document = model, document

    def model_dump(self, **kwargs: Any) -> dict[str, Any]:
        return self._document

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class _DumpedFarm(_Dumped):
    @property
    def devices(self) -> dict[str, Any]:
        return {name: _Dumped(device, self._document["devices"][name])
                for name, device in self._model.devices.items()}


def _leaves(document: dict[str, Any]) -> list[str]:
    from tasks.track.runs import flatten

    return sorted(flatten(document))


def _reads(step: Any, leaf: str) -> bool:
    return any(leaf == key or leaf.startswith(f"{key}.") for key in step.params)


STEP_RUNS = [(name, "local" if step.per_device else None) for name, step in STEPS.items()]


@pytest.fixture
def quick_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each step's code manifest computed once (its own tests are above): the keys of
    many configs then cost only the config and files they hash."""
    import functools

    from flows import caching

    monkeypatch.setattr(caching, "code_manifest", functools.cache(caching.code_manifest))


def test_each_params_leaf_changes_exactly_the_keys_of_the_steps_that_read_it(
        tmp_path: Path, quick_manifests: None) -> None:
    ctx = experiment(tmp_path)
    document = ctx.params.model_dump(mode="json")
    before = {run: input_key(ctx, *run) for run in STEP_RUNS}
    leaves = _leaves(document)
    assert len(leaves) > 30 and {"train.seed", "train.epochs", "data.seed"} <= set(leaves)
    for leaf in leaves:
        value = with_field(document, leaf, _other(_flat(document)[leaf]))
        patched = dataclasses.replace(ctx, params=_Dumped(ctx.params, value))
        changed = {run[0] for run in STEP_RUNS if input_key(patched, *run) != before[run]}
        assert changed == {name for name, _ in STEP_RUNS if _reads(STEPS[name], leaf)}, leaf


def test_each_farm_leaf_changes_the_steps_that_read_the_farm_or_that_device(
        tmp_path: Path, quick_manifests: None) -> None:
    ctx = experiment(tmp_path, farm=TWO_DEVICES)
    document = ctx.farm.model_dump(mode="json")
    before = {run: input_key(ctx, *run) for run in STEP_RUNS}
    leaves = _leaves(document)
    assert {"devices.local.threads", "devices.other.threads",
            "devices.local.workdir"} <= set(leaves)
    for leaf in leaves:
        value = with_field(document, leaf, _other(_flat(document)[leaf]))
        patched = dataclasses.replace(ctx, farm=_DumpedFarm(ctx.farm, value))
        changed = {run[0] for run in STEP_RUNS if input_key(patched, *run) != before[run]}
        expected = {name for name, device in STEP_RUNS
                    if (device is None and STEPS[name].reads_farm)
                    or (device is not None and leaf.startswith(f"devices.{device}."))}
        assert changed == expected, leaf


def _flat(document: dict[str, Any]) -> dict[str, Any]:
    from tasks.track.runs import flatten

    return flatten(document)


def test_each_file_a_step_may_read_changes_exactly_the_keys_of_the_steps_that_read_it(
        tmp_path: Path, quick_manifests: None) -> None:
    """Every dep of every step, and a file of every dep folder, rewritten (or created)
    alone: the keys that change are those of the steps whose deps are, or hold, it."""
    ctx = experiment(tmp_path)
    layout = ctx.layout
    deps = {name: step.deps(layout) for name, step in STEPS.items()}
    touched, covered = set(), set()
    for paths in deps.values():
        for path in paths:
            touched.add(path / "added.bin" if path.is_dir() or not path.suffix else path)
    for path in sorted(touched):
        before = {run: input_key(ctx, *run) for run in STEP_RUNS}
        existed = path.is_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            handle.write(b"changed")
        changed = {run[0] for run in STEP_RUNS if input_key(ctx, *run) != before[run]}
        expected = {name for name, paths in deps.items()
                    if any(dep == path or dep in path.parents for dep in paths)}
        assert changed == expected, path.relative_to(tmp_path)
        covered |= expected
        if not existed:
            path.unlink()
    assert covered == {name for name, paths in deps.items() if paths}


# --------------------------------------------------------------------------- stamps


def cached(ctx: Context, key: str) -> list[Path]:
    """Stand-ins for Prefect's cache record and persisted result of ``key``, here."""
    result = results_dir(ctx) / key
    result.parent.mkdir(parents=True, exist_ok=True)
    result.write_text("{}")
    record = cache_dir(ctx) / "keys" / key
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"storage_key": str(result), "storage_block_id": None}))
    return [record, result]


def compute_key(ctx: Context, step: str, device: str | None = None) -> str | None:
    return StepContentPolicy().compute_key(
        None, {"ctx": ctx, "step_name": step, "device": device}, {})


def test_a_stamped_run_keeps_its_cache_record(tmp_path: Path) -> None:
    ctx = experiment(tmp_path)
    record_run(ctx, "prepare")
    files = cached(ctx, input_key(ctx, "prepare"))
    assert compute_key(ctx, "prepare") == input_key(ctx, "prepare")
    assert all(path.is_file() for path in files)


def test_a_stamp_without_a_record_gets_one_holding_the_steps_result(tmp_path: Path) -> None:
    """A step stamped outside Prefect (``edgeflow step``, what ``dvc repro`` runs) gets
    the cache record Prefect would have written: its result is what the flow's task
    returns for that step and device."""
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    ctx = experiment(tmp_path)
    record_run(ctx, "benchmark", "local")
    key = compute_key(ctx, "benchmark", "local")
    store = ResultStore(result_storage=LocalFileSystem(basepath=str(results_dir(ctx))),
                        metadata_storage=LocalFileSystem(basepath=str(cache_dir(ctx) / "keys")))
    assert store.read(key).result == "benchmark:local"


@pytest.mark.parametrize("damage", [
    lambda stamp: stamp.write_text('{"key": "prepare-all-'),  # a crash while writing it
    lambda stamp: stamp.write_text("[]"),
    lambda stamp: stamp.write_bytes(b"\xff"),
    lambda stamp: stamp.unlink(),
], ids=["truncated", "not-an-object", "not-utf8", "missing"])
def test_a_damaged_stamp_is_a_cache_miss(tmp_path: Path, damage: Any) -> None:
    ctx = experiment(tmp_path)
    record_run(ctx, "prepare")
    files = cached(ctx, input_key(ctx, "prepare"))
    [stamp] = (ctx.layout.state / "stamps").glob("prepare-*.json")
    damage(stamp)
    assert compute_key(ctx, "prepare") == input_key(ctx, "prepare")
    assert not any(path.exists() for path in files), "the step runs again"


def test_each_devices_benchmark_is_stamped_on_its_own_results(tmp_path: Path) -> None:
    """Devices are benchmarked (and cached) one task each: another device's results
    changing is not this device's miss, and stamping one device keeps the other's."""
    ctx = experiment(tmp_path, farm=TWO_DEVICES)
    (tmp_path / "results" / "other").mkdir()
    (tmp_path / "results" / "other" / "onnx-fp32.json").write_bytes(b"{}")
    files = {}
    for device in ("local", "other"):
        record_run(ctx, "benchmark", device)
        files[device] = cached(ctx, input_key(ctx, "benchmark", device))
    (tmp_path / "results" / "other" / "onnx-fp32.json").write_bytes(b"rewritten")
    for device in ("local", "other"):
        assert compute_key(ctx, "benchmark", device) == input_key(ctx, "benchmark", device)
    assert all(path.is_file() for path in files["local"])
    assert not any(path.exists() for path in files["other"])


def test_will_be_cached_asks_of_the_devices_own_key(tmp_path: Path) -> None:
    """A benchmark stamped and cached for one device is cached for that device only;
    a step with nothing cached is not."""
    ctx = experiment(tmp_path, farm=TWO_DEVICES)
    (tmp_path / "results" / "other").mkdir()
    record_run(ctx, "benchmark", "local")
    cached(ctx, input_key(ctx, "benchmark", "local"))
    assert will_be_cached(ctx, "benchmark", "local") is True
    assert will_be_cached(ctx, "benchmark", "other") is False
    assert will_be_cached(ctx, "prepare") is False


def test_outputs_changed_since_the_stamp_are_a_cache_miss(tmp_path: Path) -> None:
    ctx = experiment(tmp_path)
    record_run(ctx, "prepare")
    files = cached(ctx, input_key(ctx, "prepare"))
    (ctx.layout.prepared / "train.npz").write_bytes(b"rewritten by dvc repro")
    compute_key(ctx, "prepare")
    assert not any(path.exists() for path in files)


# --------------------------------------------------------------------------- records


def write_record(ctx: Context, key: str, storage_key: str) -> Path:
    record = cache_dir(ctx) / "keys" / key
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"storage_key": storage_key, "storage_block_id": "block",
                                  "expiration": None}))
    return record


def test_a_record_pointing_elsewhere_is_re_pointed_when_the_result_is_here(tmp_path: Path) -> None:
    ctx = experiment(tmp_path / "exp")
    here = results_dir(ctx) / "prepare-all-k"
    here.parent.mkdir(parents=True)
    here.write_text("{}")
    record = write_record(ctx, "prepare-all-k", str(tmp_path / "old" / "results" / "prepare-all-k"))
    relocate_record(ctx, "prepare-all-k")
    assert json.loads(record.read_text()) == {"storage_key": str(here), "storage_block_id": None,
                                              "expiration": None}


def test_a_record_pointing_elsewhere_is_dropped_when_the_result_is_not_here(
        tmp_path: Path) -> None:
    ctx = experiment(tmp_path / "exp")
    elsewhere = tmp_path / "old" / "results" / "prepare-all-k"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_text("{}")  # present there, but not in this experiment's folder
    record = write_record(ctx, "prepare-all-k", str(elsewhere))
    relocate_record(ctx, "prepare-all-k")
    assert not record.exists() and elsewhere.exists()


def test_a_record_pointing_here_is_left_as_it_is(tmp_path: Path) -> None:
    ctx = experiment(tmp_path)
    record = write_record(ctx, "prepare-all-k", str(results_dir(ctx) / "prepare-all-k"))
    before = record.read_bytes()
    relocate_record(ctx, "prepare-all-k")
    assert record.read_bytes() == before


@pytest.mark.parametrize("text", ["not json", "{}", '{"storage_key": null}'])
def test_an_unreadable_record_is_dropped(tmp_path: Path, text: str) -> None:
    ctx = experiment(tmp_path)
    record = cache_dir(ctx) / "keys" / "prepare-all-k"
    record.parent.mkdir(parents=True)
    record.write_text(text)
    relocate_record(ctx, "prepare-all-k")
    assert not record.exists()


def test_no_record_is_nothing_to_do(tmp_path: Path) -> None:
    ctx = experiment(tmp_path)
    relocate_record(ctx, "prepare-all-k")
    assert not (cache_dir(ctx) / "keys").exists()
