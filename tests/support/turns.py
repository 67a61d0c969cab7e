"""A UNIX-socket relay that counts the turns of a conversation: how often the client spoke after
the daemon had answered. Each turn is a round trip on a real link, whatever the bytes. It can
also stop passing the client's bytes after a number of them, as a link that died would, and
rewrite what the daemon says (an older daemon's HELLO reply made from a new one's)."""

from __future__ import annotations

import selectors
import socket
import threading
from pathlib import Path
from typing import Callable, List, Optional


class TurnCounter:
    def __init__(
        self,
        listen: Path,
        target: Path,
        stall_after: int = -1,
        rewrite: Optional[Callable[[bytes], bytes]] = None,
    ) -> None:
        self.rewrite = rewrite  # applied to each piece the daemon sends
        self.listen = listen
        self.target = target
        self.stall_after = stall_after  # client bytes passed before the link "dies"; -1: never
        self.stalled = threading.Event()
        self.directions: List[str] = []  # "c" or "d" per burst: consecutive data one way
        self.client_bytes = 0  # passed to the daemon, over every connection
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(listen))
        self._server.listen(16)
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._sockets: List[socket.socket] = []
        accepter = threading.Thread(target=self._accept, daemon=True)
        accepter.start()

    @property
    def connections(self) -> int:
        return len(self._threads)

    @property
    def client_turns(self) -> int:
        return self.directions.count("c")

    def _note(self, direction: str) -> None:
        if not self.directions or self.directions[-1] != direction:
            self.directions.append(direction)

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        daemon.connect(str(self.target))
        self._sockets += [client, daemon]
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, (daemon, "c"))
        selector.register(daemon, selectors.EVENT_READ, (client, "d"))
        open_ends = 2
        try:
            while open_ends and not self._closing.is_set():
                for key, _ in selector.select(timeout=0.2):
                    peer, direction = key.data
                    data = key.fileobj.recv(1 << 20)  # type: ignore[union-attr]
                    if not data:
                        selector.unregister(key.fileobj)
                        open_ends -= 1
                        try:
                            peer.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        continue
                    with self._lock:
                        self._note(direction)
                        if direction == "c":
                            if 0 <= self.stall_after < self.client_bytes + len(data):
                                data = data[: max(self.stall_after - self.client_bytes, 0)]
                                self.stalled.set()
                            self.client_bytes += len(data)
                        elif self.rewrite is not None:
                            data = self.rewrite(data)
                    if data:
                        peer.sendall(data)
                    if self.stalled.is_set() and direction == "c":
                        selector.unregister(key.fileobj)  # the link is dead: nothing more passes
                        open_ends -= 1
        except OSError:
            pass
        finally:
            client.close()
            daemon.close()

    def close(self) -> None:
        """Wait for the conversations to end (all of them at once if the link stalled)."""
        if self.stalled.is_set():
            self._closing.set()
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for thread in list(self._threads):
            thread.join(10)
        self._closing.set()
        self._server.close()
