"""One stream to the daemon: a blocking pump that moves bytes between a UNIX socket and the
protocol core's Sender (which knows whose turn it is and checks every reply).

Stdlib only, and it imports only what it needs: it starts on every `rtun` command a user types.
"""

from __future__ import annotations

import os
import socket

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Callable, Optional, Tuple, Union

from rtun import paths
from rtun.errors import ConnectionLostError, NoDaemonError, RemoteError, RtunError
from rtun.protocol import messages, wire
from rtun.protocol.sender import NEED_DATA, Payload, PayloadEnd, Sender, Truncated

# A live daemon answers PING in milliseconds, but a forward on a loaded server took 2.5 s in the
# load test; stale sockets refuse at once, so a long wait costs only a hung daemon.
PROBE_TIMEOUT = 10.0
REPLY_TIMEOUT = 120.0  # the deadline v1 peers use for every read and write
WRITE_BUFFER = 256 * 1024
RECEIVE_SIZE = 64 * 1024


class PathTooLong(RtunError):
    """A socket path past the OS's sun_path limit."""


class ClientConnection:
    """One stream to the daemon: a blocking pump around the protocol core's Sender."""

    def __init__(self, path: str, sock: socket.socket) -> None:
        self.path = path
        self.sock = sock
        self.sender = Sender()
        # Buffered, so the entries and small files of a transfer go out in few large writes.
        self._writer = sock.makefile("wb", buffering=WRITE_BUFFER)
        self.features: Optional[Tuple[str, ...]] = None

    @classmethod
    def open(
        cls,
        path: str,
        *,
        timeout: float = PROBE_TIMEOUT,
        probe: "Optional[Callable[[ClientConnection], None]]" = None,
    ) -> "ClientConnection":
        """Connect and check that a daemon answers: with PING (as v1 clients do), or with
        ``probe``, which sends its requests and reads the first reply."""
        if not paths.socket_path_fits(path):
            raise PathTooLong(
                f"socket path is too long for this OS ({len(os.fsencode(path))} bytes, "
                f"at most {paths.SUN_PATH_MAX - 1}): {path}"
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            conn = cls(path, sock)
            if probe is not None:
                probe(conn)
            else:
                reply = conn.request(messages.Ping())
                if reply.text != "PONG":
                    raise NoDaemonError(f"answered {reply.text!r} instead of PONG")
        except (OSError, ConnectionLostError, NoDaemonError) as exc:
            sock.close()
            raise NoDaemonError(f"{path}: {_reason(exc)}") from None
        except RtunError as exc:
            sock.close()
            if probe is not None:  # the probe's own failure (a file it could not read, say)
                raise
            raise NoDaemonError(f"{path}: {_reason(exc)}") from None
        sock.settimeout(REPLY_TIMEOUT)
        return conn

    def close(self) -> None:
        try:
            self._writer.close()
        except OSError:
            pass  # unsent bytes of a request that failed anyway
        self.sock.close()

    def __enter__(self) -> "ClientConnection":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, data: "Union[bytes, memoryview]") -> None:
        """Queue bytes for the daemon; they are sent when the buffer fills or a reply is read."""
        try:
            self._writer.write(data)
        except OSError as exc:
            # The daemon may have refused mid-stream and closed: its reason is more useful.
            raise self._refusal_or(
                ConnectionLostError(f"connection to the daemon lost: {_reason(exc)}")
            ) from None

    def flush(self) -> None:
        try:
            self._writer.flush()
        except OSError as exc:
            raise self._refusal_or(
                ConnectionLostError(f"connection to the daemon lost: {_reason(exc)}")
            ) from None

    def read_reply(self) -> messages.Reply:
        """The daemon's next reply (READY, OK or ERROR), after sending what is queued."""
        self.flush()
        try:
            return self._next_reply()
        except OSError as exc:
            raise ConnectionLostError(f"no reply from the daemon: {_reason(exc)}") from None

    def _next_reply(self) -> messages.Reply:
        try:
            while True:
                event = self.sender.next_event()
                if event is not NEED_DATA:
                    return event  # type: ignore[return-value]
                self.sender.receive_data(self.sock.recv(RECEIVE_SIZE))
        except (messages.Rejected, Truncated) as exc:
            raise ConnectionLostError(str(exc)) from None

    def read_payload(self, write: "Callable[[bytes], object]") -> int:
        """After a payload reply: hand each piece of its data to ``write``; the byte count.
        The data is only whole (and verified) when this returns."""
        total = 0
        try:
            while True:
                event = self.sender.next_event()
                if isinstance(event, Payload):
                    write(event.data)
                    total += len(event.data)
                elif isinstance(event, PayloadEnd):
                    return total
                else:
                    self.sender.receive_data(self.sock.recv(RECEIVE_SIZE))
        except (messages.Rejected, Truncated) as exc:
            raise ConnectionLostError(str(exc)) from None
        except OSError as exc:
            raise ConnectionLostError(f"connection to the daemon lost: {_reason(exc)}") from None

    def request(self, request: wire.Request) -> messages.Reply:
        """Send one request; return its reply (READY for an upload), raising RemoteError for an
        ERROR reply."""
        try:
            self.write(self.sender.send(request))
        except ValueError:
            raise RtunError("a name or text with a line break or invalid UTF-8 cannot be sent") from None
        return self.expect_ok()

    def expect_ok(self) -> messages.Reply:
        reply = self.read_reply()
        if not reply.ok:
            raise RemoteError(reply.text, reply.code)
        return reply

    def _refusal_or(self, fallback: RtunError) -> RtunError:
        """The daemon's ERROR line if it sent one before closing, else ``fallback``."""
        try:
            self.sock.settimeout(1.0)
            for _ in range(3):  # a pipelined HELLO's and READY's replies may come first
                reply = self._next_reply()
                if not reply.ok:
                    return RemoteError(reply.text, reply.code)
                features = wire.parse_hello_reply(reply)
                if features is not None:
                    self.features = features
        except (OSError, RtunError):
            pass
        return fallback


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
