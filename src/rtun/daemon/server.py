"""The asyncio daemon: accepts connections on the UNIX socket and serves each one concurrently."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import replace
from typing import Callable, Dict, Optional

from rtun.daemon.config import Config
from rtun.daemon.connection import Connection, PeerGone, SpareBuffers
from rtun.daemon.handlers import Handlers
from rtun.daemon.listener import Listener
from rtun.daemon.services import Services
from rtun.daemon.status import RESTART_ONLY, Launch, StatusFile, changed, effective
from rtun.daemon.storage.leftovers import remove_leftovers
from rtun.daemon.storage.tree import current_umask
from rtun.errors import RtunError
from rtun.protocol import messages, wire
from rtun.protocol.limits import MAX_EARLY_DATA, MAX_LINE
from rtun.protocol.messages import Rejected
from rtun.protocol.names import PART_PREFIX, PART_SUFFIX
from rtun.protocol.receiver import CLOSED

log = logging.getLogger("rtun.daemon")

CONTROL_ROOM = 16  # connections past max_connections, served for everything but uploads
DRAIN_SECONDS = 2.0  # a refused pipelining peer gets this long to finish sending what it sent ahead


class Daemon:
    def __init__(self, config: Config, listener: Listener, launch: Optional[Launch] = None) -> None:
        """``launch``: how `rtun server` was started, to reload from and to keep a status file
        for; without it (tests in-process), neither."""
        self.config = config
        self.listener = listener
        self._status = StatusFile(launch, config) if launch is not None else None
        self._stop = asyncio.Event()
        self._connections: Dict["asyncio.Task[None]", Connection] = {}
        self._spare = SpareBuffers(max(config.max_uploads, 1))  # large buffers kept between uploads
        # Read now, not at import: a detached daemon has set its own umask by the time it runs.
        self.services = Services(config, current_umask())
        self._handlers = Handlers(self.services, self.stop)

    async def run(self, on_ready: Optional[Callable[[], None]] = None) -> None:
        """Serve until SIGTERM, SIGINT or a SHUTDOWN request, then stop gracefully; SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        server = await loop.create_unix_server(
            lambda: Connection(
                self.config.idle_timeout, self._start_serving, self.config.min_rate, self._spare
            ),
            sock=self.listener.sock,
        )
        log.info(
            "listening on %s (pid %d), saving to %s",
            self.listener.path,
            os.getpid(),
            self.config.save_dir,
        )
        self._write_status()
        if on_ready:
            on_ready()
        loop.run_in_executor(None, self._sweep_partial_files)
        watchdog = asyncio.ensure_future(self._expire_silent_conns())
        try:
            await self._stop.wait()
        finally:
            watchdog.cancel()
            server.close()
            await self._drain_connections()
            try:  # since Python 3.12 this also waits for every connection to be closed
                await asyncio.wait_for(server.wait_closed(), timeout=5)
            except asyncio.TimeoutError:
                log.warning("some connections did not close in time")
            self.services.close()
            self.listener.remove()
            if self._status is not None:
                self._status.remove()
            log.info("stopped")

    def _sweep_partial_files(self) -> None:
        try:
            for path in remove_leftovers(self.config.save_dir, PART_PREFIX, PART_SUFFIX, recursive=True):
                log.info("removed partial file left by an interrupted transfer: %s", path)
        except Exception:  # a failed clean-up is logged, and must not stop the daemon
            log.exception("could not sweep partial files in %s", self.config.save_dir)

    async def _expire_silent_conns(self) -> None:
        interval = max(0.05, min(self.config.idle_timeout / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self._connections.values()):
                conn.expire_if_silent(now)
            self._handlers.tick()
            self._write_status()

    def _write_status(self) -> None:
        if self._status is None:
            return
        conns = list(self._connections.values())
        try:
            self._status.write(
                self.config,
                len(conns),
                sum(c.busy for c in conns),
                self.services.transfers,
                self.services.forwards.listing(),
            )
        except OSError as exc:  # status is a convenience: serving goes on without it
            log.warning("could not write the status file %s: %s", self._status.path, exc)

    def reload(self) -> None:
        """SIGHUP or `rtun server reload`: read the config file again. New connections and
        requests get the new settings; those in flight finish under the ones they started with.
        The socket and the log stay as they are until a restart."""
        if self._status is None:
            log.info("received SIGHUP: nothing to reload from")
            return
        status = self._status
        status.reloads += 1
        try:
            new = status.launch.load()
        except RtunError as exc:
            log.error("reload failed, the settings stay as they were: %s", exc.message)
            status.last_reload = {"at": time.time(), "error": exc.message}
            self._write_status()
            return
        before, after = effective(self.config), effective(new)
        keys = changed(before, after)
        later = [key for key in keys if key in RESTART_ONLY]
        # Those stay as they are: the daemon keeps listening and logging where it does.
        new = replace(new, socket=self.config.socket, log=self.config.log)
        if new.verbose != self.config.verbose:
            logging.getLogger("rtun").setLevel(logging.DEBUG if new.verbose else logging.INFO)
        self.config = new
        self.services.reconfigure(new)
        applied = [key for key in keys if key not in later]
        log.info(
            "reloaded %s: %s",
            status.launch.path(),
            ", ".join(applied) + " changed" if applied else "no change",
        )
        if later:
            log.warning("not applied until a restart (`rtun server restart`): %s", ", ".join(later))
        status.last_reload = {"at": time.time(), "changed": applied, "needs_restart": later}
        self._write_status()

    def stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: int) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self.stop()

    async def _drain_connections(self) -> None:
        """Close idle connections now; give requests in flight the grace period to finish."""
        for task, conn in list(self._connections.items()):
            if not conn.busy or conn.receiver.long_lived:  # forwards end with the daemon
                task.cancel()
        pending = list(self._connections)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.config.shutdown_grace)
            for task in late:
                log.warning("cancelling a transfer still running after the grace period")
                late_conn = self._connections.get(task)
                if late_conn is not None:
                    late_conn.kill()  # close() would wait to flush replies the client may never read
                task.cancel()
            if late:
                await asyncio.wait(late)

    def _start_serving(self, conn: Connection) -> None:
        asyncio.ensure_future(self._serve_connection(conn))

    async def _serve_connection(self, conn: Connection) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.config.max_connections and not self._evict_idle():
            if len(self._connections) >= self.config.max_connections + CONTROL_ROOM:
                log.warning("refusing a connection: %d already open", len(self._connections))
                await conn.send_quietly(wire.error(messages.E_BUSY, "too many connections"))
                conn.close()
                return
            # Every slot is inside a request: room is kept for pings and notifications.
            conn.control_only = True
        self._connections[task] = conn
        try:
            await self._serve_requests(conn)
        except asyncio.CancelledError:
            pass
        except Exception:  # one connection's failure must never take the daemon down
            log.exception("internal error while serving a connection")
            await conn.send_quietly(wire.error(messages.E_WRITE, "internal error in the daemon"))
        finally:
            self._connections.pop(task, None)
            self._handlers.forget(conn)
            conn.close()

    def _evict_idle(self) -> bool:
        """Make room by closing the longest-open connection that is between requests.

        Idle connections must not lock everyone else out until their idle timeout.
        """
        for task, conn in self._connections.items():
            if not conn.busy:
                log.warning("too many connections: closing the longest-open idle one")
                del self._connections[task]
                conn.abort(wire.error(messages.E_BUSY, "too many connections: closing an idle one"))
                task.cancel()
                return True
        return False

    async def _serve_requests(self, conn: Connection) -> None:
        while not self._stop.is_set():
            try:
                event = await conn.next_event()
                if event is CLOSED:
                    return
                await self._handlers.handle(conn, event)
            except Rejected as exc:
                # v1 peers close after any error reply; so do we.
                log.info("refused request (error %d): %s", exc.code, ascii(exc.text)[1:-1])
                sending = conn.receiver.expects_data
                await conn.send_quietly(conn.receiver.reject(exc.code, exc.text))
                if sending:  # an upload's data, maybe sent ahead: consumed, dropped, then we close
                    await conn.drain(MAX_EARLY_DATA + MAX_LINE, DRAIN_SECONDS)
                return
            except PeerGone as exc:
                log.info("connection ended: %s", exc)
                return


def run(
    config: Config,
    listener: Listener,
    on_ready: Optional[Callable[[], None]] = None,
    launch: Optional[Launch] = None,
) -> None:
    async def main() -> None:  # made inside the loop: Python 3.9 binds asyncio objects at creation
        await Daemon(config, listener, launch).run(on_ready)

    asyncio.run(main())
