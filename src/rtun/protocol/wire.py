"""The RTUN wire format: every line that crosses the socket is encoded or decoded here.

No I/O and no state: ``sender`` and ``receiver`` decide what comes when, these functions only
turn messages (the values in ``messages``) into bytes and back. One table, :data:`TABLE`, names
each request's verb, its value class and how the text after the verb is read and written (a JSON
header's fields by the readers in ``headers``): a new request is a value class and a row. See
docs/protocol.md.

v1 is the line protocol of the original RTUN. Version 2 ("rtun/2") adds a few verbs that a v2
client only uses after a HELLO. HELLO rides inside a v1 ``SEND`` whose size field is not a number:
a v1 daemon answers that with a well-formed ``ERROR 101`` line and closes, so probing it never
blocks (the v1 reply to an unknown verb has no line ending and would hang the client).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs start-up time the client cannot spare
    import mmap
    from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union

    from rtun.protocol.headers import Field
    from rtun.protocol.messages import Request as Request

from rtun.protocol import headers
from rtun.protocol.headers import dumps, json_object
from rtun.protocol.limits import MAX_LINE, MAX_SIZE_DIGITS
from rtun.protocol.messages import (
    E_BAD_PATH,
    E_BAD_REQUEST,
    E_BAD_SIZE,
    E_LINE_TOO_LONG,
    E_UNKNOWN,
    Commit,
    Copy,
    Dial,
    Echo,
    Edit,
    EditWait,
    Forward,
    Hello,
    Notify,
    Notify2,
    OpenUrl,
    Paste,
    Pid,
    Ping,
    Put,
    Range,
    Ranges,
    Rejected,
    Reply,
    Send,
    Shutdown,
    View,
)

HELLO_TOKEN = "RTUN/2"
FEATURES = (
    "notify2",
    "put",
    "open",
    "copy",
    "paste",
    "edit",
    "ranges",
    "update",
    "forward",
    "clipboard-types",
)
VERSION_PREFIX = "version="  # a daemon's HELLO reply may carry one word "version=X.Y.Z"

EOL = b"\r\n"


# ---- lines -----------------------------------------------------------------------------------


def line_end(
    buffer: "Union[bytearray, mmap.mmap]", start: int, end: int, scanned: int = 0, limit: int = MAX_LINE
) -> int:
    """The one bound on a line, whichever side reads it: where the line that begins at
    ``start`` ends (the offset just past its LF), or -1 while its LF is not in
    ``buffer[start:end]``. ``scanned``: bytes from ``start`` already known to hold no LF.

    A line longer than ``limit`` bytes, its ending included, is refused (E_LINE_TOO_LONG) as
    soon as more than ``limit`` bytes of it have come, so no peer makes a reader hold more."""
    newline = buffer.find(b"\n", start + scanned, end)
    if newline < 0:
        if end - start > limit:
            raise Rejected(E_LINE_TOO_LONG, f"line longer than {limit} bytes")
        return -1
    if newline + 1 - start > limit:
        raise Rejected(E_LINE_TOO_LONG, f"line longer than {limit} bytes")
    return newline + 1


def strip_eol(line: bytes) -> bytes:
    """Remove a trailing CRLF or bare LF (v1 readers accept both)."""
    if line.endswith(b"\r\n"):
        return line[:-2]
    if line.endswith(b"\n"):
        return line[:-1]
    return line


def decode_line(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected(E_BAD_REQUEST, "request is not valid UTF-8") from None


# ---- the text after v1's verbs ----------------------------------------------------------------


def _parse_size(token: str) -> int:
    if not token.isdigit() or not token.isascii() or len(token) > MAX_SIZE_DIGITS:
        raise Rejected(E_BAD_SIZE, f"bad size {token[:40]!r}")
    return int(token)


def _size_and_path(size_token: str, path: str) -> Tuple[int, str]:
    size = _parse_size(size_token)
    if not path:
        raise Rejected(E_BAD_PATH, "missing file name")
    return size, path


def _read_send(rest: str) -> Union[Send, Hello]:
    size_token, _, path = rest.partition(" ")
    if size_token == HELLO_TOKEN:  # HELLO rides in a SEND (module docstring)
        return Hello(tuple(path.split()))
    return Send(*_size_and_path(size_token, path))


def _read_view(rest: str) -> View:
    size_token, _, name = rest.partition(" ")
    return View(*_size_and_path(size_token, name))


def _read_notify(rest: str) -> Notify:
    host, _, body = rest.partition(" ")
    return Notify(host, body)


# ---- the table ---------------------------------------------------------------------------------


class Verb:
    """One request kind: its verb, its value class, and how the text after the verb is read
    (``read``, None where another row reads it) and written (``write``; None, or a writer's
    None, for a bare verb; ``fields`` for a JSON header, which gives both)."""

    __slots__ = ("verb", "kind", "read", "write")

    def __init__(
        self,
        verb: str,
        kind: type,
        read: Optional[Callable[[str], Request]] = None,
        write: Optional[Callable[[Any], Optional[str]]] = None,
        fields: Tuple[Field, ...] = (),
    ) -> None:
        self.verb, self.kind = verb, kind
        if fields:
            read, write = _json_reader(kind, fields), _json_writer(fields)
        elif read is None and write is None:
            read = _bare_reader(verb, kind)
        self.read = read
        self.write = write


def _bare_reader(verb: str, kind: Type[Any]) -> Callable[[str], Request]:
    def read(rest: str) -> Request:
        if rest:  # as v1: "PING extra" is no PING
            raise Rejected(E_UNKNOWN, f"unknown command {verb!r}")
        request: Request = kind()
        return request

    return read


def _json_reader(kind: Type[Any], fields: Tuple[Field, ...]) -> Callable[[str], Request]:
    attrs = [attr for _, _, attr, _ in fields]
    order = [attrs.index(attr) for attr in kind.__slots__]
    in_order = attrs == list(kind.__slots__)
    readers = [(key, reader) for key, reader, _, _ in fields]

    def read(rest: str) -> Request:
        obj = json_object(rest)
        values = [reader(obj, key) for key, reader in readers]  # checked in header order
        request: Request = kind(*values) if in_order else kind(*[values[i] for i in order])
        return request

    return read


def _json_writer(fields: Tuple[Field, ...]) -> Callable[[Any], str]:
    spec = [(key, attr, omit_default) for key, _, attr, omit_default in fields]

    def write(request: Any) -> str:
        header = {}
        for key, attr, omit_default in spec:
            value = getattr(request, attr)
            if value or not omit_default:
                header[key] = value
        return dumps(header)

    return write


_PASTE_FIELDS = (
    headers.field("type", headers.clipboard_type, omit_default=True),
    headers.field("list", headers.false, "list_types", omit_default=True),
)
_read_paste_header, _write_paste_header = _json_reader(Paste, _PASTE_FIELDS), _json_writer(_PASTE_FIELDS)


def _read_paste(rest: str) -> Request:
    return Paste() if not rest else _read_paste_header(rest)  # a bare PASTE: older clients'


def _write_paste(request: Paste) -> Optional[str]:
    header = _write_paste_header(request)
    return None if header == "{}" else header  # plain text: bare, as older daemons know it


TABLE = (
    # v1 (the original RTUN): words after the verb.
    Verb("PING", Ping),
    Verb("PID", Pid),
    Verb("ECHO", Echo, Echo, lambda r: r.text),
    Verb("SHUTDOWN", Shutdown),
    Verb("NOTIFY", Notify, _read_notify, lambda r: f"{r.title} {r.body}"),
    Verb("SEND", Send, _read_send, lambda r: f"{r.size} {r.path}"),
    Verb("VIEW", View, _read_view, lambda r: f"{r.size} {r.name}"),
    # rtun/2: HELLO is a SEND (read by SEND's row); the others carry a JSON header.
    Verb("SEND", Hello, write=lambda r: " ".join((HELLO_TOKEN,) + r.features)),
    Verb(
        "NOTIFY2",
        Notify2,
        fields=(headers.field("title", headers.text_or_empty), headers.field("body", headers.text_or_empty)),
    ),
    Verb(
        "PUT",
        Put,
        fields=(
            headers.field("dest", headers.text_or_empty),
            headers.field("overwrite", headers.false),
            headers.field("bytes", headers.total, "total_bytes"),
            headers.field("files", headers.total, "total_files"),
            headers.field("mtimes", headers.text_or_empty, omit_default=True),
            headers.field("track", headers.false, omit_default=True),
            headers.field("update", headers.update, omit_default=True),
        ),
    ),
    Verb("OPEN", OpenUrl, fields=(headers.field("url", headers.text),)),
    Verb(
        "COPY",
        Copy,
        fields=(
            headers.field("bytes", headers.size, "size"),
            headers.field("type", headers.clipboard_type, omit_default=True),
        ),
    ),
    Verb("PASTE", Paste, _read_paste, _write_paste),
    Verb(
        "EDIT",
        Edit,
        fields=(headers.field("name", headers.name), headers.field("bytes", headers.size, "size")),
    ),
    Verb(
        "EDITWAIT",
        EditWait,
        fields=(
            headers.field("result", headers.edit_result),
            headers.field("message", headers.text_or_empty),
        ),
    ),
    Verb(
        "RANGES",
        Ranges,
        fields=(
            headers.field("dest", headers.text_or_empty),
            headers.field("name", headers.name),
            headers.field("bytes", headers.size, "size"),
            headers.field("mode", headers.mode),
            headers.field("mtime", headers.mtime),
            headers.field("key", headers.hex_digest),
            headers.field("overwrite", headers.false),
            headers.field("resume", headers.true),
            headers.field("join", headers.false),
            headers.field("update", headers.false, omit_default=True),
        ),
    ),
    Verb(
        "RANGE",
        Range,
        fields=(headers.field("offset", headers.size), headers.field("bytes", headers.size, "size")),
    ),
    Verb("COMMIT", Commit, fields=(headers.field("digest", headers.hex_digest),)),
    Verb(
        "FORWARD",
        Forward,
        fields=(
            headers.field("port", headers.port),
            headers.field("local", headers.port, omit_default=True),
            headers.field("exact", headers.false, omit_default=True),
        ),
    ),
    Verb(
        "DIAL", Dial, fields=(headers.field("token", headers.hex_digest), headers.field("id", headers.count))
    ),
)
READERS: "Dict[str, Callable[[str], Request]]" = {row.verb: row.read for row in TABLE if row.read is not None}
WRITERS: "Dict[type, Verb]" = {row.kind: row for row in TABLE}


def parse_request(line: bytes) -> Request:
    """Decode one request line (with or without its line ending)."""
    verb, _, rest = decode_line(strip_eol(line)).partition(" ")
    read = READERS.get(verb)
    if read is None:
        raise Rejected(E_UNKNOWN, f"unknown command {verb[:40]!r}")
    return read(rest)


def encode_request(request: Request) -> bytes:
    """Encode a request line, line ending included."""
    row = WRITERS.get(type(request))
    if row is None:
        raise TypeError(f"not a request: {request!r}")
    rest = None if row.write is None else row.write(request)
    text = row.verb if rest is None else f"{row.verb} {rest}"
    if "\n" in text or "\r" in text:
        raise ValueError("a request line cannot contain a line break")
    return text.encode("utf-8") + EOL


# ---- replies (daemon -> client) --------------------------------------------------------------


READY = b"READY" + EOL


def ok(text: str = "") -> bytes:
    return (f"OK {text}" if text else "OK").encode("utf-8") + EOL


def ok_data(obj: Dict[str, Any]) -> bytes:
    return ok(dumps(obj))


def error(code: int, text: str) -> bytes:
    flat = " ".join(text.split())  # an error is always exactly one line
    return f"ERROR {code} {flat}".encode("utf-8", "replace") + EOL


def parse_reply(line: bytes) -> Reply:
    text = strip_eol(line).decode("utf-8", "replace")
    if text == "OK":
        return Reply(True, "", None)
    if text.startswith("OK "):
        return Reply(True, text[3:], None)
    if text == "READY":
        return Reply(True, "READY", None)
    if text == "ERROR":
        return Reply(False, text, None)
    if text.startswith("ERROR "):
        code_token, _, message = text[6:].partition(" ")
        # ASCII digits only: str.isdigit() also takes "²" and "١", which int() refuses or reads.
        if code_token.isascii() and code_token.isdigit() and len(code_token) <= 9:
            return Reply(False, message or text, int(code_token))
        return Reply(False, text[6:], None)
    raise Rejected(E_BAD_REQUEST, f"unexpected reply {text[:80]!r}")


def hello_reply(features: Tuple[str, ...], version: str) -> str:
    return " ".join((HELLO_TOKEN,) + features + (VERSION_PREFIX + version,))


def parse_hello_reply(reply: Reply) -> Optional[Tuple[str, ...]]:
    """The daemon's features (its version word included), or None when the peer is a v1
    daemon."""
    if not reply.ok:
        return None
    words = reply.text.split()
    if not words or words[0] != HELLO_TOKEN:
        return None
    return tuple(words[1:])


def daemon_version(features: Tuple[str, ...]) -> Optional[str]:
    """The version a daemon's HELLO reply gave (daemons before rtun 0.2 give none)."""
    for word in features:
        if word.startswith(VERSION_PREFIX) and len(word) <= 64:
            return word[len(VERSION_PREFIX) :]
    return None


def saved_paths(reply: Reply) -> List[str]:
    paths = reply.data.get("saved", [])
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []
