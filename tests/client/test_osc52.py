"""Copying through the terminal (OSC 52): the sequence (pure, with tmux's and screen's
passthrough), and `rtun copy` writing it to a real pty that is its controlling terminal when no
daemon answers. With a daemon, `--osc52` is tested in tests/test_clipboard_types.py."""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path

import pytest

from rtun.client import osc52
from rtun.errors import RtunError
from support.rtun import RTUN, clean_env
from support.terminal import run_in_pty

ESC, BEL = b"\x1b", b"\x07"


def test_the_sequence_is_osc_52_of_the_base64_data() -> None:
    assert osc52.sequence(b"hi there", {}) == b"\x1b]52;c;aGkgdGhlcmU=\x07"
    assert osc52.sequence("✓\n".encode(), {"TERM": "xterm"}) == b"\x1b]52;c;4pyTCg==\x07"


def test_inside_tmux_it_is_wrapped_in_tmux_passthrough_with_escapes_doubled() -> None:
    wrapped = osc52.sequence(b"hi there", {"TMUX": "/tmp/tmux-1000/default,123,0"})
    assert wrapped == b"\x1bPtmux;\x1b\x1b]52;c;aGkgdGhlcmU=\x07\x1b\\"


def test_inside_screen_it_is_cut_into_dcs_strings_screen_accepts() -> None:
    data = bytes(range(256)) * 20
    wrapped = osc52.sequence(data, {"STY": "1234.pts-0.host"})
    pieces = re.findall(rb"\x1bP(.*?)\x1b\\", wrapped, re.DOTALL)
    assert b"".join(b"\x1bP" + p + b"\x1b\\" for p in pieces) == wrapped  # nothing outside them
    assert len(pieces) > 1 and all(len(b"\x1bP" + p + b"\x1b\\") <= 768 for p in pieces)
    assert b"".join(pieces) == osc52.sequence(data, {})


def test_the_largest_copy_makes_a_100000_byte_sequence() -> None:
    assert len(osc52.sequence(b"x" * osc52.MAX_DATA, {})) == 100_000
    assert len(osc52.sequence(b"x" * (osc52.MAX_DATA + 3), {})) > 100_000


def test_past_the_limit_nothing_is_written(tmp_path: Path) -> None:
    target = tmp_path / "terminal"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT)
    with pytest.raises(RtunError, match=f"at most {osc52.MAX_DATA} bytes"):
        osc52.write(fd, b"x" * (osc52.MAX_DATA + 1), {})
    assert target.read_bytes() == b""


# ---- rtun copy on a real terminal, with no daemon ---------------------------------------------


def _nowhere(home: Path) -> dict:
    return {"RTUN_SOCK": str(home / "no-daemon.sock")}


def _copied(tty: bytes) -> bytes:
    found = re.fullmatch(rb"\x1b\]52;c;([A-Za-z0-9+/=]*)\x07", tty)
    assert found, tty[:100]
    return base64.b64decode(found.group(1))


def test_with_no_daemon_copy_goes_through_the_terminal_and_says_so(tmp_path: Path) -> None:
    run = run_in_pty(["copy", "make", "test", "wörd"], tmp_path, **_nowhere(tmp_path))

    assert run.returncode == 0, run.stderr
    assert _copied(run.tty) == "make test wörd".encode()
    said = run.stderr.decode()
    assert said.count("\n") == 1 and "no rtun daemon answered" in said and "OSC 52" in said
    assert run.stdout == b""


def test_osc52_forced_without_a_daemon_writes_the_same(tmp_path: Path) -> None:
    run = run_in_pty(["copy", "--osc52", "forced"], tmp_path, **_nowhere(tmp_path))

    assert run.returncode == 0, run.stderr
    assert _copied(run.tty) == b"forced"
    assert "no rtun daemon" not in run.stderr.decode()


def test_inside_tmux_the_terminal_gets_the_passthrough(tmp_path: Path) -> None:
    run = run_in_pty(["copy", "in tmux"], tmp_path, TMUX="/tmp/tmux-0/default,1,0", **_nowhere(tmp_path))

    assert run.returncode == 0, run.stderr
    assert run.tty == b"\x1bPtmux;\x1b\x1b]52;c;" + base64.b64encode(b"in tmux") + b"\x07\x1b\\"


def test_too_much_for_the_terminal_is_one_line_and_a_failed_copy(tmp_path: Path) -> None:
    words = ["x" * (osc52.MAX_DATA + 1)]
    run = run_in_pty(["copy"] + words, tmp_path, **_nowhere(tmp_path))

    assert run.returncode == 3 and run.tty == b""
    said = run.stderr.decode()
    assert said.count("\n") == 1 and "no rtun daemon" in said and f"at most {osc52.MAX_DATA} bytes" in said

    forced = run_in_pty(["copy", "--osc52"] + words, tmp_path, **_nowhere(tmp_path))
    assert forced.returncode == 1 and forced.tty == b""
    assert "cannot copy through the terminal" in forced.stderr.decode()


def test_an_image_never_goes_through_the_terminal(tmp_path: Path) -> None:
    from support.images import png

    (tmp_path / "plot.png").write_bytes(png())
    run = run_in_pty(["copy", str(tmp_path / "plot.png")], tmp_path, **_nowhere(tmp_path))
    assert run.returncode == 3 and run.tty == b""

    forced = run_in_pty(["copy", "--osc52", "--type", "image/png", str(tmp_path / "plot.png")], tmp_path)
    assert forced.returncode == 2 and forced.tty == b""
    assert "--osc52 copies text only" in forced.stderr.decode()


def test_without_a_terminal_it_is_the_usual_no_daemon_failure(tmp_path: Path) -> None:
    done = subprocess.run(
        RTUN + ["copy", "text"],
        env=clean_env(tmp_path, **_nowhere(tmp_path)),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        start_new_session=True,  # no controlling terminal: /dev/tty does not open
        timeout=60,
    )

    assert done.returncode == 3
    said = done.stderr.decode()
    assert said.startswith("rtun copy: no rtun daemon") and "OSC 52" not in said and said.count("\n") == 1
