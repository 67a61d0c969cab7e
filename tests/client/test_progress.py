"""`rtun send`'s progress on a terminal, from the single-file client a server runs (no pip, no
tqdm of its own): the bundle carries tqdm; without a terminal, or with -q, nothing is drawn."""

from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
import zipfile
from pathlib import Path
from typing import List, Optional

import pytest

from rtun.session import bundle
from support.rtun import RtunDaemon, clean_env

SIZE = 160 * 1024 * 1024  # long enough (about a second) for tqdm to draw past its first 0.1 s


def _send_in_pty(argv: List[str], env: dict, cwd: Path) -> "tuple[int, str]":
    """Run ``argv`` with its stderr on a pseudo-terminal, as in a login; everything it drew."""
    master, slave = pty.openpty()
    # A terminal has a size (a bare pty is 0x0, where tqdm draws nothing at all).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(
        argv, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    drawn = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the terminal's last writer has gone
            break
        if not chunk:
            break
        drawn += chunk
    os.close(master)
    assert process.stdout is not None
    process.stdout.read()
    return process.wait(timeout=60), drawn.decode("utf-8", "replace")


@pytest.fixture
def app(short_tmp: Path) -> Path:
    path = short_tmp / "rtun.pyz"
    path.write_bytes(bundle.build())
    return path


@pytest.fixture
def big(short_tmp: Path) -> Path:
    path = short_tmp / "big.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def _argv(app: Path, daemon: RtunDaemon, *extra: str) -> List[str]:
    # -I: no site-packages, no PYTHONPATH: only what the zipapp carries, as on a bare server.
    return [sys.executable, "-I", str(app), "send", "-s", str(daemon.socket), *extra]


def test_the_bundle_carries_tqdm_and_its_licence(app: Path) -> None:
    names = zipfile.ZipFile(app).namelist()
    assert "tqdm/std.py" in names
    assert any(n.endswith(".dist-info/LICENCE") or n.endswith(".dist-info/LICENSE") for n in names)


def test_a_send_on_a_terminal_shows_bytes_rate_and_time_left(
    app: Path, big: Path, daemon: RtunDaemon, short_tmp: Path
) -> None:
    code, drawn = _send_in_pty(_argv(app, daemon, str(big)), clean_env(short_tmp), short_tmp)
    assert code == 0, drawn
    assert "/160M" in drawn  # the total, in binary units
    assert "B/s" in drawn  # the rate
    assert "<" in drawn and "00:0" in drawn  # elapsed<remaining
    assert (daemon.save_dir / "big.bin").stat().st_size == SIZE


@pytest.mark.parametrize("quiet", [["-q"], None])
def test_no_bar_with_q_or_without_a_terminal(
    app: Path, big: Path, daemon: RtunDaemon, short_tmp: Path, quiet: Optional[List[str]]
) -> None:
    if quiet:
        code, drawn = _send_in_pty(_argv(app, daemon, *quiet, str(big)), clean_env(short_tmp), short_tmp)
    else:
        done = subprocess.run(
            _argv(app, daemon, str(big)),
            env=clean_env(short_tmp),
            cwd=str(short_tmp),
            capture_output=True,
            timeout=60,
        )
        code, drawn = done.returncode, done.stderr.decode()
    assert code == 0, drawn
    assert "B/s" not in drawn and "\r" not in drawn
