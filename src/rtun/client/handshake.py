"""HELLO: learn which rtun/2 features the daemon has, and send it together with the first
request (pipelined), so a small request costs two round trips with the channel's opening. A v1
daemon refuses HELLO and closes: the caller then gets a fresh connection with no features.

Stdlib only: it runs on every `rtun` command that talks to the daemon.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Callable, Optional

from rtun.client.discovery import connect
from rtun.client.pump import ClientConnection
from rtun.errors import RemoteError, RtunError
from rtun.protocol import messages, wire


def negotiate(conn: ClientConnection) -> ClientConnection:
    """Learn the daemon's rtun/2 features; a v1 daemon refuses HELLO and closes, so reconnect."""
    conn.write(conn.sender.send(messages.Hello(wire.FEATURES)))
    features = wire.parse_hello_reply(conn.read_reply())
    if features is not None:
        conn.features = features
        return conn
    conn.close()
    conn = ClientConnection.open(conn.path)
    conn.features = ()
    return conn


def pipelined(explicit: Optional[str], write: "Callable[[ClientConnection], None]") -> ClientConnection:
    """HELLO and the request that ``write`` writes, in one go: with the channel's opening, a
    request is answered in two round trips instead of four (PING, HELLO, request).

    ``write`` must not fail (check names and texts before). Against a v1 daemon, which refuses
    HELLO and closes, the request is lost: the connection returned is a new one, with
    ``features == ()``, for the caller to do it the v1 way. Otherwise the caller reads the
    request's replies next.
    """

    def probe(conn: ClientConnection) -> None:
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

    conn = connect(explicit, probe=probe)
    if conn.features:
        return conn
    conn.close()
    conn = ClientConnection.open(conn.path)
    conn.features = ()
    return conn


def too_old(conn: ClientConnection, exc: RemoteError, *, feature: str, what: str) -> RtunError:
    """An ERROR for a request the daemon does not know (it predates ``feature``) is said plainly."""
    if exc.code == messages.E_UNKNOWN and feature not in (conn.features or ()):
        return RtunError(f"the rtun daemon on your computer is too old for {what}: update rtun there")
    return exc


def require(conn: ClientConnection, feature: str, what: str) -> None:
    """A clear error when the daemon predates ``feature``."""
    if not conn.features or feature not in conn.features:
        raise RtunError(f"the rtun daemon on your computer is too old for {what}: update rtun there")
