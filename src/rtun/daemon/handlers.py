"""The table of request handlers: one entry per request type, with its coroutine (between the
pump and the actions) and the ``[actions]`` setting it needs.

A handler gets the request (or upload) event from the protocol core, asks an action to do the
work, and sends the reply the core encodes. What handlers share (actions made on first use, rate
limits, upload slots, the policy, notifications) is the Services object they are handed; a
rejection anywhere is raised as ``messages.Rejected`` and answered by the server.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Awaitable, Callable, Dict, NamedTuple, Optional, Union

from rtun.daemon.actions.advice import setting as change
from rtun.daemon.actions.files import Uploads
from rtun.daemon.actions.ranges import RangedFile, written
from rtun.daemon.config import Config
from rtun.daemon.connection import Connection
from rtun.daemon.receiving import receive
from rtun.daemon.services import Services
from rtun.daemon.storage.tree import refusal_for
from rtun.protocol import messages, wire
from rtun.protocol.events import Data, FileEnd, Upload, UploadEnd
from rtun.protocol.messages import Rejected

log = logging.getLogger("rtun.daemon")

Handler = Callable[[Connection, Any], Awaitable[None]]


class Route(NamedTuple):
    handler: Handler
    action: Optional[str]  # the [actions] setting that must be on, if any


class Handlers:
    def __init__(self, services: Services, stop: Callable[[], None]) -> None:
        self.services = services
        self._stop = stop
        send, view, open_, copy, paste, edit = "send", "view", "open", "copy", "paste", "edit"
        self.table: Dict[type, Route] = {
            messages.Ping: Route(self.ping, None),
            messages.Pid: Route(self.pid, None),
            messages.Echo: Route(self.echo, None),
            messages.Hello: Route(self.hello, None),
            messages.Shutdown: Route(self.shutdown, None),
            messages.Notify: Route(self.notify, "notify"),
            messages.Notify2: Route(self.notify, "notify"),
            messages.Send: Route(self.upload, send),
            messages.Put: Route(self.upload, send),
            messages.View: Route(self.view, view),
            messages.OpenUrl: Route(self.open_url, open_),
            messages.Copy: Route(self.copy, copy),
            messages.Paste: Route(self.paste, paste),
            messages.Edit: Route(self.edit, edit),
            messages.EditWait: Route(self.stray_edit_wait, None),
            messages.Ranges: Route(self.ranges, send),
            messages.Range: Route(self.range, send),
            messages.Commit: Route(self.commit, send),
            messages.Forward: Route(self.forward, "forward"),
            messages.Dial: Route(self.dial, "forward"),
        }

    @property
    def config(self) -> Config:
        return self.services.config  # replaced on reload

    async def handle(self, conn: Connection, event: object) -> None:
        """Run the handler for a request (or upload) event of the receiver."""
        key = type(event.request) if isinstance(event, Upload) else type(event)
        route = self.table.get(key)
        if route is None:
            raise Rejected(messages.E_UNKNOWN, f"unsupported request {key.__name__}")
        if route.action is not None:
            self.services.check_allowed(route.action)
        try:
            await route.handler(conn, event)
        except OSError as exc:  # storage the actions did not foresee: a clear refusal all the same
            raise refusal_for(exc, "the request") from None

    def forget(self, conn: Connection) -> None:
        """The connection has ended: a ranged file it was sending waits for a resumption."""
        ranged = conn.ranged_file
        if isinstance(ranged, RangedFile):
            conn.ranged_file = None
            self.services.ranged.detach(ranged)

    def tick(self) -> None:
        """Now and then, from the daemon's watchdog: kept files past their time go, and so do
        forwarded connections whose reader stopped."""
        self.services.ranged.expire()
        self.services.forwards.expire(time.monotonic(), self.config.idle_timeout)

    # ---- the simple requests -----------------------------------------------------------------

    async def ping(self, conn: Connection, request: messages.Ping) -> None:
        await conn.send(conn.receiver.reply("PONG"))

    def _diagnostics(self, verb: str) -> None:
        # Anyone who reaches the socket could stop the daemon or learn local paths: off unless
        # the local user turns them on.
        if not self.config.diagnostics:
            raise Rejected(
                messages.E_UNKNOWN,
                f"{verb} is turned off on the rtun daemon on your computer; to turn it on, "
                + change("[server] diagnostics", "true"),
            )

    async def pid(self, conn: Connection, request: messages.Pid) -> None:
        self._diagnostics("PID")
        await conn.send(conn.receiver.reply(f"PID {os.getpid()}, saveDir {self.config.save_dir}"))

    async def echo(self, conn: Connection, request: messages.Echo) -> None:
        await conn.send(conn.receiver.reply(request.text))

    async def hello(self, conn: Connection, request: messages.Hello) -> None:
        from rtun import __version__

        await conn.send(conn.receiver.reply(wire.hello_reply(wire.FEATURES, __version__)))

    async def shutdown(self, conn: Connection, request: messages.Shutdown) -> None:
        self._diagnostics("SHUTDOWN")
        log.info("shutdown requested by a client")
        await conn.send(conn.receiver.reply("Shutting down server..."))
        self._stop()

    async def notify(self, conn: Connection, request: Union[messages.Notify, messages.Notify2]) -> None:
        await self.services.notify(conn, request.title, request.body)
        await conn.send(conn.receiver.reply())

    # ---- uploads: every reply is sent after the transfer slot is released ----------------------

    async def upload(self, conn: Connection, upload: Upload) -> None:
        request = upload.request
        assert isinstance(request, (messages.Send, messages.Put))
        services = self.services
        services.may_upload(conn)
        async with services.slot():
            transfer = services.uploads.begin(request, upload.parts)
            try:
                await receive(conn, transfer)
            finally:
                transfer.close()
            log.info("%s", Uploads.summary(transfer))
            data = None
            if isinstance(request, messages.Put):
                data = Uploads.reply(transfer)
                if request.track:
                    data["made"] = services.uploads.made(transfer)
        await conn.send(conn.receiver.reply(data=data))

    async def view(self, conn: Connection, upload: Upload) -> None:
        request = upload.request
        assert isinstance(request, messages.View)
        services = self.services
        viewer = services.viewer()
        services.may_upload(conn)
        services.opens_program(conn, "view")
        async with services.slot():
            target = viewer.begin(request)
            try:
                await receive(conn, target)
            except BaseException:
                target.remove()
                raise
        await viewer.show(target)
        await conn.send(conn.receiver.reply())

    # ---- large files in ranges, over several connections ---------------------------------------

    async def ranges(self, conn: Connection, request: messages.Ranges) -> None:
        self.services.may_upload(conn)
        self.forget(conn)
        ranged = self.services.ranged.open(request)
        conn.ranged_file = ranged
        # Only the connection that opens the file plans what is left to send; no slot is held.
        await conn.send(conn.receiver.reply(data={"have": [] if request.join else ranged.have()}))

    def _ranged_file(self, conn: Connection) -> RangedFile:
        ranged = conn.ranged_file
        if not isinstance(ranged, RangedFile) or ranged.part is None:
            raise Rejected(messages.E_BAD_REQUEST, "RANGE or COMMIT before RANGES")
        return ranged

    async def range(self, conn: Connection, upload: Upload) -> None:
        request = upload.request
        assert isinstance(request, messages.Range)
        ranged = self._ranged_file(conn)
        ranged.check_range(request.offset, request.size)
        async with self.services.slot():
            if ranged.part is None:  # committed or dropped while this waited for a slot
                raise Rejected(messages.E_BAD_REQUEST, "the ranged file is gone")
            ranged.begin_range(request.offset, request.size)
            try:
                conn.accept()  # no READY: the range's data follows its request
                position = request.offset
                while True:
                    event = await conn.next_event()
                    if isinstance(event, Data):
                        await written(ranged.write(position, event.data))
                        position += len(event.data)
                    elif isinstance(event, FileEnd):
                        ranged.verified_range(request.offset, request.size, bytes.fromhex(event.digest))
                    elif isinstance(event, UploadEnd):
                        break
                    else:
                        raise AssertionError(f"unexpected event {event!r}")
            finally:
                ranged.end_range(request.offset)
        await conn.send(conn.receiver.reply())

    async def commit(self, conn: Connection, request: messages.Commit) -> None:
        ranged = self._ranged_file(conn)
        conn.ranged_file = None
        files = self.services.ranged
        files.detach(ranged)
        path = files.commit(ranged, request.digest)
        log.info(
            "received %s (%d bytes) in ranges over %d connections, %d bytes of them this time, "
            "%d written past the page cache",
            path,
            ranged.size,
            ranged.connections,
            ranged.received,
            ranged.direct_bytes,
        )
        await conn.send(conn.receiver.reply(data={"saved": [path], "skipped": []}))

    # ---- URLs and the clipboard ----------------------------------------------------------------

    async def open_url(self, conn: Connection, request: messages.OpenUrl) -> None:
        browser = self.services.browser()
        from rtun.daemon.actions.browser import check_url

        check_url(request.url)  # a refused URL opens nothing: it takes no turn of the rate limit
        self.services.opens_program(conn, "page")
        await browser.open(request.url)
        await conn.send(conn.receiver.reply())

    async def copy(self, conn: Connection, upload: Upload) -> None:
        from rtun.daemon.actions.clipboard import Sink

        request = upload.request
        assert isinstance(request, messages.Copy)
        services = self.services
        clipboard = services.clipboard()
        if request.size > clipboard.max_bytes:
            raise Rejected(
                messages.E_TOO_LARGE,
                f"{request.size} bytes is more than the clipboard takes on your computer "
                f"([clipboard] max_bytes = {clipboard.max_bytes}); to take more, "
                + change("[clipboard] max_bytes"),
            )
        services.may_upload(conn)
        services.uses_clipboard(conn, "copy")
        async with services.slot():
            sink = Sink()
            await receive(conn, sink)
            assert sink.data is not None
            await clipboard.copy(sink.data, request.type)
        await conn.send(conn.receiver.reply())

    async def paste(self, conn: Connection, request: messages.Paste) -> None:
        services = self.services
        services.uses_clipboard(conn, "paste")
        if request.list_types:
            types = await services.clipboard().list_types()
            await conn.send(conn.receiver.reply(data={"types": types}))
            return
        async with services.slot():  # reading the clipboard holds its text in memory
            data = await services.clipboard().paste(request.type)
        for piece in conn.receiver.reply_payload({}, data):
            await conn.send(piece)

    # ---- forwards: a server's port reached from here -------------------------------------------

    async def forward(self, conn: Connection, request: messages.Forward) -> None:
        from rtun.daemon.forwarding import hold

        await hold(self.services, conn, request)

    async def dial(self, conn: Connection, request: messages.Dial) -> None:
        from rtun.daemon.forwarding import carry

        await carry(self.services, conn, request)

    # ---- editing a server file here -------------------------------------------------------------

    async def edit(self, conn: Connection, upload: Upload) -> None:
        from rtun.daemon.editing import edit_session  # the whole exchange of one edit

        await edit_session(self.services, conn, upload)

    async def stray_edit_wait(self, conn: Connection, request: messages.EditWait) -> None:
        # The edit handler reads its own EDITWAITs; one here follows no EDIT.
        raise Rejected(messages.E_BAD_REQUEST, "EDITWAIT outside an edit")
