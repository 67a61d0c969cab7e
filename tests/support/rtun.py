"""Running rtun itself: the daemon as a real process, and the client as a real command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

from support.wait import wait_until

RTUN = [sys.executable, "-m", "rtun"]


def write_config(home: Path, toml: str) -> Path:
    """The daemon's config file under $XDG_CONFIG_HOME (= home/.config, as clean_env sets it)."""
    path = home / ".config" / "rtun" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml)
    return path


def clean_env(home: Path, **extra: str) -> Dict[str, str]:
    """The environment of a user whose home is ``home``, with no rtun settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RTUN_", "XDG_", "DBUS_"))}
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env.update(extra)
    return env


def run_rtun(
    args: List[str], home: Path, input: Optional[bytes] = None, timeout: float = 60, **extra_env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        RTUN + args,
        env=clean_env(home, **extra_env),
        input=input,
        capture_output=True,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def answers_ping(socket_path: Path) -> bool:
    from rtun.client.pump import ClientConnection
    from rtun.errors import RtunError

    try:
        ClientConnection.open(str(socket_path), timeout=1.0).close()
    except RtunError:
        return False
    return True


class RtunDaemon:
    """`rtun server` in the foreground, logging to a file, for one test."""

    def __init__(
        self,
        home: Path,
        save_dir: Path,
        socket_path: Optional[Path] = None,
        extra_args: Optional[List[str]] = None,
        env: Optional[Dict[str, str]] = None,
        diagnostics: bool = False,
    ) -> None:
        self.home = home
        self.save_dir = save_dir
        self.socket = socket_path or home / ".rtun" / "rtun.sock"
        self.log = home / "daemon.log"
        self.extra_args = extra_args or []
        self.env = env or {}
        self.process: Optional[subprocess.Popen] = None
        if diagnostics:  # PID and SHUTDOWN answered: a config file of its own turns them on
            config = home / "diagnostics.toml"
            home.mkdir(parents=True, exist_ok=True)
            config.write_text("[server]\ndiagnostics = true\n")
            self.extra_args = ["--config", str(config)] + self.extra_args

    def start(self) -> "RtunDaemon":
        self.home.mkdir(parents=True, exist_ok=True)
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            RTUN + ["server", "-s", str(self.socket), "-D", str(self.save_dir)] + self.extra_args,
            env=clean_env(self.home, **self.env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_until(self._ready, timeout=15, what="rtun server to answer PING")
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"rtun server exited {self.process.returncode}: {self.log_text()}")
        return answers_ping(self.socket)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)
