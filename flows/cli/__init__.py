"""``edgeflow``: the command line.

    edgeflow run [--params P] [--farm F] [--gate]   the whole lifecycle as a Prefect flow
    edgeflow step NAME [--params P] [--farm F]   one step, no Prefect (what dvc.yaml runs)
    edgeflow report [--params P]           the results table of the last run
    edgeflow compare A B                   two runs per (variant, device); exit 1 on a regression
    edgeflow farm probe|setup|trust        look at, prepare and trust the devices
    edgeflow firmware BUNDLE               a tflm bundle built and run on an emulated Cortex-M4
    edgeflow serve [--port 4200] | stop    a local Prefect server, deployments and worker
    edgeflow remote setup URL              a DVC remote the team shares (ssh://, s3://)

Errors caused by input are one line on stderr, never a traceback, and the exit code is
the error's class's (:mod:`tasks.core.errors`), never read from its message: 2 for bad
configuration or usage (an unknown step, a folder given as a file), 1 otherwise (a
missing or damaged output of an earlier step, a device that failed, a failed run);
nothing already produced is deleted. Exit 75 when another run of the same experiment
holds its lock (try again later), 130 when Ctrl-C, SIGTERM or SIGHUP (the terminal
closed) stopped the run (what runs on devices is stopped too). `farm probe` and `farm
setup` print every device's row, then one line naming the devices that failed and exit
with their failures' class's code. A release that failed or was refused ends `run`,
`release` and `step release` with exit 1; `status` exits 1 when a board drifted or could
not be reached.

The commands, by group: :mod:`~flows.cli.experiment` (run, step, report),
:mod:`~flows.cli.releases` (release, rollback, status), :mod:`~flows.cli.compare`,
:mod:`~flows.cli.farm` (its tables in :mod:`~flows.cli.farm_tables`), :mod:`~flows.cli.firmware`,
:mod:`~flows.cli.serving` (serve, stop), :mod:`~flows.cli.remote` (remote setup) and :mod:`~flows.cli.plumbing` (code-manifests,
dvc-yaml). What they share: :mod:`~flows.cli.arguments` (options), :mod:`~flows.cli.output`
(the console), :mod:`~flows.cli.exits` (errors to one line and an exit code) and
:mod:`~flows.cli.process` (stop signals, and how the process ends).
"""

from __future__ import annotations

import os

# Quiet TensorFlow's C++ start-up chatter before anything imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# The temporary Prefect server needs more than the default 20 s on a busy 2-core box.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import typer  # noqa: E402

from flows.cli import (compare, experiment, farm, firmware, plumbing, releases,  # noqa: E402
                       remote, serving)
from flows.cli.process import run_as_process  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, convert, deploy and benchmark CV models on edge devices.")
# In this order in `edgeflow --help`.
for group in (experiment, releases, compare, farm, firmware, serving, remote, plumbing):
    group.register(app)


def main() -> None:
    """The ``edgeflow`` console script (pyproject.toml): :data:`app` as the process."""
    run_as_process(lambda: app())  # looked up when called: a test may replace it
