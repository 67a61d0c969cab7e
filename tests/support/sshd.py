"""A throw-away OpenSSH server on 127.0.0.1, and the client configuration that reaches it."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

from support.wait import wait_until

if TYPE_CHECKING:
    from support.netns import Namespace

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refused(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing listens on host:port (a connection is refused)."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def banner(port: int, timeout: float = 1.0, host: str = "127.0.0.1") -> bytes:
    """The first bytes a TCP service on host:port sends, or b"" if none."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            return s.recv(64)
    except OSError:
        return b""


class SshKeys:
    """The user key pair and host key shared by every sshd of a test run."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.host_key = directory / "host_ed25519"
        self.user_key = directory / "id_ed25519"
        for key in (self.host_key, self.user_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        self.authorized_keys = directory / "authorized_keys"
        self.authorized_keys.write_text(Path(f"{self.user_key}.pub").read_text())
        self.host_public = Path(f"{self.host_key}.pub").read_text().split()[:2]


class SshServer:
    """sshd -D on a port of 127.0.0.1, plus an ssh_config with a ``Host`` alias for it. In a
    ``namespace``, sshd and its sessions run there, reached at the namespace's address: the
    server then has a loopback of its own."""

    def __init__(
        self,
        keys: SshKeys,
        directory: Path,
        alias: str = "rtun-test",
        port: Optional[int] = None,
        namespace: Optional["Namespace"] = None,
    ):
        directory.mkdir(parents=True, exist_ok=True)
        self.keys = keys
        self.directory = directory
        self.alias = alias
        self.namespace = namespace
        self.host = namespace.ns_ip if namespace is not None else "127.0.0.1"
        self.port = port or free_port()
        self.user = (
            os.environ.get("USER")
            or subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        )
        self.config = directory / "sshd_config"
        self.log = directory / "sshd.log"
        self.known_hosts = directory / "known_hosts"
        self.client_config = directory / "ssh_config"
        self.process: Optional[subprocess.Popen] = None
        self._write_configs()

    def _write_configs(self) -> None:
        self.config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    f"ListenAddress {self.host}",
                    f"HostKey {self.keys.host_key}",
                    f"PidFile {self.directory / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.keys.authorized_keys}",
                    "StrictModes no",
                    "UsePAM no",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    "PermitRootLogin yes",
                    "AllowTcpForwarding yes",
                    "AllowStreamLocalForwarding yes",
                    "GatewayPorts no",
                    "MaxStartups 200",
                    "MaxSessions 100",
                    "Subsystem sftp internal-sftp",
                    # Keep sessions off the test runner's own ~/.bashrc: bash reads it for ssh
                    # commands only at shell level 1. (One here runs `pyenv init`: 0.3 s a
                    # session, and a session killed mid-rehash leaves a lock that stalls every
                    # later login for 60 s.)
                    "SetEnv SHLVL=1",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {' '.join(self.keys.host_public)}\n")
        self.client_config.write_text(
            "\n".join(
                [
                    f"Host {self.alias}",
                    f"    HostName {self.host}",
                    f"    Port {self.port}",
                    f"    User {self.user}",
                    f"    IdentityFile {self.keys.user_key}",
                    "    IdentitiesOnly yes",
                    f"    UserKnownHostsFile {self.known_hosts}",
                    "    GlobalKnownHostsFile /dev/null",
                    "    StrictHostKeyChecking yes",
                    "    BatchMode yes",
                    "    LogLevel ERROR",
                    "    ControlMaster no",
                    "    ControlPath none",
                    "",
                ]
            )
        )

    @property
    def ssh_command(self) -> List[str]:
        """ssh with this server's client config: the value of RTUN_SSH_COMMAND, as a list."""
        return ["ssh", "-F", str(self.client_config)]

    @property
    def ssh_command_line(self) -> str:
        return shlex.join(self.ssh_command)

    def start(self) -> "SshServer":
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            self.exec_argv(SSHD, "-D", "-e", "-f", str(self.config)),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        wait_until(self._ready, timeout=15, what=f"sshd on port {self.port}")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"sshd exited with {self.process.returncode}: {self.log.read_text()}")
        return banner(self.port, host=self.host).startswith(b"SSH-2.0-")

    def exec_argv(self, *argv: str) -> List[str]:
        """A command line run on this server's network (its namespace's, if it has one)."""
        return self.namespace.exec_argv(*argv) if self.namespace is not None else list(argv)

    def stop(self) -> None:
        """Stop the listener and every session it started, as a crashed server would lose them."""
        if self.process is None:
            return
        # Each session is a child of the listener in a session of its own; end those first.
        children = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True
        ).stdout.split()
        for pid in children:
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def run(self, command: str, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.ssh_command + [self.alias, command],
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )


class Forward:
    """``ssh -R remote.sock:local.sock``: the forward an rtun user logs in with.

    By default it is an interactive login (a pty running a long sleep), as a user's session is:
    OpenSSH turns on TCP_NODELAY only for interactive sessions, and a forward-only ``ssh -N``
    connection adds a ~40 ms Nagle delay to every request.
    """

    def __init__(
        self,
        server: SshServer,
        remote: Path,
        local: Path,
        extra: Optional[List[str]] = None,
        interactive: bool = True,
    ):
        self.server = server
        self.remote = remote
        self.local = local
        session = ["-tt", server.alias, "sleep 86400"] if interactive else ["-N", server.alias]
        self.process = subprocess.Popen(
            server.ssh_command
            + (extra or [])
            + ["-o", "ExitOnForwardFailure=yes", "-R", f"{remote}:{local}"]
            + session,
            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_up(self, timeout: float = 15) -> "Forward":
        def listening() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"ssh -R exited: {self.process.stderr.read().decode()}")
            # The file appears when sshd binds it, a moment before it listens: connect.
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(self.remote))
                except OSError:
                    return False
            return True

        wait_until(listening, timeout=timeout, what=f"ssh -R to listen on {self.remote}")
        return self

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # ssh itself is not under test here
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdin, self.process.stderr):
            if stream is not None:
                stream.close()
