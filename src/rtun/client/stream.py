"""One PUT's stream: its request, its entries with their files' data, and its reply; the v1
exchange of one file (SEND, VIEW). Shared by `rtun send` (upload.py) and `rtun view`.

Stdlib only: it runs on the server.
"""

from __future__ import annotations

from rtun.errors import RtunError
from rtun.protocol import framing, messages
from rtun.protocol.sender import SizeChanged

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: every send would pay
    from typing import Callable, Optional, Union

    from rtun.client.options import SendOptions
    from rtun.client.pump import ClientConnection
    from rtun.client.sources import Progress, Reader, SendPlan


def early_ok(work: SendPlan) -> bool:
    """Small enough to send without waiting for READY: a refusal wastes little."""
    from rtun.protocol.limits import MAX_EARLY_DATA

    return work.total_bytes + 256 * len(work.items) <= MAX_EARLY_DATA and all(
        item.source is not None or not isinstance(item.entry, framing.FileEntry) for item in work.items
    )


def write_put(
    conn: ClientConnection,
    options: SendOptions,
    work: SendPlan,
    *,
    progress: Progress,
    reader: Reader,
    early: bool,
    track: bool = False,
) -> None:
    """The PUT request; when ``early``, its whole stream too, without waiting for READY."""
    request = messages.Put(
        options.dest, options.overwrite, work.total_bytes, work.total_files, "", track, update_mode(options)
    )
    conn.write(conn.sender.send(request, early=early))
    if early:
        _write_entries(conn, work, progress=progress, reader=reader)


def stream_put(
    conn: ClientConnection, work: SendPlan, *, progress: Progress, reader: Reader, early: bool
) -> messages.Reply:
    """After the PUT request: READY, every entry with its files' data (unless they went early),
    then the reply listing each path."""
    conn.expect_ok()  # READY
    if not early:
        _write_entries(conn, work, progress=progress, reader=reader)
    return conn.expect_ok()


def _write_entries(conn: ClientConnection, work: SendPlan, *, progress: Progress, reader: Reader) -> None:
    sender = conn.sender
    report = progress.update
    for item in work.items:
        entry = item.entry
        if isinstance(entry, framing.FileEntry):
            write_file(conn, entry, item.source, report=report, reader=reader)
        else:
            conn.write(sender.entry(entry))
    conn.write(sender.end())


def write_file(
    conn: ClientConnection,
    entry: framing.FileEntry,
    source: Optional[str],
    *,
    report: Callable[[int], None],
    reader: Reader,
) -> None:
    """A file entry of a PUT and its data: a small file on disk in one write, framed whole."""
    if entry.size is not None and entry.size <= SMALL_WRITE and source is not None:
        _send_small(conn, entry, source, report=report, reader=reader)
        return
    conn.write(conn.sender.entry(entry))
    stream_file(conn, source, report=report, reader=reader)


SMALL_WRITE = 64 * 1024  # a file this small goes to the socket buffer in one write with its framing


def _send_small(
    conn: ClientConnection,
    entry: framing.FileEntry,
    source: str,
    *,
    report: Callable[[int], None],
    reader: Reader,
) -> None:
    """A small file of a PUT: one read, one write of it framed whole."""
    data = reader.read_whole(source, entry.size)
    try:
        conn.write(conn.sender.whole_file(entry, data))
    except SizeChanged:
        raise RtunError(f"{source} changed size while it was being sent; nothing was saved") from None
    report(len(data))


def stream_file(
    conn: ClientConnection, source: Optional[str], *, report: Callable[[int], None], reader: Reader
) -> None:
    """The current file's data and its end, as the sender frames them (PUT or v1)."""
    sender = conn.sender
    try:
        for data in reader.chunks(source):
            conn.write(sender.data(data))
            conn.write(data)
            report(len(data))
        conn.write(sender.end_file())
    except SizeChanged:
        # The stream is framed by the declared size: nothing after this could be understood.
        raise RtunError(
            f"{source or 'standard input'} changed size while it was being sent; nothing was saved"
        ) from None


def upload_v1(
    conn: ClientConnection,
    request: Union[messages.Send, messages.View],
    source: str,
    *,
    report: Callable[[int], None],
    reader: Reader,
) -> None:
    """The v1 exchange shared by SEND and VIEW: READY, the raw bytes, the SHA-256 line, OK."""
    conn.request(request)  # READY
    stream_file(conn, source, report=report, reader=reader)
    conn.expect_ok()


def update_mode(options: SendOptions) -> str:
    return messages.UPDATE_REPLACE if options.update else ""
