"""Loading ``params.yaml`` and ``farm.yaml``: read, parse (:mod:`tasks.config.safe_yaml`),
validate into the schemas, and turn any problem into one :class:`ConfigError` line naming
the file, the key path and what is allowed. Relative paths inside a file are resolved
against that file's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from tasks.config.farm import DEVICE_KINDS, Farm, LocalDevice, SshDevice
from tasks.config.params import Params
from tasks.config.safe_yaml import AliasBombError, DuplicateKeyError, parse_yaml
from tasks.core.errors import ConfigError
from tasks.core.strict import StrictModel
from tasks.models.architectures import ARCHITECTURES
from tasks.models.model_file import ModelFileOptions


def _read_yaml(path: Path) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        document = parse_yaml(text)
    except (DuplicateKeyError, AliasBombError) as error:
        raise ConfigError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: not valid YAML{where}: {problem}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return document


# Where pydantic inserts the chosen union member's tag into an error's path (users never
# wrote it): (path prefix, position of the tag, the tags).
_TAGGED_UNIONS = ((("model",), 1, {*ARCHITECTURES, "file"}),
                  (("devices",), 2, DEVICE_KINDS),  # read when used: kinds register later
                  (("optimize", "pruning"), 3, {"magnitude", "structured"}))


def _user_path(parts: list[str]) -> list[str]:
    for prefix, position, tags in _TAGGED_UNIONS:
        if tuple(parts[:len(prefix)]) == prefix and len(parts) > position and parts[position] in tags:
            return parts[:position] + parts[position + 1:]
    return parts


def _one_line(path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    parts = [str(part) for part in first["loc"]]
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "union_tag_invalid":
        context = first.get("ctx", {})
        parts.append(str(context.get("discriminator", "")).strip("'"))
        message = (f"{context.get('tag')!r} is not allowed "
                   f"(allowed: {context.get('expected_tags')})")
    elif first["type"] == "literal_error":
        message = f"{first['input']!r} is not allowed (allowed: {first['ctx']['expected']})"
        parts = _user_path(parts)
    else:
        parts = _user_path(parts)
    location = ".".join(parts)
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{path}: {location or 'top level'}: {message}{more}"


def _resolve(path: Path | None, base: Path) -> Path | None:
    if path is None:
        return None
    return path if path.is_absolute() else (base / path).resolve()


ConfigModel = TypeVar("ConfigModel", bound=StrictModel)


def _validated(model: type[ConfigModel], path: Path) -> ConfigModel:
    try:
        return model.model_validate(_read_yaml(path))
    except ValidationError as error:
        raise ConfigError(_one_line(path, error)) from None


def load_params(path: Path, base: Path | None = None) -> Params:
    """Parse and validate ``params.yaml``; relative paths (the image folder, a model file,
    the firmware's sources and cache) become absolute, relative to the file's folder or
    to ``base`` (a placed step: the folder that stands for the experiment's in the
    worker's clone)."""
    path = Path(path)
    params = _validated(Params, path)
    base = (base or path.parent).resolve()
    data = params.data.model_copy(update={"folder": _resolve(params.data.folder, base),
                                          "coco_json": _resolve(params.data.coco_json, base)})
    model = params.model
    if isinstance(model, ModelFileOptions):
        model = model.model_copy(update={"path": _resolve(model.path, base)})
    firmware = params.benchmark.firmware
    firmware = firmware.model_copy(update={
        "sources": _resolve(firmware.sources and firmware.sources.expanduser(), base),
        "cache": _resolve(firmware.cache and firmware.cache.expanduser(), base)})
    benchmark = params.benchmark.model_copy(update={"firmware": firmware})
    return params.model_copy(update={"data": data, "model": model, "benchmark": benchmark})


def load_farm(path: Path, base: Path | None = None) -> Farm:
    """Parse and validate ``farm.yaml``; relative device workdirs, key files and
    known_hosts become absolute, relative to the file's folder or to ``base``."""
    path = Path(path)
    farm = _validated(Farm, path)
    base = (base or path.parent).resolve()
    devices = {name: _with_local_paths(device, base) for name, device in farm.devices.items()}
    return farm.model_copy(update={"devices": devices})


def _with_local_paths(device: Any, base: Path) -> Any:
    """Paths on this machine become absolute (relative to farm.yaml); paths on a remote
    device stay as written."""
    if isinstance(device, LocalDevice):
        # "~" is the home of whoever runs edgeflow, as in a shell (not a folder named "~").
        return device.model_copy(update={"workdir": _resolve(device.workdir.expanduser(), base)})
    if isinstance(device, SshDevice):
        return device.model_copy(update={"key_file": _resolve(device.key_file, base),
                                         "known_hosts": _resolve(device.known_hosts, base)})
    return device
