"""The daemon's side of a connection, as a pure state machine: bytes in, events out.

The pump (asyncio in the daemon, anything in tests) lets the kernel write received bytes into
:meth:`Receiver.get_buffer`, reports them with :meth:`Receiver.buffer_updated`, and then calls
:meth:`Receiver.next_event` until it returns :data:`NEED_DATA`. The daemon answers each request
with :meth:`Receiver.reply`, :meth:`Receiver.accept` (an upload may start) or
:meth:`Receiver.reject`, each returning the bytes to write.

File data comes out as :class:`Data` events (a small file whose bytes are all in: one
:class:`WholeFile` event) whose ``data`` is a view of the receive buffer: no copy is made, and
the view is valid until the next call to ``next_event`` (or ``receive_data``, which may reuse
the space). The receiver checks
the whole order of an upload (the READY, entries, chunks, the zero chunk, the digest, the end),
every limit, every path and every file's size and SHA-256, so what it emits is already valid.
"""

from __future__ import annotations

import hashlib
import mmap
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple, Union

from rtun.protocol import events, framing, messages, names, wire
from rtun.protocol.events import Data, Directory, Event, FileEnd, FileStart, Link, Upload, UploadEnd
from rtun.protocol.limits import IDLE_BUFFER, MAX_ENTRIES, MAX_LINE, RECEIVE_BUFFER, SHA256_HEX_LEN
from rtun.protocol.messages import CLOSED, NEED_DATA, Rejected, Truncated
from rtun.protocol.wire import line_end

if TYPE_CHECKING:
    from rtun.protocol.events import ReceivedEvent

ALIGN = 4096  # the largest logical block size in use: direct writes start and end on it
WHOLE_MAX = 64 * 1024  # files up to this size are taken whole when all their bytes are in
_ZERO_CHUNK = b"0\r\n"
_HEX_DIGITS = b"0123456789abcdef"

__all__ = ["Receiver", "Truncated", "NEED_DATA", "CLOSED"]


_UPLOADS = (messages.Send, messages.View, messages.Put, messages.Copy, messages.Edit, messages.Range)

# States: whose turn it is, and what the next bytes must be.
IDLE = "idle"  # between requests: a request line
DECIDING = "deciding"  # the daemon owes accept(), reply() or reject()
ENTRY = "entry"  # PUT: an entry line
CHUNK_HEADER = "chunk header"  # PUT: a chunk length line
RAW_DATA = "data"  # bytes of a chunk (PUT) or of the whole file (v1)
DIGEST = "digest"  # the SHA-256 line after a file's data
LAST = "last"  # v1: the one file is complete, UploadEnd is next
REPLYING = "replying"  # the upload is complete: the daemon owes reply() or reject()
DONE = "done"  # after an error reply: nothing more is read
HOLDING = "holding"  # a FORWARD was answered: the client sends nothing more, the daemon announces
SPLICED = "spliced"  # a DIAL was answered: the bytes both ways are no longer the protocol's


class Receiver:
    """``buffer_size`` between uploads, ``upload_buffer_size`` during one: an idle connection
    costs little, a transfer gets large reads."""

    def __init__(self, buffer_size: int = IDLE_BUFFER, upload_buffer_size: int = RECEIVE_BUFFER) -> None:
        if buffer_size <= MAX_LINE:
            raise ValueError("the receive buffer must hold a whole line")
        self._idle_size = buffer_size
        self._upload_size = max(buffer_size, upload_buffer_size)
        self._buffer: Union[bytearray, mmap.mmap] = bytearray(buffer_size)
        self._view = memoryview(self._buffer)
        self._start = 0  # unread bytes are self._buffer[self._start:self._end]
        self._end = 0
        self._scanned = 0  # offset from _start up to which no newline was found
        self._eof = False
        self.state = IDLE
        self._upload: Optional[Upload] = None
        self._entries = 0
        self._file: Optional[FileStart] = None
        self._hash: Any = None
        self._received = 0  # bytes of the current file so far
        self._remaining = 0  # bytes left in the current chunk (or v1 file)
        self._v1 = False
        self._data_follows = False  # the request being decided is an upload
        self._realign = False  # the chunk's last piece was its start's whole blocks (_data)

    # ---- feeding bytes ---------------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Free space for the next bytes (never empty unless ``buffer_full``)."""
        return self._view[self._end :]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes

    @property
    def buffer_full(self) -> bool:
        """No room left: stop reading until next_event has consumed some."""
        return self._end == len(self._buffer)

    def receive_data(self, data: bytes) -> None:
        """Copy bytes in (for pumps that do not read into get_buffer); b"" means the end."""
        if not data:
            self._eof = True
            return
        self._make_room()
        if len(data) > len(self._buffer) - self._end:
            raise ValueError("more data than the buffer holds: call next_event first")
        self._buffer[self._end : self._end + len(data)] = data
        self._end += len(data)

    def receive_eof(self) -> None:
        self._eof = True

    @property
    def wants_more(self) -> bool:
        """In the middle of a chunk's data with less of it buffered than the buffer holds: a
        pump may wait for more before asking for events, so storage gets one write per chunk
        (a range, or a PUT chunk of 1 MiB), which begins at the front of the buffer."""
        return (
            self.state == RAW_DATA
            and not self._eof
            and self._end < len(self._buffer)
            and self._end - self._start < self._remaining
        )

    @property
    def in_upload(self) -> bool:
        """Between READY and the upload's last byte: the peer owes data."""
        return self.state in (ENTRY, CHUNK_HEADER, RAW_DATA, DIGEST, LAST)

    @property
    def in_request(self) -> bool:
        """Between a request and its reply (or holding a forward): eviction spares it."""
        return self.state not in (IDLE, DONE)

    @property
    def long_lived(self) -> bool:
        """Holding a forward or carrying one of its connections: no idle timeout (the client
        owes nothing), and shutdown ends it at once rather than letting it finish."""
        return self.state in (HOLDING, SPLICED)

    # ---- events ------------------------------------------------------------------------------

    def next_event(self) -> ReceivedEvent:
        state = self.state
        if state == RAW_DATA:
            return self._data()
        if state in (DECIDING, REPLYING):
            raise RuntimeError(f"the daemon must answer first (state: {state})")
        if state in (DONE, SPLICED):
            return CLOSED
        if state == HOLDING:
            return self._held()
        if state == LAST:
            self.state = REPLYING
            return UploadEnd()
        line = self._line()
        if line is None:
            if self._eof:
                if state == IDLE and self._start == self._end:
                    return CLOSED
                raise Truncated(
                    f"connection closed in the middle of a {'request' if state == IDLE else 'upload'}"
                )
            self._make_room()
            return NEED_DATA
        if state == IDLE:
            return self._request(line)
        if state == ENTRY:
            return self._entry(line)
        if state == CHUNK_HEADER:
            return self._chunk_header(line)
        return self._digest(line)

    def _line(self) -> Optional[bytes]:
        end = line_end(self._buffer, self._start, self._end, self._scanned)
        if end < 0:
            self._scanned = self._end - self._start
            return None
        line = bytes(self._view[self._start : end])
        self._start = end
        self._scanned = 0
        return line

    def _resize(self, size: int) -> None:
        """A new buffer holding the unread bytes; called between events, when no view of the
        old buffer is alive."""
        unread = self._end - self._start
        if size == len(self._buffer) or unread >= size:  # a full buffer would stall reading
            return
        # An upload's buffer is pages of its own (page-aligned: _to_front); the idle one is small.
        buffer = mmap.mmap(-1, size) if size > self._idle_size else bytearray(size)
        buffer[:unread] = self._view[self._start : self._end]
        self._buffer, self._view = buffer, memoryview(buffer)
        self._start, self._end = 0, unread

    def shrink(self) -> bool:
        """Back to the small buffer (unread bytes kept) if between uploads, as a pump asks when
        its connection falls quiet; False inside one."""
        if self.state not in (IDLE, DECIDING):
            return False
        self._resize(self._idle_size)
        return True

    def _to_front(self) -> None:
        """A chunk's data begins: what is buffered moves to the front, so the chunk comes out
        as one Data event at the start of the buffer, which during an upload is page-aligned
        (storage may write it past the page cache as it is). Views handed out are dead here."""
        if self._start:
            unread = self._end - self._start
            self._buffer[:unread] = self._view[self._start : self._end]
            self._start, self._end = 0, unread  # _scanned counts from _start: still true

    def _make_room(self) -> None:
        """Start again at the front once everything is read; move a partial line there when the
        buffer is full. Views handed out earlier are dead by now (next_event was called)."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == len(self._buffer):
            self._to_front()

    def _request(self, line: bytes) -> ReceivedEvent:
        request = wire.parse_request(line)
        self.state = DECIDING
        # Its data may be on its way already (pipelining), even if its path is refused next.
        self._data_follows = isinstance(request, _UPLOADS)
        if isinstance(request, messages.Send):
            self._upload = Upload(request, names.components(request.path))
            return self._upload
        if isinstance(request, (messages.View, messages.Copy, messages.Edit, messages.Range)):
            self._upload = Upload(request, ())
            return self._upload
        if isinstance(request, messages.Put):
            self._upload = Upload(request, names.components(request.dest) if request.dest else ())
            return self._upload
        return request

    def _entry(self, line: bytes) -> Event:
        entry = framing.parse_entry(line)
        if isinstance(entry, framing.EndEntry):
            self.state = REPLYING
            return UploadEnd()
        self._entries += 1
        if self._entries > MAX_ENTRIES:
            raise Rejected(messages.E_BAD_REQUEST, "too many entries in one transfer")
        assert self._upload is not None
        parts = names.join(self._upload.parts, entry.path)
        if isinstance(entry, framing.DirEntry):
            return Directory(parts, entry.mode, entry.mtime)
        if isinstance(entry, framing.LinkEntry):
            names.check_link_target(entry.target)
            return Link(parts, entry.target)
        request = self._upload.request
        if isinstance(request, messages.Put) and request.update == messages.UPDATE_CHECK:
            return FileStart(parts, entry.mode, entry.mtime, entry.size)  # a question: no data
        size = entry.size
        if size is not None and size <= WHOLE_MAX:
            whole = self._take_whole(parts, entry.mode, entry.mtime, size)
            if whole is not None:
                return whole
        self.state = CHUNK_HEADER
        return self._start_file(FileStart(parts, entry.mode, entry.mtime, size))

    def _take_whole(
        self, parts: Tuple[str, ...], mode: int, mtime: float, size: int
    ) -> Optional[events.WholeFile]:
        """A small file whose every byte is in already, framed as a sender frames a whole file
        (one chunk, the zero chunk, the SHA-256; CRLF endings): verified now and handed out as
        one event, four lines' parsing and two events skipped. Any other framing, or bytes still
        to come, take the general path (None), which judges them."""
        buffer, begin = self._buffer, self._start
        header = b"%d\r\n" % size if size else b""
        data_end = begin + len(header) + size
        end = data_end + len(_ZERO_CHUNK) + SHA256_HEX_LEN + 2
        if end > self._end or buffer[begin : begin + len(header)] != header:
            return None
        tail = buffer[data_end:end]  # the zero chunk, the SHA-256 and its CRLF: slices compare fastest
        expected = tail[len(_ZERO_CHUNK) : -2]
        if not tail.startswith(_ZERO_CHUNK) or not tail.endswith(wire.EOL) or expected.strip(_HEX_DIGITS):
            return None
        data = self._view[begin + len(header) : data_end]
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected.decode("ascii"):
            raise Rejected(messages.E_CHECKSUM, f"expected {expected.decode('ascii')}, got {actual}")
        self._start, self._scanned = end, 0
        self.state = ENTRY
        return events.WholeFile(parts, mode, mtime, size, data, actual)

    def _start_file(self, start: FileStart) -> FileStart:
        self._file = start
        self._hash = hashlib.sha256()
        self._received = 0
        return start

    def _chunk_header(self, line: bytes) -> ReceivedEvent:
        length = framing.parse_chunk_header(line)
        if length == 0:
            self.state = DIGEST
            return self.next_event()
        assert self._file is not None
        if self._file.size is not None and self._received + length > self._file.size:
            raise Rejected(
                messages.E_BAD_SIZE, f"{'/'.join(self._file.parts)}: more data than the declared size"
            )
        self._remaining = length
        self.state = RAW_DATA
        self._to_front()
        return self._data()

    def _data(self) -> ReceivedEvent:
        if self._realign:  # the rest of a chunk's start goes to the front (its view is dead now)
            self._realign = False
            self._to_front()
        available = self._end - self._start
        if not available:
            if self._eof:
                raise Truncated("connection closed before the upload was complete")
            self._make_room()
            return NEED_DATA
        length = min(available, self._remaining)
        if length < self._remaining and not self._start and not self._eof:
            # Part of a chunk, asked for before the rest came (the pump stopped waiting for
            # it): its whole blocks only, so that this piece and the next begin block-aligned,
            # in the file and in memory (direct writes); the rest moves to the front.
            length -= length % ALIGN
            if not length:
                return NEED_DATA
            self._realign = True
        data = self._view[self._start : self._start + length]
        self._start += length
        self._remaining -= length
        self._received += length
        self._hash.update(data)
        if not self._remaining:
            self.state = DIGEST if self._v1 else CHUNK_HEADER
        return Data(data)

    def _digest(self, line: bytes) -> Event:
        expected = framing.parse_checksum(line)
        assert self._file is not None
        size = self._file.size
        if size is not None and self._received != size:
            raise Rejected(messages.E_SHORT, f"expected {size} bytes, got {self._received} bytes")
        actual = self._hash.hexdigest()
        if actual != expected:
            raise Rejected(messages.E_CHECKSUM, f"expected {expected}, got {actual}")
        self._file = None
        self.state = LAST if self._v1 else ENTRY
        return FileEnd(self._received, actual)

    # ---- the daemon's answers ------------------------------------------------------------------

    def accept(self) -> Tuple[bytes, Optional[FileStart]]:
        """READY for the upload being decided. For SEND and VIEW, whose one file has no entry,
        also the FileStart that begins it (the daemon's first event of the upload). A RANGE is
        accepted the same way, but its READY is not sent: its data follows the request."""
        if self.state != DECIDING or self._upload is None:
            raise RuntimeError("accept() answers an upload request")
        request = self._upload.request
        self._resize(self._upload_size)
        if isinstance(request, messages.Put):
            self._v1 = False
            self._entries = 0
            self.state = ENTRY
            return wire.READY, None
        self._v1 = True
        start = self._start_file(FileStart(self._upload.parts, None, None, request.size))
        self._remaining = request.size
        self.state = RAW_DATA if request.size else DIGEST
        self._to_front()
        return wire.READY, start

    def reply(self, text: str = "", data: Optional[Dict[str, Any]] = None) -> bytes:
        """``OK`` (with text or a JSON object) for the request or upload just completed."""
        if self.state not in (DECIDING, REPLYING):
            raise RuntimeError("nothing to reply to")
        if self.state == DECIDING and self._upload is not None:
            raise RuntimeError("an upload request is answered with accept() or reject()")
        if self.state == REPLYING:
            finished = self._upload.request if self._upload is not None else None
            # A RANGE is followed by the next on the same connection: shrinking and growing the
            # buffer around each (1 MiB) range cost two allocations and their zero-fill.
            if not isinstance(finished, messages.Range):
                self._resize(self._idle_size)
        self.state = IDLE
        self._upload = None
        return wire.ok_data(data) if data is not None else wire.ok(text)

    def reply_payload(self, data: Dict[str, Any], payload: bytes) -> Tuple[bytes, bytes, bytes]:
        """``OK`` with ``data`` and the payload's size, the payload, and its SHA-256 line: the
        answer to PASTE and EDITWAIT that carries bytes."""
        header = self.reply(data={**data, "bytes": len(payload)})
        return header, payload, framing.encode_checksum(hashlib.sha256(payload).hexdigest())

    def hold(self, data: Dict[str, Any]) -> bytes:
        """``OK`` with ``data`` for a FORWARD: from now on the connection only carries the
        daemon's announcements (``announce``) until the client closes it."""
        if self.state != DECIDING or self._upload is not None:
            raise RuntimeError("hold() answers a FORWARD")
        line = self.reply(data=data)
        self._resize(self._idle_size)
        self.state = HOLDING
        return line

    def announce(self, connection: int) -> bytes:
        """The line that tells a held forward's client to dial local connection ``connection``."""
        if self.state != HOLDING:
            raise RuntimeError("only a held forward announces connections")
        return wire.ok_data({"connect": connection})

    def _held(self) -> ReceivedEvent:
        if self._start != self._end:
            raise Rejected(messages.E_BAD_REQUEST, "a forward's client sends nothing after FORWARD")
        return CLOSED if self._eof else NEED_DATA

    def splice(self) -> Tuple[bytes, bytes]:
        """``OK`` for a DIAL, and the bytes the client sent behind it (already the forwarded
        connection's): the protocol ends here, the rest of the stream is theirs."""
        if self.state != DECIDING or self._upload is not None:
            raise RuntimeError("splice() answers a DIAL")
        line = self.reply()
        rest = bytes(self._view[self._start : self._end])
        self._start = self._end = self._scanned = 0
        self._buffer = bytearray()  # nothing is read through it again
        self._view = memoryview(self._buffer)
        self.state = SPLICED
        return line, rest

    def reject(self, code: int, text: str) -> bytes:
        """The ERROR line; v1 peers close after any error, so nothing more is read."""
        self.state = DONE
        return wire.error(code, text)

    @property
    def expects_data(self) -> bool:
        """An upload was asked for or under way: its peer may be sending data right now
        (a pipelining client sends it before READY)."""
        return self.in_upload or (self.state == DECIDING and self._data_follows)

    def discard(self) -> int:
        """After ``reject``: drop what was received (an upload's early data); the count."""
        if self.state != DONE:
            raise RuntimeError("only a refused connection discards what it receives")
        count = self._end - self._start
        self._start = self._end = self._scanned = 0
        return count

    @property
    def at_eof(self) -> bool:
        return self._eof
