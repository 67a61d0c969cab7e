"""One function per small request: PING and the diagnostics, NOTIFY, OPEN, COPY, PASTE and
the daemon's version. Each finds the daemon, says HELLO (with the request, where it can) and
reads the reply; a v1 daemon gets the v1 form where there is one.

Stdlib only: it runs on every `rtun` command that talks to the daemon.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Callable, List, Optional

from rtun.client.discovery import connect
from rtun.client.handshake import negotiate, pipelined, require, too_old
from rtun.client.pump import ClientConnection
from rtun.errors import RemoteError, RtunError
from rtun.protocol import messages, wire

TYPES = "clipboard-types"  # the daemon's feature word for typed COPY and PASTE


def simple_request(explicit: Optional[str], request: wire.Request) -> str:
    """PING, PID, ECHO or SHUTDOWN: the reply text."""
    with connect(explicit) as conn:
        return conn.request(request).text


def notify(explicit: Optional[str], title: str, body: str) -> None:
    request = messages.Notify2(title, body)
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
            conn.request(messages.Notify("_".join(title.split()) or "rtun", " ".join(body.split())))
    finally:
        conn.close()


def open_url(explicit: Optional[str], url: str) -> None:
    request = messages.OpenUrl(url)
    wire.encode_request(request)  # a URL with a line break fails here, before connecting
    with pipelined(explicit, lambda c: c.write(c.sender.send(request))) as conn:
        require(conn, "open", "opening URLs")
        try:
            conn.expect_ok()
        except RemoteError as exc:
            raise too_old(conn, exc, feature="open", what="opening URLs") from None


def copy(explicit: Optional[str], data: bytes, mime: str = "") -> None:
    """``data`` to the local clipboard: sent as a v1 file is; small data goes without waiting
    for READY (two round trips in all). ``mime``: an image type, or "" for text.

    An image waits for HELLO's answer first (one round trip more): a daemon older than
    clipboard types would read the header without its type and paste the image as text."""
    from rtun.protocol.limits import MAX_EARLY_DATA

    early = len(data) <= MAX_EARLY_DATA
    request = messages.Copy(len(data), mime)

    def write(conn: ClientConnection) -> None:
        conn.write(conn.sender.send(request, early=early))
        if early:
            _write_file_data(conn, data)

    if mime:
        conn = negotiate(connect(explicit))
        try:
            require(conn, TYPES, f"{mime} on the clipboard")
            write(conn)
        except BaseException:
            conn.close()
            raise
    else:
        conn = pipelined(explicit, write)
    with conn:
        require(conn, "copy", "the clipboard")
        try:
            conn.expect_ok()  # READY (or the refusal: too large, denied)
            if not early:
                _write_file_data(conn, data)
            conn.expect_ok()
        except RemoteError as exc:
            raise too_old(conn, exc, feature="copy", what="the clipboard") from None


def _write_file_data(conn: ClientConnection, data: bytes) -> None:
    conn.write(conn.sender.data(data))
    conn.write(data)
    conn.write(conn.sender.end_file())


def paste(explicit: Optional[str], write: "Callable[[bytes], object]", mime: str = "") -> int:
    """The local clipboard (as ``mime``, an image type; "" for text), piece by piece to
    ``write``; the byte count."""
    with negotiate(connect(explicit)) as conn:
        require(conn, "paste", "the clipboard")
        if mime:
            require(conn, TYPES, f"{mime} from the clipboard")
        conn.request(messages.Paste(mime))
        return conn.read_payload(write)


def clipboard_types(explicit: Optional[str]) -> "List[str]":
    """The types the local clipboard holds, as its tool names them (text from elsewhere: show
    it through peertext)."""
    with negotiate(connect(explicit)) as conn:
        require(conn, "paste", "the clipboard")
        require(conn, TYPES, "listing the clipboard's types")
        types = conn.request(messages.Paste("", True)).data.get("types")
    return [t for t in types if isinstance(t, str)] if isinstance(types, list) else []


def daemon_version(explicit: Optional[str]) -> str:
    """The version the daemon reports ("1" for a v1 daemon, "unknown" for an early rtun/2 one)."""
    with negotiate(connect(explicit)) as conn:
        if not conn.features and conn.features is not None:
            return "1 (v1 protocol)"
        return wire.daemon_version(conn.features or ()) or "unknown (rtun/2, before 0.2)"
