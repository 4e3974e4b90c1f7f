"""The configuration boundary: ``params.yaml`` (the experiment) and ``farm.yaml`` (the
devices), parsed once into frozen pydantic models.

Every step receives its typed section. A bad file raises :class:`ConfigError` with one
line naming the file, the key path and what is allowed. Relative paths inside a file
are resolved against that file's folder.

The package sits above :mod:`tasks.models` and assembles the option models defined
there, beside the code they configure (architectures, a model file, pruning,
augmentation, quantisation); the limits they share are :mod:`tasks.core.bounds`. Its
modules: :mod:`~tasks.config.params` (experiment schema), :mod:`~tasks.config.farm`
(farm schema, SSH key checks), :mod:`~tasks.config.cores` (the cores a microcontroller
may name as its emulated ``target``, each with its cycles-per-instruction figure),
:mod:`~tasks.config.firmware` (``benchmark.firmware``: TFLite Micro's pinned sources), :mod:`~tasks.config.safe_yaml` (YAML with repeated keys
and alias bombs refused) and :mod:`~tasks.config.loader` (reading and validating the
files). The
names below are the public surface: ``from tasks.config import X``.
"""

from tasks.core.bounds import (DAY_SECONDS, MAX_MCU_KB, MAX_REQUIREMENT_MB,
                               MAX_RETRY_WAIT_SECONDS, MAX_SAMPLES, MAX_SEED, LatencyLimit,
                               MegabyteLimit, PositiveSeconds, Seconds, Seed)
from tasks.config.farm import (DEVICE_NAME, VENV_DIR, Accelerators, Device, DeviceSetup, Farm,
                               LocalDevice, McuDevice, Parallelism, RunsHarness, SshDevice,
                               check_key_file, check_key_files, default_parallelism,
                               effective_requirements)
from tasks.config.loader import load_farm, load_params
from tasks.config.params import (AugmentationParams, BenchmarkParams, CompareParams,
                                 ConvertParams, DataParams, DetectionDecoding, EndToEndParams,
                                 ModelParams,
                                 OptimizeParams, Params, PruningRecipe, QuantizationParams,
                                 RankKey, ReleaseParams, RequirementParams, Requirements,
                                 SelectParams, SplitParams, TrainParams, decoding_spec)
from tasks.config.safe_yaml import MAX_YAML_VALUES, AliasBombError, DuplicateKeyError, parse_yaml

__all__ = [
    "DAY_SECONDS", "MAX_MCU_KB", "MAX_REQUIREMENT_MB", "MAX_RETRY_WAIT_SECONDS", "MAX_SAMPLES",
    "MAX_SEED", "LatencyLimit", "MegabyteLimit", "PositiveSeconds", "Seconds", "Seed",
    "DEVICE_NAME", "VENV_DIR", "Accelerators", "Device", "DeviceSetup", "Farm", "LocalDevice",
    "McuDevice", "Parallelism", "RunsHarness", "SshDevice", "check_key_file",
    "check_key_files", "default_parallelism", "effective_requirements", "load_farm",
    "load_params", "AugmentationParams", "BenchmarkParams", "CompareParams", "ConvertParams",
    "DataParams", "DetectionDecoding", "EndToEndParams",
    "ModelParams", "OptimizeParams", "Params", "PruningRecipe", "QuantizationParams", "RankKey",
    "ReleaseParams", "RequirementParams", "Requirements", "SelectParams", "SplitParams",
    "TrainParams", "decoding_spec",
    "MAX_YAML_VALUES", "AliasBombError", "DuplicateKeyError", "parse_yaml",
]
