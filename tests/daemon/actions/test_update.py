"""`rtun send --update` end to end, through a real ssh -R forward to a real daemon: re-sending a
tree moves only the changed and the new files (bytes counted on the socket), replaces in place
(no ``name (1)`` copies), leaves identical files untouched (inode and mtime), and never replaces
a directory or a link."""

from __future__ import annotations

import json
import os
from pathlib import Path

from support.rtun import run_rtun
from support.sshd import Forward
from support.turns import TurnCounter

MIB = 1024 * 1024


def _tree(top: Path) -> Path:
    (top / "sub").mkdir(parents=True)
    (top / "a.txt").write_bytes(os.urandom(3 * MIB))  # unchanged: its bytes must not move again
    (top / "b.txt").write_text("first run\n")
    (top / "sub" / "c.txt").write_text("unchanged\n")
    (top / "big.bin").write_bytes(os.urandom(9 * MIB))  # ranged (8 MiB and up), unchanged
    os.symlink("a.txt", top / "link")
    return top


def _state(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.lstat().st_ino, p.lstat().st_mtime_ns)
        for p in root.rglob("*")
        if not p.is_dir() or p.is_symlink()
    }


def test_update_moves_only_what_changed_and_replaces_in_place(
    forward: Forward, remote_home: Path, short_tmp: Path, save_dir: Path
) -> None:
    results = _tree(short_tmp / "results")
    first = run_rtun(["send", str(results)], remote_home)
    assert first.returncode == 0, first.stderr
    saved = save_dir / "results"
    before = _state(saved)
    (results / "b.txt").write_text("second run, longer\n")
    (results / "new.txt").write_text("new\n")
    counter = TurnCounter(short_tmp / "count.sock", forward.remote)
    try:
        second = run_rtun(
            ["send", "--update", "--json", "--socket", str(counter.listen), str(results)], remote_home
        )
    finally:
        counter.close()
    assert second.returncode == 0, second.stderr
    document = json.loads(second.stdout)
    assert document["replaced"] == [str(saved / "b.txt")]
    assert sorted(document["saved"]) == [str(saved / "b.txt"), str(saved / "new.txt")]
    assert sorted(document["unchanged"]) == sorted(
        str(saved / n) for n in ("a.txt", "big.bin", "link", "sub/c.txt")
    )
    assert counter.client_bytes < 64 * 1024  # 3 MiB and 9 MiB files did not move again
    assert (saved / "b.txt").read_text() == "second run, longer\n"
    assert not [p for p in saved.rglob("*") if "(1)" in p.name]
    after = _state(saved)
    for name in ("a.txt", "big.bin", "link", "sub/c.txt"):
        assert after[name] == before[name], name  # not rewritten: the same inode, the same mtime
    assert after["b.txt"][0] != before["b.txt"][0]  # replaced by a new file, under its name

    # The human output says what happened to each file.
    (results / "sub" / "c.txt").write_text("changed too\n")
    third = run_rtun(["send", "--update", str(results)], remote_home)
    assert third.returncode == 0, third.stderr
    lines = third.stdout.decode().splitlines()
    assert f"replaced  {saved / 'sub' / 'c.txt'}" in lines
    assert f"unchanged {saved / 'b.txt'}" in lines
    assert (saved / "sub" / "c.txt").read_text() == "changed too\n"


def test_update_never_replaces_a_directory_or_a_link(
    forward: Forward, remote_home: Path, short_tmp: Path, save_dir: Path
) -> None:
    results = short_tmp / "results"
    results.mkdir()
    (results / "x.txt").write_text("file\n")
    (results / "y.txt").write_text("file\n")
    target = save_dir / "results"
    (target / "x.txt").mkdir(parents=True)  # a directory where a file would go
    outside = short_tmp / "outside.txt"
    outside.write_text("not yours\n")
    os.symlink(outside, target / "y.txt")  # a link out of the save directory
    done = run_rtun(["send", "--update", "--json", str(results)], remote_home)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["replaced"] == [] and document["unchanged"] == []
    assert (target / "x.txt").is_dir() and (target / "y.txt").is_symlink()
    assert outside.read_text() == "not yours\n"
    assert (target / "x (1).txt").read_text() == "file\n"  # beside them, as a plain send puts it
    assert (target / "y (1).txt").read_text() == "file\n"


def test_update_and_overwrite_are_one_or_the_other(remote_home: Path) -> None:
    done = run_rtun(["send", "--update", "--overwrite", "x"], remote_home)
    assert done.returncode == 2 and b"not allowed with" in done.stderr
