"""Upload framing: the SHA-256 line after a file's data, PUT's entry lines, and chunk headers.

No I/O and no state, like ``wire``; see docs/protocol.md.
"""

from __future__ import annotations

from rtun.protocol.headers import dumps, json_field, json_object
from rtun.protocol.limits import MAX_CHUNK, MAX_CHUNK_DIGITS, MAX_MTIME, SHA256_HEX_LEN
from rtun.protocol.messages import E_BAD_REQUEST, E_BAD_SIZE, E_CHECKSUM, Message, Rejected
from rtun.protocol.wire import EOL, decode_line, strip_eol

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs start-up time the client cannot spare
    from typing import Any, Callable, Dict, Optional, Union

_HEX_DIGITS = b"0123456789abcdef"


def encode_checksum(hexdigest: str) -> bytes:
    return hexdigest.encode("ascii") + EOL


def parse_checksum(line: bytes) -> str:
    raw = strip_eol(line)
    if len(raw) != SHA256_HEX_LEN or raw.strip(_HEX_DIGITS):
        raise Rejected(E_CHECKSUM, "missing or malformed SHA-256 after the data")
    return raw.decode("ascii")


_set = object.__setattr__


class DirEntry(Message):
    __slots__ = ("path", "mode", "mtime")
    path: str
    mode: int
    mtime: float

    def __init__(self, path: str, mode: int, mtime: float) -> None:  # one per directory sent
        _set(self, "path", path)
        _set(self, "mode", mode)
        _set(self, "mtime", mtime)


class FileEntry(Message):
    """A file whose data follows as chunks; size is None when not known up front (stdin)."""

    __slots__ = ("path", "mode", "mtime", "size")
    path: str
    mode: int
    mtime: float
    size: Optional[int]

    def __init__(self, path: str, mode: int, mtime: float, size: Optional[int]) -> None:
        # One per file on both sides of a transfer: cheaper than Message's generic init.
        _set(self, "path", path)
        _set(self, "mode", mode)
        _set(self, "mtime", mtime)
        _set(self, "size", size)


class LinkEntry(Message):
    __slots__ = ("path", "target")
    path: str
    target: str


class EndEntry(Message):
    __slots__ = ()


if TYPE_CHECKING:
    Entry = Union[DirEntry, FileEntry, LinkEntry, EndEntry]


_quoted: "Optional[Callable[[str], str]]" = None  # json's own string quoting, imported on first use


def _load_quoted() -> "Callable[[str], str]":
    global _quoted
    from json.encoder import encode_basestring_ascii

    _quoted = encode_basestring_ascii
    return _quoted


def encode_entry(entry: Entry) -> bytes:
    # A tree of small files encodes one entry per file: files and directories are formatted
    # here, five times faster than json.dumps, into exactly the bytes it would give (%r of an
    # int or a finite float is its JSON).
    kind = type(entry)
    if kind is FileEntry or kind is DirEntry:
        mode, mtime = entry.mode, entry.mtime  # type: ignore[union-attr]
        size = entry.size if kind is FileEntry else None  # type: ignore[union-attr]
        if (
            type(mode) is int
            and (type(mtime) is int or (type(mtime) is float and mtime - mtime == 0))
            and (size is None or type(size) is int)
        ):
            quoted = _quoted or _load_quoted()
            path = quoted(entry.path)  # type: ignore[union-attr]
            if kind is DirEntry:
                return ('{"type":"dir","path":%s,"mode":%d,"mtime":%r}\r\n' % (path, mode, mtime)).encode(
                    "ascii"
                )
            sized = "" if size is None else ',"size":%d' % size
            return (
                '{"type":"file","path":%s,"mode":%d,"mtime":%r%s}\r\n' % (path, mode, mtime, sized)
            ).encode("ascii")
    return _encode_entry_json(entry)


def _encode_entry_json(entry: Entry) -> bytes:
    obj: Dict[str, Any]
    if isinstance(entry, DirEntry):
        obj = {"type": "dir", "path": entry.path, "mode": entry.mode, "mtime": entry.mtime}
    elif isinstance(entry, FileEntry):
        obj = {"type": "file", "path": entry.path, "mode": entry.mode, "mtime": entry.mtime}
        if entry.size is not None:
            obj["size"] = entry.size
    elif isinstance(entry, LinkEntry):
        obj = {"type": "link", "path": entry.path, "target": entry.target}
    elif isinstance(entry, EndEntry):
        obj = {"type": "end"}
    else:
        raise TypeError(f"not an entry: {entry!r}")
    return dumps(obj).encode("ascii") + EOL


def _mode(obj: Dict[str, Any]) -> int:
    mode: int = json_field(obj, "mode", int, 0o644)
    if not 0 <= mode <= 0o7777:
        raise Rejected(E_BAD_REQUEST, "mode out of range")
    return mode


def _mtime(obj: Dict[str, Any]) -> float:
    value = obj.get("mtime", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected(E_BAD_REQUEST, "field 'mtime' must be a number")
    if not 0 <= value < MAX_MTIME:
        raise Rejected(E_BAD_REQUEST, "mtime out of range")
    return float(value)


_file_line: "Optional[Any]" = None  # the regular expression below, compiled on first use


def _plain_file_line() -> "Any":
    """A file entry exactly as rtun writes one: an ASCII path without escapes, plain numbers."""
    global _file_line
    if _file_line is None:
        import re

        _file_line = re.compile(
            rb'\{"type":"file","path":"([\x20\x21\x23-\x5b\x5d-\x7e]*)","mode":(0|[1-9][0-9]{0,9}),'
            rb'"mtime":((?:0|[1-9][0-9]{0,19})(?:\.[0-9]{1,30})?(?:[eE][-+]?[0-9]{1,3})?),'
            rb'"size":(0|[1-9][0-9]{0,19})\}\r?\n?\Z'
        )
    return _file_line


def parse_entry(line: bytes) -> Entry:
    # One entry per file of a tree: the entries rtun itself writes are read with one regular
    # expression, to exactly what json.loads would give (tests/protocol/test_fuzz.py checks
    # it); anything else, or anything odd, goes through json.loads.
    plain = (_file_line or _plain_file_line()).match(line)
    if plain is None:
        return _parse_entry_json(line)
    path, mode_text, mtime_text, size = plain.groups()
    mode = int(mode_text)
    if mode > 0o7777:
        raise Rejected(E_BAD_REQUEST, "mode out of range")
    mtime = float(mtime_text)  # what json.loads gives for a fraction, and _mtime for an integer
    if not mtime < MAX_MTIME:
        raise Rejected(E_BAD_REQUEST, "mtime out of range")
    return FileEntry(path.decode("ascii"), mode, mtime, int(size))


def _parse_entry_json(line: bytes) -> Entry:
    obj = json_object(decode_line(strip_eol(line)))
    kind = obj.get("type")
    if kind == "end":
        return EndEntry()
    path = json_field(obj, "path", str)
    if kind == "dir":
        return DirEntry(path, _mode(obj), _mtime(obj))
    if kind == "file":
        size = obj.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise Rejected(E_BAD_SIZE, "bad file size")
        return FileEntry(path, _mode(obj), _mtime(obj), size)
    if kind == "link":
        return LinkEntry(path, json_field(obj, "target", str))
    raise Rejected(E_BAD_REQUEST, f"unknown entry type {str(kind)[:20]!r}")


def encode_chunk_header(length: int) -> bytes:
    """Each file's data is a run of chunks ``<length>\\r\\n<bytes>``, ended by a zero length."""
    return b"%d\r\n" % length


def parse_chunk_header(line: bytes) -> int:
    raw = strip_eol(line)
    if not raw.isdigit() or len(raw) > MAX_CHUNK_DIGITS:
        raise Rejected(E_BAD_SIZE, "bad chunk length")
    length = int(raw)
    if length > MAX_CHUNK:
        raise Rejected(E_BAD_SIZE, "chunk too large")
    return length
