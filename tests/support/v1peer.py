"""RTUN v1 from the spec (../shared/specs/rtun-v1-wire.md), written independently of rtun.wire.

``V1Peer`` is a minimal v1 daemon: it answers exactly as the old Go daemon does, including its
defects that matter to a client (the unknown-command error has no line ending; any error reply
closes the connection). ``RawClient`` speaks raw bytes to any daemon, as an old client would.
"""

from __future__ import annotations

import hashlib
import os
import socketserver
import threading
from pathlib import Path
from typing import List, Optional, Tuple


class _Closed(Exception):
    pass


class _Handler(socketserver.BaseRequestHandler):
    server: "_Server"

    def setup(self) -> None:
        self.request.settimeout(120)  # v1's deadline
        self.buffer = b""

    def _readline(self) -> Optional[bytes]:
        while b"\n" not in self.buffer:
            data = self.request.recv(65536)
            if not data:
                return None
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line[:-1] if line.endswith(b"\r") else line

    def _read_exactly(self, size: int) -> bytes:
        chunks = [self.buffer[:size]]
        got = len(chunks[0])
        self.buffer = self.buffer[size:]
        while got < size:
            data = self.request.recv(min(65536, size - got))
            if not data:
                break
            chunks.append(data)
            got += len(data)
        return b"".join(chunks)

    def _reply(self, text: str, eol: bool = True) -> None:
        self.request.sendall(text.encode() + (b"\r\n" if eol else b""))

    def _error(self, code: int, text: str, eol: bool = True) -> None:
        self._reply(f"ERROR {code} {text}", eol)
        raise _Closed()  # v1 closes after any error reply

    def handle(self) -> None:
        peer = self.server.peer
        try:
            while True:
                raw = self._readline()
                if raw is None:
                    return
                line = raw.decode("utf-8", "replace")
                peer.requests.append(line)
                verb, _, rest = line.partition(" ")
                if line == "PING":
                    self._reply("OK PONG")
                elif line == "PID":
                    self._reply(f"OK PID {os.getpid()}, saveDir {peer.save_dir}")
                elif verb == "ECHO":
                    self._reply(f"OK {rest}")
                elif line == "SHUTDOWN":
                    self._reply("OK Shutting down server...")
                    peer.shutdown_requested.set()
                    return
                elif verb == "NOTIFY":
                    host, _, body = rest.partition(" ")
                    peer.notifications.append((host, body))
                    self._reply("OK")
                elif verb in ("SEND", "VIEW"):
                    self._upload(verb, rest)
                else:
                    self._error(100, f"unknown command: {verb}", eol=False)  # v1's missing CRLF
        except (_Closed, OSError):
            return

    def _upload(self, verb: str, rest: str) -> None:
        peer = self.server.peer
        size_token, _, name = rest.partition(" ")
        if not size_token.isdigit():
            self._error(101, "bad size")
        size = int(size_token)
        while name.startswith("../"):
            name = name[3:]
        target = peer.save_dir / name if verb == "SEND" else peer.view_dir / os.path.basename(name)
        if target.is_dir():
            self._error(103, f"{target} is a directory")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self._error(104, str(exc))
        self._reply("READY")
        data = self._read_exactly(size)
        if len(data) != size:
            self._error(106, f"expected {size} bytes, got {len(data)} bytes")
        checksum = self._readline()
        actual = hashlib.sha256(data).hexdigest()
        expected = (checksum or b"").decode("ascii", "replace")
        if expected != actual:
            self._error(107, f"expected {expected}, got {actual}")
        target.write_bytes(data)  # v1 replaces whatever was there
        peer.received.append((verb, name, size))
        self._reply("OK")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    peer: "V1Peer"


class V1Peer:
    """A v1 daemon on ``path`` in a background thread; ``requests`` lists every line it read."""

    def __init__(self, path: Path, save_dir: Path) -> None:
        self.path = path
        self.save_dir = save_dir
        self.view_dir = save_dir.parent / "v1-view"
        self.requests: List[str] = []
        self.notifications: List[Tuple[str, str]] = []
        self.received: List[Tuple[str, str, int]] = []
        self.shutdown_requested = threading.Event()
        self._server = _Server(str(path), _Handler)
        self._server.peer = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> "V1Peer":
        self.save_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
