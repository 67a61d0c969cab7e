"""What `rtun send` plans to send, before any connection: entries, destinations, totals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rtun.client import sources
from rtun.errors import RtunError, UsageError
from rtun.protocol import framing


def test_a_tree_becomes_entries_in_order_with_modes_and_totals(tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "sub").mkdir(parents=True)
    (top / "a.txt").write_bytes(b"12345")
    (top / "sub" / "b.bin").write_bytes(b"xy")
    (top / "sub" / "b.bin").chmod(0o600)
    (top / "link").symlink_to("a.txt")
    os.mkfifo(top / "fifo")
    dest, plan = sources.plan([str(top)], None)
    entries = [item.entry for item in plan.items]
    assert dest == ""
    assert [type(e).__name__ for e in entries] == [
        "DirEntry",
        "DirEntry",
        "FileEntry",
        "LinkEntry",
        "FileEntry",
    ]
    assert [e.path for e in entries] == ["top", "top/sub", "top/a.txt", "top/link", "top/sub/b.bin"]
    assert entries[3] == framing.LinkEntry("top/link", "a.txt")
    assert isinstance(entries[4], framing.FileEntry) and entries[4].mode == 0o600 and entries[4].size == 2
    assert (plan.total_bytes, plan.total_files) == (7, 2)
    assert plan.warnings == [f"skipped {top / 'fifo'}: not a regular file, directory or link"]


@pytest.mark.parametrize(
    "to, several, dest, name",
    [
        (None, False, "", "f.txt"),
        ("renamed.txt", False, "", "renamed.txt"),
        ("into/", False, "into", "f.txt"),
        ("deep/er/name.txt", False, "deep/er", "name.txt"),
        ("into", True, "into", "f.txt"),
    ],
)
def test_to_names_a_file_or_a_directory(tmp_path: Path, to, several, dest, name) -> None:
    source = tmp_path / "f.txt"
    source.write_text("x")
    given = [str(source)] + ([str(source)] if several else [])
    got_dest, plan = sources.plan(given, to)
    assert got_dest == dest and plan.items[0].entry.path == name


def test_standard_input_needs_a_name() -> None:
    with pytest.raises(UsageError):
        sources.plan(["-"], None)
    dest, plan = sources.plan(["-"], "out.log")
    entry = plan.items[0].entry
    assert isinstance(entry, framing.FileEntry) and entry.size is None and plan.items[0].source is None


def test_a_missing_source_is_an_error_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(RtunError, match="cannot read"):
        sources.plan([str(tmp_path / "nope")], None)
