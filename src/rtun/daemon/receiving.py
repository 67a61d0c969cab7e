"""Feeding an upload's events to what stores it: shared by the handlers of SEND, PUT, VIEW,
COPY and EDIT."""

from __future__ import annotations

from rtun.daemon.actions.files import Transfer
from rtun.daemon.connection import Connection
from rtun.protocol.events import Data, Directory, FileEnd, FileStart, Link, UploadEnd, WholeFile


async def receive(conn: Connection, transfer: Transfer) -> None:
    """READY, then every event of the upload into ``transfer``, until its end. On any failure
    the file being received is discarded; nothing gets a final name unless it is complete."""
    ready, first = conn.accept()
    await conn.send(ready)
    try:
        if first is not None:
            transfer.start_file(first)
        while True:
            event = await conn.next_event()
            if isinstance(event, WholeFile):  # a small file, in one event (most of a tree's)
                transfer.whole_file(event)
            elif isinstance(event, Data):
                transfer.write(event.data)
            elif isinstance(event, FileStart):
                transfer.start_file(event)
            elif isinstance(event, FileEnd):
                transfer.end_file()
            elif isinstance(event, Directory):
                transfer.directory(event)
            elif isinstance(event, Link):
                transfer.link(event)
            elif isinstance(event, UploadEnd):
                transfer.finish()
                return
            else:  # the receiver emits nothing else inside an upload
                raise AssertionError(f"unexpected event {event!r}")
    except BaseException:
        transfer.abort()
        raise
