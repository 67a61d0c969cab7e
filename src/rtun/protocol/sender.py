"""The client's side of a connection, as a pure state machine: requests and data in, bytes out,
replies back.

The pump (the blocking client) writes whatever these methods return, feeds what the daemon sends
to :meth:`Sender.receive_data`, and calls :meth:`Sender.next_event` for the reply. The sender
knows whose turn it is: a request waits for its reply, an upload for READY before its data; it
frames PUT entries and chunks, hashes each file, checks its size against what was declared, and
bounds every reply line. It imports only the standard library and nothing slow: it runs on
every `rtun` command a user types.
"""

from __future__ import annotations

from rtun.protocol import framing, messages, wire
from rtun.protocol.limits import MAX_LINE, MAX_PAYLOAD, MAX_PUT_REPLY, MAX_RANGES_REPLY
from rtun.protocol.messages import NEED_DATA, Rejected, Sentinel, Truncated
from rtun.protocol.wire import line_end

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Any, Optional, Tuple, Union

__all__ = ["Sender", "SizeChanged", "Payload", "PayloadEnd", "NEED_DATA", "Truncated"]


class SizeChanged(Exception):
    """A file yielded more or fewer bytes than were declared for it."""


class Payload:
    """A piece of the data that follows a payload reply (PASTE, an edit's save)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


class PayloadEnd:
    """Every byte of the payload has arrived and its SHA-256 matches."""

    __slots__ = ()


# States
IDLE = "idle"  # a request may be sent
AWAIT_REPLY = "awaiting the reply"
AWAIT_READY = "awaiting READY"
STREAMING = "streaming"  # after READY: entries and data
PAYLOAD = "payload"  # after a payload reply: its data, then its SHA-256 line
ENDED = "closed"  # after an ERROR reply: the daemon closes the connection
HOLDING = "holding"  # a FORWARD was answered: the daemon's announcements follow
SPLICED = "spliced"  # a DIAL was answered: what follows is the forwarded connection's


class Sender:
    def __init__(self) -> None:
        self.state = IDLE
        self._in = bytearray()
        self._scanned = 0
        self._eof = False
        self._limit = MAX_LINE  # the longest reply line accepted now
        self._v1 = False  # the current upload is a v1 SEND or VIEW
        self._declared: Optional[int] = None  # size of the current file, if known
        self._sent = 0
        self._hash: Any = None
        self._payload_due = False  # the awaited reply may announce a payload
        self._range = False  # the current upload is a RANGE
        self._check = False  # the current upload is a PUT that asks, its file entries no data
        self.last_digest = b""  # SHA-256 of the file or range that end_file ended
        # Pipelining: replies due before the current request's own. A HELLO sent ahead of the
        # request, and the READY of an upload whose data went out without waiting for it.
        self._hellos_due = 0
        self._ready_due = False
        self.oks_due = 0  # RANGEs sent whose OK has not been read: they stream back to back
        self._payload_left = 0
        self._forwarding: Optional[type] = None  # Forward or Dial, while its OK is awaited

    # ---- requests ----------------------------------------------------------------------------

    def send_hello(self, features: "Tuple[str, ...]") -> bytes:
        """A HELLO whose reply is read before the next request's: the request may follow it at
        once, without a round trip in between (``next_event`` gives the HELLO's reply first)."""
        if self.state != IDLE:
            raise RuntimeError(f"cannot send a request while {self.state}")
        self._hellos_due += 1
        return wire.encode_request(messages.Hello(features))

    def send(self, request: wire.Request, early: bool = False) -> bytes:
        """The request line. Raises ValueError for text that cannot be one line of UTF-8.

        ``early`` (uploads only): the data follows at once instead of after READY. For small
        uploads: the daemon reads it before deciding, and discards it if it refuses."""
        if self.state != IDLE:
            raise RuntimeError(f"cannot send a request while {self.state}")
        try:
            line = wire.encode_request(request)
        except UnicodeEncodeError:
            raise ValueError("invalid UTF-8") from None
        if isinstance(request, (messages.Send, messages.View)):
            self.state = AWAIT_READY
            self._v1 = True
            self._declared = request.size
        elif isinstance(request, messages.Put):
            self.state = AWAIT_READY
            self._v1 = False
            self._check = request.update == messages.UPDATE_CHECK
        elif isinstance(request, (messages.Copy, messages.Edit)):
            self.state = AWAIT_READY
            self._v1 = True  # the data goes as a v1 file's does
            self._declared = request.size
        elif isinstance(request, messages.Range):
            self.state = STREAMING  # no READY: the data follows the request line
            self._v1 = True
            self._declared = request.size
            self._range = True
            self._start_file(request.size)
            return line
        else:
            self.state = AWAIT_REPLY
        self._forwarding = type(request) if isinstance(request, (messages.Forward, messages.Dial)) else None
        self._payload_due = isinstance(request, messages.PAYLOAD_REQUESTS)
        # RANGES lists the ranges a daemon kept: a file's worth of them.
        self._limit = MAX_RANGES_REPLY if isinstance(request, messages.Ranges) else MAX_LINE
        if early:
            if self.state != AWAIT_READY:
                raise RuntimeError("only an upload's data can go early")
            self._ready_due = True
            self.state = STREAMING
            if self._v1:
                self._start_file(self._declared)
        return line

    # ---- uploads, after READY ------------------------------------------------------------------

    def _streaming(self) -> None:
        if self.state != STREAMING:
            raise RuntimeError(f"upload data before READY (state: {self.state})")

    def entry(self, entry: Union[framing.DirEntry, framing.FileEntry, framing.LinkEntry]) -> bytes:
        """A PUT entry line; a file entry starts a file whose data follows."""
        self._streaming()
        if self._v1:
            raise RuntimeError("a v1 upload has no entries")
        if isinstance(entry, framing.FileEntry) and not self._check:
            self._start_file(entry.size)
        return framing.encode_entry(entry)

    def whole_file(self, entry: framing.FileEntry, data: Union[bytes, memoryview]) -> bytes:
        """A PUT file all at once: what entry(), data() and end_file() would give for it, in one
        piece (its entry line, one chunk, the zero chunk and the SHA-256 line). A tree of small
        files sends one of these per file. Raises SizeChanged unless ``data`` has the declared
        size."""
        self._streaming()
        if self._v1 or self._hash is not None:
            raise RuntimeError("whole_file() is one file of a PUT, between files")
        if entry.size is not None and len(data) != entry.size:
            raise SizeChanged(f"{len(data)} bytes of {entry.size}")
        import hashlib

        line = framing.encode_entry(entry)
        digest = hashlib.sha256(data).hexdigest().encode("ascii")
        if not data:
            return b"".join((line, b"0\r\n", digest, b"\r\n"))
        return b"".join((line, framing.encode_chunk_header(len(data)), data, b"0\r\n", digest, b"\r\n"))

    def _start_file(self, size: Optional[int]) -> None:
        import hashlib  # here: ping, notify and the other requests never need it

        self._declared = size
        self._sent = 0
        self._hash = hashlib.sha256()

    def data(self, data: Union[bytes, memoryview]) -> bytes:
        """Accounts for the next piece of the current file (hashes it) and returns the framing
        to write before it; the data itself is written by the caller, uncopied."""
        self._streaming()
        if self._hash is None:
            raise RuntimeError("file data outside a file")
        self._sent += len(data)
        if self._declared is not None and self._sent > self._declared:
            raise SizeChanged(f"{self._sent - len(data)}+{len(data)} bytes of {self._declared}")
        self._hash.update(data)
        return b"" if self._v1 else framing.encode_chunk_header(len(data))

    def end_file(self) -> bytes:
        """The end of the current file: its zero chunk (PUT) and SHA-256 line."""
        self._streaming()
        if self._hash is None:
            raise RuntimeError("no file to end")
        if self._declared is not None and self._sent != self._declared:
            raise SizeChanged(f"{self._sent} bytes of {self._declared}")
        digest = framing.encode_checksum(self._hash.hexdigest())
        self.last_digest = self._hash.digest()
        self._hash = None
        if self._range:  # the next RANGE may follow at once; its OK is read later
            self._range = False
            self.oks_due += 1
            self.state = IDLE
            return digest
        if self._v1:
            self.state = AWAIT_REPLY
            return digest
        return framing.encode_chunk_header(0) + digest

    def end(self) -> bytes:
        """The end of a PUT: its reply, which lists every saved path, may be long."""
        self._streaming()
        if self._v1 or self._hash is not None:
            raise RuntimeError("end() closes a PUT, after its last file")
        self.state = AWAIT_REPLY
        self._limit = MAX_PUT_REPLY
        return framing.encode_entry(framing.EndEntry())

    # ---- replies -------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """What the daemon sent; b"" means it closed the connection."""
        if data:
            self._in += data
        else:
            self._eof = True

    def next_event(self) -> Union[messages.Reply, Payload, PayloadEnd, Sentinel]:
        """The daemon's next reply, or NEED_DATA. An ERROR may come at any time (a daemon that
        refuses mid-upload says why and closes); anything else only when one is due. After a
        payload reply come its Payload pieces and a PayloadEnd."""
        if self.state == PAYLOAD:
            return self._payload()
        if self.state == SPLICED:
            raise RuntimeError("a dialled connection's bytes are read with unread() and the socket")
        end = line_end(self._in, 0, len(self._in), self._scanned, self._limit)
        if end < 0:
            self._scanned = len(self._in)
            if self._eof:
                raise Truncated("the daemon closed the connection without replying")
            return NEED_DATA
        line = bytes(self._in[:end])
        del self._in[:end]
        self._scanned = 0
        reply = wire.parse_reply(line)
        if not reply.ok:
            self.state = ENDED
        elif self._hellos_due:
            self._hellos_due -= 1  # the caller reads the features in it
        elif self._ready_due:
            if reply.text != "READY" or reply.code is not None:
                raise Rejected(messages.E_BAD_REQUEST, f"expected READY, got {reply.text[:80]!r}")
            self._ready_due = False  # the data is already on its way
        elif self.oks_due:
            self.oks_due -= 1  # a RANGE's verified arrival
        elif self.state == AWAIT_READY:
            if reply.text != "READY" or reply.code is not None:
                raise Rejected(messages.E_BAD_REQUEST, f"expected READY, got {reply.text[:80]!r}")
            self.state = STREAMING
            if self._v1:
                self._start_file(self._declared)
        elif self.state == HOLDING:
            if not isinstance(reply.data.get("connect"), int):
                raise Rejected(messages.E_BAD_REQUEST, f"unexpected announcement {reply.text[:80]!r}")
        elif self.state == AWAIT_REPLY and self._forwarding is not None:
            self.state = HOLDING if self._forwarding is messages.Forward else SPLICED
            self._forwarding = None
        elif self.state == AWAIT_REPLY:
            self.state = IDLE
            size = reply.data.get("bytes") if self._payload_due else None
            if isinstance(size, int) and not isinstance(size, bool):
                if not 0 <= size <= MAX_PAYLOAD:
                    raise Rejected(messages.E_BAD_SIZE, f"the daemon announced a payload of {size} bytes")
                import hashlib

                self.state = PAYLOAD
                self._payload_left = size
                self._hash = hashlib.sha256()
        else:
            raise Rejected(messages.E_BAD_REQUEST, f"unexpected reply {reply.text[:80]!r} while {self.state}")
        return reply

    def unread(self) -> bytes:
        """After a DIAL's OK: what came behind it, the first of the forwarded connection's bytes."""
        if self.state != SPLICED:
            raise RuntimeError("unread() follows a DIAL's OK")
        rest = bytes(self._in)
        self._in.clear()
        return rest

    def _payload(self) -> Union[Payload, PayloadEnd, Sentinel]:
        if self._payload_left:
            if not self._in:
                if self._eof:
                    raise Truncated("the daemon closed the connection in the middle of its data")
                return NEED_DATA
            piece = bytes(self._in[: self._payload_left])
            del self._in[: len(piece)]
            self._payload_left -= len(piece)
            self._hash.update(piece)
            return Payload(piece)
        end = line_end(self._in, 0, len(self._in))
        if end < 0:
            if self._eof:
                raise Truncated("the daemon closed the connection before the end of its data")
            return NEED_DATA
        line = bytes(self._in[:end])
        del self._in[:end]
        if framing.parse_checksum(line) != self._hash.hexdigest():
            raise Rejected(messages.E_CHECKSUM, "the daemon's data does not match its SHA-256")
        self._hash = None
        self.state = IDLE
        return PayloadEnd()
