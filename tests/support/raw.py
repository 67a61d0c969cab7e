"""Speaking the wire protocol byte by byte, as an old (or hostile) client would: one raw UNIX
socket connection, bytes out, reply lines (and payloads) in."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path


class RawClient:
    """A raw UNIX-socket connection: bytes out, reply lines in (line ending kept)."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        """The next reply line with its line ending; what is left (maybe b"") at end of stream."""
        while b"\n" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                rest, self._buffer = self._buffer, b""
                return rest
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes (fewer only at end of stream): a payload after its line."""
        while len(self._buffer) < size:
            data = self.sock.recv(max(65536, size - len(self._buffer)))
            if not data:
                break
            self._buffer += data
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def request(self, line: bytes) -> bytes:
        self.send(line)
        return self.line()

    def command(self, text: str) -> bytes:
        return self.request(text.encode() + b"\r\n")

    def at_eof(self) -> bool:
        """Whether the other end has closed (nothing more to read)."""
        if self._buffer:
            return False
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def v1_upload(client: RawClient, verb: str, path: str, data: bytes) -> bytes:
    """A complete v1 SEND or VIEW; returns the final reply line (or the refusal of the request)."""
    reply = client.command(f"{verb} {len(data)} {path}")
    if reply != b"READY\r\n":
        return reply
    client.send(data + hashlib.sha256(data).hexdigest().encode() + b"\r\n")
    return client.line()
