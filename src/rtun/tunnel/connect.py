"""Finding and using registered machines: `rtun hosts`, `rtun connect`, `rtun ssh-config`.

On the server itself these read the registry directory and probe 127.0.0.1 directly; elsewhere
(``--via SERVER``) they open one ssh connection to the server, list the registry over it and
probe every port through it, concurrently.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from rtun.errors import RtunError
from rtun.tunnel import registry, sshargv, sshproc


class UnknownMachineError(RtunError):
    """No registered machine has that name: `rtun hosts` lists the names there are."""


class RegistryUnreachableError(RtunError):
    """The server holding the registry could not be reached; the message has ssh's reason."""


@dataclass
class Listing:
    entries: List[registry.Entry]
    problems: List[str]
    live: Dict[str, bool]


def _via_master(ssh: List[str], via: str) -> sshproc.Master:
    master = sshproc.Master(ssh, via, ["-o", f"ConnectTimeout={sshargv.CONNECT_TIMEOUT}",
                                       "-o", "ClearAllForwardings=yes"])
    master.start()
    if not master.wait_ready(sshargv.CONNECT_TIMEOUT + 30):
        code = master.returncode
        said = sshargv.last_line(master.stderr_text)
        master.close()
        raise RegistryUnreachableError(
            f"cannot reach {via}: {said or f'ssh exited {code}'} ({sshargv.hint(code, master.stderr_text)})"
        )
    return master


def _probe_all(ports: Sequence[int], probe: Callable[[int], bool], workers: int = 16) -> Dict[int, bool]:
    unique = sorted(set(ports))
    if not unique:
        return {}
    with ThreadPoolExecutor(max_workers=min(workers, len(unique))) as pool:
        return dict(zip(unique, pool.map(probe, unique)))


def load(ssh: Optional[List[str]], via: Optional[str], directory: str, probe: bool = True,
         timeout: float = 3.0) -> Listing:
    """The registry's valid entries, the files skipped, and which ports answer with a banner."""
    if via is None:
        files, problems = registry.read_local(directory)
        entries, bad = registry.parse_files(files)
        live = _probe_all([e.port for e in entries],
                          lambda port: sshproc.tcp_banner("127.0.0.1", port, timeout)) if probe else {}
        return Listing(entries, problems + bad, {e.machine_id: live.get(e.port, False) for e in entries})
    assert ssh is not None
    master = _via_master(ssh, via)
    try:
        done = master.run(registry.list_command(directory), timeout=30)
        if done.returncode != 0:
            said = sshargv.last_line(done.stderr.decode("utf-8", "replace"))
            raise RegistryUnreachableError(f"cannot list {directory} on {via}: {said or done.returncode}")
        files, problems = registry.parse_listing(done.stdout)
        entries, bad = registry.parse_files(files)
        live = _probe_all([e.port for e in entries],
                          lambda port: master.probe("127.0.0.1", port, timeout), workers=8) if probe else {}
    finally:
        master.close()
    return Listing(entries, problems + bad, {e.machine_id: live.get(e.port, False) for e in entries})


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


def aliases(entries: Sequence[registry.Entry]) -> Dict[str, str]:
    """The name to call each machine by (machine id -> alias): its own name, or NAME-ID8 when
    several machines chose the same name."""
    counts: Dict[str, int] = {}
    for e in entries:
        counts[e.name] = counts.get(e.name, 0) + 1
    return {e.machine_id: e.name if counts[e.name] == 1 else f"{e.name}-{e.machine_id[:8]}" for e in entries}


def table(listing: Listing, now: Optional[float] = None) -> str:
    names = aliases(listing.entries)
    rows = [("NAME", "PORT", "USER", "LAST SEEN", "STATUS", "OS")]
    for e in listing.entries:
        rows.append((names[e.machine_id], str(e.port), e.user, format_age(e.age(now)),
                     status(e, listing.live.get(e.machine_id, False)), e.os))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def as_json(listing: Listing, now: Optional[float] = None) -> str:
    names = aliases(listing.entries)
    out = []
    for e in listing.entries:
        data = json.loads(e.to_json())
        data.update(alias=names[e.machine_id], live=listing.live.get(e.machine_id, False),
                    age_seconds=int(e.age(now)), state=status(e, listing.live.get(e.machine_id, False)))
        out.append(data)
    return json.dumps({"machines": out, "skipped": listing.problems}, indent=2)


def find(entries: Sequence[registry.Entry], name: str) -> registry.Entry:
    """A machine by name, by NAME-ID8 alias, or by a machine id prefix."""
    names = aliases(entries)
    by_alias = [e for e in entries if names[e.machine_id] == name]
    if by_alias:
        return by_alias[0]
    by_name = [e for e in entries if e.name == name]
    if len(by_name) > 1:
        choices = ", ".join(names[e.machine_id] for e in by_name)
        raise UnknownMachineError(f"several machines are named {name!r}: use one of {choices}")
    lowered = name.lower()
    by_id = [e for e in entries if len(lowered) >= 4 and e.machine_id.startswith(lowered)]
    if len(by_id) == 1:
        return by_id[0]
    known = ", ".join(sorted(names.values())) or "none"
    raise UnknownMachineError(f"no machine named {name!r} in the registry (known: {known})")


def connect_argv(ssh: Sequence[str], entry: registry.Entry, via: Optional[str], user: Optional[str],
                 command: Sequence[str]) -> List[str]:
    """ssh to the machine's port on the server's loopback, through the server when not on it.

    Every machine is 127.0.0.1:PORT on the server, so known_hosts names each by its own
    HostKeyAlias; a port moving to another machine never trips (or silently reuses) a key."""
    argv = list(ssh) + ["-o", f"HostKeyAlias={entry.host_key_alias}", "-p", str(entry.port),
                        "-l", user or entry.user]
    if via is not None:
        argv += ["-J", via]
    argv += ["--", "127.0.0.1"]
    return argv + list(command)


def ssh_config(entries: Sequence[registry.Entry], via: Optional[str]) -> str:
    names = aliases(entries)
    where = f"through {via}" if via else "on this server"
    blocks = [f"# Machines registered {where}; generated by `rtun ssh-config`."]
    for e in entries:
        lines = [f"Host {names[e.machine_id]}", "    HostName 127.0.0.1", f"    Port {e.port}",
                 f"    User {e.user}", f"    HostKeyAlias {e.host_key_alias}"]
        if via is not None:
            lines.append(f"    ProxyJump {via}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


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
