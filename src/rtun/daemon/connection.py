"""One client connection as the daemon sees it: an asyncio pump around the protocol core.

The connection is an asyncio BufferedProtocol whose buffer is the Receiver's own: the kernel
copies data straight into it, and file data reaches storage as views of it, so a large
transfer costs no copies in Python. No read waits forever: the daemon's watchdog aborts a
connection that has kept one wait going for longer than ``timeout``. No reply waits forever
either: one of whose bytes none has left the transport's buffer for ``timeout`` ends the
connection, whatever the client sends meanwhile (bytes that arrive are no sign it reads).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Callable, Optional, Tuple

from rtun.protocol import messages, wire
from rtun.protocol.receiver import CLOSED, NEED_DATA, Receiver, Truncated

if TYPE_CHECKING:
    from rtun.protocol.events import FileStart, ReceivedEvent


class PeerGone(Exception):
    """The client closed the connection or stopped sending within the deadline."""


COALESCE_DELAY = 0.02  # seconds file data may wait in the buffer for more to write it with
QUIET_DELAY = 0.5  # seconds a connection between uploads keeps its large buffer: a RANGE's next
# one is usually on its way (giving it back and taking it again costs 0.5 ms of page faults)
RATE_GRACE = 30.0  # seconds of an upload (at most a quarter of the idle timeout) before its
# average rate is held to the minimum


class SpareBuffers:
    """How many connections between uploads may keep their large receive buffer for QUIET_DELAY
    (the rest give it back at once): what idle connections cost stays bounded whatever peers
    send."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0


class Connection(asyncio.BufferedProtocol):
    def __init__(
        self,
        timeout: float,
        on_connect: Callable[["Connection"], None],
        min_rate: float = 0.0,
        spare: Optional[SpareBuffers] = None,
    ) -> None:
        self.timeout = timeout
        self.min_rate = min_rate
        self.receiver = Receiver()
        # Past the connection limit, a few connections are still served for pings and
        # notifications: they may not start uploads.
        self.control_only = False
        self._upload_bytes = 0  # received since READY
        self._upload_waited = 0.0  # seconds spent waiting for them
        self._on_connect = on_connect
        self._transport: Optional[asyncio.Transport] = None
        self._reading_paused = False
        self._writing_paused = False
        # The handler task waits for one thing at a time: data, or room to write. Every wait
        # sits in a loop that checks its own condition again, so any event may wake it.
        self._waiter: Optional["asyncio.Future[None]"] = None
        self._waiting_since: Optional[float] = None
        self._received_at = 0.0  # when bytes last came that did not wake the wait
        self._late_wake: Optional[asyncio.TimerHandle] = None  # for a chunk's data that stops coming
        self._timed_out = ""  # why the watchdog ended the connection
        self._sending = False  # the handler waits for room to write: only the write's progress counts
        self._written = 0  # bytes handed to the transport
        self._sent_seen = 0  # ... of which had left its buffer when progress was last seen
        self._sent_at = 0.0  # ... at this time
        self._reply_since = 0.0  # a reply's rate is measured from here (a window at a time) ...
        self._reply_sent = 0  # ... against the bytes that had left the buffer then: min_rate
        self._linger: Optional[asyncio.TimerHandle] = None  # after close(): replies still unread
        self._spare = spare
        self._large = False  # the receiver may hold its upload buffer
        self._give_back: Optional[asyncio.TimerHandle] = None  # ... until then, holding a spare
        self.ranged_file: Optional[object] = None  # the RANGES file this connection opened or joined

    @property
    def busy(self) -> bool:
        """Inside a request: shutdown lets it finish, eviction spares it."""
        return self.receiver.in_request

    # ---- asyncio protocol callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._on_connect(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.receiver.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.receiver.buffer_updated(nbytes)
        if self.receiver.in_upload:
            self._upload_bytes += nbytes
        if self.receiver.buffer_full and self._transport is not None and not self._reading_paused:
            self._reading_paused = True
            self._transport.pause_reading()
        if self.receiver.wants_more:  # the handler waits for the rest of the chunk (next_event),
            self._received_at = time.monotonic()  # but looks again after a pause without more
            if self._waiter is not None:
                self._wake_later(COALESCE_DELAY)
            return
        self._wake()

    def _wake_later(self, delay: float) -> None:
        """Wake the handler after ``delay`` (unless a wake is due already), to look again at a
        chunk that is waiting for more of its data."""
        if self._late_wake is None:
            self._late_wake = asyncio.get_running_loop().call_later(delay, self._wake_late)

    def _wake_late(self) -> None:
        self._late_wake = None
        self._wake()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self.receiver.buffer_full:
            self._reading_paused = False
            self._transport.resume_reading()

    def eof_received(self) -> bool:
        self.receiver.receive_eof()
        self._wake()
        return True  # keep writing: a client that half-closed still gets its replies

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.receiver.receive_eof()
        if self._late_wake is not None:
            self._late_wake.cancel()
            self._late_wake = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._shrink()
        self._wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake()

    # ---- the pump ------------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        """Wait for the next event; the watchdog aborts a wait that lasts past the timeout."""
        self._waiter = asyncio.get_running_loop().create_future()
        self._waiting_since = since = time.monotonic()
        try:
            await self._waiter
        finally:
            if self.receiver.in_upload:
                self._upload_waited += time.monotonic() - since
            self._waiter = None
            self._waiting_since = None

    def accept(self) -> "Tuple[bytes, Optional[FileStart]]":
        """READY for the upload being decided; its rate is measured from here."""
        self._upload_bytes, self._upload_waited = 0, 0.0
        self._large = True
        return self.receiver.accept()

    def _quiet(self) -> None:
        """Waiting for the peer between uploads: the large buffer goes back soon, or at once
        when enough quiet connections hold one."""
        spare = self._spare
        if self._give_back is not None:
            return
        if spare is not None and spare.held < spare.limit:
            spare.held += 1
            self._give_back = asyncio.get_running_loop().call_later(QUIET_DELAY, self._shrink)
        else:
            self._shrink()

    def _shrink(self) -> None:
        if self._give_back is not None:
            self._give_back.cancel()
            self._give_back = None
            assert self._spare is not None
            self._spare.held -= 1
        if self._large and not self.receiver.in_upload and self.receiver.shrink():
            self._large = False

    async def next_event(self) -> ReceivedEvent:
        """The receiver's next event; waits for bytes as long as it needs them."""
        begun = time.monotonic()
        while True:
            if self.receiver.wants_more:
                # Part of a chunk is here: the rest first, for as long as more keeps coming (a
                # pause of COALESCE_DELAY ends it), so storage writes the chunk whole, from the
                # front of the buffer: a range with one direct write, not a write per read.
                quiet = time.monotonic() - max(self._received_at, begun)
                if quiet < COALESCE_DELAY:
                    self._resume_reading()
                    self._wake_later(COALESCE_DELAY - quiet)
                    await self._wait()
                    continue
            if self._late_wake is not None:  # not for the next chunk's wait
                self._late_wake.cancel()
                self._late_wake = None
            try:
                event = self.receiver.next_event()
            except Truncated as exc:
                raise self._lost(str(exc)) from None
            if event is CLOSED and self._timed_out:
                raise self._lost("")
            if event is not NEED_DATA:
                return event
            self._resume_reading()
            if self._large and not self.receiver.in_upload:
                self._quiet()
            await self._wait()

    async def drain(self, limit: int, seconds: float, quiet: float = 0.5) -> int:
        """After a refusal: read and drop what the peer sent ahead (bounded in bytes and time,
        and over once the peer falls quiet), so its pipelined data is consumed rather than
        reset, and never written anywhere."""
        dropped = self.receiver.discard()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (
            dropped <= limit
            and not self.receiver.at_eof
            and self._transport is not None
            and not self._transport.is_closing()
        ):
            if self._reading_paused:
                self._reading_paused = False
                self._transport.resume_reading()
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._wait(), min(remaining, quiet))
            except asyncio.TimeoutError:
                break
            dropped += self.receiver.discard()
        return dropped

    def _lost(self, what: str) -> PeerGone:
        return PeerGone(self._timed_out or what)

    def _write(self, transport: asyncio.Transport, data: bytes) -> None:
        if not transport.get_write_buffer_size():  # a wait for the client to read starts now
            now = time.monotonic()
            self._sent_seen, self._sent_at = self._written, now
            self._reply_since, self._reply_sent = now, self._written
        transport.write(data)
        self._written += len(data)

    def _write_stalled(self, now: float) -> str:
        """Why the reply waiting in the transport's buffer ends the connection ("" if it does
        not): none of it left for ``timeout``, or, past the grace, it is read slower than
        ``min_rate`` (a byte now and then would otherwise hold a 4 MiB reply for ever, on each
        of hundreds of connections)."""
        transport = self._transport
        pending = transport.get_write_buffer_size() if transport is not None else 0
        sent = self._written - pending
        if not pending:
            self._sent_seen, self._sent_at = sent, now
            return ""
        if sent != self._sent_seen:
            self._sent_seen, self._sent_at = sent, now
        elif now - self._sent_at > self.timeout:
            return f"no byte of the reply was read for {self.timeout:.0f} s"
        # Measured window by window: the socket's own buffers take the first few hundred KiB at
        # once, which must not pay for a trickle after them.
        window = now - self._reply_since
        if self.min_rate > 0 and window > min(RATE_GRACE, self.timeout / 4):
            if sent - self._reply_sent < self.min_rate * window:
                return f"reply read slower than {self.min_rate:.0f} bytes/s"
            self._reply_since, self._reply_sent = now, sent
        return ""

    async def send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._lost("cannot reply: the connection is closed")
        self._write(transport, data)
        self._sending = True
        try:
            while self._writing_paused and not transport.is_closing():
                await self._wait()
        finally:
            self._sending = False
        if transport.is_closing() and self._timed_out:
            raise self._lost("cannot reply")

    async def send_quietly(self, data: bytes) -> None:
        """A last line that the client may no longer be there to read."""
        try:
            await self.send(data)
        except PeerGone:
            pass

    def expire_if_silent(self, now: float) -> None:
        """Abort the connection if a reply has made no progress, or its current read has waited,
        for longer than the timeout, or if its upload trickles: a few hundred of those would
        otherwise hold every slot. A quiet connection gives back its large receive buffer."""
        stalled = self._write_stalled(now)
        if stalled:
            self._expire(stalled, say=False)
            return
        if self._large and self._give_back is None:  # quiet, or waiting for a transfer slot
            self._shrink()
        if self._waiting_since is None or self._sending or self.receiver.long_lived:
            return
        if now - max(self._waiting_since, self._received_at) > self.timeout:
            self._expire("idle timeout", say=False)  # as v1 daemons do: no reply
        elif self.receiver.in_upload and self.min_rate > 0:
            waited = self._upload_waited + now - self._waiting_since
            if waited > min(RATE_GRACE, self.timeout / 4) and self._upload_bytes < self.min_rate * waited:
                self._expire(f"upload slower than {self.min_rate:.0f} bytes/s", say=True)

    def _expire(self, why: str, say: bool) -> None:
        self._timed_out = why
        self.receiver.receive_eof()
        if say and self._transport is not None and not self._transport.is_closing():
            self._write(self._transport, wire.error(messages.E_BUSY, why))  # sent now if the socket has room
        self.kill()

    def abort(self, data: bytes) -> None:
        """Send a last line without waiting for the peer to read it, and close."""
        if self._transport is not None and not self._transport.is_closing():
            self._write(self._transport, data)
        self.close()

    def close(self) -> None:
        """Close once the replies are sent; a client that stops reading them gets ``timeout``."""
        if self._transport is not None:
            self._transport.close()
            if self._transport.get_write_buffer_size() and self._linger is None:
                self._linger = asyncio.get_running_loop().call_later(
                    self._linger_interval, self._check_linger
                )

    @property
    def _linger_interval(self) -> float:
        return max(0.05, min(self.timeout / 4, 5.0))  # the watchdog's, which no longer sees it

    def _check_linger(self) -> None:
        self._linger = None
        if self._write_stalled(time.monotonic()):
            self.kill()
        elif self._transport is not None and self._transport.get_write_buffer_size():
            self._linger = asyncio.get_running_loop().call_later(self._linger_interval, self._check_linger)

    def detach(self) -> asyncio.Transport:
        """Hand the transport over (after a DIAL: its bytes are a forwarded connection's now);
        this connection no longer reads, writes or closes it."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise self._lost("the connection closed")
        self._transport = None
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        return transport

    def kill(self) -> None:
        """Close at once, dropping replies not yet sent."""
        if self._transport is not None:
            self._transport.abort()
