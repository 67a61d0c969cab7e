"""A UNIX-socket relay that counts the turns of a conversation: how often the client spoke after
the daemon had answered. Each turn is a round trip on a real link, whatever the bytes."""

from __future__ import annotations

import selectors
import socket
import threading
from pathlib import Path
from typing import List


class TurnCounter:
    def __init__(self, listen: Path, target: Path) -> None:
        self.listen = listen
        self.target = target
        self.directions: List[str] = []  # "c" or "d" per burst: consecutive data one way
        self.client_bytes = 0
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(listen))
        self._server.listen(4)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def client_turns(self) -> int:
        return self.directions.count("c")

    def _note(self, direction: str) -> None:
        if not self.directions or self.directions[-1] != direction:
            self.directions.append(direction)

    def _serve(self) -> None:
        client, _ = self._server.accept()
        daemon = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        daemon.connect(str(self.target))
        selector = selectors.DefaultSelector()
        selector.register(client, selectors.EVENT_READ, (daemon, "c"))
        selector.register(daemon, selectors.EVENT_READ, (client, "d"))
        open_ends = 2
        while open_ends:
            for key, _ in selector.select():
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
                self._note(direction)
                if direction == "c":
                    self.client_bytes += len(data)
                peer.sendall(data)
        client.close()
        daemon.close()
        self._done.set()

    def close(self) -> None:
        self._done.wait(10)
        self._server.close()
