"""A real X server (Xvfb) for clipboard tests, and xclip to look at its clipboard from outside.

Xvfb picks a free display number itself (``-displayfd``) and writes it when it accepts
connections, so parallel runs and a desktop's own :0 never collide. Test modules start one per
module (``with running_xvfb() as x:`` in a module-scoped fixture): it costs about 0.15 s.
Every xclip that serves a selection exits when the server stops.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, Optional

from support.wait import wait_until

XVFB = shutil.which("Xvfb") or "/usr/bin/Xvfb"
XCLIP = shutil.which("xclip") or "/usr/bin/xclip"


class Xvfb:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="rtx", dir="/tmp"))
        self.log = self.directory / "xvfb.log"
        self.display = ""
        self.process: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 15) -> "Xvfb":
        read_end, write_end = os.pipe()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [XVFB, "-displayfd", str(write_end), "-nolisten", "tcp", "-screen", "0", "64x64x24"],
                pass_fds=(write_end,),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        os.close(write_end)
        try:
            number = self._read_number(read_end, timeout)
        finally:
            os.close(read_end)
        self.display = f":{number}"
        wait_until(lambda: self._accepts(number), timeout=timeout, what=f"Xvfb {self.display} to accept")
        return self

    def _read_number(self, fd: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        text = b""
        while not text.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise RuntimeError(f"Xvfb did not say its display in {timeout}s: {self.log_text()}")
            piece = os.read(fd, 32)
            if not piece:
                raise RuntimeError(f"Xvfb exited before it was ready: {self.log_text()}")
            text += piece
        return int(text)

    @staticmethod
    def _accepts(number: int) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(f"/tmp/.X11-unix/X{number}")
            except OSError:
                return False
        return True

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    @property
    def env(self) -> Dict[str, str]:
        """The environment of a program on this display (and on no Wayland one)."""
        return {"DISPLAY": self.display, "WAYLAND_DISPLAY": ""}

    def clipboard(self) -> Optional[bytes]:
        """What the CLIPBOARD selection holds, read with xclip; None when nothing owns it."""
        done = subprocess.run(
            [XCLIP, "-selection", "clipboard", "-out"],
            env=dict(os.environ, **self.env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
        return done.stdout if done.returncode == 0 else None

    def set_clipboard(self, data: bytes) -> None:
        """Put ``data`` on the CLIPBOARD selection with xclip (which stays to serve it), and wait
        until it reads back."""
        subprocess.run(
            [XCLIP, "-selection", "clipboard", "-in"],
            env=dict(os.environ, **self.env),
            input=data,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=True,
        )
        self.wait_clipboard(data)

    def wait_clipboard(self, expected: bytes, timeout: float = 10) -> bytes:
        # A tool that copies forks a process that takes the selection: it lands a moment later.
        wait_until(
            lambda: self.clipboard() == expected,
            timeout=timeout,
            what=f"the X clipboard to hold {expected[:40]!r} ({len(expected)} bytes)",
        )
        return expected

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def running_xvfb() -> Iterator[Xvfb]:
    server = Xvfb()
    try:
        yield server.start()
    finally:
        server.stop()
