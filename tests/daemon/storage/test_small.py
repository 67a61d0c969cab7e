"""A tree's small files, made on the event loop or by helper threads: all of them, in order, with
their content, mode and mtime; a free name when one is taken; a refusal surfaces; nothing is left
half made. Real files in the test's directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import List

import pytest

from rtun.daemon.storage import small, tree
from rtun.daemon.storage.writing import Workers
from rtun.protocol import messages
from rtun.protocol.messages import Rejected


def _files(n: int) -> List[bytes]:
    return [os.urandom(i % 700) for i in range(n)]


@pytest.mark.parametrize("helpers", [False, True], ids=["on the loop", "by helpers"])
def test_every_file_is_placed_in_order_with_its_content(tmp_path: Path, monkeypatch, helpers: bool) -> None:
    # Making a file "takes longer" than 0 s (always helpers) or than an hour (never).
    monkeypatch.setattr(small, "SLOW_FILE", 0.0 if helpers else 3600.0)
    monkeypatch.setattr(small, "FAST_FILE", 0.0 if helpers else 3600.0)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f0003").write_bytes(b"there before")
    t = tree.Tree(str(tmp_path), 0o022, Workers())
    files = SmallFilesRun(t)
    contents = _files(600)  # more than PROBE_EVERY, in two directories
    for i, data in enumerate(contents):
        files.add(("a" if i < 400 else "b", f"f{i:04d}"), 0o640, 1_600_000_000.0 + i, data)
    files.done()
    t.close()
    names = [p[-1] for p, _ in files.placed]
    assert names[:3] == ["f0000", "f0001", "f0002"] and names[3] == "f0003 (1)"  # a free name
    assert [p[0] for p, _ in files.placed] == ["a"] * 400 + ["b"] * 200  # in the order added
    for i, ((parts, size), data) in enumerate(zip(files.placed, contents)):
        path = tmp_path.joinpath(*parts)
        assert path.read_bytes() == data and size == len(data)
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime == 1_600_000_000.0 + i
    assert (tmp_path / "a" / "f0003").read_bytes() == b"there before"
    assert not [p for p in tmp_path.rglob(".rtun-*")]  # no temporary name left anywhere


class SmallFilesRun:
    def __init__(self, t: tree.Tree) -> None:
        self.small = small.SmallFiles(t, overwrite=False)
        self.placed: small.Placed = []

    def add(self, parts: tuple, mode: int, mtime: float, data: bytes) -> None:
        self.placed += self.small.add(parts, mode, mtime, bytearray(data), False)

    def done(self) -> None:
        self.placed += self.small.flush()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a file system needs root")
@pytest.mark.parametrize("helpers", [False, True], ids=["on the loop", "by helpers"])
def test_a_full_disk_is_refused_and_what_was_made_stays_whole(
    tmp_path: Path, monkeypatch, helpers: bool
) -> None:
    import subprocess

    monkeypatch.setattr(small, "SLOW_FILE", 0.0 if helpers else 3600.0)
    monkeypatch.setattr(small, "FAST_FILE", 0.0 if helpers else 3600.0)
    root = tmp_path / "disk"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)], check=True)
    try:
        t = tree.Tree(str(root), 0o022, Workers())
        run = SmallFilesRun(t)
        with pytest.raises(Rejected) as info:
            for i in range(400):  # 400 x 60 KiB: far more than 1 MiB
                run.add((f"f{i:03d}",), 0o644, 1.0, b"x" * 60_000)
            run.done()
        assert info.value.code == messages.E_NO_SPACE
        run.small.abandon()
        t.close()
        for path in root.iterdir():  # what was made is whole, under its own name
            assert not path.name.startswith(".rtun-") and path.read_bytes() == b"x" * 60_000
    finally:
        subprocess.run(["umount", "-l", str(root)], capture_output=True)


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "temporary name"])
@pytest.mark.parametrize("helpers", [False, True], ids=["on the loop", "by helpers"])
def test_modes_less_umask_and_launchers_mtimes_and_no_temporary_name(
    tmp_path: Path, monkeypatch, helpers: bool, unnamed: bool
) -> None:
    monkeypatch.setattr(small, "SLOW_FILE", 0.0 if helpers else 3600.0)
    monkeypatch.setattr(small, "FAST_FILE", 0.0 if helpers else 3600.0)
    t = tree.Tree(str(tmp_path), 0o027, Workers())
    t.unnamed = t.unnamed and unnamed  # as on a file system without O_TMPFILE
    run = small.SmallFiles(t, overwrite=False)
    placed = run.add(("x", "tool"), 0o4775, 1_500_000_000.5, bytearray(b"#!/bin/sh\n"), False)
    placed += run.add(("x", "launcher"), 0o755, 1_500_000_001.0, bytearray(b"[Desktop Entry]\n"), True)
    placed += run.add(("x", "empty"), 0o600, None, bytearray(), False)
    placed += run.flush()
    t.close()
    assert [p for p, _ in placed] == [("x", "tool"), ("x", "launcher"), ("x", "empty")]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "x").iterdir()}
    assert modes == {"tool": 0o750, "launcher": 0o640, "empty": 0o600}  # no setuid, umask 027
    assert (tmp_path / "x" / "tool").stat().st_mtime == 1_500_000_000.5
    assert (tmp_path / "x" / "launcher").stat().st_mtime == 1_500_000_001.0
    assert (tmp_path / "x" / "empty").read_bytes() == b""


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "temporary name"])
def test_a_refusal_stops_the_batch_there_and_is_returned(tmp_path: Path, unnamed: bool) -> None:
    (tmp_path / "d").mkdir()
    dir_fd = os.open(tmp_path / "d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        jobs = [("a", 0o644, 1.0, bytearray(b"a"), False), ("b", 0o644, 2.0, bytearray(b"b"), False)]
        names, refusal = small._write_batch(dir_fd, ("d",), jobs[:1], 0o022, unnamed, tree.KEEP)
        assert names == ["a"] and refusal is None
        os.unlink(tmp_path / "d" / "a")
        os.rmdir(tmp_path / "d")  # its descriptor now names a deleted directory: nothing can be made
        names, refusal = small._write_batch(dir_fd, ("d",), jobs, 0o022, unnamed, tree.KEEP)
        assert names == [] and refusal is not None and refusal.text.startswith("d/a:")
        assert refusal.code == messages.E_CREATE
    finally:
        os.close(dir_fd)


def test_files_queued_for_a_helper_are_written_when_the_transfer_fails(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(small, "SLOW_FILE", 0.0)
    monkeypatch.setattr(small, "FAST_FILE", 0.0)
    t = tree.Tree(str(tmp_path), 0o022, Workers())
    run = small.SmallFiles(t, overwrite=False)
    run.add(("d", "first"), 0o644, 1.0, bytearray(b"timed on the loop"), False)
    for i in range(small.MIN_BATCH - 1):  # fewer than a batch: they wait for more
        run.add(("d", f"f{i}"), 0o644, 2.0, bytearray(b"%d" % i), False)
    run.abandon()  # the stream broke: what was verified is written all the same
    t.close()
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == sorted(
        ["first"] + [f"f{i}" for i in range(small.MIN_BATCH - 1)]
    )
    assert all((tmp_path / "d" / f"f{i}").read_bytes() == b"%d" % i for i in range(small.MIN_BATCH - 1))
