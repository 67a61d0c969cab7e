"""The daemon's status file: what `rtun server status`, `stop`, `restart`, `reload` and `rtun doctor`
know of a running daemon, through a local file rather than the socket.

The socket is reachable from every server the user logs in to, so nothing there reveals local
paths or stops or reloads the daemon. Instead the daemon writes ``~/.rtun/server.KEY.json``
(0600, atomically; KEY from the socket's path, so several daemons never collide) at start, on
reload and from its watchdog tick, and removes it when it stops. Commands here read it and signal
its PID (SIGTERM stops, SIGHUP reloads) only once that PID's command line is still the one the
daemon recorded: a stale file never gets an unrelated process signalled.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from rtun import paths
from rtun.daemon import config as settings
from rtun.daemon.config import Config

RESTART_ONLY = ("server.socket", "server.log")  # settings a running daemon cannot take without a restart


@dataclass(frozen=True)
class Launch:
    """What `rtun server` was given: the config file (None: the default one) and the command-line
    settings that override it, on every reload and restart too."""

    config_file: Optional[str] = None
    overrides: Dict[str, Any] = field(default_factory=dict)
    detached: bool = False  # -d: it logs to ~/.rtun/rtun.log unless told otherwise

    def load(self) -> Config:
        return settings.load(self.config_file, **self.overrides)

    def path(self) -> str:
        return self.config_file or paths.config_file()


def status_path(socket_path: str) -> str:
    key = hashlib.sha256(os.fsencode(os.path.abspath(socket_path))).hexdigest()[:16]
    return os.path.join(paths.rtun_dir(), f"server.{key}.json")


def effective(config: Config) -> Dict[str, Any]:
    """Every setting by its config-file name (``actions.paste``), as JSON keeps it."""
    return {
        f"{table}.{key}": json.loads(json.dumps(getattr(config, name)))
        for (table, key), name in settings._KEYS.items()
    }


def digest(config: Config) -> str:
    return hashlib.sha256(json.dumps(effective(config), sort_keys=True).encode()).hexdigest()


def process_command(pid: int) -> Optional[str]:
    """The command line of process ``pid``, or None if there is none (or it is not ours to see)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None  # Linux: no such process
    except OSError:
        return None
    try:  # macOS and the BSDs
        done = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


class StatusFile:
    """The daemon's side: its status, rewritten whole each time."""

    def __init__(self, launch: Launch, config: Config) -> None:
        self.launch = launch
        self.path = status_path(config.socket)
        self.pid = os.getpid()
        self.started = time.time()
        self.command = process_command(self.pid)
        self.reloads = 0
        self.last_reload: Dict[str, Any] = {}

    def write(
        self, config: Config, connections: int, requests: int, transfers: int, forwards: List[Dict[str, int]]
    ) -> None:
        document = {
            "pid": self.pid,
            "command": self.command,
            "socket": config.socket,
            "config_file": self.launch.path(),
            "config_digest": digest(config),
            "settings": effective(config),
            "log": config.log or (paths.default_log() if self.launch.detached else None),
            "save_dir": config.save_dir,
            "started": self.started,
            "updated": time.time(),
            "connections": connections,
            "requests": requests,
            "transfers": transfers,
            "forwards": forwards,
            "launch": {
                "config_file": self.launch.config_file,
                "overrides": self.launch.overrides,
                "detached": self.launch.detached,
            },
            "service": os.environ.get("RTUN_SERVICE") or None,
            "reloads": self.reloads,
            "last_reload": self.last_reload,
        }
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        temporary = f"{self.path}.{self.pid}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
        os.replace(temporary, self.path)

    def remove(self) -> None:
        """At stop: unless another daemon has written its own since (same socket, later start)."""
        found = read(self.path)
        if found is not None and found.get("pid") == self.pid:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def read(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(document, dict) or not isinstance(document.get("pid"), int):
        return None
    return document


def alive(document: Dict[str, Any]) -> bool:
    """Whether the status file's PID is still the daemon that wrote it: the same command line,
    so a PID reused by any other process is never taken for it (nor signalled)."""
    pid, command = document["pid"], document.get("command")
    if pid <= 1 or not isinstance(command, str):
        return False
    return process_command(pid) == command


def running(socket_path: str) -> Optional[Dict[str, Any]]:
    """The status of the daemon on ``socket_path`` if it is running, else None."""
    document = read(status_path(socket_path))
    return document if document is not None and alive(document) else None


def launch_of(document: Dict[str, Any]) -> Launch:
    recorded = document.get("launch")
    if not isinstance(recorded, dict):
        return Launch()
    config_file = recorded.get("config_file")
    overrides = recorded.get("overrides")
    return Launch(
        config_file if isinstance(config_file, str) else None,
        {k: v for k, v in overrides.items() if k in ("socket", "log", "save_dir", "verbose")}
        if isinstance(overrides, dict)
        else {},
        recorded.get("detached") is True,
    )


def changed(before: Dict[str, Any], after: Dict[str, Any]) -> List[str]:
    return sorted(key for key in set(before) | set(after) if before.get(key) != after.get(key))


def config_drift(socket_path: str) -> Optional[Tuple[str, str]]:
    """For `rtun doctor`: how the running daemon's settings differ from its config file now, and
    what applies the file; None if no daemon keeps a status file there, the settings are the
    same, or the file does not load (the config check says why)."""
    document = running(socket_path)
    if document is None or not isinstance(document.get("settings"), dict):
        return None
    from rtun.errors import RtunError

    launch = launch_of(document)
    try:
        now = launch.load()
    except RtunError:
        return None
    if digest(now) == document.get("config_digest"):
        return None
    keys = changed(document["settings"], effective(now))
    detail = (
        f"the running daemon (PID {document['pid']}) does not use {launch.path()} as it is now "
        f"({', '.join(keys) or 'settings'} differ): it reads the file at start and on reload"
    )
    if keys and all(key in RESTART_ONLY for key in keys):
        return detail, "`rtun server restart` applies it"
    return detail, "`rtun server reload` applies it (no transfer in flight is lost)"


def describe_reload(result: Dict[str, Any]) -> List[str]:
    """The lines `rtun server reload` prints for the daemon's ``last_reload``."""
    if result.get("error"):
        return [f"not reloaded, the daemon keeps its settings: {result['error']}"]
    keys = result.get("changed") or []
    lines = [f"reloaded: {', '.join(keys)} changed" if keys else "reloaded: no setting changed"]
    later = result.get("needs_restart") or []
    if later:
        lines.append(f"not applied until `rtun server restart`: {', '.join(later)}")
    return lines


def uptime(document: Dict[str, Any]) -> float:
    started = document.get("started")
    return max(0.0, time.time() - started) if isinstance(started, (int, float)) else 0.0
