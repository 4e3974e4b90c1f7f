"""tasks.targets.firmware.run's reading of the harness's results.txt (no emulator): the
instructions per tick from the calibration, the harness's own error, an early stop; and
qemu's command line. Running for real: test_measure.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.core.errors import StepError
from tasks.targets.firmware.run import parse_results, qemu_command

RESULTS = """\
edgeflow-firmware 1
calibration 4000000 100000
input_bytes 256
output_count 3
output_quantization 36534600 11
declared_arena 4672
arena_size 2097152
arena_needed 3856
arena_used 3848
image 0 16080 -52 100 39
image 1 16081 -28 61 45
done 2
"""


def test_results_hold_scores_ticks_arena_and_forty_instructions_per_tick() -> None:
    results = parse_results(RESULTS)
    assert results.scores == ((-52, 100, 39), (-28, 61, 45))
    assert results.ticks == (16080, 16081) and results.instructions_per_tick == 40
    assert (results.arena_needed_bytes, results.arena_used_bytes) == (3856, 3848)
    assert results.declared_arena_bytes == 4672 and results.arena_buffer_bytes == 2097152
    assert results.output_scale == pytest.approx(0.0365346) and results.output_zero_point == 11


def test_the_harness_error_is_reported_in_its_words() -> None:
    with pytest.raises(StepError, match="the harness failed: allocate: the tensors do not fit"):
        parse_results(RESULTS.replace("arena_used 3848\n", "error allocate: the tensors do not "
                                      "fit the arena\n"))


@pytest.mark.parametrize("text, message", [
    (RESULTS.replace("done 2\n", ""), "no line 'done'"),
    (RESULTS.replace("done 2", "done 3"), "2 well-formed image lines for 3 images"),
    (RESULTS.replace("image 1 16081 -28 61 45", "image 1 16081 -28 61"), "well-formed"),
    (RESULTS.replace("edgeflow-firmware 1", "edgeflow-firmware 2"), "not version 1"),
])
def test_a_run_that_stopped_early_or_wrote_another_format_is_refused(text: str,
                                                                     message: str) -> None:
    with pytest.raises(StepError, match=message):
        parse_results(text)


def test_a_clock_that_is_not_a_whole_number_of_instructions_means_icount_is_off() -> None:
    results = parse_results(RESULTS.replace("calibration 4000000 100000",
                                            "calibration 4000000 97000"))
    with pytest.raises(StepError, match=r"97000 ticks for 4000000 instructions \(41.237 per "
                                        r"tick, not a whole number.*-icount shift=0"):
        results.instructions_per_tick


def test_qemu_counts_instructions_and_serves_semihosting() -> None:
    command = qemu_command(Path("/x/firmware.elf"), "mps2-an386")
    assert command[:3] == ["qemu-system-arm", "-M", "mps2-an386"]
    assert "shift=0,align=off,sleep=off" in command and "enable=on,target=native" in command
    assert command[-2:] == ["-kernel", "/x/firmware.elf"]
