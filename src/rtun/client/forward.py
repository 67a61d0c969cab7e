"""Forwards, the server's side: ask the daemon to listen on a loopback port of your computer for
a port of this server, then dial back each connection it announces and join it to that port.

Each forward holds one connection to the daemon (FORWARD), on which the daemon announces the
local connections; each of those becomes a connection of its own to the daemon (DIAL) joined to
a new connection to the server's port. A thread reads each forward's announcements and two
threads carry each connection, one per direction: the bytes cross Python once, in large pieces.

Stdlib only: it runs on servers without pip.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from rtun.client.handshake import pipelined, require, too_old
from rtun.errors import ConnectionLostError, RemoteError, RtunError
from rtun.protocol import messages
from rtun.protocol.sender import NEED_DATA, Sender

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Callable, Dict, List, Optional, Tuple

    from rtun.client.pump import ClientConnection

PIECE = 256 * 1024  # bytes moved per read: what one socket read brings at full speed
CONNECT_TIMEOUT = 5.0  # seconds to reach the server's own port (it is this machine's loopback)
DIAL_TIMEOUT = 10.0  # seconds to get the daemon's OK for a DIAL
SPARES = 2  # connections to the daemon kept open ahead of need: a dial on one saves the round
# trip an SSH channel takes to open, so the first byte comes as soon as through `ssh -L`
SPARE_CHECK = 50.0  # seconds between pings that keep spares inside the daemon's idle timeout
LISTEN_GRACE = 60.0  # seconds a port may take to start listening before its forward gives up
CHECK_EVERY = 1.0  # seconds between looks at the ports and the clock


class Held:
    """One forward the daemon has made: ``port`` on your computer leads to ``server_port``."""

    def __init__(self, conn: ClientConnection, server_port: int, port: int, token: str) -> None:
        self.conn = conn
        self.server_port = server_port
        self.port = port
        self.token = token
        self.connections = 0  # announced so far
        self.open = 0  # being carried now
        self.closed = False
        self._lock = threading.Lock()
        self.spares = Spares(conn.path)

    def serve(self, on_connection: "Optional[Callable[[Held], None]]" = None) -> None:
        """Dial back every connection the daemon announces, until it ends the forward (raises)
        or the connection is closed here (returns)."""
        self.conn.sock.settimeout(None)  # announcements come when a local program connects
        while True:
            try:
                reply = self.conn.read_reply()
            except ConnectionLostError:
                if self.closed:
                    return  # closed here: the forward was ended on purpose
                raise ConnectionLostError("the daemon on your computer ended the forward") from None
            if not reply.ok:
                raise RemoteError(reply.text, reply.code)
            number = reply.data["connect"]
            self.connections += 1
            threading.Thread(target=self._carry, args=(number,), daemon=True).start()
            if on_connection is not None:
                on_connection(self)

    def _carry(self, number: int) -> None:
        with self._lock:
            self.open += 1
        try:
            carry(self.spares.take(), self.token, number, self.server_port)
        except OSError:
            pass  # no connection to the daemon: the local program sees its connection close
        finally:
            with self._lock:
                self.open -= 1

    def close(self) -> None:
        self.closed = True
        self.spares.close()
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()


def request(explicit: Optional[str], server_port: int, local: int = 0, exact: bool = False) -> Held:
    """Ask the daemon for a forward of ``server_port``: at ``local`` on your computer (0: the
    same port), or the next free port unless ``exact``."""
    forward = messages.Forward(server_port, local, exact)
    conn = pipelined(explicit, lambda c: c.write(c.sender.send(forward)))
    try:
        require(conn, "forward", "forwarding ports")
        try:
            reply = conn.expect_ok()
        except RemoteError as exc:
            raise too_old(conn, exc, feature="forward", what="forwarding ports") from None
        port, token = reply.data.get("port"), reply.data.get("token")
        if not isinstance(port, int) or not isinstance(token, str) or not 0 < port < 65536:
            raise ConnectionLostError("the daemon's answer to FORWARD makes no sense")
    except BaseException:
        conn.close()
        raise
    return Held(conn, server_port, port, token)


class Spares:
    """Connections to the daemon opened ahead of need, each proven live by a PING, and kept so
    by one now and then; a thread tops them up to SPARES after each is taken."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._ready: "List[socket.socket]" = []
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._closed = False
        self._wanted.set()
        threading.Thread(target=self._keep, daemon=True).start()

    def take(self) -> socket.socket:
        """A spare if one is ready, else a new connection (the channel opens on the way)."""
        with self._lock:
            spare = self._ready.pop() if self._ready else None
        self._wanted.set()
        return spare if spare is not None else self._connect()

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(DIAL_TIMEOUT)
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        return sock

    def _keep(self) -> None:
        checked = time.monotonic()
        while not self._closed:
            self._wanted.wait(SPARE_CHECK)
            self._wanted.clear()
            if time.monotonic() - checked >= SPARE_CHECK:  # keep them alive, drop the dead
                checked = time.monotonic()
                with self._lock:
                    kept, self._ready = self._ready, []
                kept = [sock for sock in kept if _pinged(sock)]
                with self._lock:
                    self._ready += kept
            while not self._closed and len(self._ready) < SPARES:
                try:
                    sock = self._connect()
                except OSError:
                    break  # the daemon is gone: dials will say so
                if not _pinged(sock):
                    break
                with self._lock:
                    self._ready.append(sock)

    def close(self) -> None:
        self._closed = True
        self._wanted.set()
        with self._lock:
            for sock in self._ready:
                sock.close()
            self._ready = []


def _pinged(sock: socket.socket) -> bool:
    """PING answered on ``sock`` (closed if not): the channel is open and the daemon there."""
    try:
        sock.sendall(b"PING\r\n")
        answer = b""
        while not answer.endswith(b"\n"):
            piece = sock.recv(64)
            if not piece:
                break
            answer += piece
        if answer == b"OK PONG\r\n":
            return True
    except OSError:
        pass
    sock.close()
    return False


def carry(dialled: socket.socket, token: str, number: int, server_port: int) -> None:
    """Join announced connection ``number``, over ``dialled`` (a connection to the daemon), to a
    new connection to this server's port; returns when both directions have ended. A port
    nothing listens on closes the local connection."""
    try:
        target: Optional[socket.socket] = socket.create_connection(
            ("localhost", server_port), CONNECT_TIMEOUT
        )
    except OSError:
        target = None
    try:
        dialled.settimeout(DIAL_TIMEOUT)
        sender = Sender()
        dialled.sendall(sender.send(messages.Dial(token, number)))
        if target is None:
            return  # the daemon sees the close and closes the local connection
        first = _dial_reply(dialled, sender)
        dialled.settimeout(None)
        target.settimeout(None)
        if first:
            target.sendall(first)
        relay(dialled, target)
    except (OSError, RtunError):
        pass  # the local program sees its connection close
    finally:
        dialled.close()
        if target is not None:
            target.close()


def _dial_reply(sock: socket.socket, sender: Sender) -> bytes:
    while True:
        event = sender.next_event()
        if event is NEED_DATA:
            sender.receive_data(sock.recv(PIECE))
            continue
        assert isinstance(event, messages.Reply)
        if not event.ok:
            raise RemoteError(event.text, event.code)
        return sender.unread()


def relay(a: socket.socket, b: socket.socket) -> None:
    """Bytes both ways between ``a`` and ``b`` until each direction has ended."""
    other = threading.Thread(target=_one_way, args=(b, a), daemon=True)
    other.start()
    _one_way(a, b)
    other.join()


def _one_way(source: socket.socket, sink: socket.socket) -> None:
    try:
        if hasattr(os, "splice"):  # Linux, Python 3.10+: the bytes never enter this process
            _splice(source.fileno(), sink.fileno())
        else:
            _copy(source, sink)
        sink.shutdown(socket.SHUT_WR)  # the end of this direction, not of the connection
    except OSError:
        for sock in (source, sink):  # a reset: the other direction ends too
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _copy(source: socket.socket, sink: socket.socket) -> None:
    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    while True:
        count = source.recv_into(buffer)
        if not count:
            return
        sink.sendall(view[:count])


def _splice(source: int, sink: int) -> None:
    read_end, write_end = os.pipe()
    try:
        while True:
            count = os.splice(source, write_end, PIECE)  # novermin (guarded: Linux, 3.10+)
            if not count:
                return
            while count:
                count -= os.splice(read_end, sink, count)  # novermin
    finally:
        os.close(read_end)
        os.close(write_end)


def parse_spec(text: str) -> "Tuple[int, int]":
    """``PORT`` or ``PORT:LOCAL`` (LOCAL 0 or absent: the same port)."""
    server, _, local = text.partition(":")
    try:
        server_port, local_port = int(server), int(local or 0)
    except ValueError:
        raise ValueError(f"{text!r} is not PORT or PORT:LOCAL") from None
    if not 0 < server_port < 65536 or not 0 <= local_port < 65536:
        raise ValueError(f"{text!r}: ports go from 1 to 65535")
    return server_port, local_port


def local_for(server_port: int) -> int:
    """Where a forward of ``server_port`` listens on your computer by default: the same port,
    but ports below 1024 are the system's there, so 80 goes to 8080 and 443 to 8443."""
    return server_port if server_port >= 1024 else server_port + 8000


def listening(port: int) -> "Optional[bool]":
    """Whether a program listens on TCP ``port`` of this machine (any address), read from the
    kernel's tables without connecting (a connection would use up a login's one-shot callback
    server); None where there are no such tables (not Linux)."""
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as lines:
                next(lines, None)  # the header
                for line in lines:
                    fields = line.split()
                    # local_address is ADDRESS:PORT in hex; state 0A is LISTEN
                    if (
                        len(fields) > 3
                        and fields[3] == "0A"
                        and int(fields[1].rpartition(":")[2], 16) == port
                    ):
                        return True
            found = True
        except (OSError, ValueError):
            continue
    return False if found else None


def keep(
    helds: "List[Held]",
    *,
    seconds: "Optional[float]" = None,
    while_listening: bool = False,
    idle: "Optional[float]" = None,
) -> None:
    """Carry the forwards' connections until ``seconds`` have passed, or (``while_listening``)
    each forward's server port has stopped listening, or (``idle``) no connection has been open
    for that long; raises when the daemon ends a forward. Ctrl-C ends it too (raised)."""
    failures: "List[RtunError]" = []
    wake = threading.Event()

    def serve(held: Held) -> None:
        try:
            held.serve(lambda _: wake.set())
        except RtunError as exc:
            failures.append(exc)
        wake.set()

    for held in helds:
        threading.Thread(target=serve, args=(held,), daemon=True).start()
    began = last_busy = time.monotonic()
    last_total = 0
    seen: "Dict[int, bool]" = {}
    try:
        while True:
            wake.wait(CHECK_EVERY)
            wake.clear()
            if failures:
                raise failures[0]
            now = time.monotonic()
            if seconds is not None and now - began >= seconds:
                return
            live = [held for held in helds if not held.closed]
            if while_listening:
                for held in live:
                    state = listening(held.server_port)
                    # A connection carried proves it listened, however briefly: a login's
                    # callback server may come and go between two looks.
                    if state or held.connections:
                        seen[held.server_port] = True
                    gone = state is False and (seen.get(held.server_port) or now - began > LISTEN_GRACE)
                    if gone and not held.open:  # what it still carries (a last response) goes first
                        held.close()
            total = sum(held.connections for held in helds)
            if any(held.open for held in live) or total != last_total:
                last_busy, last_total = now, total
            if idle is not None and now - last_busy >= idle:
                return
            if all(held.closed for held in helds):
                return
    finally:
        for held in helds:
            held.close()
