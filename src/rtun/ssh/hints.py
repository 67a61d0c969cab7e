"""What ssh's failures mean: its exit code and its last words turned into one line of advice.
What ssh printed is shown through rtun.protocol.peertext (a server or relay wrote some of it).
"""

from __future__ import annotations

from rtun.protocol import peertext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

# ssh prints its own reason on stderr; these turn the common ones into advice.
_HINTS = [
    (
        "Host key verification failed",
        "the server's host key is unknown or changed: check it, then accept it once by hand with "
        "`ssh SERVER true` as this user (see docs/tunnel.md)",
    ),
    (
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "the server's host key changed: verify it before removing the old line from known_hosts",
    ),
    (
        "Permission denied",
        "the server refused the key: either ssh offered another key than the one authorized "
        "(name it: `rtun tunnel --identity KEY`, also for hosts, connect and install), or it is "
        "not in ~/.ssh/authorized_keys of the server account, or sshd skipped its line because of an option it rejects (OpenSSH drops the whole "
        "line, e.g. for permitlisten with port 0, and logs why only at LogLevel DEBUG); "
        "`rtun tunnel authorize` prints a line that works (docs/relay.md). BatchMode is on, so no "
        "password or passphrase prompt can appear",
    ),
    ("Could not resolve hostname", "the server name does not resolve: check DNS or the ssh_config alias"),
    ("Connection refused", "nothing listens on the server's ssh port: is sshd running there?"),
    ("timed out", "no answer from the server: check the network and any firewall in between"),
    ("No route to host", "the network cannot reach the server"),
    ("Network is unreachable", "this machine has no network yet; rtun retries on its own"),
    (
        "port forwarding failed",
        "the server refused the port: it is in use (a stale session of "
        "this machine, until sshd drops it), or not the port this key's permitlisten allows "
        "(`rtun tunnel authorize --port`), or AllowTcpForwarding is off",
    ),
    (
        "administratively prohibited",
        "the server does not let this key open that port "
        "(permitopen in authorized_keys, or AllowTcpForwarding)",
    ),
    (
        "Connection closed by",
        "the server closed the connection (MaxStartups, a firewall, or sshd restarting)",
    ),
    ("not responding", "the server stopped answering keepalives; the connection was dropped"),
]

_EXIT_HINTS = {
    255: "ssh failed to connect or was disconnected",
    127: "the ssh command was not found",
    126: "the ssh command could not be run",
}


def hint(returncode: "Optional[int]", stderr: str) -> str:
    """One line of advice for an ssh failure, from its exit code and what it printed."""
    for needle, advice in _HINTS:
        if needle.lower() in stderr.lower():
            return advice
    if returncode is not None and returncode < 0:
        return f"ssh was killed by signal {-returncode}"
    return _EXIT_HINTS.get(returncode or 0, f"ssh exited with status {returncode}")


def exit_reason(returncode: "Optional[int]", stderr: str) -> str:
    """``ssh exited CODE: its last words (advice)``: why a connection ended, in one line."""
    said = peertext.last_line(stderr)
    return f"ssh exited {returncode}" + (f": {said}" if said else "") + f" ({hint(returncode, stderr)})"
