"""Large files written past the page cache: byte for byte what was received, whatever the piece
sizes, on a disk that takes direct I/O and on one that refuses it; a full disk is a refusal.
Real files on real file systems (the test directory's, a ramfs, a small tmpfs)."""

from __future__ import annotations

import fcntl
import mmap
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from rtun.daemon.storage import direct, tree
from rtun.daemon.storage.writing import Workers
from rtun.protocol import messages
from rtun.protocol.messages import Rejected

O_DIRECT = getattr(os, "O_DIRECT", 0)


def _receive(t: tree.Tree, name: str, data: bytes, piece: int) -> tree.PartFile:
    """Written as the receive path writes: pieces of a socket read's size, then finished."""
    part = t.new_file((name,), 0o644, direct=True)
    assert isinstance(part, tree.PartFile)
    view = memoryview(data)
    for start in range(0, len(data), piece):
        part.write(view[start : start + piece])
    return part


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator:
    """``mounted(kind, options)``: a fresh file system of that kind, unmounted afterwards."""
    points = []

    def mount(kind: str, options: str = "") -> Path:
        point = tmp_path / f"{kind}-{len(points)}"
        point.mkdir()
        subprocess.run(
            ["mount", "-t", kind] + (["-o", options] if options else []) + [kind, str(point)],
            check=True,
            capture_output=True,
        )
        points.append(point)
        return point

    yield mount
    for point in points:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


@pytest.mark.parametrize(
    "size, piece",
    [
        (2 * direct.BLOCK + 12_345, 200_000),  # whole blocks, then a tail through the page cache
        (3 * direct.BLOCK, direct.BLOCK),  # nothing past the last block
        (1_000, 300),  # less than a block
        (direct.BLOCK + 1, 3 * direct.BLOCK),  # a piece larger than a block
    ],
)
def test_a_file_written_directly_is_what_was_received(tmp_path: Path, size: int, piece: int) -> None:
    root = tmp_path / "save"
    root.mkdir()
    data = os.urandom(size)
    t = tree.Tree(str(root), 0o022, Workers())
    part = _receive(t, "big.bin", data, piece)
    assert part.fd is not None
    uses_direct = bool(fcntl.fcntl(part.fd, fcntl.F_GETFL) & O_DIRECT)
    part.finish(1_600_000_000.0)
    assert part.place("big.bin", False) == "big.bin"
    t.close()
    assert (root / "big.bin").read_bytes() == data
    assert (root / "big.bin").stat().st_mtime == 1_600_000_000.0  # set after the last write
    assert [p.name for p in root.iterdir()] == ["big.bin"]
    if O_DIRECT and size > direct.BLOCK and direct.on_disk(str(root)):
        # This test directory's disk (ext4 here) takes direct I/O: the path was really taken.
        assert uses_direct or not _takes_direct(root)


def _takes_direct(directory: Path) -> bool:
    fd = os.open(directory / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | O_DIRECT)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
        os.unlink(directory / "probe")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system needs root")
def test_a_file_system_without_direct_io_gets_ordinary_writes(mounted) -> None:
    root = mounted("ramfs")  # ramfs has no direct I/O at all
    data = os.urandom(2 * direct.BLOCK + 777)
    t = tree.Tree(str(root), 0o022, Workers())
    part = _receive(t, "f", data, 100_000)
    assert part.fd is not None and not fcntl.fcntl(part.fd, fcntl.F_GETFL) & O_DIRECT
    part.finish(None)
    part.place("f", False)
    t.close()
    assert (root / "f").read_bytes() == data


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system needs root")
def test_a_full_disk_is_a_refusal_and_discarding_leaves_nothing(mounted) -> None:
    root = mounted("tmpfs", "size=6m")
    t = tree.Tree(str(root), 0o022, Workers())
    part = t.new_file(("f",), 0o644, direct=True)
    data = memoryview(os.urandom(4 * direct.BLOCK))
    with pytest.raises(Rejected) as info:
        for start in range(0, len(data), 1_000_000):  # the helper's error comes at a later write
            part.write(data[start : start + 1_000_000])
        part.finish(None)
    assert info.value.code == messages.E_NO_SPACE
    part.discard()  # as Transfer.abort does: the write in flight is waited for, the file goes
    t.close()
    assert list(root.iterdir()) == []


def test_writes_may_start_at_an_aligned_offset_of_a_file(tmp_path: Path) -> None:
    """As one range of a file sent in ranges would be written: from its offset on, the rest of
    the file untouched."""
    path = tmp_path / "ranged"
    path.write_bytes(b"-" * (3 * direct.BLOCK))
    fd = os.open(path, os.O_WRONLY)
    try:
        assert direct.DirectWrites.open(fd, Workers(), direct.ALIGN + 1) is None  # unaligned: the page cache
        writes = direct.DirectWrites.open(fd, Workers(), direct.ALIGN)
        data = os.urandom(direct.BLOCK + 5_000)
        if writes is not None:  # None where this file system takes no direct I/O
            writes.write(memoryview(data))
            writes.close()
    finally:
        os.close(fd)
    if writes is not None:
        content = path.read_bytes()
        assert content[: direct.ALIGN] == b"-" * direct.ALIGN
        assert content[direct.ALIGN : direct.ALIGN + len(data)] == data
        assert content[direct.ALIGN + len(data) :] == b"-" * (3 * direct.BLOCK - direct.ALIGN - len(data))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system needs root")
def test_a_file_system_in_memory_gets_ordinary_writes(mounted) -> None:
    """tmpfs takes O_DIRECT, but there it only adds a copy: large files go the ordinary way."""
    root = mounted("tmpfs", "size=64m")
    assert not direct.on_disk(str(root)) and not direct.on_disk(str(root / "below"))
    t = tree.Tree(str(root), 0o022, Workers())
    part = _receive(t, "f", os.urandom(direct.BLOCK + 1), 100_000)
    assert part.fd is not None and not fcntl.fcntl(part.fd, fcntl.F_GETFL) & O_DIRECT
    part.discard()
    t.close()


def test_a_ranged_files_whole_aligned_ranges_go_past_the_page_cache(tmp_path: Path) -> None:
    """DirectAt: a range read whole into page-aligned memory (the receive buffer during an
    upload is an mmap) at a block-aligned offset is written directly; a range's unaligned head,
    a piece from unaligned memory and a file's short last range go through the page cache; the
    file is byte for byte what was written, wherever each piece went."""
    path = tmp_path / "ranged"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    size = 3 * direct.BLOCK + 123
    expected = bytearray(size)
    try:
        writes = direct.DirectAt(fd, str(tmp_path))
        if not writes.direct:
            pytest.skip("this file system takes no direct I/O")
        aligned = mmap.mmap(-1, direct.BLOCK)
        aligned.write(os.urandom(direct.BLOCK))
        writes.write(memoryview(aligned), direct.BLOCK)  # a whole range, as the receiver gives it
        expected[direct.BLOCK : 2 * direct.BLOCK] = aligned
        assert writes.direct_bytes == direct.BLOCK
        unaligned = bytearray(os.urandom(direct.BLOCK + 1))
        writes.write(memoryview(unaligned)[1:], 0)  # block-sized, but memory off by one byte
        expected[: direct.BLOCK] = unaligned[1:]
        head = os.urandom(5_000)
        writes.write(memoryview(head), 2 * direct.BLOCK)  # a range's head, read before the rest
        expected[2 * direct.BLOCK : 2 * direct.BLOCK + len(head)] = head
        tail = os.urandom(size - 2 * direct.BLOCK - len(head))
        writes.write(memoryview(tail), 2 * direct.BLOCK + len(head))
        expected[2 * direct.BLOCK + len(head) :] = tail
        assert writes.direct_bytes == direct.BLOCK  # the others went through the page cache
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT  # and the flag came back after each
    finally:
        os.close(fd)
    assert path.read_bytes() == bytes(expected)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system needs root")
def test_a_ranged_file_in_memory_is_written_the_ordinary_way(mounted) -> None:
    root = mounted("tmpfs", "size=16m")
    fd = os.open(root / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        writes = direct.DirectAt(fd, str(root))
        aligned = mmap.mmap(-1, direct.BLOCK)
        writes.write(memoryview(aligned), 0)
        assert not writes.direct and writes.direct_bytes == 0
        assert not fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT
    finally:
        os.close(fd)
    assert (root / "f").stat().st_size == direct.BLOCK
