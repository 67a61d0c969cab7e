"""One client connection as the daemon sees it: bounded, deadline-bound reads and replies.

Every byte here comes from whoever can reach the socket, so nothing is read without a size
bound and no read waits forever.
"""

from __future__ import annotations

import asyncio
import time
from typing import Optional

from rtun import wire


class PeerGone(Exception):
    """The client closed the connection or stopped sending within the deadline."""


class Peer:
    """Reads never wait forever: the daemon's watchdog aborts a peer that has kept one read
    waiting for longer than ``timeout`` (asyncio.wait_for on every read would cost a task each,
    a large share of the daemon's time when a transfer holds thousands of small files)."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.timeout = timeout
        self.busy = False  # inside a request: shutdown lets it finish within the grace period
        self._waiting_since: Optional[float] = None
        self._timed_out = False

    def expire_if_silent(self, now: float) -> None:
        """Abort the connection if its current read has waited longer than the timeout."""
        if self._waiting_since is not None and now - self._waiting_since > self.timeout:
            self._timed_out = True
            self._writer.transport.abort()

    def _lost(self, what: str) -> PeerGone:
        return PeerGone("idle timeout" if self._timed_out else what)

    async def readline(self) -> bytes:
        """The next line, or b"" at a clean end of the connection."""
        self._waiting_since = time.monotonic()
        try:
            return await self._reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial or self._timed_out:
                raise self._lost("connection closed in the middle of a line") from None
            return b""
        except asyncio.LimitOverrunError:
            raise wire.ProtocolError(
                wire.E_LINE_TOO_LONG, f"line longer than {wire.MAX_LINE} bytes"
            ) from None
        except ConnectionError as exc:  # e.g. ECONNRESET: it left with replies unread
            raise self._lost(f"connection lost: {exc}") from None
        finally:
            self._waiting_since = None

    async def required_line(self) -> bytes:
        line = await self.readline()
        if not line:
            raise PeerGone("connection closed before the upload was complete")
        return line

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes (at least one)."""
        self._waiting_since = time.monotonic()
        try:
            data = await self._reader.read(limit)
        except ConnectionError as exc:
            raise self._lost(f"connection lost: {exc}") from None
        finally:
            self._waiting_since = None
        if not data:
            raise self._lost("connection closed before the upload was complete")
        return data

    async def reply(self, data: bytes) -> None:
        self._writer.write(data)
        self._waiting_since = time.monotonic()
        try:
            await self._writer.drain()
        except ConnectionError as exc:
            raise self._lost(f"cannot reply: {exc}") from None
        finally:
            self._waiting_since = None

    def abort(self, data: bytes) -> None:
        """Send a last line without waiting for the peer to read it, and close."""
        try:
            self._writer.write(data)
        except (ConnectionError, RuntimeError):
            pass
        self._writer.close()

    def close(self) -> None:
        self._writer.close()
