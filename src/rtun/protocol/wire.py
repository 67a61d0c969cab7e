"""The RTUN wire format: every line that crosses the socket is encoded or decoded here.

No I/O and no state: ``sender`` and ``receiver`` decide what comes when, these functions only
turn messages into bytes and back. See docs/protocol.md.

v1 is the line protocol of the original RTUN. Version 2 ("rtun/2") adds a few verbs that a v2
client only uses after a HELLO. HELLO rides inside a v1 ``SEND`` whose size field is not a number:
a v1 daemon answers that with a well-formed ``ERROR 101`` line and closes, so probing it never
blocks (the v1 reply to an unknown verb has no line ending and would hang the client).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs start-up time the client cannot spare
    from typing import Any, Dict, List, Optional, Tuple, Union

from rtun.protocol.limits import MAX_MTIME, MAX_SIZE_DIGITS

HELLO_TOKEN = "RTUN/2"
FEATURES = ("notify2", "put", "open", "copy", "paste", "edit", "ranges")
VERSION_PREFIX = "version="  # a daemon's HELLO reply may carry one word "version=X.Y.Z"

EOL = b"\r\n"

# Error codes. 100-107 are v1's own; 108 and up are rtun/2's (v1 clients only print them).
E_UNKNOWN = 100
E_BAD_SIZE = 101
E_STAT = 102
E_IS_DIR = 103
E_CREATE = 104
E_WRITE = 105
E_SHORT = 106
E_CHECKSUM = 107
E_BAD_PATH = 108
E_NO_SPACE = 109
E_REFUSED_TYPE = 110
E_NOTIFY = 111
E_LINE_TOO_LONG = 112
E_BAD_REQUEST = 113
E_BUSY = 114
E_OPEN = 115
E_DENIED = 116  # the local user turned this action off ([actions] in the daemon's config)
E_TOO_LARGE = 117  # a clipboard or edited file past the daemon's size limit



class Rejected(Exception):
    """A request the daemon will not carry out, or bytes that do not form a valid message.

    ``code`` and ``text`` become the ``ERROR`` reply; it is the one rejection type of the
    protocol core, the actions and storage alike.
    """

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class Truncated(Exception):
    """The peer closed the connection in the middle of a message."""


class Message:
    """An immutable value object. (dataclasses would cost every client command ~10 ms.)"""

    __slots__: "Tuple[str, ...]" = ()
    _defaults: "Tuple[Any, ...]" = ()  # values of the last fields, when they are left out

    def __init__(self, *args: "Any") -> None:
        missing = len(self.__slots__) - len(args)
        if not 0 <= missing <= len(self._defaults):
            raise TypeError(f"{type(self).__name__} takes {len(self.__slots__)} arguments")
        if missing:
            args += self._defaults[len(self._defaults) - missing:]
        for name, value in zip(self.__slots__, args):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: "Any") -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def _values(self) -> "Tuple[Any, ...]":
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Message) and type(other) is type(self) and other._values() == self._values()

    def __hash__(self) -> int:
        return hash((type(self), self._values()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


# ---- requests (client -> daemon) -------------------------------------------------------------


class Ping(Message):
    __slots__ = ()


class Pid(Message):
    __slots__ = ()


class Echo(Message):
    __slots__ = ("text",)
    text: str


class Shutdown(Message):
    __slots__ = ()


class Notify(Message):
    """v1 NOTIFY: the first word is the sender's host name, used as the title."""

    __slots__ = ("title", "body")
    title: str
    body: str


class Send(Message):
    """v1 SEND: one file of ``size`` bytes to ``path`` under the save directory."""

    __slots__ = ("size", "path")
    size: int
    path: str


class View(Message):
    __slots__ = ("size", "name")
    size: int
    name: str


class Hello(Message):
    """rtun/2 feature negotiation (carried as ``SEND RTUN/2 <features>``)."""

    __slots__ = ("features",)
    features: Tuple[str, ...]


class Notify2(Message):
    """rtun/2 NOTIFY2: an explicit title and a body that may span lines."""

    __slots__ = ("title", "body")
    title: str
    body: str


class Put(Message):
    """rtun/2 PUT: a stream of directory, file and link entries in one round trip.

    ``track``: remember the directories this PUT makes, and name them in the reply with a
    token (``"made"``). ``mtimes``: such a token; at the end, the directories this PUT lists
    that the token's PUT made get their modification times set again (files that other
    connections wrote into them moved those), and no other directory is touched."""

    __slots__ = ("dest", "overwrite", "total_bytes", "total_files", "mtimes", "track")
    _defaults = ("", False)
    dest: str
    overwrite: bool
    total_bytes: int
    total_files: int
    mtimes: str
    track: bool


class OpenUrl(Message):
    """rtun/2 OPEN: a URL for the local browser (the daemon allows http, https and mailto)."""

    __slots__ = ("url",)
    url: str


class Copy(Message):
    """rtun/2 COPY: ``size`` bytes for the local clipboard, sent as a v1 file is (READY, data,
    SHA-256)."""

    __slots__ = ("size",)
    size: int


class Paste(Message):
    """rtun/2 PASTE: the local clipboard, answered with a payload reply."""

    __slots__ = ()


class Edit(Message):
    """rtun/2 EDIT: a file of ``size`` bytes to open in the local editor, sent as a v1 file is;
    EDITWAIT requests on the same connection then carry the saves back."""

    __slots__ = ("size", "name")
    size: int
    name: str


class EditWait(Message):
    """rtun/2 EDITWAIT: the result of writing the previous save on the server ("" for none,
    "saved", "conflict", "failed") and a message; answered with the next save (a payload
    reply), or with the editor's close, or with nothing new after a while."""

    __slots__ = ("result", "message")
    result: str
    message: str


EDIT_RESULTS = ("", "saved", "conflict", "failed")


class Ranges(Message):
    """rtun/2 RANGES: one large file sent as ranges, over this and other connections.

    The first connection opens it (``join`` false): the daemon makes its temporary file, or,
    with ``resume``, finds the one an interrupted transfer of the same ``key`` left, and answers
    with the ranges it holds verified. Other connections join it by ``key``. RANGE requests then
    carry the data, and COMMIT gives the file its final name."""

    __slots__ = ("dest", "name", "size", "mode", "mtime", "key", "overwrite", "resume", "join")
    dest: str
    name: str
    size: int
    mode: int
    mtime: float
    key: str
    overwrite: bool
    resume: bool
    join: bool


class Range(Message):
    """rtun/2 RANGE: ``size`` bytes at ``offset`` of the file this connection opened or joined,
    then their SHA-256 line; no READY first (the data follows at once), OK after."""

    __slots__ = ("offset", "size")
    offset: int
    size: int


class Commit(Message):
    """rtun/2 COMMIT: every range has arrived; ``digest`` is the SHA-256 of the ranges' SHA-256
    digests (32 bytes each, in the order of their offsets). The daemon checks that the ranges
    cover the file exactly, then gives it its final name."""

    __slots__ = ("digest",)
    digest: str


def _key(obj: Dict[str, Any], field: str) -> str:
    value: str = json_field(obj, field, str)
    if not 16 <= len(value) <= 64 or value.strip("0123456789abcdef"):
        raise Rejected(E_BAD_REQUEST, f"field {field!r} must be 16 to 64 lowercase hex digits")
    return value

# Requests whose OK reply may carry a payload: ``OK {"bytes":N,...}``, N bytes, a SHA-256 line.
PAYLOAD_REQUESTS = (Paste, EditWait)

if TYPE_CHECKING:
    Request = Union[Ping, Pid, Echo, Shutdown, Notify, Send, View, Hello, Notify2, Put,
                    OpenUrl, Copy, Paste, Edit, EditWait, Ranges, Range, Commit]


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


def _parse_size(token: str) -> int:
    if not token.isdigit() or not token.isascii() or len(token) > MAX_SIZE_DIGITS:
        raise Rejected(E_BAD_SIZE, f"bad size {token[:40]!r}")
    return int(token)


_loads: "Optional[Any]" = None  # json.loads, imported on first use: v1 requests and the
# client's PING never need it


def json_object(text: str) -> Dict[str, Any]:
    global _loads
    if _loads is None:
        import json

        _loads = json.loads
    try:
        value = _loads(text)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the stack
        raise Rejected(E_BAD_REQUEST, "malformed JSON header") from None
    if not isinstance(value, dict):
        raise Rejected(E_BAD_REQUEST, "JSON header must be an object")
    return value


def json_field(obj: Dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    value = obj.get(key, default)
    # bool is an int subclass; a size of true is not a size.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Rejected(E_BAD_REQUEST, f"field {key!r} must be {kind.__name__}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")  # a JSON "\ud800" escape is a lone surrogate: not text
        except UnicodeEncodeError:
            raise Rejected(E_BAD_REQUEST, f"field {key!r} is not valid Unicode") from None
    return value


def parse_request(line: bytes) -> Request:
    """Decode one request line (with or without its line ending)."""
    text = decode_line(strip_eol(line))
    verb, _, rest = text.partition(" ")
    if verb == "PING" and not rest:
        return Ping()
    if verb == "PID" and not rest:
        return Pid()
    if verb == "ECHO":
        return Echo(rest)
    if verb == "SHUTDOWN" and not rest:
        return Shutdown()
    if verb == "NOTIFY":
        host, _, body = rest.partition(" ")
        return Notify(host, body)
    if verb in ("SEND", "VIEW"):
        size_token, _, path = rest.partition(" ")
        if verb == "SEND" and size_token == HELLO_TOKEN:
            return Hello(tuple(path.split()))
        size = _parse_size(size_token)
        if not path:
            raise Rejected(E_BAD_PATH, "missing file name")
        return Send(size, path) if verb == "SEND" else View(size, path)
    if verb == "NOTIFY2":
        obj = json_object(rest)
        return Notify2(json_field(obj, "title", str, ""), json_field(obj, "body", str, ""))
    if verb == "PUT":
        obj = json_object(rest)
        total_bytes = json_field(obj, "bytes", int, 0)
        total_files = json_field(obj, "files", int, 0)
        if total_bytes < 0 or total_files < 0:
            raise Rejected(E_BAD_SIZE, "negative totals")
        return Put(
            json_field(obj, "dest", str, ""), json_field(obj, "overwrite", bool, False), total_bytes, total_files,
            json_field(obj, "mtimes", str, ""), json_field(obj, "track", bool, False),
        )
    if verb == "OPEN":
        return OpenUrl(json_field(json_object(rest), "url", str))
    if verb == "COPY":
        return Copy(_json_size(json_object(rest)))
    if verb == "PASTE" and not rest:
        return Paste()
    if verb == "EDIT":
        obj = json_object(rest)
        name = json_field(obj, "name", str)
        if not name:
            raise Rejected(E_BAD_PATH, "missing file name")
        return Edit(_json_size(obj), name)
    if verb == "EDITWAIT":
        obj = json_object(rest)
        result = json_field(obj, "result", str, "")
        if result not in EDIT_RESULTS:
            raise Rejected(E_BAD_REQUEST, f"unknown edit result {result[:40]!r}")
        return EditWait(result, json_field(obj, "message", str, ""))
    if verb == "RANGES":
        obj = json_object(rest)
        mode = json_field(obj, "mode", int, 0o644)
        mtime = obj.get("mtime", 0.0)
        if isinstance(mtime, bool) or not isinstance(mtime, (int, float)) or not 0 <= mtime <= MAX_MTIME:
            raise Rejected(E_BAD_REQUEST, "field 'mtime' must be a time")
        if not 0 <= mode <= 0o7777:
            raise Rejected(E_BAD_REQUEST, "field 'mode' must be a file mode")
        name = json_field(obj, "name", str)
        if not name:
            raise Rejected(E_BAD_PATH, "missing file name")
        return Ranges(json_field(obj, "dest", str, ""), name, _json_size(obj),
                      mode, float(mtime), _key(obj, "key"), json_field(obj, "overwrite", bool, False),
                      json_field(obj, "resume", bool, True), json_field(obj, "join", bool, False))
    if verb == "RANGE":
        obj = json_object(rest)
        offset = json_field(obj, "offset", int)
        if offset < 0 or len(str(offset)) > MAX_SIZE_DIGITS:
            raise Rejected(E_BAD_SIZE, "bad offset")
        return Range(offset, _json_size(obj))
    if verb == "COMMIT":
        return Commit(_key(json_object(rest), "digest"))
    raise Rejected(E_UNKNOWN, f"unknown command {verb[:40]!r}")


def _json_size(obj: Dict[str, Any]) -> int:
    size: int = json_field(obj, "bytes", int)
    if size < 0 or len(str(size)) > MAX_SIZE_DIGITS:
        raise Rejected(E_BAD_SIZE, "bad size")
    return size


def encode_request(request: Request) -> bytes:
    """Encode a request line, line ending included."""
    if isinstance(request, Ping):
        text = "PING"
    elif isinstance(request, Pid):
        text = "PID"
    elif isinstance(request, Echo):
        text = f"ECHO {request.text}"
    elif isinstance(request, Shutdown):
        text = "SHUTDOWN"
    elif isinstance(request, Notify):
        text = f"NOTIFY {request.title} {request.body}"
    elif isinstance(request, Send):
        text = f"SEND {request.size} {request.path}"
    elif isinstance(request, View):
        text = f"VIEW {request.size} {request.name}"
    elif isinstance(request, Hello):
        text = " ".join(("SEND", HELLO_TOKEN) + request.features)
    elif isinstance(request, Notify2):
        text = "NOTIFY2 " + dumps({"title": request.title, "body": request.body})
    elif isinstance(request, Put):
        header = {
            "dest": request.dest,
            "overwrite": request.overwrite,
            "bytes": request.total_bytes,
            "files": request.total_files,
        }
        if request.mtimes:
            header["mtimes"] = request.mtimes
        if request.track:
            header["track"] = True
        text = "PUT " + dumps(header)
    elif isinstance(request, OpenUrl):
        text = "OPEN " + dumps({"url": request.url})
    elif isinstance(request, Copy):
        text = "COPY " + dumps({"bytes": request.size})
    elif isinstance(request, Paste):
        text = "PASTE"
    elif isinstance(request, Edit):
        text = "EDIT " + dumps({"name": request.name, "bytes": request.size})
    elif isinstance(request, EditWait):
        text = "EDITWAIT " + dumps({"result": request.result, "message": request.message})
    elif isinstance(request, Ranges):
        text = "RANGES " + dumps({
            "dest": request.dest, "name": request.name, "bytes": request.size, "mode": request.mode,
            "mtime": request.mtime, "key": request.key, "overwrite": request.overwrite,
            "resume": request.resume, "join": request.join,
        })
    elif isinstance(request, Range):
        text = "RANGE " + dumps({"offset": request.offset, "bytes": request.size})
    elif isinstance(request, Commit):
        text = "COMMIT " + dumps({"digest": request.digest})
    else:
        raise TypeError(f"not a request: {request!r}")
    if "\n" in text or "\r" in text:
        raise ValueError("a request line cannot contain a line break")
    return text.encode("utf-8") + EOL


def dumps(obj: Any) -> str:
    import json

    # ensure_ascii keeps every header on one line whatever the names contain.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


# ---- replies (daemon -> client) --------------------------------------------------------------


class Reply(Message):
    __slots__ = ("ok", "text", "code")
    ok: bool
    text: str
    code: Optional[int]

    @property
    def data(self) -> Dict[str, Any]:
        """The JSON object an rtun/2 ``OK`` reply carries ({} when there is none)."""
        if not self.text.startswith("{"):
            return {}
        import json

        try:
            value = json.loads(self.text)
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


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
            return word[len(VERSION_PREFIX):]
    return None


def saved_paths(reply: Reply) -> List[str]:
    paths = reply.data.get("saved", [])
    return [p for p in paths if isinstance(p, str)] if isinstance(paths, list) else []
