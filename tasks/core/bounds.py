"""The bounds every configuration value shares: durations, counts and sizes past them
are typos, and an unbounded one (`.inf`, 1e10) overflows the thread and socket timeouts
it reaches. Shared by the configuration (:mod:`tasks.config`) and the option models
defined beside the code they configure (:mod:`tasks.models`), so it sits at the bottom."""

from __future__ import annotations

from typing import Annotated

from tasks.core.strict import count, number

DAY_SECONDS = 86_400  # the longest any time limit or wait may be
MAX_SAMPLES = 1_000_000  # images used for calibration, checks or accuracy
MAX_SEED = 2**32 - 1  # NumPy's and scikit-learn's seeds are 32-bit
MAX_RETRY_WAIT_SECONDS = 60.0  # the doubling wait between connection attempts stops here
MAX_REQUIREMENT_MB = 1_048_576.0  # 1 TiB: size and memory limits
MAX_MCU_KB = 1_048_576  # 1 GiB of flash or RAM on a microcontroller

Seconds = Annotated[float, number(0, DAY_SECONDS, unit="seconds")]
PositiveSeconds = Annotated[float, number(0, DAY_SECONDS, above=True, unit="seconds")]
Seed = Annotated[int, count(0, MAX_SEED)]
LatencyLimit = Annotated[float, number(0, DAY_SECONDS * 1000, above=True, unit="ms")]
MegabyteLimit = Annotated[float, number(0, MAX_REQUIREMENT_MB, above=True, unit="MB")]
