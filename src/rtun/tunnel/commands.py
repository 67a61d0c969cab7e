"""The tunnel agent's commands: `rtun tunnel` (and its `install`, `uninstall` and `authorize`
forms), each its options and its handler. The readers' (`rtun hosts`, `connect`, `ssh-config`)
are in readers.py.

The agent's options are declared once, in settings.py; the service's here.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Tuple

from rtun.command import Command
from rtun.errors import UsageError
from rtun.protocol import peertext
from rtun.ssh import argv as sshargv
from rtun.tunnel import configfile, identity, registry, relay, relayscript, service, tunnels
from rtun.tunnel.settings import add_agent_options, service_flags, settings_for

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
