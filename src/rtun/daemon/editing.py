"""EDIT: the whole exchange of one edit on its connection (docs/protocol.md, "EDIT").

The file comes as a v1 file does (READY, its bytes, its SHA-256), into a private copy; the
editor starts on it and the daemon answers ``OK``. Then the client asks with EDITWAIT, again
and again, and each answer is the next event: ``save`` (a payload reply with the new content),
``skipped`` (a change that cannot go back, with the reason), ``closed`` (the editor exited: the
edit is over) or ``idle`` (nothing new for IDLE_SECONDS, well inside the client's 120 s read
timeout). Each EDITWAIT after a save says what became of it on the server; a save refused there
(the server's file changed since: the client keeps the text beside it and names the file) or
failed is also shown to the user here, as a notification.

The copy is removed when the edit ends for any reason; an editor still open then is left
alone (it may hold unsaved work) and the user is told that its saves no longer reach the server.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Optional

from rtun.daemon.actions.edit import Closed, OpenEdit, Save, Skipped
from rtun.daemon.connection import Connection, PeerGone
from rtun.daemon.receiving import receive
from rtun.daemon.services import Services
from rtun.protocol import messages, peertext, wire
from rtun.protocol.events import Upload
from rtun.protocol.messages import Rejected
from rtun.protocol.receiver import CLOSED

log = logging.getLogger("rtun.daemon")

IDLE_SECONDS = 30.0  # an "idle" answer after this long without news: the client's keep-alive
NOTE_CHARS = 300  # of a client's message shown in a notification
TITLE = "rtun edit"


async def edit_session(services: Services, conn: Connection, upload: Upload) -> None:
    request = upload.request
    assert isinstance(request, messages.Edit)
    editors = services.editors()
    command = editors.check(request)
    services.may_upload(conn)
    services.opens_program(conn, "edit")  # each EDIT starts an editor
    target = editors.begin(request)
    try:
        async with services.slot():  # the upload only: an edit may stay open for hours
            await receive(conn, target)
        edit = await editors.start(target, command)
    except BaseException:
        editors.abandon(target)
        raise
    log.info("editing %s (%d bytes) with %s", edit.name, target.bytes, edit.program)
    ended = "the connection to the server was lost"
    try:
        await conn.send(conn.receiver.reply())
        ended = await _exchange(services, conn, edit)
    except asyncio.CancelledError:  # the daemon is stopping: say so, as the last line
        ended = "the daemon stopped"
        conn.abort(
            wire.error(
                messages.E_BUSY,
                f"the rtun daemon on your computer stopped: the edit "
                f"of {edit.name} ended, and its saves no longer reach the server",
            )
        )
        raise
    except Rejected as exc:
        ended = f"refused: {exc.text}"
        raise
    finally:
        still_open = edit.end()
        log.info("edit of %s ended: %s", edit.name, ended)
        if still_open:
            services.tell(
                TITLE,
                f"The edit of {edit.name} ended ({ended}): saves in the editor no longer reach the server.",
            )


async def _exchange(services: Services, conn: Connection, edit: OpenEdit) -> str:
    """EDITWAIT after EDITWAIT until the editor closes; returns how the edit ended."""
    due: Optional[int] = None  # the save whose result the next EDITWAIT reports
    while True:
        event = await conn.next_event()
        if event is CLOSED:
            raise PeerGone("the client closed the connection during an edit")
        if not isinstance(event, messages.EditWait):
            raise Rejected(messages.E_BAD_REQUEST, "an edit takes only EDITWAIT until its editor closes")
        _result(services, edit, event, due)
        change = await edit.next_change(IDLE_SECONDS)
        due = None
        if change is None:
            await conn.send(conn.receiver.reply(data={"event": "idle"}))
        elif isinstance(change, Save):
            due = change.seq
            log.info(
                "edit of %s: save %d (%d bytes) sent to the server", edit.name, change.seq, len(change.data)
            )
            for piece in conn.receiver.reply_payload({"event": "save", "seq": change.seq}, change.data):
                await conn.send(piece)
        elif isinstance(change, Skipped):
            log.warning("edit of %s: change %d not sent: %s", edit.name, change.seq, change.reason)
            services.tell(TITLE, change.reason)
            await conn.send(
                conn.receiver.reply(data={"event": "skipped", "seq": change.seq, "message": change.reason})
            )
        else:
            assert isinstance(change, Closed)
            await conn.send(
                conn.receiver.reply(data={"event": "closed", "status": change.status, "message": change.note})
            )
            return f"the editor closed (status {change.status})"


def _result(services: Services, edit: OpenEdit, wait: messages.EditWait, due: Optional[int]) -> None:
    """What became of the last save on the server; the one order the client may keep."""
    if due is None:
        if wait.result:
            raise Rejected(messages.E_BAD_REQUEST, "EDITWAIT reports a result, but no save was sent")
        return
    if not wait.result:
        raise Rejected(messages.E_BAD_REQUEST, f"EDITWAIT must say what became of save {due}")
    if wait.result == "saved":
        log.info("edit of %s: save %d written on the server", edit.name, due)
    elif wait.result == "conflict":
        log.info("edit of %s: save %d refused on the server: the file changed there", edit.name, due)
        # The client's words name the file that keeps the refused text (or say why none does).
        said = peertext.one_line(wait.message, 2 * NOTE_CHARS)  # two paths
        services.tell(
            TITLE, f"{edit.name} was not saved on the server: " + (said or "the file changed there.")
        )
    else:
        log.info("edit of %s: save %d could not be written on the server", edit.name, due)
        said = peertext.one_line(wait.message, NOTE_CHARS)
        services.tell(TITLE, f"{edit.name} was not saved on the server" + (f": {said}" if said else "."))
