"""The readers' commands: `rtun hosts`, `rtun connect` and `rtun ssh-config`, each its options and
its handler, over one relay, several (merged by machine id, fleet.py), or this host's registry.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Dict, List, NoReturn, Optional, Tuple, Union

from rtun.command import Command, json_option, print_json
from rtun.errors import UsageError
from rtun.protocol import peertext
from rtun.ssh import argv as sshargv
from rtun.tunnel import connect as machines
from rtun.tunnel import fleet, hostnames, merge, proxy, registry
from rtun.tunnel.settings import identity_file

_IDENTITY_HELP = "the private key ssh offers, alone (ssh -i KEY; default: your ssh_config's)"
_REGISTRY_HELP = "registry directory (default ~/.rtun/hosts)"

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
    """The registry of every relay (``--via``s, else ``[hosts] relays``), merged; or this host's."""
    vias = fleet.relays(args.via)
    ssh = sshargv.ssh_base(identity=args.identity) if vias else None
    listing = fleet.load(
        ssh,
        vias,
        args.registry or registry.DEFAULT_DIR,
        probe=probe,
        timeout=getattr(args, "timeout", 3.0),
        tags=_tags(getattr(args, "tag", None)),
    )
    _report(args.command, listing.problems)
    if listing.cut is not None:
        print(f"rtun {args.command}: {listing.cut}", file=sys.stderr)
    return listing


_VIA_HELP = (
    "a relay to read over ssh; repeat for several, merged by machine id (default: [hosts] relays "
    "in ~/.config/rtun/config.toml, else this host's registry; A,B is an ssh jump chain)"
)


def _tags(given: Optional[List[str]]) -> List[str]:
    for tag in given or []:
        if not registry.valid(registry.TAG_RE, tag):
            raise UsageError(
                f"--tag {peertext.quoted(tag)} is not a tag (lower-case letters, digits, '.', '_', '-')"
            )
    return list(given or [])


def _hosts_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--via", metavar="SERVER", action="append", help=_VIA_HELP)
    parser.add_argument(
        "--tag", metavar="TAG", action="append", help="only machines with this tag (repeat: all of them)"
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
    "tags",
)


def hosts_document(listing: machines.Listing, now: Optional[float] = None) -> Dict[str, Any]:
    """`rtun hosts --json`: each machine's entry, its alias and whether it answers; the files
    skipped; why the listing stopped early (null when complete)."""
    names = hostnames.aliases(listing.entries)
    found = []
    for entry in listing.entries:
        live = listing.live.get(entry.machine_id, False)
        item: Dict[str, Any] = {key: getattr(entry, key) for key in _ENTRY_KEYS}
        seen = listing.sightings.get(entry.machine_id, [])
        item.update(
            alias=names[entry.machine_id],
            live=live,
            relays=[s.relay for s in seen if s.relay],
            relays_live=[s.relay for s in seen if s.relay and s.live],
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


hosts = Command(
    _hosts_arguments,
    _run_hosts,
    examples=[
        "rtun hosts --via relay.example.org",
        "rtun hosts --via relay1 --via relay2 --tag gpu",
        "rtun hosts --json",
    ],
)


def _connect_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--via",
        metavar="SERVER",
        action="append",
        help="jump through SERVER; repeat for several relays, tried where the machine answers, "
        "freshest first (default: [hosts] relays of the config file, else you are on the relay)",
    )
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
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="be ssh's ProxyCommand: carry the machine's SSH stream on stdin and stdout, "
        "through the first relay that answers (what `rtun ssh-config` writes for several relays)",
    )
    parser.add_argument("--proxy-to", metavar="RELAY=PORT", action="append", help=argparse.SUPPRESS)


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
    for key in ("login", "via", "registry", "identity", "anyway", "proxy", "proxy_to"):
        late_value = getattr(parsed, key)
        if key in ("via", "proxy_to") and late_value:
            late_value = (getattr(args, key) or []) + late_value  # repeated: before and after NAME
        if late_value not in (None, False):
            setattr(args, key, late_value)
    args.remote_command = parsed.rest + words[end + 1 :]


def _hops(given: List[str]) -> List[Tuple[str, int]]:
    """``--proxy-to RELAY=PORT`` values (written by rtun connect itself)."""
    hops = []
    for word in given:
        via, _, port = word.rpartition("=")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise UsageError(f"--proxy-to {peertext.quoted(word)} is not RELAY=PORT")
        hops.append((hostnames.check_via(via) or via, int(port)))
    return hops


def _carry(ssh: List[str], hops: List[Tuple[str, int]]) -> int:
    try:
        process, first = proxy.open_stream(ssh, hops, log=sys.stderr)
    except OSError as exc:
        print(f"rtun connect: {exc}", file=sys.stderr)
        return 255
    return proxy.carry(process, first)


def _run_connect(args: argparse.Namespace) -> int:
    _late_connect_options(args)
    ssh = sshargv.ssh_base(identity=args.identity)
    if args.login is not None and not registry.valid(registry.USER_RE, args.login):
        raise UsageError(f"-l {args.login!r} is not a valid user name")
    if args.proxy_to:
        return _carry(ssh, _hops(args.proxy_to))
    listing = _listing(args, probe=args.name)  # whether that machine answers, before ssh
    entry = machines.find(listing.entries, args.name)
    if not args.anyway:
        vias = " --via ".join(listing.relays if listing.relays != [""] else []) or None
        machines.check_reachable(entry, listing.live.get(entry.machine_id, False), vias)
    # The relays to try, freshest first; each one's entry, under the shown name (one host key).
    where = [
        dataclasses.replace(s, entry=dataclasses.replace(s.entry, name=entry.name))
        for s in merge.candidates(listing, entry.machine_id, args.anyway)
    ]
    hops = [(s.relay, s.entry.port) for s in where if s.relay]
    if args.proxy:
        if not hops:
            raise UsageError("--proxy goes through a relay: give --via (or [hosts] relays in the config)")
        return _carry(ssh, hops)
    command = machines.split_command(args.remote_command)
    if len(hops) > 1:
        words = ["connect", "--proxy", entry.machine_id]
        words += [w for relay_, port in hops for w in ("--proxy-to", f"{relay_}={port}")]
        words += ["--identity", args.identity] if args.identity else []
        argv = machines.proxied_argv(ssh, entry, machines.proxy_command(words), args.login, command)
        via: Optional[str] = hops[0][0]
    else:
        chosen = where[0] if where else machines.Sighting("", entry, False)
        via = chosen.relay or None
        argv = machines.connect_argv(ssh, chosen.entry, via, args.login, command)
    note = machines.host_key_note(ssh, entry, via, args.name)
    if note:
        print(f"rtun connect: {note}", file=sys.stderr)
    return machines.exec_ssh(argv)


connect = Command(
    _connect_arguments,
    _run_connect,
    usage="rtun connect NAME [--via SERVER]... [-l USER] [--identity KEY] [--anyway] [-- COMMAND...]\n"
    "       rtun connect --proxy NAME [--via SERVER]...",
    examples=[
        "rtun connect pi --via relay.example.org",
        "rtun connect pi --via relay1 --via relay2 -- uptime",
        "ssh -o ProxyCommand='rtun connect --proxy pi --via relay1 --via relay2' pi.rtun",
    ],
)


def _ssh_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--via",
        metavar="SERVER",
        action="append",
        help="add ProxyJump SERVER; several: a ProxyCommand (rtun connect --proxy) trying each "
        "(default: [hosts] relays of the config file, else you are on the relay)",
    )
    parser.add_argument("--registry", metavar="DIR", help=_REGISTRY_HELP)
    parser.add_argument(
        "--identity",
        metavar="KEY",
        type=identity_file,
        help="the private key for SERVER and the machines (IdentityFile of each, offered alone)",
    )


def _run_ssh_config(args: argparse.Namespace) -> int:
    listing = _listing(args, probe=False)
    vias = [via for via in listing.relays if via]
    make_proxy = None
    if len(vias) > 1:
        if args.registry is not None and not registry.valid(registry.TEXT_RE, args.registry):
            raise UsageError("--registry: printable characters only, for a ProxyCommand")
        words = [w for via in vias for w in ("--via", via)]
        words += ["--registry", args.registry] if args.registry else []
        words += ["--identity", args.identity] if args.identity else []

        def make_proxy(alias: str) -> str:
            return machines.proxy_command(["connect", "--proxy", alias] + words)

    text, problems = hostnames.ssh_config(listing.entries, ",".join(vias) or None, args.identity, make_proxy)
    _report(args.command, problems)
    sys.stdout.write(text)
    return 0


ssh_config = Command(
    _ssh_config_arguments,
    _run_ssh_config,
    examples=[
        "rtun ssh-config --via relay.example.org >> ~/.ssh/config.d/rtun",
        "rtun ssh-config --via relay1 --via relay2 > ~/.ssh/rtun.conf",
    ],
)
