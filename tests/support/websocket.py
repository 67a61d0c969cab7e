"""A minimal WebSocket (RFC 6455) echo server and client, standard library only: enough to show
that a forward carries an upgraded, long-lived, two-way connection, as Jupyter's kernels use.

``python websocket.py PORT`` serves on 127.0.0.1:PORT until killed (one thread per client).
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import sys
import threading
from typing import List, Tuple

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        piece = sock.recv(count - len(data))
        if not piece:
            raise ConnectionError("closed in the middle of a frame")
        data += piece
    return data


def read_frame(sock: socket.socket) -> Tuple[int, bytes]:
    first, second = _exactly(sock, 2)
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack(">H", _exactly(sock, 2))
    elif length == 127:
        (length,) = struct.unpack(">Q", _exactly(sock, 8))
    mask = _exactly(sock, 4) if second & 0x80 else b""
    payload = _exactly(sock, length)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return first & 0x0F, payload


def write_frame(sock: socket.socket, opcode: int, payload: bytes, masked: bool) -> None:
    length = len(payload)
    header = bytes([0x80 | opcode])
    flag = 0x80 if masked else 0
    if length < 126:
        header += bytes([flag | length])
    elif length < 65536:
        header += bytes([flag | 126]) + struct.pack(">H", length)
    else:
        header += bytes([flag | 127]) + struct.pack(">Q", length)
    if masked:
        mask = os.urandom(4)
        header += mask
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(header + payload)


def _headers(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            raise ConnectionError("closed before the end of the headers")
        data += piece
    return data


def _serve_one(sock: socket.socket) -> None:
    with sock:
        request = _headers(sock).decode("latin-1")
        key = next(
            line.split(":", 1)[1].strip()
            for line in request.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        sock.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n"
            ).encode()
        )
        while True:
            opcode, payload = read_frame(sock)
            if opcode == CLOSE:
                write_frame(sock, CLOSE, payload, masked=False)
                return
            write_frame(sock, opcode, payload, masked=False)


def serve(port: int) -> None:
    with socket.create_server(("127.0.0.1", port)) as server:
        while True:
            client, _ = server.accept()
            threading.Thread(target=_serve_one, args=(client,), daemon=True).start()


def echo(address: Tuple[str, int], messages: List[bytes], timeout: float = 10) -> List[bytes]:
    """Open a WebSocket at ``address``, send each message (binary), and return the echoes."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(
            (
                f"GET /api/kernels/1/channels HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        answer = _headers(sock).decode("latin-1")
        assert answer.startswith("HTTP/1.1 101") and accept_key(key) in answer, answer
        echoes = []
        for message in messages:
            write_frame(sock, BINARY, message, masked=True)
            opcode, payload = read_frame(sock)
            assert opcode == BINARY
            echoes.append(payload)
        write_frame(sock, CLOSE, b"", masked=True)
        assert read_frame(sock)[0] == CLOSE
        return echoes


if __name__ == "__main__":
    serve(int(sys.argv[1]))
