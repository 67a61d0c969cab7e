"""Start at boot: a systemd unit (user or system) or a launchd job that runs `rtun tunnel`.

Rendering is pure (unit text from an argv); install writes the file and enables it with
systemctl or launchctl; ``--dry-run`` prints what would be written and run.
"""

from __future__ import annotations

import os
import plistlib
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from rtun import paths
from rtun.errors import RtunError

UNIT = "rtun-tunnel.service"
LABEL = "org.rtun.tunnel"


class ServiceError(RtunError):
    """Writing or enabling the boot service failed; the message names the file and command."""


@dataclass
class Service:
    kind: str  # "systemd" or "launchd"
    system: bool
    path: str
    content: str
    enable: List[List[str]] = field(default_factory=list)
    disable: List[List[str]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def default_kind() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def this_rtun() -> "Tuple[List[str], Dict[str, str]]":
    """How a service runs the very rtun that is running now, however it was installed, and the
    environment that needs: this Python (a virtual environment's included) with ``-m rtun``, or
    with the single-file client's path (a zipapp, which ``-m rtun`` cannot import), and
    PYTHONPATH where the package is found only through it."""
    import rtun

    package = os.path.dirname(os.path.abspath(rtun.__file__))
    archive = package
    while archive != os.path.dirname(archive) and not os.path.exists(archive):
        archive = os.path.dirname(archive)  # inside a zip: climb to the archive itself
    if os.path.isfile(archive):
        return [sys.executable, archive], {}
    parent = os.path.dirname(package)
    given = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [sys.executable, "-m", "rtun"], ({"PYTHONPATH": parent} if parent in given else {})


def agent_argv(server: str, options: Sequence[str]) -> List[str]:
    """The command the service runs: this rtun's ``tunnel``."""
    return this_rtun()[0] + ["tunnel"] + list(options) + [server]


_PLAIN = re.compile(r"[A-Za-z0-9_./:@=,+-]+")


def systemd_quote(word: str) -> str:
    """One ExecStart= word: quoted where needed; % and $ escaped for systemd's own expansion."""
    word = word.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_systemd(
    argv: Sequence[str], env: Dict[str, str], server: str, system: bool, run_as: Optional[str] = None
) -> str:
    unit = [
        "[Unit]",
        f"Description=rtun reverse SSH tunnel to {server}",
        "Documentation=man:ssh(1)",
    ]
    if system:  # the user manager has no network-online.target; the agent retries anyway
        unit += ["After=network-online.target", "Wants=network-online.target"]
    unit += [
        "# Never stop retrying: no start-limit lockout.",
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
    ]
    if system and run_as:
        unit.append(f"User={run_as}")
    unit.append("Environment=PYTHONUNBUFFERED=1")
    for key, value in sorted(env.items()):
        unit.append("Environment=" + systemd_quote(f"{key}={value}"))
    unit += [
        "ExecStart=" + " ".join(systemd_quote(w) for w in argv),
        "Restart=always",
        "RestartSec=5",
        "# SIGTERM to rtun alone, so it can mark itself offline over its ssh before ssh ends.",
        "KillMode=mixed",
        "TimeoutStopSec=20",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
        "",
    ]
    return "\n".join(unit)


def render_launchd(
    argv: Sequence[str], env: Dict[str, str], log_path: str, system: bool, run_as: Optional[str] = None
) -> str:
    job: Dict[str, object] = {
        "Label": LABEL,
        "ProgramArguments": list(argv),
        "RunAtLoad": True,
        "KeepAlive": True,
        "ThrottleInterval": 10,
        "ProcessType": "Background",
        "StandardErrorPath": log_path,
        "EnvironmentVariables": dict(env, PYTHONUNBUFFERED="1"),
    }
    if system and run_as:
        job["UserName"] = run_as
    return plistlib.dumps(job).decode("utf-8")


def plan(
    server: str, options: Sequence[str], kind: str, system: bool, run_as: Optional[str], env: Dict[str, str]
) -> Service:
    argv = agent_argv(server, options)
    env = dict(this_rtun()[1], **env)
    if kind == "systemd":
        if system:
            path = os.path.join("/etc/systemd/system", UNIT)
            ctl = ["systemctl"]
        else:
            path = os.path.join(paths.config_home(), "systemd", "user", UNIT)
            ctl = ["systemctl", "--user"]
        service = Service(
            "systemd",
            system,
            path,
            render_systemd(argv, env, server, system, run_as),
            enable=[ctl + ["daemon-reload"], ctl + ["enable", "--now", UNIT]],
            disable=[ctl + ["disable", "--now", UNIT], ctl + ["daemon-reload"]],
        )
        if not system:
            service.notes.append(
                "a user unit runs only while you are logged in, unless lingering is on: "
                "`sudo loginctl enable-linger $USER` starts it at boot"
            )
        service.notes.append(f"logs: journalctl {'' if system else '--user '}-u {UNIT} -f")
        return service
    if kind == "launchd":
        if system:
            path = f"/Library/LaunchDaemons/{LABEL}.plist"
            log = "/Library/Logs/rtun-tunnel.log"
        else:
            path = os.path.join(paths.home(), "Library", "LaunchAgents", f"{LABEL}.plist")
            log = os.path.join(paths.home(), "Library", "Logs", "rtun-tunnel.log")
        service = Service(
            "launchd",
            system,
            path,
            render_launchd(argv, env, log, system, run_as),
            enable=[["launchctl", "load", "-w", path]],
            disable=[["launchctl", "unload", "-w", path]],
        )
        service.notes.append(f"logs: {log}")
        return service
    raise ServiceError(f"unknown service manager {kind!r}")


def _run_all(commands: List[List[str]], check: bool) -> Optional[str]:
    for command in commands:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            if check:
                return f"`{' '.join(command)}` failed: {exc}"
            continue
        if done.returncode != 0 and check:
            reason = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            return f"`{' '.join(command)}` failed: {reason}"
    return None


def install(service: Service, dry_run: bool, start: bool, out: TextIO) -> int:
    if dry_run:
        out.write(f"# would write {service.path}\n{service.content}")
        for command in service.enable:
            out.write(f"# would run: {' '.join(command)}\n")
        for note in service.notes:
            out.write(f"# note: {note}\n")
        return 0
    try:
        os.makedirs(os.path.dirname(service.path), exist_ok=True)
        temporary = service.path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(service.content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, service.path)
    except OSError as exc:
        raise ServiceError(
            f"cannot write {service.path}: {exc.strerror}"
            + ("" if not service.system else " (--system needs root)")
        ) from None
    out.write(f"wrote {service.path}\n")
    if start:
        failure = _run_all(service.enable, check=True)
        if failure:
            raise ServiceError(f"{failure}; the service file is written at {service.path}")
        out.write("enabled and started\n")
    else:
        out.write("to start it: " + " && ".join(" ".join(c) for c in service.enable) + "\n")
    for note in service.notes:
        out.write(f"note: {note}\n")
    return 0


def uninstall(service: Service, dry_run: bool, stop: bool, out: TextIO) -> int:
    if not os.path.exists(service.path):
        raise ServiceError(f"no rtun tunnel service at {service.path}")
    if dry_run:
        for command in service.disable[:1]:
            out.write(f"# would run: {' '.join(command)}\n")
        out.write(f"# would remove {service.path}\n")
        return 0
    if stop:
        _run_all(service.disable[:1], check=False)
    try:
        os.unlink(service.path)
    except OSError as exc:
        raise ServiceError(f"cannot remove {service.path}: {exc.strerror}") from None
    if stop:
        _run_all(service.disable[1:], check=False)
    out.write(f"removed {service.path}\n")
    return 0
