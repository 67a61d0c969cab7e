"""Start at boot or login: a systemd unit or a launchd job that runs `rtun tunnel` (at boot, user
or system) or `rtun server` (at login, in the desktop session).

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
from typing import Dict, List, Optional, Sequence, TextIO

from rtun import paths
from rtun.errors import RtunError

UNIT = "rtun-tunnel.service"
LABEL = "org.rtun.tunnel"
DAEMON_UNIT = "rtun-server.service"
DAEMON_LABEL = "org.rtun.server"
DAEMON_DESCRIPTION = "rtun daemon: what your SSH sessions reach on this computer"


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
    what: str = "tunnel"


def default_kind() -> str:
    return "launchd" if sys.platform == "darwin" else "systemd"


def agent_argv(relays: Sequence[str], options: Sequence[str]) -> List[str]:
    """The command the service runs: this rtun's ``tunnel``, one process for all the relays."""
    assert not isinstance(relays, str), "a list of relays"
    return paths.this_rtun()[0] + ["tunnel"] + list(options) + list(relays)


@dataclass(frozen=True)
class Job:
    """What a service runs and how it is known: the tunnel agent (at boot, kept alive whatever
    happens) or the daemon (at login, in the desktop session, stopped when asked)."""

    what: str  # "tunnel" or "daemon", in messages
    unit: str
    label: str
    description: str
    argv: List[str]
    desktop: bool  # the daemon: the desktop session's display and notification service


def tunnel_job(relays: Sequence[str], options: Sequence[str]) -> Job:
    description = f"rtun reverse SSH tunnel to {', '.join(relays)}"
    return Job("tunnel", UNIT, LABEL, description, agent_argv(relays, options), False)


def daemon_job(options: Sequence[str]) -> Job:
    argv = paths.this_rtun()[0] + ["server"] + list(options)
    return Job("daemon", DAEMON_UNIT, DAEMON_LABEL, DAEMON_DESCRIPTION, argv, True)


_PLAIN = re.compile(r"[A-Za-z0-9_./:@=,+-]+")


def systemd_quote(word: str) -> str:
    """One ExecStart= word: quoted where needed; % and $ escaped for systemd's own expansion."""
    word = word.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


SESSION_TARGET = "graphical-session.target"
_USER_UNIT_DIRS = ("/etc/systemd/user", "/usr/lib/systemd/user", "/lib/systemd/user")


def desktop_target(unit_dirs: Sequence[str] = _USER_UNIT_DIRS) -> str:
    """The user manager's target for the desktop session where it has one (systemd 234 and
    later; GNOME, KDE and sessions that follow systemd's session protocol start it), else
    default.target, which every login starts."""
    found = any(os.path.exists(os.path.join(d, SESSION_TARGET)) for d in unit_dirs)
    return SESSION_TARGET if found else "default.target"


def render_systemd(
    job: Job, env: Dict[str, str], system: bool, run_as: Optional[str] = None, target: Optional[str] = None
) -> str:
    unit = ["[Unit]", f"Description={job.description}", "Documentation=man:rtun(1)"]
    if job.desktop:
        target = target or desktop_target()
        if target == SESSION_TARGET:  # started with the desktop session, stopped with it
            unit += [f"PartOf={target}", f"After={target}"]
    else:
        if system:  # the user manager has no network-online.target; the agent retries anyway
            unit += ["After=network-online.target", "Wants=network-online.target"]
        unit += ["# Never stop retrying: no start-limit lockout.", "StartLimitIntervalSec=0"]
    unit += ["", "[Service]", "Type=simple"]
    if system and run_as:
        unit.append(f"User={run_as}")
    unit.append("Environment=PYTHONUNBUFFERED=1")
    for key, value in sorted(env.items()):
        unit.append("Environment=" + systemd_quote(f"{key}={value}"))
    unit.append("ExecStart=" + " ".join(systemd_quote(w) for w in job.argv))
    if job.desktop:
        unit += [
            "ExecReload=kill -HUP $MAINPID",
            "# `rtun server stop` (SIGTERM, a clean exit) stops it; a crash restarts it.",
            "Restart=on-failure",
            "RestartSec=5",
            "TimeoutStopSec=20",
        ]
        wanted = target or "default.target"
    else:
        unit += [
            "Restart=always",
            "RestartSec=5",
            "# SIGTERM to rtun alone, so it can mark itself offline over its ssh before ssh ends.",
            "KillMode=mixed",
            "TimeoutStopSec=20",
        ]
        wanted = "multi-user.target" if system else "default.target"
    unit += ["", "[Install]", f"WantedBy={wanted}", ""]
    return "\n".join(unit)


def render_launchd(
    job: Job, env: Dict[str, str], log_path: str, system: bool, run_as: Optional[str] = None
) -> str:
    job_plist: Dict[str, object] = {
        "Label": job.label,
        "ProgramArguments": list(job.argv),
        "RunAtLoad": True,
        "StandardErrorPath": log_path,
        "EnvironmentVariables": dict(env, PYTHONUNBUFFERED="1"),
    }
    if job.desktop:  # in the user's GUI (Aqua) session: notifications, `open`, the clipboard
        job_plist.update(
            KeepAlive={"SuccessfulExit": False},
            LimitLoadToSessionType="Aqua",
            ProcessType="Interactive",
        )
    else:
        job_plist.update(KeepAlive=True, ThrottleInterval=10, ProcessType="Background")
    if system and run_as:
        job_plist["UserName"] = run_as
    return plistlib.dumps(job_plist).decode("utf-8")


def plan(
    relays: Sequence[str],
    options: Sequence[str],
    kind: str,
    system: bool,
    run_as: Optional[str],
    env: Dict[str, str],
) -> Service:
    """The tunnel agent's service: one, for all its relays."""
    return _plan(tunnel_job(relays, options), kind, system, run_as, env)


def daemon_plan(options: Sequence[str], kind: str, env: Dict[str, str]) -> Service:
    """The daemon's: a user service, started in the desktop session at login."""
    env = dict(env, RTUN_SERVICE=kind)  # the daemon's status says so, and restart goes through it
    service = _plan(daemon_job(options), kind, False, None, env)
    if kind == "systemd":
        # What the desktop session gave this shell and the user manager may lack (sessions that
        # do not import their environment into it): it is imported before the first start.
        names = [n for n in ("DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY") if os.environ.get(n)]
        if names:
            service.enable.insert(1, ["systemctl", "--user", "import-environment"] + names)
        service.notes = [n for n in service.notes if "linger" not in n]
    return service


def _plan(job: Job, kind: str, system: bool, run_as: Optional[str], env: Dict[str, str]) -> Service:
    env = dict(paths.this_rtun()[1], **env)
    if kind == "systemd":
        if system:
            path = os.path.join("/etc/systemd/system", job.unit)
            ctl = ["systemctl"]
        else:
            path = os.path.join(paths.config_home(), "systemd", "user", job.unit)
            ctl = ["systemctl", "--user"]
        service = Service(
            "systemd",
            system,
            path,
            render_systemd(job, env, system, run_as),
            enable=[ctl + ["daemon-reload"], ctl + ["enable", "--now", job.unit]],
            disable=[ctl + ["disable", "--now", job.unit], ctl + ["daemon-reload"]],
            what=job.what,
        )
        if not system:
            service.notes.append(
                "a user unit runs only while you are logged in, unless lingering is on: "
                "`sudo loginctl enable-linger $USER` starts it at boot"
            )
        service.notes.append(f"logs: journalctl {'' if system else '--user '}-u {job.unit} -f")
        return service
    if kind == "launchd":
        name = job.unit.rsplit(".", 1)[0]
        if system:
            path = f"/Library/LaunchDaemons/{job.label}.plist"
            log = f"/Library/Logs/{name}.log"
        else:
            path = os.path.join(paths.home(), "Library", "LaunchAgents", f"{job.label}.plist")
            log = os.path.join(paths.home(), "Library", "Logs", f"{name}.log")
        service = Service(
            "launchd",
            system,
            path,
            render_launchd(job, env, log, system, run_as),
            enable=[["launchctl", "load", "-w", path]],
            disable=[["launchctl", "unload", "-w", path]],
            what=job.what,
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
        raise ServiceError(f"no rtun {service.what} service at {service.path}")
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
