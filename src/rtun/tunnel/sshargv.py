"""ssh command lines and what ssh says back: pure functions, no processes (those are sshproc.py).

Every ssh rtun runs starts from ``RTUN_SSH_COMMAND`` (a shell-quoted command line, default
``ssh``), so the user's keys, agent, ssh_config and known_hosts apply.
"""

from __future__ import annotations

import re
import shlex
from typing import Dict, List, Optional, Sequence, Tuple

from rtun.errors import RtunError
from rtun.tunnel.registry import printable

# Safe defaults for the tunnel's connection. Host key checking is never turned off: BatchMode
# makes an unknown server key a failure, reported with a hint to accept it once by hand.
SERVER_ALIVE_INTERVAL = 3  # with CountMax 2, a silent server is noticed within ~9 s
SERVER_ALIVE_COUNT_MAX = 2
CONNECT_TIMEOUT = 10

BANNER_RE = re.compile(rb"^SSH-(2\.0|1\.99)-")
BANNER_MAX = 256  # an sshd banner line is at most 255 bytes (RFC 4253)


class SshNotFoundError(RtunError):
    """The ssh client is missing: install OpenSSH's client, or point RTUN_SSH_COMMAND at it."""

    exit_code = 127


class SshFailedError(RtunError):
    """ssh could not do what rtun asked; the message carries ssh's own words and a hint."""


def split_command(line: str) -> List[str]:
    """``RTUN_SSH_COMMAND`` as an argv prefix (plain ``ssh`` when empty)."""
    try:
        argv = shlex.split(line.strip() or "ssh")
    except ValueError as exc:
        raise SshFailedError(f"RTUN_SSH_COMMAND is not a valid command line: {exc}") from None
    return argv or ["ssh"]


def tunnel_options(
    alive_interval: int = SERVER_ALIVE_INTERVAL,
    alive_count: int = SERVER_ALIVE_COUNT_MAX,
    connect_timeout: int = CONNECT_TIMEOUT,
) -> List[str]:
    """The ``-o`` options of the agent's connection (command-line options beat ssh_config)."""
    options = {
        "BatchMode": "yes",
        "ExitOnForwardFailure": "yes",
        "ServerAliveInterval": str(alive_interval),
        "ServerAliveCountMax": str(alive_count),
        "ConnectTimeout": str(connect_timeout),
        "ClearAllForwardings": "yes",  # forwards from ssh_config would clash between restarts
        "RequestTTY": "no",
        "PermitLocalCommand": "no",
        "LogLevel": "ERROR",
    }
    return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]


def master_argv(base: Sequence[str], destination: str, control_path: str, options: Sequence[str]) -> List[str]:
    """``ssh -M -N``: the one authenticated connection every later request rides on."""
    return list(base) + [
        "-M", "-S", control_path, "-N",
        "-o", "ControlPersist=no",
    ] + list(options) + ["--", destination]


def mux_argv(base: Sequence[str], destination: str, control_path: str, extra: Sequence[str],
             command: Optional[str] = None) -> List[str]:
    """A client of the master. ``ProxyCommand=false`` makes it fail rather than open a new
    connection of its own when the master is gone."""
    argv = list(base) + [
        "-S", control_path, "-o", "ControlMaster=no", "-o", "ProxyCommand=false",
        "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
    ] + list(extra) + ["--", destination]
    if command is not None:
        argv.append(command)
    return argv


def remote_forward_spec(port: int, local_host: str, local_port: int) -> str:
    """``-R`` bound to the server's loopback only, to the machine's own sshd."""
    host = f"[{local_host}]" if ":" in local_host else local_host
    return f"127.0.0.1:{port}:{host}:{local_port}"


def forwarded_port(spec: str, printed: str) -> int:
    """The server port of a forward just added: what ``-O forward`` printed for port 0 (the
    server's choice), else the port asked for."""
    printed = printed.strip()
    return int(printed) if printed.isdigit() else int(spec.split(":")[1])


def is_banner(data: bytes) -> bool:
    """``data`` starts with an sshd identification string."""
    return bool(BANNER_RE.match(data))


def parse_config(text: str) -> Dict[str, str]:
    """The output of ``ssh -G`` as a dict (keys lower-case, the first value of a key wins)."""
    config: Dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        config.setdefault(key.lower(), value.strip())
    return config


def direct_target(config: Dict[str, str]) -> Optional[Tuple[str, int]]:
    """The server's host and port when ssh reaches it directly (no ProxyJump or ProxyCommand)."""
    if not config.get("hostname") or not config.get("port", "").isdigit():
        return None
    for key in ("proxycommand", "proxyjump"):
        if config.get(key, "none").lower() != "none":
            return None
    return config["hostname"], int(config["port"])


# ssh prints its own reason on stderr; these turn the common ones into advice.
_HINTS = [
    ("Host key verification failed",
     "the server's host key is unknown or changed: check it, then accept it once by hand with "
     "`ssh SERVER true` as this user (see docs/tunnel.md)"),
    ("REMOTE HOST IDENTIFICATION HAS CHANGED",
     "the server's host key changed: verify it before removing the old line from known_hosts"),
    ("Permission denied",
     "the server refused the key: either it is not in ~/.ssh/authorized_keys of the server "
     "account, or sshd skipped its line because of an option it rejects (OpenSSH drops the whole "
     "line, e.g. for permitlisten with port 0, and logs why only at LogLevel DEBUG); "
     "`rtun tunnel authorize` prints a line that works (docs/relay.md). BatchMode is on, so no "
     "password or passphrase prompt can appear"),
    ("Could not resolve hostname", "the server name does not resolve: check DNS or the ssh_config alias"),
    ("Connection refused", "nothing listens on the server's ssh port: is sshd running there?"),
    ("timed out", "no answer from the server: check the network and any firewall in between"),
    ("No route to host", "the network cannot reach the server"),
    ("Network is unreachable", "this machine has no network yet; rtun retries on its own"),
    ("port forwarding failed", "the server refused the port: it is in use (a stale session of "
     "this machine, until sshd drops it), or not the port this key's permitlisten allows "
     "(`rtun tunnel authorize --port`), or AllowTcpForwarding is off"),
    ("administratively prohibited", "the server does not let this key open that port "
     "(permitopen in authorized_keys, or AllowTcpForwarding)"),
    ("Connection closed by", "the server closed the connection (MaxStartups, a firewall, or sshd restarting)"),
    ("not responding", "the server stopped answering keepalives; the connection was dropped"),
]

_EXIT_HINTS = {
    255: "ssh failed to connect or was disconnected",
    127: "the ssh command was not found",
    126: "the ssh command could not be run",
}


def hint(returncode: Optional[int], stderr: str) -> str:
    """One line of advice for an ssh failure, from its exit code and what it printed."""
    for needle, advice in _HINTS:
        if needle.lower() in stderr.lower():
            return advice
    if returncode is not None and returncode < 0:
        return f"ssh was killed by signal {-returncode}"
    return _EXIT_HINTS.get(returncode or 0, f"ssh exited with status {returncode}")


def lines(text: str) -> List[str]:
    """The non-blank lines of what ssh printed, stripped (progress meters' ``\\r`` too), with
    anything but printable ASCII escaped: a relay's words never drive the terminal."""
    return [printable(line.strip()) for line in text.replace("\r", "\n").splitlines() if line.strip()]


def last_line(text: str) -> str:
    found = lines(text)
    return found[-1] if found else ""


def exit_reason(returncode: Optional[int], stderr: str) -> str:
    """``ssh exited CODE: its last words (advice)``: why a connection ended, in one line."""
    said = last_line(stderr)
    return f"ssh exited {returncode}" + (f": {said}" if said else "") + f" ({hint(returncode, stderr)})"
