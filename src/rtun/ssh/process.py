"""Running ssh: ``ssh -G``, requests with bounded output, and the ``-N`` control master the
tunnel agent and `rtun connect --via` keep, with the requests over it (commands, forwards,
banner probes through the tunnel). The command lines are argv.py's, the banner checks
banner.py's, what ssh printed is shown through rtun.protocol.peertext.
"""

from __future__ import annotations

import os
import select
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from rtun.protocol import peertext
from rtun.ssh import argv as sshargv
from rtun.ssh.argv import SshFailedError
from rtun.ssh.banner import banners, read_banner
from rtun.ssh.hints import exit_reason

MUX_OPTIONS = ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]  # no prompt, no chatter
PROBE_BATCH = 100  # forwards per probe round: under ssh's listen backlog (128) and any fd limit


def effective_config(base: Sequence[str], destination: str, timeout: float = 10) -> Dict[str, str]:
    """``ssh -G``: the configuration ssh would use for ``destination`` (keys lower-case)."""
    try:
        out = subprocess.run(
            sshargv.config_argv(base, destination),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return sshargv.parse_config(out.stdout)


@dataclass
class Done:
    """What one ssh request gave back."""

    returncode: Optional[int]
    stdout: bytes
    stderr: bytes
    truncated: bool = False  # stdout went past the limit and was cut there


def run_bounded(argv: Sequence[str], data: bytes, timeout: float, limit: Optional[int] = None) -> Done:
    """Run ``argv`` with ``data`` on its stdin. Its stdout is cut after ``limit`` bytes (and the
    process killed then), its stderr kept to the last 4000 bytes; a timeout is exit -1."""
    try:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except OSError as exc:
        return Done(127, b"", str(exc).encode())
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    fds = {process.stdout.fileno(): "out", process.stderr.fileno(): "err"}
    out: List[bytes] = []
    err, size, truncated, timed_out = b"", 0, False, False
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for fd in fds:
            selector.register(fd, selectors.EVENT_READ)
        if view:
            os.set_blocking(process.stdin.fileno(), False)
            selector.register(process.stdin.fileno(), selectors.EVENT_WRITE)
        else:
            process.stdin.close()
        while selector.get_map() and not truncated:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            for key, _ in selector.select(remaining):
                fd = key.fd
                if fd not in fds:  # stdin: feed it; a reader that stops early (head -c) is fine
                    try:
                        view = view[os.write(fd, view[:65536]) :]
                    except OSError:
                        view = view[:0]
                    if not view:
                        selector.unregister(fd)
                        process.stdin.close()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    selector.unregister(fd)
                elif fds[fd] == "out":
                    out.append(chunk)
                    size += len(chunk)
                    truncated = limit is not None and size > limit
                else:
                    err = (err + chunk)[-4000:]
    if process.poll() is None:
        process.kill()
    process.wait()
    for stream in (process.stdin, process.stdout, process.stderr):
        stream.close()
    stdout = b"".join(out)[:limit] if truncated else b"".join(out)
    if timed_out:
        return Done(-1, stdout, err + b"timed out", truncated)
    return Done(process.returncode, stdout, err, truncated)


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

    def __init__(
        self, base: Sequence[str], destination: str, options: Sequence[str], extra: Sequence[str] = ()
    ) -> None:
        self.base = list(base)
        self.destination = destination
        self.directory = tempfile.mkdtemp(prefix="rtun-")
        self.control_path = os.path.join(self.directory, "ctl")
        self.argv = sshargv.master_argv(
            self.base, self.control_path, destination, list(options) + list(extra)
        )
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.stderr_text = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
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
        return peertext.lines(text)

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
        return exit_reason(self.returncode, self.stderr_text)

    def wait_ready(
        self, timeout: float, interrupted: Callable[[], bool] = lambda: False, wake_fd: Optional[int] = None
    ) -> bool:
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

    def mux(
        self,
        extra: Sequence[str],
        command: Optional[str] = None,
        data: bytes = b"",
        timeout: float = 15,
        limit: Optional[int] = None,
    ) -> Done:
        argv = sshargv.mux_argv(
            self.base, self.control_path, self.destination, MUX_OPTIONS + list(extra), command
        )
        return run_bounded(argv, data, timeout, limit)

    def run(self, command: str, data: bytes = b"", timeout: float = 15, limit: Optional[int] = None) -> Done:
        """A command on the server, over the master (its stdout cut after ``limit`` bytes)."""
        return self.mux(["-T"], command, data, timeout, limit)

    def forward(self, spec: str, timeout: float = 15) -> int:
        """Add ``-R spec``; returns the server's port (the allocated one for port 0)."""
        done = self.mux(["-O", "forward", "-R", spec], timeout=timeout)
        if done.returncode != 0:
            raise SshFailedError(
                peertext.last_line(done.stderr.decode("utf-8", "replace")) or "forward refused"
            )
        return sshargv.forwarded_port(spec, done.stdout.decode("ascii", "replace"))

    def cancel(self, spec: str, timeout: float = 15) -> bool:
        """Remove the ``-R spec`` forward (as added, with the port the server allocated)."""
        return self.mux(["-O", "cancel", "-R", spec], timeout=timeout).returncode == 0

    def probe(self, host: str, port: int, timeout: float) -> bool:
        """Reach ``host:port`` from the server over the master (``ssh -W``); True if an sshd
        banner comes back within ``timeout``."""
        deadline = time.monotonic() + timeout
        argv = sshargv.mux_argv(
            self.base, self.control_path, self.destination, MUX_OPTIONS + ["-W", f"{host}:{port}"]
        )
        try:
            process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
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

    def probe_many(self, ports: Sequence[int], timeout: float) -> Dict[int, bool]:
        """Which ports on the server's loopback answer with an sshd banner, without a process
        per port: each round adds a local forward per port over the master (UNIX sockets in
        this master's private directory), connects to all at once, and cancels them."""
        found: Dict[int, bool] = {}
        unique = sorted(set(ports))
        for start in range(0, len(unique), PROBE_BATCH):
            chunk = unique[start : start + PROBE_BATCH]
            paths = [os.path.join(self.directory, f"p{port}") for port in chunk]
            specs = [word for path, port in zip(paths, chunk) for word in ("-L", f"{path}:127.0.0.1:{port}")]
            if self.mux(["-O", "forward"] + specs).returncode != 0:
                found.update((port, self.probe("127.0.0.1", port, timeout)) for port in chunk)
                continue
            try:
                found.update(zip(chunk, banners(paths, timeout)))
            finally:
                self.mux(["-O", "cancel"] + specs)
                for path in paths:
                    try:
                        os.unlink(path)
                    except OSError:
                        pass
        return found

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
