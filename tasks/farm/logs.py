"""What a command prints on a device stays there, in files; only a bounded tail of them
comes back. A board that floods its output (a driver panicking in a loop) costs its own
disk, never this machine's memory."""

from __future__ import annotations

import shlex

from tasks.farm.push import last_line
from tasks.farm.transports import Connection, quote_command

LOG_TAIL_BYTES = 4096


def to_files(argv: list[str], out: str, err: str) -> str:
    """A quoted command whose output goes to files on the device, read back with a size
    limit: nothing a device prints is taken in whole."""
    return f"{quote_command(argv)} > {shlex.quote(out)} 2> {shlex.quote(err)}"


def log_tail(connection: Connection, remote: str) -> str:
    """The last line of a log on the device ('' when there is none)."""
    try:
        return last_line(connection.read_file(remote, LOG_TAIL_BYTES, tail=True)
                         .decode(errors="replace"))
    except (OSError, ValueError):
        return ""
