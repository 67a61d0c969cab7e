"""The table of request handlers: one coroutine per request type, between the pump and the actions.

A handler gets the request (or upload) event from the protocol core, asks an action to do the
work, and sends the reply the core encodes. Actions are made on first use, so the daemon starts
small and fast; a rejection anywhere is raised as ``wire.Rejected`` and answered by the server.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Awaitable, Callable, Dict, Optional, Union

from rtun.daemon.actions.files import Transfer, Uploads
from rtun.daemon.config import Config
from rtun.daemon.connection import Connection
from rtun.daemon.storage.tree import refusal_for
from rtun.protocol import wire
from rtun.protocol.receiver import Data, Directory, FileEnd, FileStart, Link, Upload, UploadEnd
from rtun.protocol.wire import Rejected

TYPE_CHECKING = False
if TYPE_CHECKING:
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
        self._viewer: Optional[Viewer] = None
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
        }

    async def handle(self, conn: Connection, event: object) -> None:
        """Run the handler for a request (or upload) event of the receiver."""
        key = type(event.request) if isinstance(event, Upload) else type(event)
        handler = self.table.get(key)
        if handler is None:
            raise Rejected(wire.E_UNKNOWN, f"unsupported request {key.__name__}")
        try:
            await handler(conn, event)
        except OSError as exc:  # storage the actions did not foresee: a clear refusal all the same
            raise refusal_for(exc, "the request") from None

    def close(self) -> None:
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
        await conn.send(conn.receiver.reply(" ".join((wire.HELLO_TOKEN,) + wire.FEATURES)))

    async def shutdown(self, conn: Connection, request: wire.Shutdown) -> None:
        self._diagnostics("SHUTDOWN")
        log.info("shutdown requested by a client")
        await conn.send(conn.receiver.reply("Shutting down server..."))
        self._stop()

    async def notify(self, conn: Connection, request: Union[wire.Notify, wire.Notify2]) -> None:
        if self._notifier is None:
            from rtun.daemon.actions.notify import Notifier

            self._notifier = Notifier(self.config.notify_max_chars)
        await self._notifier.notify(request.title, request.body)
        await conn.send(conn.receiver.reply())

    # ---- uploads -------------------------------------------------------------------------------

    async def upload(self, conn: Connection, upload: Upload) -> None:
        request = upload.request
        assert isinstance(request, (wire.Send, wire.Put))
        transfer = self._uploads.begin(request, upload.parts)
        try:
            await receive(conn, transfer)
        finally:
            transfer.close()
        log.info(Uploads.summary(transfer))
        if isinstance(request, wire.Put):
            await conn.send(conn.receiver.reply(data=Uploads.reply(transfer)))
        else:
            await conn.send(conn.receiver.reply())

    async def view(self, conn: Connection, upload: Upload) -> None:
        if self._viewer is None:
            from rtun.daemon.actions.view import Viewer

            c = self.config
            self._viewer = Viewer(c.view_opener, c.view_allow_types, c.view_max_age, self.umask,
                                  c.min_free_bytes)
        assert isinstance(upload.request, wire.View)
        target = self._viewer.begin(upload.request)
        try:
            await receive(conn, target)
        except BaseException:
            target.remove()
            raise
        await self._viewer.show(target)
        await conn.send(conn.receiver.reply())


async def receive(conn: Connection, transfer: Transfer) -> None:
    """READY, then every event of the upload into ``transfer``, until its end. On any failure
    the file being received is discarded; nothing gets a final name unless it is complete."""
    ready, first = conn.receiver.accept()
    await conn.send(ready)
    try:
        if first is not None:
            transfer.start_file(first)
        while True:
            event = await conn.next_event()
            if isinstance(event, Data):
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
