"""Running ssh: the user's ssh command, ``ssh -G``, the control master and the requests over it,
and the one sshd banner check (over TCP or through ``ssh -W``). The command lines are built in
sshargv.py.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import IO, Callable, Dict, List, Mapping, Optional, Sequence, Union

from rtun.tunnel import sshargv
from rtun.tunnel.sshargv import SshFailedError, SshNotFoundError


def ssh_base(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """The user's ssh command line (``RTUN_SSH_COMMAND``, default ``ssh``) as an argv prefix."""
    env = os.environ if environ is None else environ
    argv = sshargv.split_command(env.get("RTUN_SSH_COMMAND", ""))
    if shutil.which(argv[0]) is None:
        raise SshNotFoundError(
            f"ssh client {argv[0]!r} not found: install openssh-client or set RTUN_SSH_COMMAND"
        )
    return argv


def effective_config(base: Sequence[str], destination: str, timeout: float = 10) -> Dict[str, str]:
    """``ssh -G``: the configuration ssh would use for ``destination`` (keys lower-case)."""
    try:
        out = subprocess.run(list(base) + ["-G", "--", destination], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return sshargv.parse_config(out.stdout)


def read_banner(stream: Union[int, IO[bytes], socket.socket], deadline: float,
                clock: Callable[[], float] = time.monotonic) -> bool:
    """Read from ``stream`` (a descriptor, a pipe or a socket) until a line ends, the stream
    ends or ``deadline`` (on ``clock``) passes; True if what came is an sshd banner."""
    fd = stream if isinstance(stream, int) else stream.fileno()
    data = b""
    while b"\n" not in data and len(data) < sshargv.BANNER_MAX:
        remaining = deadline - clock()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        try:
            chunk = os.read(fd, sshargv.BANNER_MAX)
        except BlockingIOError:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return sshargv.is_banner(data)


def tcp_banner(host: str, port: int, timeout: float) -> bool:
    """A direct TCP connection to ``host:port`` answers with an sshd banner within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return read_banner(sock, deadline)
    except OSError:
        return False


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    os.setsid()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:
            pass


class Master:
    """``ssh -M -N`` to a server, with a private control socket, and the requests made over it.

    The master runs in a session of its own (a Ctrl-C or SIGTERM meant for rtun does not cut the
    connection before rtun has marked itself offline) and, on Linux, dies with rtun.
    """

    def __init__(self, base: Sequence[str], destination: str, options: Sequence[str],
                 extra: Sequence[str] = ()) -> None:
        self.base = list(base)
        self.destination = destination
        self.directory = tempfile.mkdtemp(prefix="rtun-")
        self.control_path = os.path.join(self.directory, "ctl")
        self.argv = sshargv.master_argv(self.base, destination, self.control_path,
                                        list(options) + list(extra))
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.stderr_text = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        assert self.process.stderr is not None
        os.set_blocking(self.process.stderr.fileno(), False)

    @property
    def stderr_fd(self) -> Optional[int]:
        if self.process is None or self.process.stderr is None or self.process.stderr.closed:
            return None
        return self.process.stderr.fileno()

    @property
    def returncode(self) -> Optional[int]:
        return self.process.poll() if self.process is not None else None

    def drain(self) -> List[str]:
        """Lines ssh printed since the last call (non-blocking)."""
        fd = self.stderr_fd
        if fd is None or self.process is None or self.process.stderr is None:
            return []
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # BlockingIOError: nothing more for now
                break
            if not chunk:  # ssh closed stderr: it is exiting
                self.process.stderr.close()
                break
            chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8", "replace")
        self.stderr_text = (self.stderr_text + text)[-4000:]
        return sshargv.lines(text)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def settle(self, timeout: float = 2.0) -> bool:
        """After ssh closed its stderr, give it a moment to exit; True if it did."""
        if self.process is None:
            return True
        try:
            self.process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def exit_reason(self) -> str:
        """Why ssh ended (or failed to get ready), in one line with advice."""
        if self.alive():
            self.settle()
        self.drain()
        return sshargv.exit_reason(self.returncode, self.stderr_text)

    def wait_ready(self, timeout: float, interrupted: Callable[[], bool] = lambda: False,
                   wake_fd: Optional[int] = None) -> bool:
        """Wait until the control socket exists (ssh is connected and authenticated)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not interrupted():
            if os.path.exists(self.control_path):
                return True
            if not self.alive():
                self.drain()
                return False
            fds = [fd for fd in (self.stderr_fd, wake_fd) if fd is not None]
            ready, _, _ = select.select(fds, [], [], 0.05)
            if self.stderr_fd in ready:
                self.drain()
        return os.path.exists(self.control_path) and self.alive()

    def mux(self, extra: Sequence[str], command: Optional[str] = None, input: Optional[bytes] = None,
            timeout: float = 15) -> "subprocess.CompletedProcess[bytes]":
        argv = sshargv.mux_argv(self.base, self.destination, self.control_path, extra, command)
        try:
            return subprocess.run(argv, input=input if input is not None else b"", capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, -1, b"", b"timed out")

    def run(self, command: str, input: Optional[bytes] = None,
            timeout: float = 15) -> "subprocess.CompletedProcess[bytes]":
        """A shell command on the server, over the master."""
        return self.mux(["-T"], command, input, timeout)

    def forward(self, spec: str, timeout: float = 15) -> int:
        """Add ``-R spec``; returns the server's port (the allocated one for port 0)."""
        done = self.mux(["-O", "forward", "-R", spec], timeout=timeout)
        if done.returncode != 0:
            raise SshFailedError(sshargv.last_line(done.stderr.decode("utf-8", "replace")) or "forward refused")
        return sshargv.forwarded_port(spec, done.stdout.decode("ascii", "replace"))

    def cancel(self, spec: str, timeout: float = 15) -> bool:
        """Remove the ``-R spec`` forward (as added, with the port the server allocated)."""
        return self.mux(["-O", "cancel", "-R", spec], timeout=timeout).returncode == 0

    def probe(self, host: str, port: int, timeout: float) -> bool:
        """Reach ``host:port`` from the server over the master (``ssh -W``); True if an sshd
        banner comes back within ``timeout``."""
        deadline = time.monotonic() + timeout
        argv = sshargv.mux_argv(self.base, self.destination, self.control_path, ["-W", f"{host}:{port}"])
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
        except OSError:
            return False
        assert process.stdin is not None and process.stdout is not None
        try:
            return read_banner(process.stdout, deadline)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            process.stdin.close()
            process.stdout.close()

    def close(self, timeout: float = 5) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            self.drain()
            if self.process.stderr is not None:
                self.process.stderr.close()
        shutil.rmtree(self.directory, ignore_errors=True)
