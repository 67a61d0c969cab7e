"""One client connection as the daemon sees it: bounded, deadline-bound reads and replies.

Every byte here comes from whoever can reach the socket, so nothing is read without a size
bound and no read waits forever.
"""

from __future__ import annotations

import asyncio

from rtun import wire


class PeerGone(Exception):
    """The client closed the connection or stopped sending within the deadline."""


class Peer:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.timeout = timeout
        self.busy = False  # inside a request: shutdown lets it finish within the grace period

    async def readline(self) -> bytes:
        """The next line, or b"" at a clean end of the connection."""
        try:
            return await asyncio.wait_for(
                self._reader.readuntil(b"\n"), self.timeout
            )
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise PeerGone("connection closed in the middle of a line") from None
            return b""
        except asyncio.LimitOverrunError:
            raise wire.ProtocolError(
                wire.E_LINE_TOO_LONG, f"line longer than {wire.MAX_LINE} bytes"
            ) from None
        except asyncio.TimeoutError:
            raise PeerGone("idle timeout") from None
        except ConnectionError as exc:  # e.g. ECONNRESET: it left with replies unread
            raise PeerGone(f"connection lost: {exc}") from None

    async def required_line(self) -> bytes:
        line = await self.readline()
        if not line:
            raise PeerGone("connection closed before the upload was complete")
        return line

    async def read(self, limit: int) -> bytes:
        """Up to ``limit`` bytes (at least one)."""
        try:
            data = await asyncio.wait_for(self._reader.read(limit), self.timeout)
        except asyncio.TimeoutError:
            raise PeerGone("no data within the deadline") from None
        except ConnectionError as exc:
            raise PeerGone(f"connection lost: {exc}") from None
        if not data:
            raise PeerGone("connection closed before the upload was complete")
        return data

    async def reply(self, data: bytes) -> None:
        self._writer.write(data)
        try:
            await asyncio.wait_for(self._writer.drain(), self.timeout)
        except (asyncio.TimeoutError, ConnectionError) as exc:
            raise PeerGone(f"cannot reply: {exc or 'timeout'}") from None

    def abort(self, data: bytes) -> None:
        """Send a last line without waiting for the peer to read it, and close."""
        try:
            self._writer.write(data)
        except (ConnectionError, RuntimeError):
            pass
        self._writer.close()

    def close(self) -> None:
        self._writer.close()
