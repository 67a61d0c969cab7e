"""The blocking client that runs on the remote server and talks to the daemon through the forward.

Stdlib only, and it imports only what it needs: it starts on every `rtun` command a user types.
"""

from __future__ import annotations

import os
import socket
TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Callable, Optional, Tuple, Union

from rtun import paths
from rtun.protocol import wire
from rtun.protocol.sender import NEED_DATA, Payload, PayloadEnd, Sender, Truncated
from rtun.errors import ConnectionLostError, NoDaemonError, RemoteError, RtunError

# A live daemon answers PING in milliseconds, but a forward on a loaded server took 2.5 s in the
# load test; stale sockets refuse at once, so a long wait costs only a hung daemon.
PROBE_TIMEOUT = 10.0
REPLY_TIMEOUT = 120.0  # the deadline v1 peers use for every read and write
WRITE_BUFFER = 256 * 1024
RECEIVE_SIZE = 64 * 1024

SETUP_HINT = (
    "log in from your computer with `rtun ssh HOST` (or run `rtun server` there and log in "
    "with the `ssh -R` forward shown in README.md)"
)


class PathTooLong(RtunError):
    """A socket path past the OS's sun_path limit."""


class Connection:
    """One stream to the daemon: a blocking pump around the protocol core's Sender."""

    def __init__(self, path: str, sock: socket.socket) -> None:
        self.path = path
        self.sock = sock
        self.sender = Sender()
        # Buffered, so the entries and small files of a transfer go out in few large writes.
        self._writer = sock.makefile("wb", buffering=WRITE_BUFFER)
        self.features: Optional[Tuple[str, ...]] = None

    @classmethod
    def open(cls, path: str, timeout: float = PROBE_TIMEOUT,
             probe: "Optional[Callable[[Connection], None]]" = None) -> "Connection":
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
                reply = conn.request(wire.Ping())
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

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def write(self, data: "Union[bytes, memoryview]") -> None:
        """Queue bytes for the daemon; they are sent when the buffer fills or a reply is read."""
        try:
            self._writer.write(data)
        except OSError as exc:
            # The daemon may have refused mid-stream and closed: its reason is more useful.
            raise self._refusal_or(ConnectionLostError(f"connection to the daemon lost: {_reason(exc)}"))

    def flush(self) -> None:
        try:
            self._writer.flush()
        except OSError as exc:
            raise self._refusal_or(ConnectionLostError(f"connection to the daemon lost: {_reason(exc)}"))

    def read_reply(self) -> wire.Reply:
        """The daemon's next reply (READY, OK or ERROR), after sending what is queued."""
        self.flush()
        try:
            return self._next_reply()
        except OSError as exc:
            raise ConnectionLostError(f"no reply from the daemon: {_reason(exc)}") from None

    def _next_reply(self) -> wire.Reply:
        try:
            while True:
                event = self.sender.next_event()
                if event is not NEED_DATA:
                    return event  # type: ignore[return-value]
                self.sender.receive_data(self.sock.recv(RECEIVE_SIZE))
        except (wire.Rejected, Truncated) as exc:
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
        except (wire.Rejected, Truncated) as exc:
            raise ConnectionLostError(str(exc)) from None
        except OSError as exc:
            raise ConnectionLostError(f"connection to the daemon lost: {_reason(exc)}") from None

    def request(self, request: wire.Request) -> wire.Reply:
        """Send one request; return its reply (READY for an upload), raising RemoteError for an
        ERROR reply."""
        try:
            self.write(self.sender.send(request))
        except ValueError:
            raise RtunError("a name or text with a line break or invalid UTF-8 cannot be sent") from None
        return self.expect_ok()

    def expect_ok(self) -> wire.Reply:
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


def _say(message: str) -> None:
    """With $RTUN_VERBOSE set: one line on stderr saying which socket was used and why."""
    if os.environ.get("RTUN_VERBOSE"):
        import sys

        sys.stderr.write(f"rtun: {message}\n")


def connect(explicit: Optional[str] = None,
            probe: "Optional[Callable[[Connection], None]]" = None) -> Connection:
    """The first socket that answers PING: -s, else $RTUN_SOCK, else ~/.rtun/rtun.sock* newest
    first. When $RTUN_SOCK does not answer (a shell in a tmux started by an earlier login keeps
    the old name), the live sockets of the same laptop come first, then any live one."""
    if explicit:
        try:
            return Connection.open(explicit, probe=probe)
        except NoDaemonError as exc:
            raise NoDaemonError(f"no rtun daemon answers on {exc.message}; {SETUP_HINT}") from None
    named = os.environ.get("RTUN_SOCK")
    laptop = None
    failed = ""
    if named:
        try:
            conn = Connection.open(named, probe=probe)
        except (NoDaemonError, PathTooLong) as exc:  # no answer, or a path too long for sun_path
            failed = exc.message
            laptop = paths.laptop_of(named)
        else:
            _say(f"using {named} ($RTUN_SOCK)")
            return conn
    candidates = [p for p in paths.same_laptop_first(paths.socket_candidates(), laptop) if p != named]
    tried = []
    for path in candidates:
        try:
            conn = Connection.open(path, probe=probe)
        except NoDaemonError as exc:
            tried.append(exc.message)
            continue
        except PathTooLong:  # skip a candidate
            tried.append(f"{path}: too long for a socket path")
            continue
        _say(_why(path, named, failed, laptop))
        return conn
    where = os.path.join(paths.rtun_dir(), paths.SOCKET_NAME + "*")
    found = f"tried {'; '.join(tried)}" if tried else f"no other socket in {where}"
    if named:
        raise NoDaemonError(f"no rtun daemon answers on $RTUN_SOCK ({failed}) nor elsewhere "
                            f"({found}); {SETUP_HINT}")
    if not tried:
        raise NoDaemonError(f"no rtun socket found ({where}); {SETUP_HINT}")
    raise NoDaemonError(f"no rtun daemon answers ({found}); {SETUP_HINT}")


def _why(path: str, named: Optional[str], failed: str, laptop: Optional[str]) -> str:
    owner = paths.laptop_of(path)
    if not named:
        return f"using {path}, the newest live socket" + (f" (laptop {owner})" if owner else "")
    if laptop is not None and owner == laptop:
        reason = f"the newest live socket of the same laptop ({laptop})"
    elif laptop is not None:
        reason = f"the newest live socket; none of laptop {laptop} answers"
    else:
        reason = "the newest live socket"
    return f"$RTUN_SOCK does not answer ({failed}); using {path}, {reason}"


def negotiate(conn: Connection) -> Connection:
    """Learn the daemon's rtun/2 features; a v1 daemon refuses HELLO and closes, so reconnect."""
    conn.write(conn.sender.send(wire.Hello(wire.FEATURES)))
    features = wire.parse_hello_reply(conn.read_reply())
    if features is not None:
        conn.features = features
        return conn
    conn.close()
    conn = Connection.open(conn.path)
    conn.features = ()
    return conn


def pipelined(explicit: Optional[str], write: "Callable[[Connection], None]") -> Connection:
    """HELLO and the request that ``write`` writes, in one go: with the channel's opening, a
    request is answered in two round trips instead of four (PING, HELLO, request).

    ``write`` must not fail (check names and texts before). Against a v1 daemon, which refuses
    HELLO and closes, the request is lost: the connection returned is a new one, with
    ``features == ()``, for the caller to do it the v1 way. Otherwise the caller reads the
    request's replies next.
    """

    def probe(conn: Connection) -> None:
        conn.write(conn.sender.send_hello(wire.FEATURES))
        try:
            write(conn)
            reply = conn.read_reply()  # sends what is buffered first: that too may meet a refusal
        except RemoteError:
            if conn.features:  # an rtun/2 daemon refused the request while it was being written
                raise
            conn.features = ()  # a v1 daemon refused HELLO and closed
            return
        features = wire.parse_hello_reply(reply)
        conn.features = features if features is not None else ()

    conn = connect(explicit, probe)
    if conn.features:
        return conn
    conn.close()
    conn = Connection.open(conn.path)
    conn.features = ()
    return conn


def too_old(conn: Connection, exc: RemoteError, feature: str, what: str) -> RtunError:
    """An ERROR for a request the daemon does not know (it predates ``feature``) is said plainly."""
    if exc.code == wire.E_UNKNOWN and feature not in (conn.features or ()):
        return RtunError(f"the rtun daemon on your computer is too old for {what}: update rtun there")
    return exc


def simple_request(explicit: Optional[str], request: wire.Request) -> str:
    """PING, PID, ECHO or SHUTDOWN: the reply text."""
    with connect(explicit) as conn:
        return conn.request(request).text


def notify(explicit: Optional[str], title: str, body: str) -> None:
    request = wire.Notify2(title, body)
    try:
        wire.encode_request(request)
    except (ValueError, UnicodeEncodeError):
        raise RtunError("a text with invalid UTF-8 cannot be sent") from None
    conn = pipelined(explicit, lambda c: c.write(c.sender.send(request)))
    try:
        if conn.features:
            conn.expect_ok()
        else:
            # v1 carries the title as one word and the body on the request line.
            conn.request(wire.Notify("_".join(title.split()) or "rtun", " ".join(body.split())))
    finally:
        conn.close()


def require(conn: Connection, feature: str, what: str) -> None:
    """A clear error when the daemon predates ``feature``."""
    if not conn.features or feature not in conn.features:
        raise RtunError(f"the rtun daemon on your computer is too old for {what}: update rtun there")


def open_url(explicit: Optional[str], url: str) -> None:
    request = wire.OpenUrl(url)
    wire.encode_request(request)  # a URL with a line break fails here, before connecting
    with pipelined(explicit, lambda c: c.write(c.sender.send(request))) as conn:
        require(conn, "open", "opening URLs")
        try:
            conn.expect_ok()
        except RemoteError as exc:
            raise too_old(conn, exc, "open", "opening URLs") from None


def copy(explicit: Optional[str], data: bytes) -> None:
    """``data`` to the local clipboard: sent as a v1 file is; small data goes without waiting
    for READY (two round trips in all)."""
    from rtun.protocol.limits import MAX_EARLY_DATA

    early = len(data) <= MAX_EARLY_DATA

    def write(conn: Connection) -> None:
        conn.write(conn.sender.send(wire.Copy(len(data)), early=early))
        if early:
            _write_file_data(conn, data)

    with pipelined(explicit, write) as conn:
        require(conn, "copy", "the clipboard")
        try:
            conn.expect_ok()  # READY (or the refusal: too large, denied)
            if not early:
                _write_file_data(conn, data)
            conn.expect_ok()
        except RemoteError as exc:
            raise too_old(conn, exc, "copy", "the clipboard") from None


def _write_file_data(conn: Connection, data: bytes) -> None:
    conn.write(conn.sender.data(data))
    conn.write(data)
    conn.write(conn.sender.end_file())


def paste(explicit: Optional[str], write: "Callable[[bytes], object]") -> int:
    """The local clipboard, piece by piece to ``write``; the byte count."""
    with negotiate(connect(explicit)) as conn:
        require(conn, "paste", "the clipboard")
        conn.request(wire.Paste())
        return conn.read_payload(write)


def daemon_version(explicit: Optional[str]) -> str:
    """The version the daemon reports ("1" for a v1 daemon, "unknown" for an early rtun/2 one)."""
    with negotiate(connect(explicit)) as conn:
        if not conn.features and conn.features is not None:
            return "1 (v1 protocol)"
        return wire.daemon_version(conn.features or ()) or "unknown (rtun/2, before 0.2)"
