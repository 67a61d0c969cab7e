"""Storage below a directory: free names, placing without replacing, modes under any umask,
nothing written through a link. Real files in a temporary directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rtun.daemon.storage import tree
from rtun.protocol import messages
from rtun.protocol.messages import Rejected


@pytest.mark.parametrize(
    "name, attempt, expected",
    [
        ("report.pdf", 0, "report.pdf"),
        ("report.pdf", 1, "report (1).pdf"),
        ("data.tar.gz", 2, "data.tar (2).gz"),
        ("README", 3, "README (3)"),
        (".bashrc", 1, ".bashrc (1)"),
    ],
)
def test_free_name_scheme(name: str, attempt: int, expected: str) -> None:
    assert tree.free_name(name, attempt) == expected


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "save"
    path.mkdir()
    return path


def received(t: tree.Tree, parts: tuple, data: bytes, mode: int, overwrite: bool = False) -> str:
    part = t.new_file(parts, mode)
    part.write(memoryview(data))
    part.finish(1_600_000_000.0)
    return part.place(parts[-1], overwrite)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_the_users_umask_narrows_every_mode(root: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        t = tree.Tree(str(root), tree.current_umask())
        for name, mode in (("a", 0o644), ("b", 0o755), ("c", 0o640), ("d", 0o4755)):
            received(t, (name,), b"x", mode)
        t.close()
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in root.iterdir()}
    # The local user's umask narrows what the sender asked for; setuid is dropped.
    assert modes == {
        n: m & 0o777 & ~umask for n, m in (("a", 0o644), ("b", 0o755), ("c", 0o640), ("d", 0o755))
    }
    assert (root / "a").stat().st_mtime == 1_600_000_000.0


def test_current_umask_reads_without_changing_it() -> None:
    previous = os.umask(0o027)
    try:
        assert tree.current_umask() == 0o027
        assert tree.current_umask() == 0o027
    finally:
        os.umask(previous)


def test_execute_bits_can_be_taken_away_at_the_end(root: Path) -> None:
    t = tree.Tree(str(root), 0o022)
    part = t.new_file(("launcher",), 0o755)
    part.finish(None, drop_execute=True)
    part.place("launcher", False)
    t.close()
    assert stat.S_IMODE((root / "launcher").stat().st_mode) == 0o644


def test_an_existing_file_is_kept_unless_overwrite(root: Path) -> None:
    t = tree.Tree(str(root), 0o022)
    (root / "r.txt").write_text("old")
    assert received(t, ("r.txt",), b"new", 0o644) == "r (1).txt"
    assert (root / "r.txt").read_text() == "old"
    assert received(t, ("r.txt",), b"newer", 0o644, overwrite=True) == "r.txt"
    assert (root / "r.txt").read_text() == "newer"
    t.close()
    assert sorted(p.name for p in root.iterdir()) == ["r (1).txt", "r.txt"]  # no part file left


def test_a_directory_is_never_replaced(root: Path) -> None:
    (root / "d").mkdir()
    t = tree.Tree(str(root), 0o022)
    assert received(t, ("d",), b"x", 0o644, overwrite=True) == "d (1)"
    t.close()


def test_nothing_is_written_through_a_link_on_disk(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    t = tree.Tree(str(root), 0o022)
    with pytest.raises(Rejected) as info:
        t.new_file(("link", "f"), 0o644)
    assert info.value.code == messages.E_BAD_PATH and "symbolic link" in info.value.text
    assert list(outside.iterdir()) == []
    t.close()


def test_discard_leaves_nothing(root: Path) -> None:
    t = tree.Tree(str(root), 0o022)
    part = t.new_file(("f",), 0o644)
    part.write(memoryview(b"half"))
    part.discard()
    t.close()
    assert list(root.iterdir()) == []


def test_many_files_of_one_name_cost_few_attempts_each(root: Path) -> None:
    t = tree.Tree(str(root), 0o022)
    names = {received(t, ("same",), b"", 0o644) for _ in range(300)}
    t.close()
    assert len(names) == 300 and "same" in names and "same (15)" in names
    assert len(list(root.iterdir())) == 300


def test_a_directory_made_is_reported_and_one_that_existed_is_not(root: Path) -> None:
    (root / "old").mkdir()
    t = tree.Tree(str(root), 0o022)
    t.directory(("old",))
    assert t.made is None
    t.directory(("new", "deeper"))
    assert t.made == ("new", "deeper")
    t.close()


# ---- unnamed files (Linux's O_TMPFILE): a tree's small files ------------------------------------

unnamed_only = pytest.mark.skipif(not hasattr(os, "O_TMPFILE"), reason="no unnamed files on this system")


@unnamed_only
def test_an_unnamed_file_has_no_name_until_it_is_placed(root: Path) -> None:
    t = tree.Tree(str(root), 0o022)
    part = t.new_file(("sub", "f.txt"), 0o640, unnamed=True)
    assert isinstance(part, tree.UnnamedFile)
    part.write(memoryview(b"complete"))
    part.finish(1_600_000_000.0)
    assert list((root / "sub").iterdir()) == []  # nothing a reader or the sweep could see
    assert part.place("f.txt", False) == "f.txt"
    t.close()
    placed = root / "sub" / "f.txt"
    assert placed.read_bytes() == b"complete"
    assert stat.S_IMODE(placed.stat().st_mode) == 0o640 and placed.stat().st_mtime == 1_600_000_000.0
    assert list((root / "sub").iterdir()) == [placed]


@unnamed_only
def test_a_discarded_unnamed_file_leaves_nothing(root: Path) -> None:
    t = tree.Tree(str(root), 0o022)
    part = t.new_file(("f",), 0o644, unnamed=True)
    part.write(memoryview(b"half"))
    part.discard()
    t.close()
    assert list(root.iterdir()) == []


@unnamed_only
def test_an_unnamed_file_takes_a_free_name_and_replaces_only_a_file(root: Path) -> None:
    (root / "r.txt").write_text("old")
    (root / "d").mkdir()
    t = tree.Tree(str(root), 0o022)

    def unnamed(name: str, data: bytes, overwrite: bool) -> str:
        part = t.new_file((name,), 0o644, unnamed=True)
        part.write(memoryview(data))
        part.finish(1.0)
        return part.place(name, overwrite)

    assert unnamed("r.txt", b"new", False) == "r (1).txt"
    assert (root / "r.txt").read_text() == "old"
    assert unnamed("r.txt", b"newer", True) == "r.txt"
    assert (root / "r.txt").read_text() == "newer"
    assert unnamed("d", b"x", True) == "d (1)"  # a directory is never replaced
    names = {unnamed("same", b"", False) for _ in range(40)}
    t.close()
    assert len(names) == 40 and "same (15)" in names
    assert all(not p.name.startswith(".rtun-") for p in root.iterdir())  # no part file left
