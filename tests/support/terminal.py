"""A command run in a pseudo-terminal of its own, as a user's shell runs it: to send it the
terminal's Ctrl-C and read what it writes there."""

from __future__ import annotations

import fcntl
import os
import subprocess
import termios
from typing import Dict, List, Tuple

from support.wait import wait_until


def in_a_terminal(argv: List[str], env: Dict[str, str]) -> Tuple[subprocess.Popen, int]:
    """``argv`` as the session leader of a new pseudo-terminal, its controlling terminal: what
    the terminal's Ctrl-C reaches is the foreground process group, as in a real shell. Returns
    the process and the terminal's master side."""
    master, slave = os.openpty()

    def take_the_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=take_the_terminal,
    )
    os.close(slave)
    return process, master


def read_until(master: int, marker: bytes) -> bytes:
    """What the terminal shows, up to and including ``marker``."""
    seen = b""

    def arrived() -> bool:
        nonlocal seen
        seen += os.read(master, 4096)
        return marker in seen

    wait_until(arrived, timeout=15, what=f"{marker!r} on the terminal")
    return seen
