"""The registry on the relay: one JSON file per machine (format in docs/registry.md).

Entries are written on the relay by its ``rtun-relay`` script (relayscript.py, driven from
relay.py). Reading treats every file as hostile: only ``<machine id>.json`` names, regular files,
size-capped, strictly validated (every pattern matches the whole value: no trailing newline gets
through), and a bad file is reported and skipped; a listing that had to stop early says so.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, FrozenSet, List, Optional, Pattern, Tuple

from rtun.protocol import peertext
from rtun.tunnel.relayscript import MAX_ENTRY_BYTES, MAX_FILES, MAX_LISTING_BYTES

SCHEMA = 1
DEFAULT_DIR = "~/.rtun/hosts"

# Used with fullmatch() only: `$` would also match before a final newline.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MACHINE_ID_RE = re.compile(r"[0-9a-f]{32}")
USER_RE = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._@-]{0,63}")
HOSTNAME_RE = re.compile(r"[A-Za-z0-9._-]{1,255}")
TEXT_RE = re.compile(r"[\x20-\x7e]{0,100}")  # printable ASCII: safe on any terminal
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
FILE_RE = re.compile(r"[0-9a-f]{32}\.json")
TAG_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
MAX_TAGS = 16
STATUSES = ("online", "offline")


class RegistryError(ValueError):
    """An entry that is not a valid registry entry; the message says why."""


def valid(pattern: Pattern[str], value: object) -> bool:
    """``value`` is a string that ``pattern`` matches from its first character to its last."""
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def now_iso(now: Optional[float] = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


def parse_iso(value: str) -> float:
    return float(calendar.timegm(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")))


@dataclass
class Entry:
    name: str
    hostname: str
    machine_id: str
    user: str
    port: int
    local_port: int
    os: str
    agent_version: str
    connected_at: str
    last_seen: str
    status: str = "online"
    disconnected_at: Optional[str] = None
    tags: List[str] = field(default_factory=list)  # written only when there are some
    schema: int = SCHEMA
    extra: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def filename(self) -> str:
        return entry_filename(self.machine_id)

    @property
    def host_key_alias(self) -> str:
        """Names the machine in known_hosts: every machine is 127.0.0.1:PORT on the relay, so
        keys are stored per machine instead, and never clash when ports move."""
        return f"rtun-{self.name}-{self.machine_id[:8]}"

    def to_json(self) -> bytes:
        data = {k: v for k, v in asdict(self).items() if k != "extra" and v not in (None, [])}
        data = {"schema": data.pop("schema"), **data}
        return (json.dumps(data, indent=2) + "\n").encode("utf-8")

    def age(self, now: Optional[float] = None) -> float:
        return max(0.0, (time.time() if now is None else now) - parse_iso(self.last_seen))


_FIELDS = frozenset(f.name for f in fields(Entry)) - {"extra"}


def entry_filename(machine_id: str) -> str:
    """One file per machine id: two machines that chose the same name never share a file."""
    if not valid(MACHINE_ID_RE, machine_id):
        raise RegistryError(f"bad machine id {safe_label(str(machine_id))!r}")
    return f"{machine_id}.json"


def _reject_constant(name: str) -> Any:
    raise RegistryError(f"{name} is not valid JSON")


def _field(
    data: Dict[str, Any], key: str, kind: type, pattern: Optional[Pattern[str]] = None, required: bool = True
) -> Any:
    if key not in data:
        if required:
            raise RegistryError(f"missing field {key!r}")
        return None
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RegistryError(f"field {key!r} is not a {kind.__name__}")
    if pattern is not None and not valid(pattern, value):
        raise RegistryError(f"field {key!r} has an invalid value")
    return value


def parse_entry(raw: bytes) -> Entry:
    """Validate one file's bytes; raises RegistryError (and nothing else) with a short reason."""
    if not isinstance(raw, (bytes, bytearray)):
        raise RegistryError("not bytes")
    if len(raw) > MAX_ENTRY_BYTES:
        raise RegistryError(f"larger than {MAX_ENTRY_BYTES} bytes")
    try:
        data = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant)
    except RegistryError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RegistryError(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise RegistryError("not a JSON object")
    schema = _field(data, "schema", int)
    if schema != SCHEMA:
        raise RegistryError(f"unsupported schema {schema}")
    port = _field(data, "port", int)
    local_port = _field(data, "local_port", int)
    for key, value in (("port", port), ("local_port", local_port)):
        if not 1 <= value <= 65535:
            raise RegistryError(f"field {key!r} is out of range")
    status = _field(data, "status", str)
    if status not in STATUSES:
        raise RegistryError("field 'status' has an invalid value")
    entry = Entry(
        name=_field(data, "name", str, NAME_RE),
        hostname=_field(data, "hostname", str, HOSTNAME_RE),
        machine_id=_field(data, "machine_id", str, MACHINE_ID_RE),
        user=_field(data, "user", str, USER_RE),
        port=port,
        local_port=local_port,
        os=_field(data, "os", str, TEXT_RE),
        agent_version=_field(data, "agent_version", str, TEXT_RE),
        connected_at=_field(data, "connected_at", str, TIME_RE),
        last_seen=_field(data, "last_seen", str, TIME_RE),
        status=status,
        disconnected_at=_field(data, "disconnected_at", str, TIME_RE, required=False),
        schema=schema,
    )
    for key in ("connected_at", "last_seen", "disconnected_at"):
        value = getattr(entry, key)
        if value is not None:
            try:
                parse_iso(value)
            except ValueError:
                raise RegistryError(f"field {key!r} is not a valid time") from None
    entry.tags = parse_tags(data.get("tags", []))
    entry.extra = {k: v for k, v in data.items() if k not in _FIELDS}
    return entry


def parse_tags(value: object) -> List[str]:
    """The ``tags`` field: a list of at most MAX_TAGS tags matching TAG_RE, duplicates dropped.
    Anything else makes the whole entry invalid, as a bad value of any field does."""
    if not isinstance(value, list) or len(value) > MAX_TAGS:
        raise RegistryError(f"field 'tags' is not a list of at most {MAX_TAGS} tags")
    if not all(valid(TAG_RE, tag) for tag in value):
        raise RegistryError("field 'tags' has an invalid tag")
    return list(dict.fromkeys(value))


def safe_label(name: str) -> str:
    """A file name fit to print in a one-line message, whatever bytes it holds."""
    return peertext.ascii_escaped(name, 80)


@dataclass
class Files:
    """The entry files of one listing: (file name, bytes) pairs, one problem line per file
    skipped, why the listing stopped early (None when it is complete), and which ports have a
    listener on the relay (None when it could not say)."""

    files: List[Tuple[str, bytes]] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)
    cut: Optional[str] = None
    listening: Optional[FrozenSet[int]] = None  # ports with a listener there, when known


def cut_note(seen: int, unread: int) -> Optional[str]:
    if unread <= 0:
        return None
    return (
        f"listing cut: {unread} of {seen} entry files not read (at most {MAX_FILES} files "
        f"and {MAX_LISTING_BYTES // (1024 * 1024)} MiB per listing, smallest first)"
    )


def parse_files(files: List[Tuple[str, bytes]]) -> Tuple[List[Entry], List[str]]:
    """Entries from (file name, bytes) pairs, and one problem line per file skipped."""
    entries, problems = [], []
    for name, raw in files:
        try:
            entry = parse_entry(raw)
            if name != entry.filename:
                raise RegistryError(f"file name does not match machine id {entry.machine_id}")
        except RegistryError as exc:
            problems.append(f"skipped {safe_label(name)}: {exc}")
            continue
        entries.append(entry)
    entries.sort(key=lambda e: (e.name, e.machine_id))
    return entries, problems


def read_local(directory: str) -> Files:
    """The entry files of a registry directory on this host, by the rules the relay script
    follows: ``<machine id>.json`` names only, regular files only (no links, FIFOs or devices),
    at most MAX_FILES files and MAX_LISTING_BYTES bytes, smallest first."""
    path = os.path.expanduser(directory)
    try:
        names = sorted(n for n in os.listdir(path) if valid(FILE_RE, n))
    except FileNotFoundError:
        return Files()
    except OSError as exc:
        return Files(problems=[f"cannot read {safe_label(path)}: {exc.strerror}"])
    result = Files()
    sized: List[Tuple[int, str]] = []
    for name in names[:MAX_FILES]:
        try:
            info = os.lstat(os.path.join(path, name))
        except OSError:
            continue  # gone since the listing
        if not stat.S_ISREG(info.st_mode):
            result.problems.append(f"skipped {name}: not a regular file")
        elif info.st_size > MAX_ENTRY_BYTES:
            result.problems.append(f"skipped {name}: larger than {MAX_ENTRY_BYTES} bytes")
        else:
            sized.append((info.st_size, name))
    used = unread = 0
    for size, name in sorted(sized):
        used += size
        if used > MAX_LISTING_BYTES:
            unread += 1
            continue
        raw = _read_regular(os.path.join(path, name))
        if raw is None:
            result.problems.append(f"skipped {name}: not a regular file")
        else:
            result.files.append((name, raw))
    result.cut = cut_note(len(names), unread + max(0, len(names) - MAX_FILES))
    return result


def _read_regular(path: str) -> Optional[bytes]:
    """At most MAX_ENTRY_BYTES + 1 bytes of a regular file; None for anything else. O_NONBLOCK
    and O_NOFOLLOW: a FIFO or a link planted since the lstat must not hang or redirect us."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, MAX_ENTRY_BYTES + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
