"""Starting a desktop program (an opener, a browser) for a request, without waiting for it.

The program gets its arguments as argv elements: no shell, no interpolation. It runs in its own
session, so it outlives neither a signal to the daemon's terminal nor the daemon's group; its
exit is reaped in the background and logged, and no zombie is left behind.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from typing import Sequence, Set

from rtun.daemon.actions.advice import setting as change
from rtun.protocol import messages
from rtun.protocol.messages import Rejected

log = logging.getLogger("rtun.daemon")

_reapers: "Set[asyncio.Future[None]]" = set()  # kept so the tasks are not collected mid-wait


def find(command: Sequence[str], setting: str, what: str) -> str:
    """The program of ``command`` on $PATH, or a refusal that names the setting to change."""
    program = shutil.which(command[0])
    if program is None:
        raise Rejected(
            messages.E_OPEN,
            f"cannot open {what} on your computer: {command[0]!r} was not found there; "
            f"install it, or {change(setting)}",
        )
    return program


async def launch(command: Sequence[str], argument: str, setting: str, what: str, shown: str) -> None:
    """Start ``command`` with ``argument`` last; ``shown`` is how the log names the argument."""
    argv = (find(command, setting, what),) + tuple(command[1:]) + (argument,)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise Rejected(messages.E_OPEN, f"cannot start {command[0]!r}: {exc.strerror or exc}") from None
    task = asyncio.ensure_future(_reap(proc, command[0], shown))
    _reapers.add(task)
    task.add_done_callback(_reapers.discard)


async def _reap(proc: "asyncio.subprocess.Process", program: str, shown: str) -> None:
    code = await proc.wait()
    if code != 0:
        log.warning("%s exited with status %d for %s", program, code, shown)
