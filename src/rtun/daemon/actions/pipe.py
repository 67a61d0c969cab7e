"""Two stream transports joined end to end: what one end receives, the other writes.

A forwarded connection is a pair of these: the local program's TCP connection and the client's
dialled UNIX connection. Flow control is the transports' own: when one end's write buffer fills,
the other end stops reading until it drains, so a fast sender never makes the daemon hold more
than a buffer's worth. An end half-closed by its peer half-closes the other; once both
directions have ended, both close.
"""

from __future__ import annotations

import asyncio
from typing import Callable, Optional

WRITE_HIGH = 256 * 1024  # bytes queued for one end before the other stops reading
EARLY_LIMIT = 256 * 1024  # bytes an end takes before it is joined; then it stops reading


class Pipe(asyncio.Protocol):
    """One end. Bytes that come before ``join`` (a local program that speaks first, while its
    forward's client is still dialling) wait, bounded by EARLY_LIMIT."""

    def __init__(self, on_open: Optional[Callable[["Pipe"], None]] = None) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self.peer: Optional[Pipe] = None
        self.ended = asyncio.get_running_loop().create_future()  # set when the transport is gone
        self.moved = 0  # bytes received here and passed on
        self.written = 0  # bytes handed to this end's transport
        self._sent_seen = 0  # ... of which had left its buffer when progress was last seen
        self._sent_at = 0.0  # ... at this time
        self._on_open = on_open
        self._early = bytearray()
        self._eof = False  # this end's peer program sent its last byte
        self._paused_early = False
        self._paused_by_peer = False

    # ---- asyncio callbacks ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH)
        if self._on_open is not None:
            self._on_open(self)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self._early += data
            if len(self._early) >= EARLY_LIMIT and not self._paused_early and self.transport is not None:
                self._paused_early = True
                self.transport.pause_reading()
            return
        self.moved += len(data)
        peer.write(data)

    def eof_received(self) -> bool:
        self._eof = True
        if self.peer is not None:
            self.peer._write_eof()
        return True  # keep the other direction open

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if not self.ended.done():
            self.ended.set_result(None)
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.transport.is_closing():
            # What it still has to write goes out first; an error drops it.
            peer.transport.abort() if exc is not None else peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer._paused_by_peer = True
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None and peer._paused_by_peer:
            peer._paused_by_peer = False
            if not peer._paused_early and not peer.transport.is_closing():
                peer.transport.resume_reading()

    # ---- joining -----------------------------------------------------------------------------------

    def join(self, other: "Pipe", first: bytes = b"") -> None:
        """Join this end to ``other``; ``first``: bytes already received for ``other`` to write
        (what came behind a request line), sent before anything this end receives."""
        self.peer, other.peer = other, self
        if first:
            self.moved += len(first)
            other.write(first)
        for end in (self, other):
            end._flush_early()
        for end in (self, other):
            if end._eof:
                end.peer._write_eof()  # type: ignore[union-attr]

    def _flush_early(self) -> None:
        if self._early:
            early, self._early = bytes(self._early), bytearray()
            self.moved += len(early)
            self.peer.write(early)  # type: ignore[union-attr]
        if self._paused_early and self.transport is not None:
            self._paused_early = False
            if not self._paused_by_peer and not self.transport.is_closing():
                self.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.written += len(data)
            self.transport.write(data)

    def stalled(self, now: float, timeout: float) -> bool:
        """Bytes wait to be written here and none has left for ``timeout`` seconds: its reader
        stopped reading (the other end's reading is paused meanwhile, holding the buffers)."""
        pending = self.transport.get_write_buffer_size() if self.transport is not None else 0
        sent = self.written - pending
        if not pending or sent != self._sent_seen:
            self._sent_seen, self._sent_at = sent, now
            return False
        return now - self._sent_at > timeout

    def _write_eof(self) -> None:
        """The other end's program has finished sending: so has this end, once it has written
        the rest. Once both programs have finished, both ends close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._eof or not transport.can_write_eof():
            transport.close()  # close() writes what is queued first
            if self.peer is not None:
                self.peer.close()
        else:
            transport.write_eof()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
