"""The tunnel commands' handlers: parsed arguments in, one call, an exit code out."""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional, Tuple

from rtun.errors import UsageError
from rtun.tunnel import connect as machines
from rtun.tunnel import identity, registry, service, sshcmd
from rtun.tunnel.agent import Agent, Settings

# Options copied into the service's command line when given.
_AGENT_FLAGS = (
    ("name", "--name"), ("local_port", "--local-port"), ("local", "--local"), ("port", "--port"),
    ("registry", "--registry"), ("login_user", "--login-user"), ("probe_interval", "--probe-interval"),
    ("probe_timeout", "--probe-timeout"), ("heartbeat", "--heartbeat"), ("max_backoff", "--max-backoff"),
    ("stable_after", "--stable-after"), ("alive_interval", "--alive-interval"),
    ("alive_count", "--alive-count"), ("connect_timeout", "--connect-timeout"),
    ("machine_id", "--machine-id"),
)


def _opt(args: argparse.Namespace, key: str, default=None):  # type: ignore[no-untyped-def]
    value = getattr(args, key, None)
    return default if value is None else value


def parse_local(local: Optional[str], local_port: Optional[int]) -> Tuple[str, int]:
    if local is None:
        port = 22 if local_port is None else local_port
        if not 1 <= port <= 65535:
            raise UsageError(f"--local-port {port} is not a TCP port")
        return "localhost", port
    host, sep, port_text = local.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"--local {local!r} is not HOST:PORT")
    return host, int(port_text)


def settings_from(args: argparse.Namespace) -> Settings:
    server = getattr(args, "server", None)
    if not server:
        raise UsageError("name the server: rtun tunnel SERVER")
    if server.startswith("-"):
        raise UsageError(f"{server!r} is not an ssh destination")
    name = _opt(args, "name") or identity.default_name()
    if not registry.NAME_RE.match(name):
        raise UsageError(f"--name {name!r}: use letters, digits, '.', '_' and '-' (at most 63)")
    user = _opt(args, "login_user") or identity.current_user()
    if not registry.USER_RE.match(user):
        raise UsageError(f"login user {user!r} is not a valid user name")
    port = _opt(args, "port")
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port")
    local_host, local_port = parse_local(_opt(args, "local"), _opt(args, "local_port"))
    raw_id = _opt(args, "machine_id")
    settings = Settings(
        server=server, name=name, machine_id=identity.machine_id(raw_id), login_user=user,
        local_host=local_host, local_port=local_port, port=port,
        registry=_opt(args, "registry", registry.DEFAULT_DIR),
    )
    for key in ("probe_interval", "probe_timeout", "heartbeat", "stable_after", "alive_interval",
                "alive_count", "connect_timeout"):
        value = _opt(args, key)
        if value is not None:
            if value <= 0:
                raise UsageError(f"--{key.replace('_', '-')} must be positive")
            setattr(settings, key, value)
    if _opt(args, "max_backoff") is not None:
        if args.max_backoff <= 0:
            raise UsageError("--max-backoff must be positive")
        settings.backoff_max = args.max_backoff
        settings.backoff_base = min(settings.backoff_base, args.max_backoff)
    return settings


def tunnel(args: argparse.Namespace) -> int:
    action = getattr(args, "tunnel_action", "run")
    if action == "install":
        return _install(args)
    if action == "uninstall":
        return _uninstall(args)
    for flag in ("system", "dry_run", "run_as", "init", "no_start"):
        if _opt(args, flag):
            raise UsageError(f"--{flag.replace('_', '-')} goes with `rtun tunnel install` or `uninstall`")
    settings = settings_from(args)
    return Agent(settings, sshcmd.ssh_base()).run()


def _service_env() -> dict:
    value = os.environ.get("RTUN_SSH_COMMAND")
    return {"RTUN_SSH_COMMAND": value} if value else {}


def _run_as(args: argparse.Namespace) -> Optional[str]:
    return _opt(args, "run_as") or os.environ.get("SUDO_USER") or identity.current_user()


def _install(args: argparse.Namespace) -> int:
    settings_from(args)  # validate now, not at boot
    options: List[str] = []
    for key, flag in _AGENT_FLAGS:
        value = _opt(args, key)
        if value is not None:
            options += [flag, str(value)]
    kind = _opt(args, "init") or service.default_kind()
    plan = service.plan(args.server, options, kind, bool(_opt(args, "system")), _run_as(args), _service_env())
    return service.install(plan, bool(_opt(args, "dry_run")), not _opt(args, "no_start"), sys.stdout)


def _uninstall(args: argparse.Namespace) -> int:
    kind = _opt(args, "init") or service.default_kind()
    plan = service.plan("", [], kind, bool(_opt(args, "system")), None, {})
    return service.uninstall(plan, bool(_opt(args, "dry_run")), not _opt(args, "no_start"), sys.stdout)


def _listing(args: argparse.Namespace, probe: bool) -> machines.Listing:
    via = _opt(args, "via")
    ssh = sshcmd.ssh_base() if via else None
    listing = machines.load(ssh, via, _opt(args, "registry", registry.DEFAULT_DIR), probe=probe,
                            timeout=_opt(args, "timeout", 3.0))
    for problem in listing.problems:
        print(f"rtun {args.command}: {problem}", file=sys.stderr)
    return listing


def hosts(args: argparse.Namespace) -> int:
    listing = _listing(args, probe=True)
    if args.json:
        print(machines.as_json(listing))
    elif listing.entries:
        print(machines.table(listing))
    else:
        print("no machines registered", file=sys.stderr)
    return 0


def _late_connect_options(args: argparse.Namespace) -> None:
    """Options written after NAME (`rtun connect pi -l me -- cmd`) reach argparse's REMAINDER;
    take them back out, up to `--` or the first word of the command."""
    words = list(args.command)
    if not words or not words[0].startswith("-") or words[0] == "--":
        return
    end = words.index("--") if "--" in words else len(words)
    late = argparse.ArgumentParser(prog="rtun connect", add_help=False)
    late.add_argument("-l", "--login")
    late.add_argument("--via")
    late.add_argument("--registry")
    late.add_argument("rest", nargs="*")
    try:
        parsed = late.parse_args(words[:end])
    except SystemExit:
        raise UsageError(f"cannot parse {' '.join(words[:end])!r}: put the command after --") from None
    for key in ("login", "via", "registry"):
        if getattr(parsed, key) is not None:
            setattr(args, key, getattr(parsed, key))
    args.command = parsed.rest + words[end + 1:]


def connect(args: argparse.Namespace) -> int:
    _late_connect_options(args)
    ssh = sshcmd.ssh_base()
    listing = _listing(args, probe=False)
    entry = machines.find(listing.entries, args.name)
    if args.login is not None and not registry.USER_RE.match(args.login):
        raise UsageError(f"-l {args.login!r} is not a valid user name")
    command = machines.split_command(args.command)
    return machines.exec_ssh(machines.connect_argv(ssh, entry, _opt(args, "via"), args.login, command))


def ssh_config(args: argparse.Namespace) -> int:
    listing = _listing(args, probe=False)
    sys.stdout.write(machines.ssh_config(listing.entries, _opt(args, "via")))
    return 0
