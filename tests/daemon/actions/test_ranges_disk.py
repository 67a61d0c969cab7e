"""Ranged files against a real daemon on a small tmpfs save directory: sparse, end-first,
hole-filling and overlapping RANGEs of several files at once, and resumptions, never take the
disk past the reserve (issue 15: three 30 MiB files written end-first took a 64 MiB disk with
a 16 MiB reserve to 0 bytes free)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from rtun.protocol import messages, wire
from support.raw import RawClient

MIB = 1024 * 1024
DISK = 64 * MIB
RESERVE = 16 * MIB


@pytest.fixture
def small_disk(save_dir: Path, mounts) -> Path:
    """The save directory on a 64 MiB tmpfs (skipped where mount is not allowed)."""
    mounts(save_dir, str(DISK))
    return save_dir


def _free(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _piece(offset: int, size: int) -> bytes:
    return bytes([offset // MIB % 251]) * size


class Sender:
    """One connection sending ranges of one file, speaking the wire by hand."""

    def __init__(self, socket: Path, name: str, size: int, join: bool = False) -> None:
        self.raw = RawClient(socket, timeout=30)
        self.size = size
        assert self.raw.command(" ".join(("SEND", wire.HELLO_TOKEN) + wire.FEATURES)).startswith(b"OK")
        request = messages.Ranges(
            "", name, size, 0o755, 1.7e9, hashlib.sha256(name.encode()).hexdigest(), False, True, join
        )
        self.raw.send(wire.encode_request(request))
        self.reply = self.raw.line()
        self.digests: Dict[int, Tuple[int, bytes]] = {}

    def range(self, offset: int, size: int) -> bytes:
        data = _piece(offset, size)
        self.raw.send(
            wire.encode_request(messages.Range(offset, size))
            + data
            + hashlib.sha256(data).hexdigest().encode()
            + b"\r\n"
        )
        reply = self.raw.line()
        if reply.startswith(b"OK"):
            self.digests = {
                o: d for o, d in self.digests.items() if not (o < offset + size and offset < o + d[0])
            }
            self.digests[offset] = (size, hashlib.sha256(data).digest())
        return reply

    def commit(self) -> bytes:
        combined = hashlib.sha256(b"".join(d for _, (_, d) in sorted(self.digests.items())))
        return self.raw.command(f'COMMIT {{"digest":"{combined.hexdigest()}"}}')


def test_sparse_out_of_order_ranges_of_several_files_never_cross_the_reserve(
    start_daemon, small_disk: Path
) -> None:
    daemon = start_daemon(config=f"[send]\nmin_free_bytes = {RESERVE}\n")
    size = 30 * MIB
    senders: List[Sender] = [Sender(daemon.socket, f"f{i}.bin", size) for i in range(3)]
    opened = [s for s in senders if s.reply.startswith(b"OK")]
    assert [s.reply.split()[:2] for s in senders if s not in opened] == [[b"ERROR", b"109"]] * 2
    assert len(opened) == 1  # 48 MiB above the reserve: room for one 30 MiB file, not three
    assert senders[1].raw.line() == b""  # a refused RANGES ends its connection
    first = opened[0]
    lowest = DISK
    # End first, then the holes from the middle out, then ranges over others.
    order = list(range(size - MIB, -1, -2 * MIB)) + list(range(0, size, 2 * MIB))
    for offset in order:
        assert first.range(offset, MIB) == b"OK\r\n"
        lowest = min(lowest, _free(small_disk))
    assert first.range(MIB // 2, MIB) == b"OK\r\n"  # overlapping two verified ones
    assert first.range(0, MIB // 2 + MIB) == b"OK\r\n"
    assert first.range(MIB + MIB // 2, MIB // 2) == b"OK\r\n"
    assert lowest >= RESERVE
    # A second file, sparse: its end written, its connection gone (kept for resumption).
    second = Sender(daemon.socket, "g.bin", 8 * MIB)
    assert second.reply.startswith(b"OK") and second.range(7 * MIB, MIB) == b"OK\r\n"
    second.raw.close()
    assert first.commit().startswith(b"OK")
    first.raw.close()
    # Resumed while another file holds the space it still needs: the resumption is refused.
    third = Sender(daemon.socket, "h.bin", 10 * MIB)
    assert third.reply.startswith(b"OK")
    resumed = Sender(daemon.socket, "g.bin", 8 * MIB)
    assert resumed.reply.split()[:2] == [b"ERROR", b"109"], resumed.reply
    assert _free(small_disk) >= RESERVE
    saved = small_disk / "f0.bin"
    content = saved.read_bytes()
    assert len(content) == size and content[size - MIB :] == _piece(size - MIB, MIB)
    assert saved.stat().st_mode & 0o777 == 0o755
    for s in senders + [third, resumed]:
        s.raw.close()
