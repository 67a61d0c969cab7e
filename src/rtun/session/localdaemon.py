"""The daemon on this computer, as `rtun ssh` needs it: its socket, whether it answers, and
starting it detached (as `rtun server -d`) when it does not.

Starting is race-free: it happens under an exclusive lock on ~/.rtun/daemon.lock, and whoever
holds the lock first checks again whether a daemon answers, so two `rtun ssh` at once start
one daemon. What starts is `rtun server -d` itself, in the background while ssh logs in.
"""

from __future__ import annotations

import os
import sys

from rtun import paths
from rtun.errors import RtunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess
    from typing import Optional

LOCK_NAME = "daemon.lock"


def socket_path(config_file: "Optional[str]" = None) -> str:
    """The daemon's socket, as its configuration says (an invalid file is an error here too).
    Without a config file that is the default, known without importing the config's parser."""
    if config_file is None and not os.path.exists(paths.config_file()):
        return paths.default_socket()
    from rtun.daemon import config

    return config.load(config_file).socket


def answers(path: str, timeout: float = 3.0) -> bool:
    """Whether a daemon answers ``PING`` with ``OK PONG`` on ``path`` (the exchange every client
    starts with: RTUN v1's, see docs/protocol.md). Spoken here without importing the client,
    which would cost `rtun ssh` CPU time while ssh logs in."""
    import socket

    if not paths.socket_path_fits(path):
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    reply = b""
    try:
        sock.connect(path)
        sock.sendall(b"PING\r\n")
        while not reply.endswith(b"\n") and len(reply) < 64:
            chunk = sock.recv(64)
            if not chunk:
                break
            reply += chunk
    except OSError:
        return False
    finally:
        sock.close()
    return reply.rstrip(b"\r\n") == b"OK PONG"


class Start:
    """`rtun server -d`, started in the background under the lock; :meth:`wait` for it.

    Whoever takes the lock first checks again that no daemon answers, then starts one, and the
    lock passes to `rtun server -d` (an inherited descriptor), which holds it until the daemon
    accepts connections. Whoever finds the lock taken waits for it in :meth:`wait`, then checks
    again (and starts one after all if the other start failed).
    """

    def __init__(self, socket: str, config_file: "Optional[str]" = None) -> None:
        import fcntl

        self.socket = socket
        self.config_file = config_file
        self.process: "Optional[subprocess.Popen[bytes]]" = None
        os.makedirs(paths.rtun_dir(), mode=0o700, exist_ok=True)
        self.lock: Optional[int] = os.open(
            os.path.join(paths.rtun_dir(), LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o600
        )
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another rtun is starting it
        self._start_if_needed()

    def _start_if_needed(self) -> None:
        """Holding the lock: start the daemon unless one answers by now."""
        import subprocess

        assert self.lock is not None
        try:
            if answers(self.socket):
                return
            argv = [sys.executable, "-m", "rtun", "server", "-d"]
            argv += ["--config", self.config_file] if self.config_file else []
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(self.lock,),
            )
        finally:
            os.close(self.lock)  # `rtun server -d` holds its own copy until the daemon is ready
            self.lock = None

    def wait(self, timeout: float = 60) -> "Optional[int]":
        """The new daemon's PID, or None if another one answers."""
        import fcntl
        import subprocess

        if self.lock is not None:  # someone else's start: wait for it, then look again
            fcntl.flock(self.lock, fcntl.LOCK_EX)
            self._start_if_needed()
        if self.process is None:
            if answers(self.socket):
                return None
            raise RtunError(f"no rtun daemon answers on {self.socket} (see ~/.rtun/rtun.log)")
        try:
            out, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise RtunError(f"the rtun daemon did not start within {timeout:.0f}s") from None
        said = out.decode("utf-8", "replace").strip()
        if self.process.returncode == 0 and said.isdigit():
            return int(said)
        lines = err.decode("utf-8", "replace").strip().splitlines() or [f"exit {self.process.returncode}"]
        raise RtunError(f"could not start the rtun daemon: {lines[-1].replace('rtun server: ', '', 1)}")
