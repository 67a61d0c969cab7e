"""Speaking the wire protocol byte by byte, as an old (or hostile) client would."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path


class RawClient:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.reader = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        """The next reply line, line ending included (b"" once the daemon has closed)."""
        return self.reader.readline()

    def command(self, text: str) -> bytes:
        self.send(text.encode() + b"\r\n")
        return self.line()

    def close(self) -> None:
        self.reader.close()
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
