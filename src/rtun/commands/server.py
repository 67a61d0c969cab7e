"""`rtun server`: the local daemon that the remote commands reach, and its forms `status`, `stop`,
`restart`, `reload`, `install` and `uninstall`.

The forms work through the daemon's status file and signals (rtun.daemon.status), never through
its socket, which every server you log in to can reach.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any, Dict, List, Optional

from rtun.command import Command, json_option, print_json
from rtun.errors import NoDaemonError, RtunError

STOP_SECONDS = 40.0  # past the daemon's shutdown grace (10 s by default) and its clean-up
RELOAD_SECONDS = 10.0


def _socket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s", "--socket", metavar="PATH", help="socket to listen on (default ~/.rtun/rtun.sock)"
    )


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="config file (default ~/.config/rtun/config.toml)")


def _daemon_options(parser: argparse.ArgumentParser, detach: bool = True) -> None:
    _socket_option(parser)
    if detach:
        parser.add_argument("-d", "--daemon", action="store_true", help="detach; print the PID once ready")
    parser.add_argument("-l", "--log", metavar="FILE", help="log file (default ~/.rtun/rtun.log with -d)")
    parser.add_argument("-D", "--dir", metavar="DIR", help="where received files go (default: downloads)")
    parser.add_argument("-v", "--verbose", action="store_true", default=None, help="log more detail")
    _config_option(parser)


def _absolute(path: Optional[str]) -> Optional[str]:
    return os.path.abspath(os.path.expanduser(path)) if path else None


def _launch(args: argparse.Namespace, detached: bool) -> Any:
    """The options given, as the daemon keeps them (absolute: a restart may run elsewhere)."""
    from rtun.daemon.status import Launch

    given = {
        "socket": _absolute(args.socket),
        "log": _absolute(args.log),
        "save_dir": _absolute(args.dir),
        "verbose": args.verbose,
    }
    overrides = {key: value for key, value in given.items() if value is not None}
    return Launch(_absolute(args.config), overrides, detached)


def _run(args: argparse.Namespace) -> int:
    from rtun.daemon import start

    launch = _launch(args, args.daemon)
    return start.serve(launch.load(), detach=args.daemon, launch=launch)


server = Command(
    _daemon_options,
    _run,
    usage="rtun server [-d] [-s PATH] [-l FILE] [-D DIR] [-v] [--config FILE]\n"
    "       rtun server {status,stop,restart,reload,install,uninstall} ...",
    examples=[
        "rtun server -d             # in the background; logs to ~/.rtun/rtun.log",
        "rtun server -v             # in the foreground, logging each request",
        "rtun server status         # is it running? its PID, socket, files and activity",
        "rtun server reload         # after editing the config file",
        "rtun server install        # start it at every login",
    ],
)


# ---- the running daemon: found through its status file -------------------------------------


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return os.path.abspath(os.path.expanduser(str(args.socket)))
    from rtun import paths
    from rtun.daemon import config

    try:
        return config.load(args.config).socket
    except RtunError:  # a broken config file: the daemon it names is still worth finding
        return paths.default_socket()


def _answers(socket_path: str) -> bool:
    import socket

    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(5.0)
    try:
        probe.connect(socket_path)
        probe.sendall(b"PING\r\n")
        return probe.makefile("rb").readline(64).strip() == b"OK PONG"
    except OSError:
        return False
    finally:
        probe.close()


def _running(socket_path: str) -> Dict[str, Any]:
    """The running daemon's status, or NoDaemonError (exit 3) saying what was found instead."""
    from rtun.daemon import status

    document = status.running(socket_path)
    if document is not None:
        return document
    if _answers(socket_path):
        raise RtunError(
            f"a daemon answers on {socket_path} but keeps no status file (an older rtun, or "
            "one that could not write it): stop it with `rtun shutdown` where diagnostics are on, "
            "or end its process"
        )
    raise NoDaemonError(f"no rtun daemon is running on {socket_path}")


def _wait(condition: Any, seconds: float) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _stop(document: Dict[str, Any]) -> None:
    from rtun.daemon import status

    pid = document["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        raise RtunError(f"not allowed to stop the daemon (PID {pid})") from None
    if not _wait(lambda: not status.alive(document), STOP_SECONDS):
        raise RtunError(f"the daemon (PID {pid}) has not stopped after {STOP_SECONDS:.0f} s")


def _home(path: Optional[str]) -> str:
    from rtun import paths

    if path is None:
        return "standard error (the terminal or service manager that started it)"
    return paths.tilde(path)


# ---- status ------------------------------------------------------------------------------------


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    _socket_option(parser)
    _config_option(parser)
    json_option(parser)


def _duration(seconds: float) -> str:
    minutes, hours = int(seconds // 60) % 60, int(seconds // 3600)
    if hours >= 24:
        return f"{hours // 24} d {hours % 24} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {int(seconds) % 60} s"


def _run_status(args: argparse.Namespace) -> int:
    from rtun.daemon import status

    path = _socket_path(args)
    try:
        document = _running(path)
    except NoDaemonError:
        if args.json:
            print_json({"running": False, "socket": path})
        else:
            print(f"rtun daemon: not running on {path} (start it with `rtun server -d`)")
        return NoDaemonError.exit_code
    counts = {key: document.get(key) for key in ("connections", "requests", "transfers")}
    forwards = [f for f in document.get("forwards") or [] if isinstance(f, dict)]
    facts: Dict[str, object] = {
        "running": True,
        "pid": document["pid"],
        "socket": document.get("socket"),
        "config_file": document.get("config_file"),
        "log": document.get("log"),
        "save_dir": document.get("save_dir"),
        "started": document.get("started"),
        "uptime_seconds": round(status.uptime(document), 1),
        "service": document.get("service"),
        **counts,
        "forwards": forwards,
    }
    if args.json:
        print_json(facts)
        return 0
    by = f", started by {document['service']}" if document.get("service") else ""
    print(f"rtun daemon: running (PID {document['pid']}{by}), up {_duration(status.uptime(document))}")
    print(f"  socket:      {document.get('socket')}")
    print(f"  config file: {_home(document.get('config_file'))}")
    print(f"  log:         {_home(document.get('log'))}")
    print(f"  save dir:    {_home(document.get('save_dir'))}")
    print(
        f"  active:      {counts['connections']} connections, {counts['requests']} requests, "
        f"{counts['transfers']} transfers"
    )
    for forward in forwards:
        print(
            f"  forward:     127.0.0.1:{forward.get('port')} here to port {forward.get('server_port')} "
            f"of a server, {forward.get('connections')} connections"
        )
    return 0


status_command = Command(
    _status_arguments,
    _run_status,
    description="Whether the daemon runs (exit 0) or not (exit 3): its PID, socket, config file, "
    "log, save directory, uptime and what it is doing now.",
    examples=["rtun server status", "rtun server status --json"],
)


# ---- stop, reload, restart ----------------------------------------------------------------------


def _target_arguments(parser: argparse.ArgumentParser) -> None:
    _socket_option(parser)
    _config_option(parser)


def _run_stop(args: argparse.Namespace) -> int:
    document = _running(_socket_path(args))
    _stop(document)
    print(f"stopped the rtun daemon (PID {document['pid']})")
    return 0


stop = Command(
    _target_arguments,
    _run_stop,
    description="Stop the daemon: transfers in flight get its shutdown grace to finish.",
    examples=["rtun server stop", "rtun server stop -s ~/.rtun/other.sock"],
)


def _run_reload(args: argparse.Namespace) -> int:
    from rtun.daemon import status

    path = _socket_path(args)
    document = _running(path)
    before = document.get("reloads", 0)

    def reloaded() -> Optional[Dict[str, Any]]:
        now = status.read(status.status_path(path))
        return now if now is not None and now.get("reloads", 0) != before else None

    os.kill(document["pid"], signal.SIGHUP)
    if not _wait(lambda: reloaded() is not None, RELOAD_SECONDS):
        raise RtunError(f"the daemon (PID {document['pid']}) did not say it reloaded; see its log")
    result = (reloaded() or {}).get("last_reload") or {}
    for line in status.describe_reload(result):
        print(line)
    return 1 if result.get("error") else 0


reload = Command(
    _target_arguments,
    _run_reload,
    description="Make the running daemon read its config file again (as SIGHUP does). Requests "
    "in flight finish under the settings they started with; new ones get the new settings. "
    "The socket and the log change only with a restart.",
    examples=["rtun server reload     # after adding [actions] paste = true"],
)


def _run_restart(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rtun.daemon import start, status

    path = _socket_path(args)
    try:
        document: Optional[Dict[str, Any]] = _running(path)
    except NoDaemonError:
        document = None
    if document is not None and document.get("service") and not _given(args):
        return _service_restart(str(document["service"]))
    launch = status.launch_of(document) if document is not None else status.Launch()
    given = _launch(args, True)
    launch = replace(
        launch,
        config_file=given.config_file or launch.config_file,
        overrides=dict(launch.overrides, **given.overrides),
        detached=True,
    )
    settings = launch.load()  # a config file that does not load leaves the running daemon alone
    if document is not None:
        _stop(document)
        print(f"stopped the rtun daemon (PID {document['pid']})", file=sys.stderr)
    return start.serve(settings, detach=True, launch=launch)


def _given(args: argparse.Namespace) -> bool:
    return any(getattr(args, name) is not None for name in ("log", "dir", "verbose", "config"))


def _service_restart(kind: str) -> int:
    import subprocess

    from rtun.tunnel import service

    if kind == "launchd":
        command = ["launchctl", "kickstart", "-k", f"gui/{os.getuid()}/{service.DAEMON_LABEL}"]
    else:
        command = ["systemctl", "--user", "restart", service.DAEMON_UNIT]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RtunError(f"`{' '.join(command)}` failed: {said}")
    print(f"restarted through {kind} ({' '.join(command)})")
    return 0


restart = Command(
    lambda parser: _daemon_options(parser, detach=False),
    _run_restart,
    description="Stop the daemon and start it again in the background, with the options it was "
    "started with, or those given here instead. One installed with `rtun server install` is "
    "restarted by its service manager.",
    examples=["rtun server restart", "rtun server restart -D ~/incoming   # now saving there"],
)


# ---- install, uninstall ----------------------------------------------------------------------------


def _install_arguments(parser: argparse.ArgumentParser) -> None:
    _daemon_options(parser, detach=False)
    _service_arguments(parser)


def _service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print the service file; write nothing")
    parser.add_argument("--no-start", action="store_true", help="write the file, do not enable or start it")
    parser.add_argument("--init", choices=("systemd", "launchd"), help="service manager (default: this OS's)")


def _options(args: argparse.Namespace) -> List[str]:
    """`rtun server`'s options in the unit: the given ones, and the rotated log by default."""
    from rtun import paths

    launch = _launch(args, True)
    given = launch.overrides
    options: List[str] = []
    if "socket" in given:
        options += ["--socket", given["socket"]]
    options += ["--log", given.get("log") or paths.default_log()]
    if "save_dir" in given:
        options += ["--dir", given["save_dir"]]
    if given.get("verbose"):
        options.append("--verbose")
    if launch.config_file:
        options += ["--config", launch.config_file]
    return options


def _run_install(args: argparse.Namespace) -> int:
    from rtun.daemon import status
    from rtun.tunnel import service

    plan = service.daemon_plan(_options(args), args.init or service.default_kind(), {})
    if not args.dry_run and not args.no_start:
        running = status.running(_socket_path(args))
        if running is not None and not running.get("service"):  # the unit would find its socket taken
            _stop(running)
            print(f"stopped the rtun daemon running now (PID {running['pid']}): the service starts it")
    return service.install(plan, args.dry_run, not args.no_start, sys.stdout)


install = Command(
    _install_arguments,
    _run_install,
    description="Start the daemon at every login, in your desktop session (a systemd user unit "
    "on Linux, a launchd agent on macOS), with the options given here.",
    examples=[
        "rtun server install --dry-run   # print the unit; write nothing",
        "rtun server install             # write, enable and start it",
        "rtun server install --no-start -D ~/incoming",
    ],
)


def _run_uninstall(args: argparse.Namespace) -> int:
    from rtun.tunnel import service

    plan = service.daemon_plan([], args.init or service.default_kind(), {})
    return service.uninstall(plan, args.dry_run, not args.no_start, sys.stdout)


uninstall = Command(
    _service_arguments,
    _run_uninstall,
    description="Stop the daemon's login service and remove it.",
    examples=["rtun server uninstall"],
)
