"""One client connection as the daemon sees it: bounded reads with a deadline, and replies.

Every byte here comes from whoever can reach the socket, so nothing is read without a size
bound and no read waits forever. The connection is an asyncio BufferedProtocol: the kernel
copies data straight into one fixed buffer, and uploads hash and write it from there, so a
large transfer costs no copies in Python.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable, Optional

from rtun import wire

BUFFER_SIZE = 1024 * 1024  # must exceed wire.MAX_LINE: a whole line has to fit


class PeerGone(Exception):
    """The client closed the connection or stopped sending within the deadline."""


class Peer(asyncio.BufferedProtocol):
    """Reads never wait forever: the daemon's watchdog aborts a peer that has kept one read
    waiting for longer than ``timeout``."""

    def __init__(self, timeout: float, on_connect: Callable[["Peer"], None]) -> None:
        self.timeout = timeout
        self.busy = False  # inside a request: shutdown lets it finish within the grace period
        self._on_connect = on_connect
        self._transport: Optional[asyncio.Transport] = None
        self._buffer = bytearray(BUFFER_SIZE)
        self._view = memoryview(self._buffer)
        self._start = 0  # unread data is self._buffer[self._start:self._end]
        self._end = 0
        self._eof = False
        self._reading_paused = False
        self._writing_paused = False
        # The handler task waits for one thing at a time: data, or room to write. Every wait
        # sits in a loop that checks its own condition again, so any event may wake it.
        self._waiter: Optional[asyncio.Future[None]] = None
        self._waiting_since: Optional[float] = None
        self._timed_out = False

    # ---- asyncio protocol callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._on_connect(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._start == self._end:
            self._start = self._end = 0
        return self._view[self._end:]

    def buffer_updated(self, nbytes: int) -> None:
        self._end += nbytes
        if self._end == BUFFER_SIZE:
            self._pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep writing: a client that half-closed still gets its replies

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._eof = True
        self._wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()

    # ---- reading -----------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        """Wait for the next event; the watchdog aborts a wait that lasts past the timeout."""
        self._waiter = asyncio.get_running_loop().create_future()
        self._waiting_since = time.monotonic()
        try:
            await self._waiter
        finally:
            self._waiter = None
            self._waiting_since = None

    def _pause_reading(self) -> None:
        if self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()

    async def _wait_for_data(self) -> None:
        """Wait until more bytes arrive (or the end); makes room for them first."""
        if self._start == self._end:
            self._start = self._end = 0
        elif self._end == BUFFER_SIZE:
            # Move the unread tail (a partial line, at most MAX_LINE) to the front.
            length = self._end - self._start
            self._buffer[:length] = self._view[self._start:self._end]
            self._start, self._end = 0, length
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
        await self._wait()

    def _lost(self, what: str) -> PeerGone:
        return PeerGone("idle timeout" if self._timed_out else what)

    async def readline(self) -> bytes:
        """The next line, or b"" at a clean end of the connection."""
        scanned = self._start
        while True:
            newline = self._buffer.find(b"\n", scanned, self._end)
            if newline >= 0:
                if newline + 1 - self._start > wire.MAX_LINE:
                    break
                line = bytes(self._view[self._start:newline + 1])
                self._start = newline + 1
                return line
            if self._end - self._start > wire.MAX_LINE:
                break
            if self._eof:
                if self._start != self._end or self._timed_out:
                    raise self._lost("connection closed in the middle of a line")
                return b""
            scanned = self._end - self._start  # offset: compaction may move the data
            await self._wait_for_data()
            scanned += self._start
        raise wire.ProtocolError(wire.E_LINE_TOO_LONG, f"line longer than {wire.MAX_LINE} bytes")

    async def required_line(self) -> bytes:
        line = await self.readline()
        if not line:
            raise PeerGone("connection closed before the upload was complete")
        return line

    async def read(self, limit: int) -> memoryview:
        """Up to ``limit`` bytes (at least one), as a view that is valid until the next read."""
        while self._start == self._end:
            if self._eof:
                raise self._lost("connection closed before the upload was complete")
            await self._wait_for_data()
        end = min(self._end, self._start + limit)
        data = self._view[self._start:end]
        self._start = end
        return data

    # ---- writing -----------------------------------------------------------------------------

    async def reply(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._lost("cannot reply: the connection is closed")
        transport.write(data)
        while self._writing_paused and not transport.is_closing():
            await self._wait()
        if transport.is_closing() and self._timed_out:
            raise self._lost("cannot reply")

    def expire_if_silent(self, now: float) -> None:
        """Abort the connection if its current read or write has waited past the timeout."""
        if self._waiting_since is not None and now - self._waiting_since > self.timeout:
            self._timed_out = True
            self.kill()

    def abort(self, data: bytes) -> None:
        """Send a last line without waiting for the peer to read it, and close."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
        self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def kill(self) -> None:
        """Close at once, dropping replies not yet sent."""
        if self._transport is not None:
            self._transport.abort()
