"""The agent's settings and its command-line options, declared once.

``AGENT_OPTIONS`` is the one list of the agent's flags. From it come the argparse options of
`rtun tunnel` and `rtun tunnel install` (:func:`add_agent_options`), the :class:`Settings` the
agent runs with (:func:`settings_from`), and the flags `install` copies into the service's
command line (:func:`service_flags`). Each option's dest names a Settings field, except
``--local``, which sets ``local_host`` and ``local_port`` together.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from rtun.errors import UsageError
from rtun.protocol import peertext
from rtun.ssh import argv as sshargv
from rtun.tunnel import hostnames, identity, registry
from rtun.tunnel.backoff import RECONNECT_SPREAD

BACKOFF_BASE = 1.0  # the first retry's step, in seconds (never above --max-backoff)


@dataclass(frozen=True)
class Settings:
    server: str
    name: str
    machine_id: str
    login_user: str
    local_host: str = "localhost"
    local_port: int = 22
    port: Optional[int] = None  # preferred server port; None: derived from the machine id
    registry: str = registry.DEFAULT_DIR
    probe_interval: float = 60.0  # end-to-end banner probe through the tunnel
    probe_timeout: float = 10.0
    heartbeat: float = 60.0  # last_seen refresh
    max_backoff: float = 60.0
    stable_after: float = 60.0  # a connection up this long resets the backoff
    reconnect_spread: float = RECONNECT_SPREAD  # its loss: the first retry at random in [0, this)
    alive_interval: int = sshargv.SERVER_ALIVE_INTERVAL
    alive_count: int = sshargv.SERVER_ALIVE_COUNT_MAX
    connect_timeout: int = sshargv.CONNECT_TIMEOUT
    identity: Optional[str] = None  # the private key for the server (ssh -i), an absolute path
    tags: Tuple[str, ...] = ()  # the entry's tags (--tag, repeated)

    @property
    def preferred_port(self) -> int:
        return self.port or identity.preferred_port(self.machine_id)

    @property
    def backoff_base(self) -> float:
        return min(BACKOFF_BASE, self.max_backoff)


def _positive(flag: str, value: float) -> None:
    if value <= 0:
        raise UsageError(f"{flag} must be positive")


def _tcp_port(flag: str, value: int) -> None:
    if not 1 <= value <= 65535:
        raise UsageError(f"{flag} {value} is not a TCP port")


def _machine_name(flag: str, value: str) -> None:
    if not registry.valid(registry.NAME_RE, value):
        raise UsageError(
            f"{flag} {peertext.quoted(value)}: use letters, digits, '.', '_' and '-' (at most 63)"
        )


def _user_name(flag: str, value: str) -> None:
    if not registry.valid(registry.USER_RE, value):
        raise UsageError(f"login user {peertext.quoted(value)} is not a valid user name")


_LOCAL_HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,252}|[0-9A-Fa-f:.]{2,45}")
_DIR_RE = re.compile(r"[\x20-\x7e]{1,1000}")  # a shell word once quoted; one line in a unit file


def parse_local(text: str) -> Tuple[str, int]:
    """``--local HOST:PORT`` (``[v6addr]:PORT`` too)."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if (
        not sep
        or not registry.valid(_LOCAL_HOST_RE, host)
        or not port_text.isdigit()
        or not 1 <= int(port_text) <= 65535
    ):
        raise UsageError(f"--local {peertext.quoted(text)} is not HOST:PORT")
    return host, int(port_text)


def key_path(text: str) -> str:
    """``--identity KEY`` as an absolute path: a boot service does not start in this directory."""
    import os

    return os.path.abspath(os.path.expanduser(text))


def _private_key(flag: str, value: str) -> None:
    import os

    if not registry.valid(_DIR_RE, value) or '"' in value:  # one quoted word in an ssh_config
        raise UsageError(f"{flag} {peertext.quoted(value)}: printable characters only, no '\"'")
    if not os.path.isfile(value):
        raise UsageError(
            f"{flag} {peertext.quoted(value)}: no such file (the private key, e.g. ~/.ssh/id_tunnel)"
        )
    if value.endswith(".pub"):
        raise UsageError(
            f"{flag} {peertext.quoted(value)} is a public key: give the private key beside it "
            f"({peertext.quoted(value[:-4])})"
        )


def identity_file(text: str) -> str:
    """``--identity`` of the commands that are not the agent's (an argparse type)."""
    path = key_path(text)
    _private_key("--identity", path)
    return path


def _directory(flag: str, value: str) -> None:
    if not registry.valid(_DIR_RE, value):
        raise UsageError(f"{flag} {peertext.quoted(value)}: printable characters only")


def _tags(flag: str, values: List[str]) -> None:
    for value in values:
        if not registry.valid(registry.TAG_RE, value):
            raise UsageError(
                f"{flag} {peertext.quoted(value)}: lower-case letters, digits, '.', '_' and '-' (at most 32)"
            )
    if len(set(values)) > registry.MAX_TAGS:
        raise UsageError(f"{flag}: at most {registry.MAX_TAGS} tags")


def _host_port(flag: str, value: str) -> None:
    parse_local(value)


@dataclass(frozen=True)
class Option:
    flag: str
    help: str
    type: Callable[[str], Any] = str
    metavar: Optional[str] = None
    check: Optional[Callable[[str, Any], None]] = None  # raises UsageError
    exclusive: Optional[str] = None  # options with the same group name exclude each other
    repeat: bool = False  # may be given several times (a list of values)

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")


AGENT_OPTIONS = (
    Option("--name", "name in the registry (default: this host name)", check=_machine_name),
    Option("--local-port", "this machine's sshd port (default 22)", int, "PORT", _tcp_port, "local"),
    Option("--local", "forward to HOST:PORT instead of localhost:22", str, "HOST:PORT", _host_port, "local"),
    Option("--port", "preferred server port (default: derived from the machine id)", int, check=_tcp_port),
    Option(
        "--registry",
        "registry directory on the server (default ~/.rtun/hosts; a tunnel key's "
        "forced command sets its own)",
        metavar="DIR",
        check=_directory,
    ),
    Option(
        "--login-user",
        "user to log in as, advertised in the registry (default: the user running the agent)",
        metavar="USER",
        check=_user_name,
    ),
    Option(
        "--probe-interval", "seconds between end-to-end probes through the tunnel (60)", float, "N", _positive
    ),
    Option("--probe-timeout", "seconds a probe may take (10)", float, "N", _positive),
    Option("--heartbeat", "seconds between last_seen refreshes in the registry (60)", float, "N", _positive),
    Option("--max-backoff", "longest wait between retries, in seconds (60)", float, "N", _positive),
    Option("--stable-after", "seconds up after which the backoff resets (60)", float, "N", _positive),
    Option(
        "--reconnect-spread",
        f"after losing a connection that was stable, retry at a random point within this many "
        f"seconds, so a relay restart does not bring every machine back at once ({RECONNECT_SPREAD:g})",
        float,
        "N",
        _positive,
    ),
    Option(
        "--alive-interval",
        "ssh ServerAliveInterval (3; with --alive-count 2: ~9 s to notice)",
        int,
        "N",
        _positive,
    ),
    Option("--alive-count", "ssh ServerAliveCountMax (2)", int, "N", _positive),
    Option("--connect-timeout", "ssh ConnectTimeout (10)", int, "N", _positive),
    Option(
        "--identity",
        "the private key for SERVER (ssh -i KEY, offered alone; default: your ssh_config's)",
        key_path,
        "KEY",
        _private_key,
    ),
    Option(
        "--tag",
        f"a tag in the registry entry, for `rtun hosts --tag` (repeat for several, at most {registry.MAX_TAGS})",
        metavar="TAG",
        check=_tags,
        repeat=True,
    ),
    Option("--machine-id", argparse.SUPPRESS),  # tests: several machines on one host
)


def add_agent_options(parser: argparse.ArgumentParser) -> None:
    groups: Dict[str, Any] = {}
    for option in AGENT_OPTIONS:
        target: Any = parser
        if option.exclusive is not None:
            if option.exclusive not in groups:
                groups[option.exclusive] = parser.add_mutually_exclusive_group()
            target = groups[option.exclusive]
        extra: Dict[str, Any] = {"action": "append"} if option.repeat else {}
        target.add_argument(option.flag, type=option.type, metavar=option.metavar, help=option.help, **extra)


def _check_relay(server: str) -> None:
    if not registry.valid(hostnames.HOP_RE, server):
        raise UsageError(f"{peertext.quoted(server)} is not an ssh destination ([user@]host[:port])")


def settings_from(server: Optional[str], given: Mapping[str, Any]) -> Settings:
    """The agent's settings from the parsed options (``given``: dest -> value, None where not
    given); raises UsageError for a value that makes no sense."""
    if not server:
        raise UsageError("name the server: rtun tunnel SERVER")
    _check_relay(server)
    values = {option.dest: given.get(option.dest) for option in AGENT_OPTIONS}
    values["name"] = values["name"] or identity.default_name()
    values["login_user"] = values["login_user"] or identity.current_user()
    for option in AGENT_OPTIONS:
        if option.check is not None and values[option.dest] is not None:
            option.check(option.flag, values[option.dest])
    local = values.pop("local")
    if local is not None:
        values["local_host"], values["local_port"] = parse_local(local)
    values["machine_id"] = identity.machine_id(values["machine_id"])
    tags = values.pop("tag")
    if tags is not None:
        values["tags"] = tuple(dict.fromkeys(tags))
    return Settings(server=server, **{key: value for key, value in values.items() if value is not None})


def settings_for(relays: Sequence[str], given: Mapping[str, Any]) -> List[Settings]:
    """The settings of each relay's agent: the same machine (id, name, options), its own relay."""
    if not relays:
        raise UsageError("name the relay: rtun tunnel RELAY [RELAY...] (or [tunnel] relays in the config)")
    first = settings_from(relays[0], given)
    found = [first]
    for relay in relays[1:]:
        if relay in (s.server for s in found):
            raise UsageError(f"relay {peertext.quoted(relay)} is named twice")
        _check_relay(relay)
        found.append(replace(first, server=relay))
    return found


def service_flags(given: Mapping[str, Any]) -> List[str]:
    """The agent options that were given, as command-line words for the boot service."""
    return [
        word
        for option in AGENT_OPTIONS
        if given.get(option.dest) is not None
        for value in (given[option.dest] if option.repeat else [given[option.dest]])
        for word in (option.flag, str(value))
    ]
