"""The asyncio daemon: accepts connections on the UNIX socket and serves each one concurrently."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Callable, Dict, Optional

from rtun import wire
from rtun.daemon.actions import Refused
# Imported here, in the main thread before any other starts: it reads the umask by setting it.
from rtun.daemon.actions.files import Uploads, sweep_partial_files
from rtun.daemon.config import Config
from rtun.daemon.listener import Listener
from rtun.daemon.peer import Peer, PeerGone

log = logging.getLogger("rtun.daemon")


class Daemon:
    def __init__(self, config: Config, listener: Listener) -> None:
        self.config = config
        self.listener = listener
        self._stop = asyncio.Event()
        self._connections: Dict["asyncio.Task[None]", Peer] = {}
        self._actions = _Actions(config)

    async def run(self, on_ready: Optional[Callable[[], None]] = None) -> None:
        """Serve until SIGTERM, SIGINT or a SHUTDOWN request, then stop gracefully."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)
        server = await loop.create_unix_server(
            lambda: Peer(self.config.idle_timeout, self._start_serving), sock=self.listener.sock
        )
        log.info(
            "listening on %s (pid %d), saving to %s",
            self.listener.path, os.getpid(), self.config.save_dir,
        )
        if on_ready:
            on_ready()
        loop.run_in_executor(None, self._sweep_partial_files)
        watchdog = asyncio.ensure_future(self._expire_silent_peers())
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
            self._actions.close()
            self.listener.remove()
            log.info("stopped")

    def _sweep_partial_files(self) -> None:
        try:
            for path in sweep_partial_files(self.config.save_dir):
                log.info("removed partial file left by an interrupted transfer: %s", path)
        except Exception:  # a failed clean-up is logged, and must not stop the daemon
            log.exception("could not sweep partial files in %s", self.config.save_dir)

    async def _expire_silent_peers(self) -> None:
        interval = max(0.05, min(self.config.idle_timeout / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for peer in list(self._connections.values()):
                peer.expire_if_silent(now)

    def stop(self) -> None:
        self._stop.set()

    def _on_signal(self, signum: int) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self.stop()

    async def _drain_connections(self) -> None:
        """Close idle connections now; give requests in flight the grace period to finish."""
        for task, peer in list(self._connections.items()):
            if not peer.busy:
                task.cancel()
        pending = list(self._connections)
        if pending:
            _, late = await asyncio.wait(pending, timeout=self.config.shutdown_grace)
            for task in late:
                log.warning("cancelling a transfer still running after the grace period")
                peer = self._connections.get(task)
                if peer is not None:
                    peer.kill()  # close() would wait to flush replies the client may never read
                task.cancel()
            if late:
                await asyncio.wait(late)

    def _start_serving(self, peer: Peer) -> None:
        asyncio.ensure_future(self._serve_connection(peer))

    async def _serve_connection(self, peer: Peer) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.config.max_connections and not self._evict_idle():
            log.warning("refusing a connection: %d already open", len(self._connections))
            await _reply_quietly(peer, wire.error(wire.E_BUSY, "too many connections"))
            peer.close()
            return
        self._connections[task] = peer
        try:
            await self._serve_requests(peer)
        except asyncio.CancelledError:
            pass
        except Exception:  # one connection's failure must never take the daemon down
            log.exception("internal error while serving a connection")
            await _reply_quietly(peer, wire.error(wire.E_WRITE, "internal error in the daemon"))
        finally:
            self._connections.pop(task, None)
            peer.close()

    def _evict_idle(self) -> bool:
        """Make room by closing the longest-open connection that is between requests.

        Idle connections must not lock everyone else out until their idle timeout.
        """
        for task, peer in self._connections.items():
            if not peer.busy:
                log.warning("too many connections: closing the longest-open idle one")
                del self._connections[task]
                peer.abort(wire.error(wire.E_BUSY, "too many connections: closing an idle one"))
                task.cancel()
                return True
        return False

    async def _serve_requests(self, peer: Peer) -> None:
        while not self._stop.is_set():
            try:
                line = await peer.readline()
                if not line:
                    return
                request = wire.parse_request(line)
                peer.busy = True
                await self._dispatch(request, peer)
                peer.busy = False
            except (wire.ProtocolError, Refused) as exc:
                # v1 peers close after any error reply; so do we.
                log.info("refused request: %s", exc.text)
                await _reply_quietly(peer, wire.error(exc.code, exc.text))
                return
            except PeerGone as exc:
                log.info("connection ended: %s", exc)
                return

    async def _dispatch(self, request: wire.Request, peer: Peer) -> None:
        if isinstance(request, wire.Ping):
            await peer.reply(wire.pong())
        elif isinstance(request, wire.Pid):
            await peer.reply(wire.pid_reply(os.getpid(), self.config.save_dir))
        elif isinstance(request, wire.Echo):
            await peer.reply(wire.ok(request.text))
        elif isinstance(request, wire.Hello):
            await peer.reply(wire.hello_reply())
        elif isinstance(request, wire.Shutdown):
            log.info("shutdown requested by a client")
            await peer.reply(wire.ok("Shutting down server..."))
            self.stop()
        else:
            await peer.reply(await self._actions.perform(request, peer))


class _Actions:
    """Creates each action's handler on first use, so the daemon starts small and fast."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._notifier = None
        self._uploads = None
        self._viewer = None

    def notifier(self):  # type: ignore[no-untyped-def]
        if self._notifier is None:
            from rtun.daemon.actions.notify import Notifier

            self._notifier = Notifier(self.config)
        return self._notifier

    def uploads(self):  # type: ignore[no-untyped-def]
        if self._uploads is None:
            self._uploads = Uploads(self.config)
        return self._uploads

    def viewer(self):  # type: ignore[no-untyped-def]
        if self._viewer is None:
            from rtun.daemon.actions.view import Viewer

            self._viewer = Viewer(self.config)
        return self._viewer

    async def perform(self, request: wire.Request, peer: Peer) -> bytes:
        if isinstance(request, (wire.Notify, wire.Notify2)):
            await self.notifier().notify(request.title, request.body)
            return wire.ok()
        if isinstance(request, wire.Send):
            return await self.uploads().receive_file(request, peer)
        if isinstance(request, wire.Put):
            return await self.uploads().receive_stream(request, peer)
        if isinstance(request, wire.View):
            return await self.viewer().view(request, peer)
        raise Refused(wire.E_UNKNOWN, f"unsupported request {type(request).__name__}")

    def close(self) -> None:
        if self._viewer is not None:
            self._viewer.close()


async def _reply_quietly(peer: Peer, data: bytes) -> None:
    try:
        await peer.reply(data)
    except PeerGone:
        pass


def run(config: Config, listener: Listener, on_ready: Optional[Callable[[], None]] = None) -> None:
    asyncio.run(Daemon(config, listener).run(on_ready))
