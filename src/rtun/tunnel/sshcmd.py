"""Driving the OpenSSH client: argv building, the control master, and hints for ssh's failures.

Every ssh rtun runs starts from ``RTUN_SSH_COMMAND`` (a shell-quoted command line, default
``ssh``), so the user's keys, agent, ssh_config and known_hosts apply. The argv builders are pure
functions; :class:`Master` runs them.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence

from rtun.errors import RtunError

# Safe defaults for the tunnel's connection. Host key checking is never turned off: BatchMode
# makes an unknown server key a failure, reported with a hint to accept it once by hand.
SERVER_ALIVE_INTERVAL = 3  # with CountMax 2, a silent server is noticed within ~9 s
SERVER_ALIVE_COUNT_MAX = 2
CONNECT_TIMEOUT = 10


class SshNotFoundError(RtunError):
    """The ssh client is missing: install OpenSSH's client, or point RTUN_SSH_COMMAND at it."""

    exit_code = 127


class SshFailedError(RtunError):
    """ssh could not do what rtun asked; the message carries ssh's own words and a hint."""


def ssh_base(environ: Optional[Dict[str, str]] = None) -> List[str]:
    """The user's ssh command line (``RTUN_SSH_COMMAND``, default ``ssh``) as an argv prefix."""
    env = os.environ if environ is None else environ
    line = env.get("RTUN_SSH_COMMAND", "").strip() or "ssh"
    try:
        argv = shlex.split(line)
    except ValueError as exc:
        raise SshFailedError(f"RTUN_SSH_COMMAND is not a valid command line: {exc}") from None
    if shutil.which(argv[0]) is None:
        raise SshNotFoundError(
            f"ssh client {argv[0]!r} not found: install openssh-client or set RTUN_SSH_COMMAND"
        )
    return argv


def tunnel_options(
    alive_interval: int = SERVER_ALIVE_INTERVAL,
    alive_count: int = SERVER_ALIVE_COUNT_MAX,
    connect_timeout: int = CONNECT_TIMEOUT,
) -> List[str]:
    """The ``-o`` options of the agent's connection (command-line options beat ssh_config)."""
    options = {
        "BatchMode": "yes",
        "ExitOnForwardFailure": "yes",
        "ServerAliveInterval": str(alive_interval),
        "ServerAliveCountMax": str(alive_count),
        "ConnectTimeout": str(connect_timeout),
        "ClearAllForwardings": "yes",  # forwards from ssh_config would clash between restarts
        "RequestTTY": "no",
        "PermitLocalCommand": "no",
        "LogLevel": "ERROR",
    }
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def master_argv(base: Sequence[str], destination: str, control_path: str, options: Sequence[str]) -> List[str]:
    """``ssh -M -N``: the one authenticated connection every later request rides on."""
    return list(base) + [
        "-M", "-S", control_path, "-N",
        "-o", "ControlPersist=no",
    ] + list(options) + ["--", destination]


def mux_argv(base: Sequence[str], destination: str, control_path: str, extra: Sequence[str],
             command: Optional[str] = None) -> List[str]:
    """A client of the master. ``ProxyCommand=false`` makes it fail rather than open a new
    connection of its own when the master is gone."""
    argv = list(base) + [
        "-S", control_path, "-o", "ControlMaster=no", "-o", "ProxyCommand=false",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
    ] + list(extra) + ["--", destination]
    if command is not None:
        argv.append(command)
    return argv


def remote_forward_spec(port: int, local_host: str, local_port: int) -> str:
    """``-R`` bound to the server's loopback only, to the machine's own sshd."""
    host = f"[{local_host}]" if ":" in local_host else local_host
    return f"127.0.0.1:{port}:{host}:{local_port}"


# ssh prints its own reason on stderr; these turn the common ones into advice.
_HINTS = [
    ("Host key verification failed",
     "the server's host key is unknown or changed: check it, then accept it once by hand with "
     "`ssh SERVER true` as this user (see docs/tunnel.md)"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED",
     "the server's host key changed: verify it before removing the old line from known_hosts"),
    ("Permission denied",
     "the server refused the login: add this user's public key to ~/.ssh/authorized_keys on the "
     "server (BatchMode is on, so no password or passphrase prompt can appear)"),
    ("Could not resolve hostname", "the server name does not resolve: check DNS or the ssh_config alias"),
    ("Connection refused", "nothing listens on the server's ssh port: is sshd running there?"),
    ("timed out", "no answer from the server: check the network and any firewall in between"),
    ("No route to host", "the network cannot reach the server"),
    ("Network is unreachable", "this machine has no network yet; rtun retries on its own"),
    ("port forwarding failed", "the server refused the port: it is in use, or forbidden by "
     "permitlisten/AllowTcpForwarding"),
    ("Connection closed by", "the server closed the connection (MaxStartups, a firewall, or sshd restarting)"),
    ("not responding", "the server stopped answering keepalives; the connection was dropped"),
]

_EXIT_HINTS = {
    255: "ssh failed to connect or was disconnected",
    127: "the ssh command was not found",
    126: "the ssh command could not be run",
}


def hint(returncode: Optional[int], stderr: str) -> str:
    """One line of advice for an ssh failure, from its exit code and what it printed."""
    for needle, advice in _HINTS:
        if needle.lower() in stderr.lower():
            return advice
    if returncode is not None and returncode < 0:
        return f"ssh was killed by signal {-returncode}"
    return _EXIT_HINTS.get(returncode or 0, f"ssh exited with status {returncode}")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def effective_config(base: Sequence[str], destination: str, timeout: float = 10) -> Dict[str, str]:
    """``ssh -G``: the configuration ssh would use for ``destination`` (keys lower-case)."""
    try:
        out = subprocess.run(list(base) + ["-G", "--", destination], capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    config: Dict[str, str] = {}
    for line in out.stdout.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key.lower(), value.strip())
    return config


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
        self.argv = master_argv(self.base, destination, self.control_path, list(options) + list(extra))
        self.process: Optional[subprocess.Popen] = None
        self.stderr_text = ""

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        os.set_blocking(self.process.stderr.fileno(), False)

    @property
    def stderr_fd(self) -> Optional[int]:
        if self.process is None or self.process.stderr is None or self.process.stderr.closed:
            return None
        return self.process.stderr.fileno()

    def drain(self) -> List[str]:
        """Lines ssh printed since the last call (non-blocking)."""
        fd = self.stderr_fd
        if fd is None:
            return []
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                break
            except OSError:
                break
            if not chunk:  # ssh closed stderr: it is exiting
                self.process.stderr.close()
                break
            chunks.append(chunk)
        text = b"".join(chunks).decode("utf-8", "replace")
        self.stderr_text = (self.stderr_text + text)[-4000:]
        return [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

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
            timeout: float = 15) -> subprocess.CompletedProcess:
        argv = mux_argv(self.base, self.destination, self.control_path, extra, command)
        try:
            return subprocess.run(argv, input=input if input is not None else b"", capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, -1, b"", b"timed out")

    def run(self, command: str, input: Optional[bytes] = None, timeout: float = 15) -> subprocess.CompletedProcess:
        """A shell command on the server, over the master."""
        return self.mux(["-T"], command, input, timeout)

    def forward(self, spec: str, timeout: float = 15) -> int:
        """Add ``-R spec``; returns the server's port (the allocated one for port 0)."""
        done = self.mux(["-O", "forward", "-R", spec], timeout=timeout)
        if done.returncode != 0:
            raise SshFailedError(last_line(done.stderr.decode("utf-8", "replace")) or "forward refused")
        printed = done.stdout.decode("ascii", "replace").strip()
        if printed.isdigit():
            return int(printed)
        return int(spec.split(":")[1])

    def cancel(self, spec: str, timeout: float = 15) -> bool:
        """Remove the ``-R spec`` forward (as added, with the port the server allocated)."""
        return self.mux(["-O", "cancel", "-R", spec], timeout=timeout).returncode == 0

    def probe(self, host: str, port: int, timeout: float) -> bool:
        """Reach ``host:port`` from the server over the master; True if an sshd banner comes back."""
        argv = mux_argv(self.base, self.destination, self.control_path, ["-W", f"{host}:{port}"])
        return read_banner(argv, timeout)

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


def read_banner(argv: Sequence[str], timeout: float) -> bool:
    """Run ``argv`` (an ``ssh -W``) and wait for an ``SSH-2.0-`` line on its stdout."""
    try:
        process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL)
    except OSError:
        return False
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while b"\n" not in data and len(data) < 256:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            ready, _, _ = select.select([process.stdout], [], [], remaining)
            if not ready:
                break
            chunk = os.read(process.stdout.fileno(), 256)
            if not chunk:
                break
            data += chunk
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdin.close()
        process.stdout.close()
    return data.startswith(b"SSH-2.0-") or data.startswith(b"SSH-1.99-")


_BANNER_RE = re.compile(rb"^SSH-(2\.0|1\.99)-")


def tcp_banner(host: str, port: int, timeout: float) -> bool:
    """A direct TCP connection to ``host:port`` answers with an sshd banner."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            data = b""
            deadline = time.monotonic() + timeout
            while b"\n" not in data and len(data) < 256 and time.monotonic() < deadline:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return False
    return bool(_BANNER_RE.match(data))
