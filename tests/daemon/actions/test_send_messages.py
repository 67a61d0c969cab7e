"""What `rtun send` says when it cannot finish, seen as a user sees it, through a real ssh -R
forward to a real daemon: not enough space (in human units, naming the reserve), and --json
after a partial failure (what was saved and what failed)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import pytest

from support.rtun import RtunDaemon, run_rtun
from support.sshd import Forward

MIB = 1024 * 1024


@pytest.fixture
def small_disk(save_dir: Path, mounts) -> Path:
    """The save directory on a 32 MiB tmpfs (skipped where mount is not allowed)."""
    mounts(save_dir, str(32 * MIB))
    return save_dir


@pytest.fixture
def daemon(start_daemon: Callable[..., RtunDaemon], small_disk: Path) -> RtunDaemon:
    return start_daemon(config=f"[send]\nmin_free_bytes = {24 * MIB}\n")


def test_no_space_for_a_10_mb_file_says_how_much_in_units_and_names_the_reserve(
    forward: Forward, remote_home: Path, short_tmp: Path, small_disk: Path
) -> None:
    source = short_tmp / "big.bin"
    source.write_bytes(os.urandom(10 * MIB))
    result = run_rtun(["send", str(source)], remote_home)
    message = result.stderr.decode()
    assert result.returncode == 4, message
    assert "not enough space" in message and "on your computer" in message
    assert "10 MiB needed" in message  # not "0 bytes needed" nor a count of bytes
    assert "24 MiB rtun keeps free" in message and "[send] min_free_bytes" in message
    assert "df" in message
    assert not [p for p in small_disk.iterdir() if p.name == "big.bin"]


def test_json_after_a_partial_failure_says_what_was_saved_and_what_failed(
    forward: Forward, remote_home: Path, short_tmp: Path, small_disk: Path
) -> None:
    (short_tmp / "small.txt").write_text("fits\n")
    (short_tmp / "big.bin").write_bytes(os.urandom(10 * MIB))  # does not fit above the reserve
    result = run_rtun(
        ["send", "--json", str(short_tmp / "small.txt"), str(short_tmp / "big.bin")], remote_home
    )
    assert result.returncode == 4, result.stderr
    document = json.loads(result.stdout)
    assert document["saved"] == [str(small_disk / "small.txt")]
    assert (small_disk / "small.txt").read_text() == "fits\n"
    assert document["failed"]["files"] == ["big.bin"]
    assert "not enough space" in document["failed"]["error"]
    assert "not enough space" in result.stderr.decode()
