"""The registry on the server: one JSON file per machine (format in docs/registry.md).

Writing needs only a POSIX shell on the server: the agent pipes the entry into ``sh -c`` over its
own SSH connection, which writes a temporary file and renames it into place. Reading treats every
file as hostile: size-capped, strictly validated, and a bad file is reported and skipped.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shlex
import stat
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

SCHEMA = 1
DEFAULT_DIR = "~/.rtun/hosts"
MAX_ENTRY_BYTES = 64 * 1024
MAX_FILES = 1000

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MACHINE_ID_RE = re.compile(r"^[0-9a-f]{32}$")
USER_RE = re.compile(r"^[A-Za-z0-9._][A-Za-z0-9._@-]{0,63}$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
TEXT_RE = re.compile(r"^[\x20-\x7e]{0,100}$")  # printable ASCII: safe on any terminal
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
FILE_RE = re.compile(r"^[0-9a-f]{32}\.json$")
STATUSES = ("online", "offline")


class RegistryError(ValueError):
    """An entry that is not a valid registry entry; the message says why."""


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
    schema: int = SCHEMA
    extra: Dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def filename(self) -> str:
        return entry_filename(self.machine_id)

    @property
    def host_key_alias(self) -> str:
        """Names the machine in known_hosts: every machine is 127.0.0.1:PORT on the server, so
        keys are stored per machine instead, and never clash when ports move."""
        return f"rtun-{self.name}-{self.machine_id[:8]}"

    def to_json(self) -> bytes:
        data = {k: v for k, v in asdict(self).items() if k != "extra" and v is not None}
        data = {"schema": data.pop("schema"), **data}
        return (json.dumps(data, indent=2) + "\n").encode("utf-8")

    def age(self, now: Optional[float] = None) -> float:
        return max(0.0, (time.time() if now is None else now) - parse_iso(self.last_seen))


def entry_filename(machine_id: str) -> str:
    """One file per machine id: two machines that chose the same name never share a file."""
    if not MACHINE_ID_RE.match(machine_id):
        raise RegistryError(f"bad machine id {machine_id!r}")
    return f"{machine_id}.json"


def _reject_constant(name: str) -> Any:
    raise RegistryError(f"{name} is not valid JSON")


def _field(data: Dict[str, Any], key: str, kind: type, pattern: Optional[re.Pattern[str]] = None,
           required: bool = True) -> Any:
    if key not in data:
        if required:
            raise RegistryError(f"missing field {key!r}")
        return None
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise RegistryError(f"field {key!r} is not a {kind.__name__}")
    if pattern is not None and not (isinstance(value, str) and pattern.match(value)):
        raise RegistryError(f"field {key!r} has an invalid value")
    return value


def parse_entry(raw: bytes) -> Entry:
    """Validate one file's bytes; raises RegistryError with a short reason."""
    if len(raw) > MAX_ENTRY_BYTES:
        raise RegistryError(f"larger than {MAX_ENTRY_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
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
    entry.extra = {k: v for k, v in data.items() if k not in asdict(entry)}
    return entry


def safe_label(name: str) -> str:
    """A file name fit to print in a one-line message, whatever bytes it holds."""
    return repr(name)[1:-1][:80]


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


def read_local(directory: str) -> Tuple[List[Tuple[str, bytes]], List[str]]:
    """The ``*.json`` files of a local registry directory, read defensively."""
    path = os.path.expanduser(directory)
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"cannot read {path}: {exc.strerror}"]
    files, problems = [], []
    for name in [n for n in names if n.endswith(".json")][:MAX_FILES]:
        full = os.path.join(path, name)
        try:
            # O_NONBLOCK: a FIFO planted in the directory must not hang us.
            fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        except OSError as exc:
            problems.append(f"skipped {safe_label(name)}: {exc.strerror}")
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                problems.append(f"skipped {safe_label(name)}: not a regular file")
                continue
            files.append((name, os.read(fd, MAX_ENTRY_BYTES + 1)))
        finally:
            os.close(fd)
    return files, problems


def remote_dir(directory: str) -> str:
    """The directory as a shell word on the server, with ``~/`` meaning the login's home."""
    if directory == "~":
        return '"$HOME"'
    if directory.startswith("~/"):
        return '"$HOME"/' + shlex.quote(directory[2:])
    return shlex.quote(directory)


def sh(script: str) -> str:
    """A command for the server's login shell, whatever it is, that runs ``script`` in sh."""
    return "sh -c " + shlex.quote(script)


def write_command(directory: str, filename: str) -> str:
    """Reads an entry on stdin and renames it into place: readers never see half a file."""
    if not FILE_RE.match(filename):
        raise RegistryError(f"bad entry file name {filename!r}")
    return sh(
        f"d={remote_dir(directory)}; "
        'mkdir -p -m 700 "$d" || exit 1; umask 022; '
        f't="$d/.{filename}.$$.tmp"; '
        f'if cat > "$t" && mv -f "$t" "$d/{filename}"; then exit 0; fi; rm -f "$t"; exit 1'
    )


def list_command(directory: str) -> str:
    """Prints each entry file framed as "F <name bytes> <content bytes>\\n<name><content>", so
    neither a hostile name nor hostile content can desynchronise the stream."""
    return sh(
        f"d={remote_dir(directory)}; "
        '[ -d "$d" ] || exit 0; t=$(mktemp) || exit 1; trap \'rm -f "$t"\' EXIT; '
        f'for f in "$d"/*.json; do [ -f "$f" ] || continue; '
        f'dd if="$f" of="$t" bs={MAX_ENTRY_BYTES + 1} count=1 2>/dev/null || continue; '
        'b=${f##*/}; '
        'printf "F %s %s\\n" "$(printf %s "$b" | wc -c | tr -d " ")" "$(wc -c < "$t" | tr -d " ")"; '
        'printf %s "$b"; cat "$t"; done'
    )


def parse_listing(stream: bytes) -> Tuple[List[Tuple[str, bytes]], List[str]]:
    files: List[Tuple[str, bytes]] = []
    pos = 0
    while pos < len(stream) and len(files) < MAX_FILES:
        end = stream.find(b"\n", pos, pos + 64)
        header = stream[pos:end].split(b" ") if end >= 0 else []
        if len(header) != 3 or header[0] != b"F" or not (header[1].isdigit() and header[2].isdigit()):
            return files, ["registry listing from the server is garbled; stopped reading"]
        name_len, size = int(header[1]), int(header[2])
        name = stream[end + 1:end + 1 + name_len].decode("utf-8", "replace")
        start = end + 1 + name_len
        files.append((name, stream[start:start + size]))
        pos = start + size
    return files, []
