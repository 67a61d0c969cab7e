"""Running a command with a real terminal: a pty whose slave is the process's controlling
terminal (so /dev/tty is it and the terminal's Ctrl-C reaches it, as in a user's shell), and
what it writes there read back from the master side."""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import termios
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Tuple

from support.rtun import RTUN, clean_env
from support.wait import wait_until


def _take_terminal() -> None:
    # In the child, after setsid: the pty on standard input becomes its controlling terminal.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def in_a_terminal(argv: List[str], env: Dict[str, str]) -> Tuple[subprocess.Popen, int]:
    """``argv`` as the session leader of a new pseudo-terminal, its controlling terminal: what
    the terminal's Ctrl-C reaches is the foreground process group, as in a real shell. Returns
    the process and the terminal's master side."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=_take_terminal,
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


class TtyRun(NamedTuple):
    returncode: int
    tty: bytes  # what the process wrote to its terminal
    stdout: bytes
    stderr: bytes


def run_in_pty(args: List[str], home: Path, timeout: float = 60, **extra_env: str) -> TtyRun:
    """rtun with ``args``, the pty its terminal (and standard input), standard output and error
    piped apart: the bytes it writes to /dev/tty are what the terminal got."""
    master, slave = os.openpty()
    try:
        attrs = termios.tcgetattr(slave)
        attrs[1] &= ~termios.OPOST  # the bytes as written: no newline translation
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        process = subprocess.Popen(
            RTUN + args,
            env=clean_env(home, **extra_env),
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        slave = -1
        received = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            exited = process.poll() is not None  # before the read: what it wrote is there by then
            if select.select([master], [], [], 0.05)[0]:
                try:
                    piece = os.read(master, 1 << 16)
                except OSError:  # EIO: no slave descriptor is open any more
                    break
                received += piece
            elif exited:
                break
        stdout, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 1))
        return TtyRun(process.returncode, bytes(received), stdout, stderr)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
