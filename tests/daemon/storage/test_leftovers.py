"""The one sweep of leftovers keyed by PID: a dead daemon's files go, a live one's stay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rtun.daemon.storage.leftovers import owner_gone, pid_alive, remove_leftovers


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_dead_daemons_part_files_go_anywhere_below_the_root(tmp_path: Path) -> None:
    gone, alive = dead_pid(), os.getppid()
    (tmp_path / "a" / "b").mkdir(parents=True)
    dead_file = tmp_path / "a" / "b" / f".rtun-{gone}-00ff.part"
    live_file = tmp_path / "a" / f".rtun-{alive}-00ff.part"
    own_file = tmp_path / f".rtun-{os.getpid()}-00ff.part"
    user_file = tmp_path / f".rtun-{gone}-notes.txt"  # not a part name
    for path in (dead_file, live_file, own_file, user_file):
        path.write_text("x")
    assert remove_leftovers(str(tmp_path), ".rtun-", ".part", recursive=True) == [str(dead_file)]
    assert live_file.exists() and own_file.exists() and user_file.exists()


def test_a_dead_daemons_view_directory_goes_at_the_top_only(tmp_path: Path) -> None:
    gone = dead_pid()
    top = tmp_path / f"rtun-view-{gone}-abc"
    (top / "x").mkdir(parents=True)
    (top / "x" / "file.png").write_text("x")
    deeper = tmp_path / "other" / f"rtun-view-{gone}-abc"
    deeper.mkdir(parents=True)
    assert remove_leftovers(str(tmp_path), "rtun-view-") == [str(top)]
    assert not top.exists() and deeper.exists()


def test_names_without_a_pid_are_left_alone() -> None:
    assert not owner_gone(".rtun-abc-1.part", ".rtun-")
    assert not owner_gone(f".rtun-{os.getpid()}-1.part", ".rtun-")
    assert pid_alive(os.getpid()) and not pid_alive(dead_pid())
