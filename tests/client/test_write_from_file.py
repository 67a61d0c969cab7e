"""ClientConnection.write_from_file: a file's bytes go to the socket as they are in the file
(from its pages, by sendfile, on Linux), after what was queued before them; a file that got
shorter since it was read is an error, not a short send."""

from __future__ import annotations

import os
import socket
import sys
import threading
from pathlib import Path
from typing import List

import pytest

from rtun.client.pump import ClientConnection
from rtun.errors import RtunError


def _drain(sock: socket.socket, into: List[bytes]) -> threading.Thread:
    def run() -> None:
        while True:
            data = sock.recv(1 << 20)
            if not data:
                return
            into.append(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_files_bytes_follow_what_was_queued_before_them(tmp_path: Path) -> None:
    path = tmp_path / "f"
    content = os.urandom(3 * 1024 * 1024 + 17)  # more than the socket holds: sent in turns
    path.write_bytes(content)
    ours, theirs = socket.socketpair()
    ours.settimeout(10)  # as the client's: non-blocking underneath, so sendfile must wait its turn
    received: List[bytes] = []
    reader = _drain(theirs, received)
    conn = ClientConnection("test", ours)
    fd = os.open(path, os.O_RDONLY)
    try:
        conn.write(b"HEAD")
        offset = 1000
        conn.write_from_file(fd, offset, memoryview(content)[offset:])
        conn.write(b"TAIL")
        conn.flush()
    finally:
        os.close(fd)
        conn.close()
    reader.join(10)
    assert b"".join(received) == b"HEAD" + content[1000:] + b"TAIL"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="elsewhere the bytes read are written")
def test_a_file_shorter_than_what_was_read_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(os.urandom(100_000))
    data = memoryview(path.read_bytes())
    os.truncate(path, 50_000)  # changed after it was read (and hashed)
    ours, theirs = socket.socketpair()
    ours.settimeout(10)
    received: List[bytes] = []
    _drain(theirs, received)
    conn = ClientConnection("test", ours)
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(RtunError, match="got shorter"):
            conn.write_from_file(fd, 0, data)
    finally:
        os.close(fd)
        conn.close()
