"""Finding and using registered machines: `rtun hosts`, `rtun connect`, `rtun ssh-config`.

On the relay itself these read the registry directory and probe 127.0.0.1 directly; elsewhere
(``--via RELAY``) they open one ssh connection to the relay, list the registry over it (one
request, relay.py) and probe every port through it, all at once (Master.probe_many).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from rtun.errors import RtunError
from rtun.protocol import peertext
from rtun.ssh import argv as sshargv
from rtun.ssh import banner, hints
from rtun.ssh import process as sshproc
from rtun.tunnel import hostnames, registry, relay
from rtun.tunnel.hostnames import aliases


class UnknownMachineError(RtunError):
    """No registered machine has that name: `rtun hosts` lists the names there are."""


class RegistryUnreachableError(RtunError):
    """The relay holding the registry could not be reached; the message has ssh's reason."""


@dataclass
class Listing:
    entries: List[registry.Entry]
    problems: List[str]
    live: Dict[str, bool]
    cut: Optional[str] = None  # why the listing stopped early; None when complete


PROBE_BATCH = 256  # direct probes at once, on the relay itself


def _via_master(ssh: List[str], via: str) -> sshproc.Master:
    master = sshproc.Master(
        ssh, via, ["-o", f"ConnectTimeout={sshargv.CONNECT_TIMEOUT}", "-o", "ClearAllForwardings=yes"]
    )
    master.start()
    if not master.wait_ready(sshargv.CONNECT_TIMEOUT + 30):
        code = master.returncode
        said = peertext.last_line(master.stderr_text)
        master.close()
        raise RegistryUnreachableError(
            f"cannot reach {via}: {said or f'ssh exited {code}'} ({hints.hint(code, master.stderr_text)})"
        )
    return master


def _probe_direct(ports: Sequence[int], timeout: float) -> Dict[int, bool]:
    unique = sorted(set(ports))
    found: Dict[int, bool] = {}
    for start in range(0, len(unique), PROBE_BATCH):
        chunk = unique[start : start + PROBE_BATCH]
        found.update(zip(chunk, banner.banners([("127.0.0.1", p) for p in chunk], timeout)))
    return found


def load(
    ssh: Optional[List[str]], via: Optional[str], directory: str, probe: bool = True, timeout: float = 3.0
) -> Listing:
    """The registry's valid entries, the files skipped, and which ports answer with a banner."""
    hostnames.check_via(via)
    if via is None:
        files = registry.read_local(directory)
        entries, bad = registry.parse_files(files.files)
        live = _probe_direct([e.port for e in entries], timeout) if probe else {}
    else:
        assert ssh is not None
        master = _via_master(ssh, via)
        try:
            try:
                files = relay.Relay(master.run, directory).list()
            except relay.RelayError as exc:
                raise RegistryUnreachableError(
                    f"cannot list {peertext.quoted(directory)} on {via}: {exc.message}"
                ) from None
            entries, bad = registry.parse_files(files.files)
            # A port nothing listens on is down: no need to probe it (when the relay could say).
            ports = [e.port for e in entries if files.listening is None or e.port in files.listening]
            live = master.probe_many(ports, timeout) if probe else {}
        finally:
            master.close()
    return Listing(
        entries, files.problems + bad, {e.machine_id: live.get(e.port, False) for e in entries}, files.cut
    )


def format_age(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def status(entry: registry.Entry, live: bool) -> str:
    if live:
        return "live"
    return "offline" if entry.status == "offline" else "down"


def table(listing: Listing, now: Optional[float] = None) -> str:
    names = aliases(listing.entries)
    rows: List[Tuple[str, ...]] = [("NAME", "PORT", "USER", "LAST SEEN", "STATUS", "OS")]
    for e in listing.entries:
        row = (
            names[e.machine_id],
            str(e.port),
            e.user,
            format_age(e.age(now)),
            status(e, listing.live.get(e.machine_id, False)),
            e.os,
        )
        rows.append(tuple(peertext.ascii_escaped(cell) for cell in row))  # validated; and never a split row
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def find(entries: Sequence[registry.Entry], name: str) -> registry.Entry:
    """A machine by name, by its alias (NAME-ID8, with or without ``.rtun``, in any case), or
    by a machine id prefix."""
    names = aliases(entries)
    wanted = hostnames.strip_suffix(name).lower()
    by_alias = [e for e in entries if names[e.machine_id].lower() == wanted]
    if len(by_alias) == 1:
        return by_alias[0]
    if len(by_alias) > 1:
        ids = ", ".join(sorted(e.machine_id for e in by_alias))
        raise UnknownMachineError(
            f"several machines are called {peertext.quoted(name)}: name one by its machine id ({ids})"
        )
    by_name = [e for e in entries if e.name.lower() == wanted]
    if len(by_name) > 1:
        choices = ", ".join(sorted(names[e.machine_id] for e in by_name))
        raise UnknownMachineError(f"several machines are named {peertext.quoted(name)}: use one of {choices}")
    by_id = [e for e in entries if len(wanted) >= 4 and e.machine_id.startswith(wanted)]
    if len(by_id) == 1:
        return by_id[0]
    known = ", ".join(sorted(names.values())[:50]) or "none"
    raise UnknownMachineError(f"no machine named {peertext.quoted(name)} in the registry (known: {known})")


def connect_argv(
    ssh: Sequence[str], entry: registry.Entry, via: Optional[str], user: Optional[str], command: Sequence[str]
) -> List[str]:
    """ssh to the machine's port on the server's loopback, through the server when not on it.

    Every machine is 127.0.0.1:PORT on the server, so known_hosts names each by its own
    HostKeyAlias; a port moving to another machine never trips (or silently reuses) a key."""
    argv = list(ssh) + [
        "-o",
        f"HostKeyAlias={entry.host_key_alias}",
        "-p",
        str(entry.port),
        "-l",
        user or entry.user,
    ]
    if via is not None:
        argv += ["-J", hostnames.check_via(via) or via]
    argv += ["--", "127.0.0.1"]
    return argv + list(command)


def exec_ssh(argv: List[str]) -> int:
    """Become ssh: the terminal, signals and the exit code are ssh's own."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        raise sshargv.SshNotFoundError(f"cannot run {argv[0]}: {exc.strerror}") from None


def split_command(words: Sequence[str]) -> Tuple[str, ...]:
    words = list(words)
    if words and words[0] == "--":
        words = words[1:]
    return tuple(words)
