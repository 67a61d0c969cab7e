"""The protocol's values: the requests, the reply, the error codes, the two exceptions, and the
markers ``next_event`` returns.

Plain immutable objects with no encoding in them: ``wire`` turns them into lines and back (its
table names each request's verb), ``sender`` and ``receiver`` decide when they may come. Most
code reaches these names as ``wire.X``; ``wire`` imports them from here.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs start-up time the client cannot spare
    from typing import Any, Dict, Optional, Tuple, Union

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


# ---- markers ----------------------------------------------------------------------------------
# One object per meaning, compared with ``is``, shared by the sender and the receiver: a pump
# written against either tests for the very same ``NEED_DATA`` (two look-alike objects once let a
# pump compare with the wrong one and wait forever). In the manner of h11's ``_util.Sentinel``;
# here rather than in a module of their own, which would cost every client command its import.


class Sentinel:
    """A named marker: equal only to itself, shown by its name."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __copy__(self) -> Sentinel:
        return self  # a copy would not be the marker any more

    def __deepcopy__(self, memo: object) -> Sentinel:
        return self

    def __reduce__(self) -> str:
        return self._name  # pickled by name: unpickling gives this module's object


NEED_DATA = Sentinel("NEED_DATA")  # feed more bytes, then call next_event again
CLOSED = Sentinel("CLOSED")  # the peer ended the connection cleanly, between requests


class Message:
    """An immutable value object. (dataclasses would cost every client command ~10 ms.)"""

    __slots__: "Tuple[str, ...]" = ()
    _defaults: "Tuple[Any, ...]" = ()  # values of the last fields, when they are left out

    def __init__(self, *args: "Any") -> None:
        missing = len(self.__slots__) - len(args)
        if not 0 <= missing <= len(self._defaults):
            raise TypeError(f"{type(self).__name__} takes {len(self.__slots__)} arguments")
        if missing:
            args += self._defaults[len(self._defaults) - missing :]
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
    connections wrote into them moved those), and no other directory is touched.

    ``update`` (`rtun send --update`): ``UPDATE_CHECK`` asks which of the files and links listed
    are already there: its file entries carry no data, nothing is written, and the reply lists
    the entries ``unchanged`` (a regular file of the same size and mtime, a link to the same
    target) and ``changed`` (a regular file that differs: it would be replaced). ``UPDATE_REPLACE``
    sends files that replace a regular file of their name (never a directory or a link)."""

    __slots__ = ("dest", "overwrite", "total_bytes", "total_files", "mtimes", "track", "update")
    _defaults = ("", False, "")
    dest: str
    overwrite: bool
    total_bytes: int
    total_files: int
    mtimes: str
    track: bool
    update: str


UPDATE_CHECK = "check"
UPDATE_REPLACE = "replace"
UPDATE_MODES = ("", UPDATE_CHECK, UPDATE_REPLACE)


class OpenUrl(Message):
    """rtun/2 OPEN: a URL for the local browser (the daemon allows http, https and mailto)."""

    __slots__ = ("url",)
    url: str


# The only types a clipboard request may name ("" is text, as before types existed): nothing
# else from the socket reaches a clipboard tool's command line.
TEXT_TYPE = "text/plain"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp")
CLIPBOARD_TYPES = ("", TEXT_TYPE) + IMAGE_TYPES


class Copy(Message):
    """rtun/2 COPY: ``size`` bytes for the local clipboard, sent as a v1 file is (READY, data,
    SHA-256); ``type`` one of CLIPBOARD_TYPES ("" for text, left out of the header)."""

    __slots__ = ("size", "type")
    _defaults = ("",)
    size: int
    type: str


class Paste(Message):
    """rtun/2 PASTE: the local clipboard as ``type`` ("" for text), answered with a payload
    reply; with ``list_types``, the types it holds instead (``OK {"types":[...]}``)."""

    __slots__ = ("type", "list_types")
    _defaults = ("", False)
    type: str
    list_types: bool


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
    carry the data, and COMMIT gives the file its final name. ``update``: COMMIT replaces a
    regular file of the name (never a directory or a link), as a PUT's ``UPDATE_REPLACE``."""

    __slots__ = ("dest", "name", "size", "mode", "mtime", "key", "overwrite", "resume", "join", "update")
    _defaults = (False,)
    dest: str
    name: str
    size: int
    mode: int
    mtime: float
    key: str
    overwrite: bool
    resume: bool
    join: bool
    update: bool


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


class Forward(Message):
    """rtun/2 FORWARD: make the server's loopback ``port`` reachable on the local computer's
    loopback, at ``local`` (0: the same port), or the next free port unless ``exact``. Answered
    with ``OK {"port": L, "token": T}``; from then on the connection carries only the daemon's
    announcements, ``OK {"connect": N}`` for each local connection, each dialled back with DIAL.
    The forward ends when this connection does."""

    __slots__ = ("port", "local", "exact")
    _defaults = (0, False)
    port: int
    local: int
    exact: bool


class Dial(Message):
    """rtun/2 DIAL: this connection carries local connection ``id`` of the forward that
    ``token`` names; after its OK, the bytes both ways are that connection's, unframed."""

    __slots__ = ("token", "id")
    token: str
    id: int


# Requests whose OK reply may carry a payload: ``OK {"bytes":N,...}``, N bytes, a SHA-256 line.
PAYLOAD_REQUESTS = (Paste, EditWait)

if TYPE_CHECKING:
    Request = Union[
        Ping,
        Pid,
        Echo,
        Shutdown,
        Notify,
        Send,
        View,
        Hello,
        Notify2,
        Put,
        OpenUrl,
        Copy,
        Paste,
        Edit,
        EditWait,
        Ranges,
        Range,
        Commit,
        Forward,
        Dial,
    ]


# ---- the reply (daemon -> client) ----------------------------------------------------------


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
