"""Finding and using registered machines: `rtun hosts`, `rtun connect`, `rtun ssh-config`.

On the relay itself these read the registry directory and probe 127.0.0.1 directly; elsewhere
(``--via RELAY``) they open one ssh connection to the relay, list the registry over it (one
request, relay.py) and probe every port through it, all at once (Master.probe_many).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

from rtun.errors import RtunError
from rtun.protocol import peertext
from rtun.ssh import argv as sshargv
from rtun.ssh import banner, hints
from rtun.ssh import process as sshproc
from rtun.tunnel import hostnames, registry, relay
from rtun.tunnel.hostnames import aliases


class UnknownMachineError(RtunError):
    """No registered machine has that name: `rtun hosts` lists the names there are."""


class MachineUnreachableError(RtunError):
    """The registry says the machine is offline, or it does not answer: `rtun hosts` shows when
    it is back, and `rtun connect --anyway` tries all the same."""


class RegistryUnreachableError(RtunError):
    """The relay holding the registry could not be reached; the message has ssh's reason."""


@dataclass
class Sighting:
    """A machine's entry as one relay holds it, and whether it answered through that relay."""

    relay: str  # the relay (a --via), "" for this host's own registry
    entry: registry.Entry
    live: bool


@dataclass
class Listing:
    entries: List[registry.Entry]
    problems: List[str]
    live: Dict[str, bool]
    cut: Optional[str] = None  # why the listing stopped early; None when complete
    # machine id -> where it is registered, freshest first (one relay: that one alone)
    sightings: Dict[str, List[Sighting]] = field(default_factory=dict)
    relays: List[str] = field(default_factory=list)  # the relays read ([""]: this host)


PROBE_BATCH = 256  # direct probes at once, on the relay itself


def _via_master(ssh: List[str], via: str, connect_timeout: int) -> sshproc.Master:
    master = sshproc.Master(
        ssh, via, ["-o", f"ConnectTimeout={connect_timeout}", "-o", "ClearAllForwardings=yes"]
    )
    master.start()
    # A short ConnectTimeout (several relays, failover) bounds the login too: a relay that
    # hangs after its banner must not hold the whole listing.
    ready = connect_timeout + 30 if connect_timeout >= sshargv.CONNECT_TIMEOUT else 2 * connect_timeout
    if not master.wait_ready(ready):
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


def _probed(entries: Sequence[registry.Entry], probe: Union[bool, str]) -> List[registry.Entry]:
    """The entries to probe: all, none, or (`rtun connect`) every one that ``probe`` may name:
    each relay is probed before the listings are merged, and a name that is unique here may be
    a NAME-ID alias in the merged listing (two machines called pi on two relays), or a machine
    renamed on one relay only. Probing one too many costs a banner; one too few, the failover."""
    if isinstance(probe, bool):
        return list(entries) if probe else []
    wanted = hostnames.strip_suffix(probe).lower()
    names = aliases(entries)
    return [
        e
        for e in entries
        if wanted
        in (
            e.name.lower(),
            names[e.machine_id].lower(),
            f"{e.name}-{e.machine_id[:8]}".lower(),
            f"{e.name}-{e.machine_id}".lower(),
        )
        or (len(wanted) >= 4 and e.machine_id.startswith(wanted))
    ]


def load(
    ssh: Optional[List[str]],
    via: Optional[str],
    directory: str,
    probe: Union[bool, str] = True,
    timeout: float = 3.0,
    connect_timeout: int = sshargv.CONNECT_TIMEOUT,
) -> Listing:
    """The registry's valid entries, the files skipped, and which ports answer with a banner
    (``probe``: all, none, or those of the machine of that name)."""
    hostnames.check_via(via)
    if via is None:
        files = registry.read_local(directory)
        entries, bad = registry.parse_files(files.files)
        live = _probe_direct([e.port for e in _probed(entries, probe)], timeout)
    else:
        assert ssh is not None
        master = _via_master(ssh, via, connect_timeout)
        try:
            try:
                files = relay.Relay(master.run, directory).list()
            except relay.RelayError as exc:
                raise RegistryUnreachableError(
                    f"cannot list {peertext.quoted(directory)} on {via}: {exc.message}"
                ) from None
            entries, bad = registry.parse_files(files.files)
            # A port nothing listens on is down: no need to probe it (when the relay could say).
            targets = _probed(entries, probe)
            ports = [e.port for e in targets if files.listening is None or e.port in files.listening]
            live = master.probe_many(ports, timeout) if ports else {}
        finally:
            master.close()
    alive = {e.machine_id: live.get(e.port, False) for e in entries}
    return Listing(
        entries,
        files.problems + bad,
        alive,
        files.cut,
        sightings={e.machine_id: [Sighting(via or "", e, alive[e.machine_id])] for e in entries},
        relays=[via or ""],
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
    """The machines, one row each; a TAGS column when any has tags, and a LIVE ON column (the
    relays it answers through now, freshest first) when several relays were read."""
    names = aliases(listing.entries)
    tagged = any(e.tags for e in listing.entries)
    several = len(listing.relays) > 1
    header = ("NAME", "PORT", "USER", "LAST SEEN", "STATUS") + ("LIVE ON",) * several + ("TAGS",) * tagged
    rows: List[Tuple[str, ...]] = [header + ("OS",)]
    for e in listing.entries:
        row: Tuple[str, ...] = (
            names[e.machine_id],
            str(e.port),
            e.user,
            format_age(e.age(now)),
            status(e, listing.live.get(e.machine_id, False)),
        )
        if several:
            live_on = [s.relay for s in listing.sightings.get(e.machine_id, []) if s.live]
            row += (",".join(live_on) or "-",)
        if tagged:
            row += (",".join(e.tags) or "-",)
        row += (e.os,)
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


def check_reachable(entry: registry.Entry, live: bool, via: Optional[str]) -> None:
    """Refuse, with what the registry knows, a machine that does not answer: ssh would only say
    ``channel 0: open failed`` or ``Connection closed``. (`--anyway` skips this.)"""
    if live:
        return
    name = peertext.ascii_escaped(aliases([entry])[entry.machine_id])
    seen = format_age(entry.age())
    retry = f"`rtun hosts{' --via ' + via if via else ''}` shows when it is back; --anyway tries all the same"
    if entry.status == "offline":
        gone = f" at {peertext.ascii_escaped(entry.disconnected_at)}" if entry.disconnected_at else ""
        raise MachineUnreachableError(
            f"{name} is offline: its tunnel agent disconnected{gone} (last seen {seen}); {retry}"
        )
    raise MachineUnreachableError(
        f"{name} does not answer on port {entry.port} of the relay (last seen {seen}): its tunnel "
        f"is down or reconnecting, or its sshd is not running; {retry}"
    )


def host_key_note(ssh: Sequence[str], entry: registry.Entry, via: Optional[str], name: str) -> str:
    """When ssh cannot ask about the machine's host key (BatchMode, or no terminal to ask on)
    and known_hosts has none under its HostKeyAlias yet: how to accept it. Else ""."""
    import subprocess

    try:
        done = subprocess.run(
            sshargv.config_argv(ssh, "127.0.0.1", ["-o", f"HostKeyAlias={entry.host_key_alias}"]),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    config = sshargv.parse_config(done.stdout.decode("utf-8", "replace"))
    strict = config.get("stricthostkeychecking", "ask")
    if done.returncode != 0 or strict in ("false", "no", "accept-new", "off"):
        return ""
    if strict == "ask" and config.get("batchmode", "no") != "yes" and _has_terminal():
        return ""  # ssh asks, showing the fingerprint
    files = (config.get("userknownhostsfile", "") + " " + config.get("globalknownhostsfile", "")).split()
    if any(_knows(path, entry.host_key_alias) for path in files):
        return ""
    hop = f" --via {via}" if via else ""
    return (
        f"the host key of {peertext.ascii_escaped(name)} (known as {entry.host_key_alias}) is not in "
        "your known_hosts yet, and this ssh cannot ask you to accept it (BatchMode, or no terminal): "
        f"run `rtun connect{hop} {peertext.ascii_escaped(name)} true` once in a terminal and check the "
        "fingerprint it shows (the machine's `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), "
        "or trust it on first use with RTUN_SSH_COMMAND='ssh -o StrictHostKeyChecking=accept-new'"
    )


def _has_terminal() -> bool:
    """Whether ssh could ask a question (it asks on /dev/tty, not on stdin)."""
    try:
        with open("/dev/tty", "rb"):
            return True
    except OSError:
        return False


def _knows(path: str, alias: str) -> bool:
    """Whether a known_hosts file has a key for ``alias`` (hashed lines too: ssh-keygen -F)."""
    import subprocess

    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        return False
    try:
        done = subprocess.run(
            ["ssh-keygen", "-F", alias, "-f", path], stdin=subprocess.DEVNULL, capture_output=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return True  # cannot tell: say nothing rather than something wrong
    return done.returncode == 0


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


def proxy_command(words: Sequence[str]) -> str:
    """A ProxyCommand running this very rtun with ``words``, as one ssh_config value: each word
    shell-quoted (ssh runs it with the user's shell), ``%`` doubled (ssh expands %-tokens)."""
    import shlex

    from rtun import paths

    program, env = paths.this_rtun()
    prefix = ["env"] + [f"{key}={value}" for key, value in sorted(env.items())] if env else []
    return " ".join(shlex.quote(word) for word in prefix + program + list(words)).replace("%", "%%")


def proxied_argv(
    ssh: Sequence[str], entry: registry.Entry, proxy: str, user: Optional[str], command: Sequence[str]
) -> List[str]:
    """ssh to the machine with ``proxy`` (a ProxyCommand) choosing the relay: the port is then
    the proxy's business, the host key still the machine's own."""
    argv = list(ssh) + ["-o", f"ProxyCommand={proxy}", "-o", f"HostKeyAlias={entry.host_key_alias}"]
    return argv + ["-l", user or entry.user, "--", "127.0.0.1"] + list(command)


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
