"""The one sweep of leftovers: what no live process holds goes, whatever PID its name carries."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rtun.daemon.storage.leftovers import LINK_MAX_AGE, hold, private_directory, remove_leftovers


def test_unheld_part_files_go_anywhere_below_the_root_even_named_after_a_live_pid(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    reused = tmp_path / "a" / "b" / f".rtun-{os.getppid()}-00ff.part"  # a PID that is alive: reused
    own = tmp_path / f".rtun-{os.getpid()}-00ff.part"  # this process's own: perhaps not locked yet
    own.write_text("x")
    held = tmp_path / "a" / ".rtun-1-00ff.part"
    user_file = tmp_path / ".rtun-1-notes.txt"  # not a part name
    for path in (reused, held, user_file):
        path.write_text("x")
    fd = os.open(held, os.O_RDONLY)
    hold(fd)
    try:
        assert remove_leftovers(str(tmp_path), ".rtun-", ".part", recursive=True) == [str(reused)]
    finally:
        os.close(fd)
    assert held.exists() and user_file.exists() and own.exists()
    assert remove_leftovers(str(tmp_path), ".rtun-", ".part", recursive=True) == [str(held)]


def test_a_view_directory_goes_at_the_top_only_unless_held(tmp_path: Path) -> None:
    top = tmp_path / "rtun-view-1-abc"
    (top / "x").mkdir(parents=True)
    (top / "x" / "file.png").write_text("x")
    deeper = tmp_path / "other" / "rtun-view-1-abc"
    deeper.mkdir(parents=True)
    live = tmp_path / "rtun-view-2-def"
    live.mkdir()
    fd = os.open(live, os.O_RDONLY | os.O_DIRECTORY)
    hold(fd)
    try:
        assert remove_leftovers(str(tmp_path), "rtun-view-") == [str(top)]
    finally:
        os.close(fd)
    assert deeper.exists() and live.exists()


def test_a_temporary_link_is_a_leftover_only_once_old(tmp_path: Path) -> None:
    fresh, old = tmp_path / ".rtun-1-aa.part", tmp_path / ".rtun-1-bb.part"
    fresh.symlink_to("target")
    old.symlink_to("target")
    then = time.time() - LINK_MAX_AGE - 5
    os.utime(old, (then, then), follow_symlinks=False)
    assert remove_leftovers(str(tmp_path), ".rtun-", ".part") == [str(old)]
    assert os.path.lexists(fresh)


def test_a_private_directory_is_0700_and_held_until_its_descriptor_closes(tmp_path: Path) -> None:
    import stat
    import subprocess
    import sys

    path, fd = private_directory("rtun-view-", str(tmp_path))
    assert Path(path).parent == tmp_path and Path(path).name.startswith(f"rtun-view-{os.getpid()}-")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    # Another daemon's sweep (another PID: this process skips its own names) leaves it alone ...
    sweep = [
        sys.executable,
        "-c",
        "import sys; from rtun.daemon.storage.leftovers import remove_leftovers; "
        "print(remove_leftovers(sys.argv[1], 'rtun-view-'))",
        str(tmp_path),
    ]
    assert subprocess.run(sweep, capture_output=True, text=True, check=True).stdout.strip() == "[]"
    os.close(fd)
    # ... until this daemon lets go of it.
    assert subprocess.run(sweep, capture_output=True, text=True, check=True).stdout.strip() == repr([path])
