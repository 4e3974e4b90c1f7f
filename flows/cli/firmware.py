"""``edgeflow firmware BUNDLE``: a tflm release bundle built into a TFLite Micro firmware
for an emulated core and run there over the experiment's test split; prints accuracy,
the arena used on the target, instructions per inference and the firmware's sizes.
Nothing is recorded: the benchmark of a microcontroller does that."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flows.cli.arguments import FarmOption, ParamsOption, context
from flows.cli.exits import guarded, refuse
from flows.cli.output import say
from flows.cli.process import interruptible
from tasks.core.errors import UsageError


def firmware_lines(run: Any, declared_arena: int) -> list[str]:
    """The figures of a :class:`~tasks.targets.firmware.run.FirmwareRun`, one per line."""
    correct = round((run.accuracy or 0.0) * run.images)
    return [
        f"core: {run.core} on qemu -M {run.machine} (TFLite Micro + CMSIS-NN)",
        f"accuracy on the target: {run.accuracy:.4f} ({correct} of {run.images} test images)",
        f"arena needed on the target: {run.arena_needed_bytes} bytes, of which "
        f"arena_used_bytes() counts {run.arena_used_bytes}; the bundle declares "
        f"{declared_arena}{'' if run.declared_arena_fits else ': too small on the target'}",
        f"instructions per inference: {run.instructions_per_inference} (median of "
        f"{run.images}; to within {run.instructions_per_tick}: SysTick under -icount shift=0)",
        f"firmware: text {run.text_bytes} + data {run.data_bytes} = {run.flash_bytes} bytes of "
        f"flash; bss {run.bss_bytes} (with the harness's arena buffer)",
        f"emulated in {run.wall_seconds:.1f} s",
    ]


def firmware(
        bundle: Annotated[Path, typer.Argument(help="a tflm release bundle folder "
                                                    "(releases/<device>/<release-id>)")],
        params: ParamsOption = Path("params.yaml"), farm: FarmOption = None,
        sources: Annotated[Path | None, typer.Option(
            "--sources", help="folder of the TFLite Micro source archives; default: "
                              "params.yaml's benchmark.firmware.sources, else "
                              "$EDGEFLOW_THIRD_PARTY")] = None,
        cache: Annotated[Path | None, typer.Option(
            "--cache", help="folder for unpacked sources and built libraries; default: "
                            "params.yaml's benchmark.firmware.cache, else "
                            "$EDGEFLOW_FIRMWARE_CACHE, else ~/.cache/edgeflow/firmware")] = None,
        core: Annotated[str, typer.Option("--core", help="the core to build for")] = "cortex-m4",
        images: Annotated[int | None, typer.Option(
            "--images", min=1, help="test images to run; default: the whole test split")] = None,
) -> None:
    """Build a release bundle into a firmware, run it on an emulated core, print figures."""
    from tasks.core.contracts.prepared import load_split
    from tasks.targets.firmware.measure import measure_bundle
    from tasks.targets.firmware.settings import FirmwareSettings

    if not bundle.is_dir():
        refuse(UsageError(f"firmware: {bundle} is not a folder (a release bundle: "
                          f"releases/<device>/<release-id>)"))
    ctx = context(params, farm)
    x, y = guarded(lambda: load_split(ctx.layout.prepared, "test"))
    x, y = x[:images], y[:images]
    configured = ctx.params.benchmark.firmware
    # A folder named here replaces params.yaml's (and so its pin, which names its archives).
    settings = FirmwareSettings(
        sources=sources or configured.sources, cache=cache or configured.cache,
        sources_sha256=None if sources else configured.sources_sha256)
    work = ctx.layout.state / "firmware" / bundle.resolve().name
    say(f"building {bundle} for {core} (the first build of TFLite Micro takes minutes)")
    run = guarded(lambda: interruptible(
        lambda: measure_bundle(bundle, x, y, work, settings, core)))
    for line in firmware_lines(run, run.declared_arena_bytes):
        say(line)


def register(app: typer.Typer) -> None:
    """Add this group's commands to ``app``."""
    app.command()(firmware)
