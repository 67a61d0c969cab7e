"""The table of request handlers: one coroutine per request type, between the pump and the actions.

A handler gets the request (or upload) event from the protocol core, asks an action to do the
work, and sends the reply the core encodes. Actions are made on first use, so the daemon starts
small and fast; a rejection anywhere is raised as ``wire.Rejected`` and answered by the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Optional, Union

from rtun.daemon.actions.files import Transfer, Uploads
from rtun.daemon.actions.ranges import RangedFile, RangedFiles
from rtun.daemon.actions.ratelimit import RateLimit
from rtun.daemon.config import Config
from rtun.daemon.connection import Connection
from rtun.daemon.receiving import receive
from rtun.daemon.storage.tree import refusal_for
from rtun.protocol import wire
from rtun.protocol.receiver import Data, Directory, FileEnd, FileStart, Link, Upload, UploadEnd
from rtun.protocol.wire import Rejected

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rtun.daemon.actions.browser import Browser
    from rtun.daemon.actions.clipboard import Clipboard
    from rtun.daemon.actions.notify import Notifier
    from rtun.daemon.actions.view import Viewer

log = logging.getLogger("rtun.daemon")

Handler = Callable[[Connection, Any], Awaitable[None]]


class Handlers:
    def __init__(self, config: Config, umask: int, stop: Callable[[], None]) -> None:
        self.config = config
        self.umask = umask
        self._stop = stop
        self._notifier: Optional[Notifier] = None
        self._uploads = Uploads(config.save_dir, config.min_free_bytes, umask)
        self._ranged = RangedFiles(self._uploads.save_dir, self._uploads.space, umask)
        self._viewer: Optional[Viewer] = None
        self._browser: Optional[Browser] = None
        self._clipboard: Optional[Clipboard] = None
        self._upload_slots = asyncio.Semaphore(max(config.max_uploads, 1))
        self._notify_limit = RateLimit(config.notify_rate, config.notify_burst)
        self._view_limit = RateLimit(config.view_rate, config.view_burst)  # files and URLs
        self._clipboard_limit = RateLimit(config.view_rate * 5, config.view_burst * 2)
        self._coalesced = 0  # notifications that came too fast, shown as one later
        self._summary: Optional[asyncio.TimerHandle] = None
        self.table: Dict[type, Handler] = {
            wire.Ping: self.ping,
            wire.Pid: self.pid,
            wire.Echo: self.echo,
            wire.Hello: self.hello,
            wire.Shutdown: self.shutdown,
            wire.Notify: self.notify,
            wire.Notify2: self.notify,
            wire.Send: self.upload,
            wire.Put: self.upload,
            wire.View: self.view,
            wire.OpenUrl: self.open_url,
            wire.Copy: self.copy,
            wire.Paste: self.paste,
            wire.Edit: self.edit,
            wire.EditWait: self.stray_edit_wait,
            wire.Ranges: self.ranges,
            wire.Range: self.range,
            wire.Commit: self.commit,
        }
        # The [actions] policy: the setting each request needs turned on.
        self._policy: Dict[type, str] = {
            wire.Notify: "notify", wire.Notify2: "notify", wire.Send: "send", wire.Put: "send",
            wire.View: "view", wire.OpenUrl: "open", wire.Copy: "copy", wire.Paste: "paste",
            wire.Edit: "edit", wire.Ranges: "send", wire.Range: "send", wire.Commit: "send",
        }

    async def handle(self, conn: Connection, event: object) -> None:
        """Run the handler for a request (or upload) event of the receiver."""
        key = type(event.request) if isinstance(event, Upload) else type(event)
        handler = self.table.get(key)
        if handler is None:
            raise Rejected(wire.E_UNKNOWN, f"unsupported request {key.__name__}")
        action = self._policy.get(key)
        if action is not None and not getattr(self.config, f"allow_{action}"):
            raise denied(action)
        try:
            await handler(conn, event)
        except OSError as exc:  # storage the actions did not foresee: a clear refusal all the same
            raise refusal_for(exc, "the request") from None

    def forget(self, conn: Connection) -> None:
        """The connection has ended: a ranged file it was sending waits for a resumption."""
        ranged = conn.ranged_file
        if isinstance(ranged, RangedFile):
            conn.ranged_file = None
            self._ranged.detach(ranged)

    def tick(self) -> None:
        """Now and then, from the daemon's watchdog: kept files past their time go."""
        self._ranged.expire()

    def close(self) -> None:
        self._ranged.close()
        self._uploads.close()  # the storage helper threads finish what they write, then end
        if self._summary is not None:
            self._summary.cancel()
        if self._viewer is not None:
            self._viewer.close()

    # ---- the simple requests -----------------------------------------------------------------

    async def ping(self, conn: Connection, request: wire.Ping) -> None:
        await conn.send(conn.receiver.reply("PONG"))

    def _diagnostics(self, verb: str) -> None:
        # Anyone who reaches the socket could stop the daemon or learn local paths: off unless
        # the local user turns them on.
        if not self.config.diagnostics:
            raise Rejected(wire.E_UNKNOWN, f"{verb} is turned off on this daemon "
                           "([server] diagnostics = true in its config file turns it on)")

    async def pid(self, conn: Connection, request: wire.Pid) -> None:
        self._diagnostics("PID")
        await conn.send(conn.receiver.reply(f"PID {os.getpid()}, saveDir {self.config.save_dir}"))

    async def echo(self, conn: Connection, request: wire.Echo) -> None:
        await conn.send(conn.receiver.reply(request.text))

    async def hello(self, conn: Connection, request: wire.Hello) -> None:
        from rtun import __version__

        await conn.send(conn.receiver.reply(wire.hello_reply(wire.FEATURES, __version__)))

    async def shutdown(self, conn: Connection, request: wire.Shutdown) -> None:
        self._diagnostics("SHUTDOWN")
        log.info("shutdown requested by a client")
        await conn.send(conn.receiver.reply("Shutting down server..."))
        self._stop()

    def _notifier_action(self) -> "Notifier":
        if self._notifier is None:
            from rtun.daemon.actions.notify import Notifier

            self._notifier = Notifier(self.config.notify_max_chars)
        return self._notifier

    async def notify(self, conn: Connection, request: Union[wire.Notify, wire.Notify2]) -> None:
        notifier = self._notifier_action()
        if self._notify_limit.allow(conn):
            await notifier.notify(request.title, request.body)
        else:  # a burst: counted, and shown as one notification once it is over
            self._coalesced += 1
            if self._summary is None:
                delay = max(self._notify_limit.daemon.wait(), 1.0)
                self._summary = asyncio.get_running_loop().call_later(delay, self._show_summary)
        await conn.send(conn.receiver.reply())

    def _show_summary(self) -> None:
        self._summary = None
        count, self._coalesced = self._coalesced, 0
        if not count:
            return
        log.info("%d notifications came too fast and were coalesced into one", count)
        self._notify_limit.daemon.take()

        async def show() -> None:
            try:
                await self._notifier_action().notify("rtun", f"{count} more notifications came too fast to show")
            except Rejected as exc:
                log.info("could not show the coalesced notifications: %s", exc.text)

        asyncio.ensure_future(show())

    # ---- uploads -------------------------------------------------------------------------------

    def _may_upload(self, conn: Connection) -> None:
        if conn.control_only:
            raise Rejected(wire.E_BUSY, "too many connections busy with transfers: only ping and notify now")

    async def upload(self, conn: Connection, upload: Upload) -> None:
        self._may_upload(conn)
        async with self._slot():
            await self._upload(conn, upload)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        """One of max_uploads transfer slots (the rest wait their turn: memory stays bounded),
        waited for no longer than a silent connection may last."""
        try:
            await asyncio.wait_for(self._upload_slots.acquire(), self.config.idle_timeout)
        except asyncio.TimeoutError:
            raise Rejected(wire.E_BUSY, "every transfer slot stayed busy: try again later") from None
        try:
            yield
        finally:
            self._upload_slots.release()

    async def _upload(self, conn: Connection, upload: Upload) -> None:
        request = upload.request
        assert isinstance(request, (wire.Send, wire.Put))
        transfer = self._uploads.begin(request, upload.parts)
        try:
            await receive(conn, transfer)
        finally:
            transfer.close()
        log.info("%s", Uploads.summary(transfer))
        if isinstance(request, wire.Put):
            data = Uploads.reply(transfer)
            if request.track:
                data["made"] = self._uploads.made(transfer)
            await conn.send(conn.receiver.reply(data=data))
        else:
            await conn.send(conn.receiver.reply())

    async def view(self, conn: Connection, upload: Upload) -> None:
        if self._viewer is None:
            from rtun.daemon.actions.view import Viewer

            c = self.config
            self._viewer = Viewer(c.view_opener, c.view_allow_types, c.view_max_age, self.umask,
                                  c.min_free_bytes)
        assert isinstance(upload.request, wire.View)
        self._may_upload(conn)
        if not self._view_limit.allow(conn):
            wait = self._view_limit.wait(conn)
            raise Rejected(wire.E_BUSY, f"too many files opened in a short time: try again in {wait:.0f} s")
        async with self._slot():
            await self._view(conn, self._viewer, upload.request)

    async def _view(self, conn: Connection, viewer: "Viewer", request: wire.View) -> None:
        target = viewer.begin(request)
        try:
            await receive(conn, target)
        except BaseException:
            target.remove()
            raise
        await viewer.show(target)
        await conn.send(conn.receiver.reply())


    # ---- large files in ranges, over several connections ---------------------------------------

    async def ranges(self, conn: Connection, request: wire.Ranges) -> None:
        self._may_upload(conn)
        self.forget(conn)
        ranged = self._ranged.open(request)
        conn.ranged_file = ranged
        # Only the connection that opens the file plans what is left to send.
        await conn.send(conn.receiver.reply(data={"have": [] if request.join else ranged.have()}))

    def _ranged_file(self, conn: Connection) -> RangedFile:
        ranged = conn.ranged_file
        if not isinstance(ranged, RangedFile) or ranged.part is None:
            raise Rejected(wire.E_BAD_REQUEST, "RANGE or COMMIT before RANGES")
        return ranged

    async def range(self, conn: Connection, upload: Upload) -> None:
        request = upload.request
        assert isinstance(request, wire.Range)
        ranged = self._ranged_file(conn)
        ranged.check_range(request.offset, request.size)
        async with self._slot():
            if ranged.part is None:  # committed or dropped while this waited for a slot
                raise Rejected(wire.E_BAD_REQUEST, "the ranged file is gone")
            ranged.begin_range(request.offset, request.size)
            try:
                conn.accept()  # no READY: the range's data follows its request
                position = request.offset
                while True:
                    event = await conn.next_event()
                    if isinstance(event, Data):
                        ranged.write(position, event.data)
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

    async def commit(self, conn: Connection, request: wire.Commit) -> None:
        ranged = self._ranged_file(conn)
        conn.ranged_file = None
        self._ranged.detach(ranged)
        path = self._ranged.commit(ranged, request.digest)
        log.info("received %s (%d bytes) in ranges over %d connections, %d bytes of them this time",
                 path, ranged.size, ranged.connections, ranged.received)
        await conn.send(conn.receiver.reply(data={"saved": [path], "skipped": []}))

    # ---- URLs and the clipboard ----------------------------------------------------------------

    def _limited(self, limit: RateLimit, conn: Connection, what: str) -> None:
        if not limit.allow(conn):
            raise Rejected(wire.E_BUSY, f"too many {what} in a short time: try again in {limit.wait(conn):.0f} s")

    async def open_url(self, conn: Connection, request: wire.OpenUrl) -> None:
        if self._browser is None:
            from rtun.daemon.actions.browser import Browser

            self._browser = Browser(self.config.open_browser)
        from rtun.daemon.actions.browser import check_url

        check_url(request.url)  # a refused URL opens nothing: it takes no turn of the rate limit
        self._limited(self._view_limit, conn, "files and pages opened")
        await self._browser.open(request.url)
        await conn.send(conn.receiver.reply())

    def _clipboard_action(self) -> "Clipboard":
        if self._clipboard is None:
            from rtun.daemon.actions.clipboard import Clipboard

            c = self.config
            self._clipboard = Clipboard(c.clipboard_copy, c.clipboard_paste, c.clipboard_max_bytes)
        return self._clipboard

    async def copy(self, conn: Connection, upload: Upload) -> None:
        from rtun.daemon.actions.clipboard import Sink

        request = upload.request
        assert isinstance(request, wire.Copy)
        clipboard = self._clipboard_action()
        if request.size > clipboard.max_bytes:
            raise Rejected(wire.E_TOO_LARGE, f"{request.size} bytes is more than the clipboard takes "
                           f"here ([clipboard] max_bytes = {clipboard.max_bytes})")
        self._may_upload(conn)
        self._limited(self._clipboard_limit, conn, "clipboard requests")
        async with self._slot():
            sink = Sink()
            await receive(conn, sink)
            assert sink.data is not None
            await clipboard.copy(sink.data)
        await conn.send(conn.receiver.reply())

    async def paste(self, conn: Connection, request: wire.Paste) -> None:
        self._limited(self._clipboard_limit, conn, "clipboard requests")
        async with self._slot():  # the clipboard is held in memory until it is sent
            data = await self._clipboard_action().paste()
            for piece in conn.receiver.reply_payload({}, data):
                await conn.send(piece)

    # ---- editing a server file here -------------------------------------------------------------

    async def edit(self, conn: Connection, upload: Upload) -> None:
        from rtun.daemon.editing import edit_session  # the whole exchange of one edit

        await edit_session(self, conn, upload)

    async def stray_edit_wait(self, conn: Connection, request: wire.EditWait) -> None:
        # The edit handler reads its own EDITWAITs; one here follows no EDIT.
        raise Rejected(wire.E_BAD_REQUEST, "EDITWAIT outside an edit")


def denied(action: str) -> Rejected:
    if action == "paste":
        why = ("paste is off unless you turn it on: anyone with root on a server you log in to "
               "could read your clipboard ([actions] paste = true in the config file of rtun on "
               "your computer turns it on)")
    else:
        why = (f"{action} is turned off on your computer ([actions] {action} = true in the "
               "config file of rtun there turns it on)")
    return Rejected(wire.E_DENIED, why)
