"""The tunnel commands: `rtun tunnel` (and its `install`, `uninstall` and `authorize` forms),
`rtun hosts`, `rtun connect` and `rtun ssh-config`, each its options and its handler.

The agent's options are declared once, in settings.py; the service's here.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, NoReturn, Optional, Tuple, Union

from rtun.command import Command, json_option, print_json
from rtun.errors import UsageError
from rtun.protocol import peertext
from rtun.ssh import argv as sshargv
from rtun.tunnel import configfile, hostnames, identity, registry, relay, relayscript, service, tunnels
from rtun.tunnel import connect as machines
from rtun.tunnel.settings import add_agent_options, identity_file, service_flags, settings_for

# (flag, argparse keywords): the options of `install` and `uninstall` alone.
SERVICE_OPTIONS: Tuple[Tuple[str, Dict[str, Any]], ...] = (
    ("--system", dict(action="store_true", help="a system service (root) instead of a user one")),
    ("--dry-run", dict(action="store_true", help="print the service file; write nothing")),
    ("--run-as", dict(metavar="USER", help="with --system: the user the agent runs as")),
    ("--init", dict(choices=("systemd", "launchd"), help="service manager (default: this OS's)")),
    ("--no-start", dict(action="store_true", help="write the file but do not enable or start it")),
)

_SERVER_HELP = "ssh destination (ssh_config aliases work)"
_RELAYS_HELP = (
    "ssh destinations of the relays, each with a tunnel and a registry entry of its own "
    "(default: [tunnel] relays in the config file)"
)
_IDENTITY_HELP = "the private key ssh offers, alone (ssh -i KEY; default: your ssh_config's)"
_REGISTRY_HELP = "registry directory (default ~/.rtun/hosts)"


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _service_options(parser: argparse.ArgumentParser) -> None:
    for flag, keywords in SERVICE_OPTIONS:
        parser.add_argument(flag, **keywords)


# -- rtun tunnel [run] SERVER --------------------------------------------------------------


def _tunnel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("relays", nargs="*", metavar="RELAY", help=_RELAYS_HELP)
    add_agent_options(parser)
    _service_options(parser)  # accepted only to be refused with a pointer to `install`


def _relays(args: argparse.Namespace) -> List[str]:
    return list(args.relays) or configfile.tunnel_relays()


def _run_tunnel(args: argparse.Namespace) -> int:
    for flag, _ in SERVICE_OPTIONS:
        if getattr(args, _dest(flag)):
            raise UsageError(f"{flag} goes with `rtun tunnel install` or `uninstall`")
    settings = settings_for(_relays(args), vars(args))
    return tunnels.run(settings, sshargv.ssh_base(identity=settings[0].identity))


tunnel = Command(
    _tunnel_arguments,
    _run_tunnel,
    usage="rtun tunnel [options] RELAY [RELAY...]\n"
    "       rtun tunnel install [--system] [--dry-run] [options] RELAY [RELAY...]\n"
    "       rtun tunnel uninstall [--system] [--dry-run]",
    description="Run the reverse tunnel agent in the foreground (for systemd and launchd), "
    "or install it as a service started at boot. RELAY is any ssh destination; with several, "
    "the machine keeps a tunnel and a registry entry on each, independently.",
    examples=[
        "rtun tunnel relay.example.org                  # one relay, in the foreground",
        "rtun tunnel relay1.example.org relay2.example.org --name pi   # on two relays at once",
        "rtun tunnel --reconnect-spread 60 relay.example.org   # a relay with ~1,500 machines",
        "rtun tunnel install relay1.example.org relay2.example.org     # one service for both",
    ],
)


# -- rtun tunnel install / uninstall -------------------------------------------------------


def _install_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("relays", nargs="*", metavar="RELAY", help=_RELAYS_HELP)
    add_agent_options(parser)
    _service_options(parser)


def _kind(args: argparse.Namespace) -> str:
    return args.init or service.default_kind()


def _run_install(args: argparse.Namespace) -> int:
    relays = _relays(args)
    settings_for(relays, vars(args))  # validate now, not at boot
    run_as = args.run_as or os.environ.get("SUDO_USER") or identity.current_user()
    env = {"RTUN_SSH_COMMAND": os.environ["RTUN_SSH_COMMAND"]} if os.environ.get("RTUN_SSH_COMMAND") else {}
    # The relays go into the unit as given (or as the config file had them): one agent, all relays.
    plan = service.plan(relays, service_flags(vars(args)), _kind(args), args.system, run_as, env)
    return service.install(plan, args.dry_run, not args.no_start, sys.stdout)


def _run_uninstall(args: argparse.Namespace) -> int:
    plan = service.plan([], [], _kind(args), args.system, None, {})
    return service.uninstall(plan, args.dry_run, not args.no_start, sys.stdout)


install = Command(
    _install_arguments,
    _run_install,
    usage="rtun tunnel install [--system] [--dry-run] [options] RELAY [RELAY...]",
    description="start the agent at boot (systemd unit or launchd agent): one service for all its relays",
    examples=[
        "rtun tunnel install --dry-run relay1 relay2   # print the unit: one agent, both relays",
        "sudo rtun tunnel install --system --run-as pi relay1 relay2",
    ],
)
uninstall = Command(_service_options, _run_uninstall, description="stop and remove the boot service")


# -- rtun tunnel authorize -------------------------------------------------------------------


def _authorize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "key",
        nargs="?",
        metavar="KEY",
        help="the tunnel key: a public key file, '-' for stdin, or the key itself",
    )
    parser.add_argument("--name", help="the machine's name (default: this host name)")
    ports = parser.add_mutually_exclusive_group()
    ports.add_argument(
        "--port",
        type=int,
        help="its port on the relay (default: this machine's stable port, as the agent derives it)",
    )
    ports.add_argument(
        "--any-port",
        action="store_true",
        help="allow any port on the relay's loopback (lets the agent fall back to a "
        "relay-chosen port, and the key reach every loopback port)",
    )
    parser.add_argument(
        "--registry",
        metavar="DIR",
        default=relay.DEFAULT_RELAY_DIR,
        help="registry directory on the relay, from the account's home (.rtun/hosts)",
    )
    parser.add_argument(
        "--script",
        metavar="PATH",
        default=relay.DEFAULT_SCRIPT,
        help="where the relay script is on the relay (.rtun/rtun-relay)",
    )
    parser.add_argument(
        "--print-script",
        action="store_true",
        help="print the relay script to install there, instead of the line",
    )
    parser.add_argument("--machine-id", help=argparse.SUPPRESS)  # tests: as `rtun tunnel`'s


def _read_key(key: str) -> str:
    if key == "-":
        return sys.stdin.read(16384)
    if key.split(" ", 1)[0] in relay.KEY_TYPES:
        return key
    try:
        with open(os.path.expanduser(key), encoding="ascii", errors="replace") as f:
            return f.read(16384)
    except OSError as exc:
        raise UsageError(f"cannot read {key}: {exc.strerror}") from None


def _private_key_advice(key: str) -> str:
    """What to give instead of a private key (which stays on the machine, never on the relay)."""
    if key == "-":
        return "that is a private key: give its public half (the .pub file beside it)"
    public = f"{key}.pub"
    shown = peertext.quoted(key)
    if os.path.isfile(os.path.expanduser(public)):
        return (
            f"{shown} is a private key: give its public half, rtun tunnel authorize {peertext.quoted(public)}"
        )
    return (
        f"{shown} is a private key: give its public half (make it with ssh-keygen -y -f {shown} > "
        f"{peertext.quoted(public)})"
    )


def _run_authorize(args: argparse.Namespace) -> int:
    if args.print_script:
        sys.stdout.write(relayscript.SCRIPT)
        return 0
    if not args.key:
        raise UsageError("name the tunnel key: rtun tunnel authorize KEY.pub (or --print-script)")
    text = _read_key(args.key)
    if "PRIVATE KEY-----" in text:
        raise UsageError(_private_key_advice(args.key))
    try:
        kind, blob = relay.parse_public_key(text)
        script = relay.relay_path("--script", args.script)
        directory = relay.relay_path("--registry", args.registry)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    name = args.name or identity.default_name()
    if not registry.valid(registry.NAME_RE, name):
        raise UsageError(f"--name {peertext.quoted(name)}: use letters, digits, '.', '_' and '-'")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a TCP port")
    mid = identity.machine_id(args.machine_id)
    port = None if args.any_port else args.port or identity.preferred_port(mid)
    print(relay.authorized_line(kind, blob, mid, name, port, script, directory))
    print(
        f"rtun tunnel authorize: for ~/.ssh/authorized_keys of the relay account (the same line on "
        f"each relay of the machine); the relay "
        f"script goes to {script} there: rtun tunnel authorize --print-script | ssh RELAY "
        f"'umask 022; mkdir -p {os.path.dirname(script) or '.'} && cat > {script}' (docs/relay.md)",
        file=sys.stderr,
    )
    return 0


authorize = Command(
    _authorize_arguments,
    _run_authorize,
    usage="rtun tunnel authorize [--name NAME] [--port PORT | --any-port] [--registry DIR] "
    "[--script PATH] KEY\n       rtun tunnel authorize --print-script",
    description="Print the authorized_keys line that confines a machine's tunnel key on the relay: "
    "its own forward, its own registry entry and the listing, nothing else (docs/relay.md).",
)


# -- rtun hosts / connect / ssh-config -----------------------------------------------------

MAX_PROBLEM_LINES = 50  # on stderr; --json lists them all


def _report(command: str, problems: List[str]) -> None:
    for problem in problems[:MAX_PROBLEM_LINES]:
        print(f"rtun {command}: {problem}", file=sys.stderr)
    if len(problems) > MAX_PROBLEM_LINES:
        print(
            f"rtun {command}: ... and {len(problems) - MAX_PROBLEM_LINES} more files skipped "
            "(--json lists them all)",
            file=sys.stderr,
        )


def _listing(args: argparse.Namespace, probe: Union[bool, str]) -> machines.Listing:
    ssh = sshargv.ssh_base(identity=args.identity) if args.via else None
    listing = machines.load(
        ssh,
        args.via,
        args.registry or registry.DEFAULT_DIR,
        probe=probe,
        timeout=getattr(args, "timeout", 3.0),
    )
    _report(args.command, listing.problems)
    if listing.cut is not None:
        print(f"rtun {args.command}: {listing.cut}", file=sys.stderr)
    return listing


def _hosts_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--via", metavar="SERVER", help="read the registry on SERVER over ssh (default: this host)"
    )
    parser.add_argument("--registry", metavar="DIR", help=_REGISTRY_HELP)
    parser.add_argument("--identity", metavar="KEY", type=identity_file, help=_IDENTITY_HELP)
    json_option(parser)
    parser.add_argument("--timeout", type=float, default=3.0, metavar="S", help="live probe timeout (3)")


# The registry entry's fields that `rtun hosts --json` gives for each machine, always all of them
# (null where the entry has none), whatever fields later entries gain.
_ENTRY_KEYS = (
    "name",
    "hostname",
    "machine_id",
    "user",
    "port",
    "local_port",
    "os",
    "agent_version",
    "status",
    "connected_at",
    "last_seen",
    "disconnected_at",
)


def hosts_document(listing: machines.Listing, now: Optional[float] = None) -> Dict[str, Any]:
    """`rtun hosts --json`: each machine's entry, its alias and whether it answers; the files
    skipped; why the listing stopped early (null when complete)."""
    names = hostnames.aliases(listing.entries)
    found = []
    for entry in listing.entries:
        live = listing.live.get(entry.machine_id, False)
        item: Dict[str, Any] = {key: getattr(entry, key) for key in _ENTRY_KEYS}
        item.update(
            alias=names[entry.machine_id],
            live=live,
            state=machines.status(entry, live),
            age_seconds=int(entry.age(now)),
        )
        found.append(item)
    return {"machines": found, "skipped": list(listing.problems), "cut": listing.cut}


def _run_hosts(args: argparse.Namespace) -> int:
    listing = _listing(args, probe=True)
    if args.json:
        print_json(hosts_document(listing))
    elif listing.entries:
        print(machines.table(listing))
    else:
        print("no machines registered", file=sys.stderr)
    return 0


hosts = Command(_hosts_arguments, _run_hosts)


def _connect_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", metavar="SERVER", help="jump through SERVER (default: you are on it)")
    parser.add_argument(
        "-l", "--login", metavar="USER", help="user on the machine (default: from the registry)"
    )
    parser.add_argument("--registry", metavar="DIR", help=_REGISTRY_HELP)
    parser.add_argument("--identity", metavar="KEY", type=identity_file, help=_IDENTITY_HELP)
    parser.add_argument(
        "--anyway",
        action="store_true",
        help="try even when the registry says the machine is offline or it does not answer",
    )


def _connect_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="machine name (see `rtun hosts`)")
    _connect_options(parser)
    parser.add_argument(
        "remote_command",
        metavar="COMMAND",
        nargs=argparse.REMAINDER,
        help="command to run instead of a shell",
    )


class _LateParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _late_connect_options(args: argparse.Namespace) -> None:
    """Options written after NAME (`rtun connect pi -l me -- cmd`) reach argparse's REMAINDER;
    take them back out, up to `--` or the first word of the command."""
    words = list(args.remote_command)
    if not words or not words[0].startswith("-") or words[0] == "--":
        return
    end = words.index("--") if "--" in words else len(words)
    late = _LateParser(prog="rtun connect", add_help=False)
    _connect_options(late)
    late.add_argument("rest", nargs="*")
    try:
        parsed = late.parse_args(words[:end])
    except UsageError:
        raise UsageError(f"cannot parse {' '.join(words[:end])!r}: put the command after --") from None
    for key in ("login", "via", "registry", "identity", "anyway"):
        if getattr(parsed, key) not in (None, False):
            setattr(args, key, getattr(parsed, key))
    args.remote_command = parsed.rest + words[end + 1 :]


def _run_connect(args: argparse.Namespace) -> int:
    _late_connect_options(args)
    ssh = sshargv.ssh_base(identity=args.identity)
    if args.login is not None and not registry.valid(registry.USER_RE, args.login):
        raise UsageError(f"-l {args.login!r} is not a valid user name")
    listing = _listing(args, probe=args.name)  # whether that machine answers, before ssh
    entry = machines.find(listing.entries, args.name)
    if not args.anyway:
        machines.check_reachable(entry, listing.live.get(entry.machine_id, False), args.via)
    command = machines.split_command(args.remote_command)
    argv = machines.connect_argv(ssh, entry, args.via, args.login, command)
    note = machines.host_key_note(ssh, entry, args.via, args.name)
    if note:
        print(f"rtun connect: {note}", file=sys.stderr)
    return machines.exec_ssh(argv)


connect = Command(
    _connect_arguments,
    _run_connect,
    usage="rtun connect NAME [--via SERVER] [-l USER] [--identity KEY] [--anyway] [-- COMMAND...]",
)


def _ssh_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", metavar="SERVER", help="add ProxyJump SERVER (default: you are on it)")
    parser.add_argument("--registry", metavar="DIR", help=_REGISTRY_HELP)
    parser.add_argument(
        "--identity",
        metavar="KEY",
        type=identity_file,
        help="the private key for SERVER and the machines (IdentityFile of each, offered alone)",
    )


def _run_ssh_config(args: argparse.Namespace) -> int:
    listing = _listing(args, probe=False)
    text, problems = hostnames.ssh_config(listing.entries, args.via, args.identity)
    _report(args.command, problems)
    sys.stdout.write(text)
    return 0


ssh_config = Command(_ssh_config_arguments, _run_ssh_config)
