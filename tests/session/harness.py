"""The session tests' world: a server whose sessions have a home (and a PATH) of the test's,
and laptops that run `rtun ssh` to it.

sshd runs every session as the test runner's own user, so the "server" is this machine with
``SetEnv HOME=...`` in a fresh sshd_config: the remote home is a directory of the test, as each
laptop's home is another (``clean_env`` gives the local commands theirs).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from support.rtun import RTUN, clean_env
from support.sshd import SshKeys, SshServer
from support.wait import wait_until

RTUN_REMOTE = f"{sys.executable} -m rtun"  # the client as a command on the "server"
# `rtun doctor`'s checks, in the order of its lines: those of this computer, then with HOST the server's.
LOCAL_CHECKS = [
    "config",
    "daemon",
    "notifications",
    "opener",
    "browser",
    "clipboard",
    "editor",
    "save directory",
]
REMOTE_CHECKS = ["ssh", "python3", "client", "prompt", "~/.rtun", "stale sockets", "forward"]


class HomeServer(SshServer):
    """sshd on 127.0.0.1 whose sessions get HOME (and PATH, if given) from sshd_config."""

    def __init__(
        self, keys: SshKeys, directory: Path, home: Path, path: Optional[str] = None, alias: str = "srv"
    ) -> None:
        self.home = home
        self.path = path
        super().__init__(keys, directory, alias=alias)

    def _write_configs(self) -> None:
        super()._write_configs()
        values = ["SHLVL=1", f"HOME={self.home}"] + ([f"PATH={self.path}"] if self.path else [])
        lines = [line for line in self.config.read_text().splitlines() if not line.startswith("SetEnv")]
        # sshd takes only the first SetEnv line: all the variables on one.
        # Each in double quotes: a home may hold spaces or "#" (sshd_config reads quotes).
        self.config.write_text("\n".join(lines + ["SetEnv " + " ".join(f'"{v}"' for v in values), ""]))


class Laptop:
    """A computer running `rtun ssh`: its own home, its ssh command line, its daemons."""

    def __init__(self, home: Path, server: SshServer, env: Optional[Dict[str, str]] = None) -> None:
        self.home = home
        self.server = server
        self.extra_env = dict(env or {})
        (home / ".rtun").mkdir(parents=True, exist_ok=True, mode=0o700)

    def env(self, **extra: str) -> Dict[str, str]:
        return clean_env(
            self.home, **{"RTUN_SSH_COMMAND": self.server.ssh_command_line, **self.extra_env, **extra}
        )

    def rtun(
        self, args: List[str], timeout: float = 60, input: Optional[bytes] = None, **extra: str
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            RTUN + args,
            env=self.env(**extra),
            capture_output=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def rtun_argv(self, args: List[str]) -> List[str]:
        return RTUN + args

    def popen(self, args: List[str], **extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            RTUN + args,
            env=self.env(**extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    @property
    def laptop_id(self) -> str:
        return (self.home / ".rtun" / "laptop-id").read_text().strip()

    def started_daemons(self) -> List[int]:
        """PIDs of daemons that `rtun ssh` started here, from their log (still running or not)."""
        return started_daemons(self.home)

    def stop_started_daemons(self) -> None:
        stop_started_daemons(self.home)


def started_daemons(home: Path) -> List[int]:
    """PIDs of daemons that rtun started with ``home`` as HOME, from their log."""
    log = home / ".rtun" / "rtun.log"
    text = log.read_text(errors="replace") if log.exists() else ""
    return sorted({int(pid) for pid in re.findall(r"rtun\[(\d+)\]", text)})


def stop_started_daemons(home: Path) -> None:
    """Stop the daemons `rtun ssh` started (detached, so no test's process holds them)."""
    for pid in started_daemons(home):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        wait_until(lambda: not _alive(pid), timeout=15, what=f"daemon {pid} to stop")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def sockets(home: Path) -> List[Path]:
    """The session sockets in a remote home's ~/.rtun."""
    directory = home / ".rtun"
    return sorted(p for p in directory.glob("rtun.sock.*")) if directory.exists() else []


def sweeps_running(home: Path) -> bool:
    """Whether a sweep (started by a control session) still runs for this remote home."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"rtun-sweep" not in f.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"HOME={home}".encode() in f.read().split(b"\0"):
                    return True
        except OSError:
            continue
    return False
