"""`rtun copy` and `rtun paste` end to end: the real client on the "server" side, the real sshd
and ssh -R forward, and a real daemon whose clipboard is that of a real X server (Xvfb), which
the tests read and set themselves with xclip."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from rtun.errors import RtunError
from support.rtun import RtunDaemon, run_rtun
from support.xvfb import Xvfb, running_xvfb

UNICODE = "Grüße, ✓ 表 🎉 עברית\n\tindented\n".encode()
BINARYISH = b"\x00\x01\x7f\xff\xfe invalid \xc3( UTF-8\r\n\x1b[31mred\x1b[0m\n"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def xvfb() -> Iterator[Xvfb]:
    with running_xvfb() as server:
        yield server


@pytest.fixture
def daemon_config() -> str:
    """The daemon's config file for one test (parametrize it)."""
    return ""


@pytest.fixture
def daemon_env(request: pytest.FixtureRequest, xvfb: Xvfb, short_tmp: Path) -> Iterator[dict]:
    """The daemon's environment: on the Xvfb display. Indirect parameters: ``only xsel`` adds a
    $PATH with xsel and no xclip, ``no display`` takes the display away, ``fresh display`` is
    an X server of its own whose clipboard nothing has ever owned."""
    how = getattr(request, "param", "")
    if how == "no display":
        yield {"DISPLAY": "", "WAYLAND_DISPLAY": ""}
    elif how == "only xsel":
        directory = short_tmp / "bin"
        directory.mkdir()
        os.symlink(shutil.which("xsel"), directory / "xsel")
        yield dict(xvfb.env, PATH=str(directory))
    elif how == "fresh display":
        with running_xvfb() as fresh:
            yield fresh.env
    else:
        yield xvfb.env


@pytest.fixture
def daemon(start_daemon, daemon_config: str, daemon_env: dict) -> RtunDaemon:
    """Overrides tests/conftest.py's: the daemon on the Xvfb display, with its config file."""
    return start_daemon(env=daemon_env, config=daemon_config)


PASTE_ON = "[actions]\npaste = true\n"


def err(result) -> str:
    return result.stderr.decode(errors="replace")


def test_copy_puts_standard_input_on_the_local_clipboard(forward, remote_home, xvfb, daemon):
    result = run_rtun(["copy"], remote_home, input=UNICODE)

    assert result.returncode == 0, err(result)
    assert result.stdout == b"" and result.stderr == b""
    xvfb.wait_clipboard(UNICODE)
    log = daemon.log_text()
    assert f"copied {len(UNICODE)} bytes to the clipboard with xclip" in log
    assert "indented" not in log and "Grüße" not in log  # sizes only, never the text


def test_copy_takes_the_text_from_its_arguments(forward, remote_home, xvfb):
    result = run_rtun(["copy", "make", "test", "--", "-k", "wörd"], remote_home)

    assert result.returncode == 0, err(result)
    xvfb.wait_clipboard("make test -k wörd".encode())
    # A lone -, as for send and notify, is standard input.
    assert run_rtun(["copy", "-"], remote_home, input=b"from stdin").returncode == 0
    xvfb.wait_clipboard(b"from stdin")


def test_copy_keeps_every_byte_of_binary_ish_text(forward, remote_home, xvfb):
    result = run_rtun(["copy"], remote_home, input=BINARYISH)

    assert result.returncode == 0, err(result)
    xvfb.wait_clipboard(BINARYISH)


def test_paste_is_refused_by_default_and_says_how_to_turn_it_on(forward, remote_home, xvfb, daemon):
    xvfb.set_clipboard(b"my bank password")

    result = run_rtun(["paste"], remote_home)

    assert result.returncode == 4
    assert result.stdout == b""
    message = err(result)
    assert message.startswith("rtun paste: paste is off") and message.count("\n") == 1
    assert "[actions] paste = true" in message and "root" in message
    assert "password" not in daemon.log_text()


@pytest.mark.parametrize("daemon_config", [PASTE_ON], ids=["paste on"])
def test_paste_prints_the_local_clipboard_exactly_when_turned_on(forward, remote_home, xvfb, daemon):
    for data in (UNICODE, BINARYISH, b"no newline at the end"):
        xvfb.set_clipboard(data)

        result = run_rtun(["paste"], remote_home)

        assert result.returncode == 0, err(result)
        assert result.stdout == data
    assert f"pasted {len(BINARYISH)} bytes from the clipboard with xclip" in daemon.log_text()
    assert "red" not in daemon.log_text()


@pytest.mark.parametrize("daemon_config", [PASTE_ON], ids=["paste on"])
def test_what_copy_puts_there_paste_gives_back(forward, remote_home, xvfb):
    data = UNICODE + BINARYISH
    assert run_rtun(["copy"], remote_home, input=data).returncode == 0
    xvfb.wait_clipboard(data)

    result = run_rtun(["paste"], remote_home)

    assert result.returncode == 0, err(result)
    assert result.stdout == data


@pytest.mark.parametrize("daemon_config", ["[actions]\ncopy = false\n"], ids=["copy off"])
def test_copy_is_refused_when_turned_off_and_the_clipboard_is_left_alone(forward, remote_home, xvfb):
    xvfb.set_clipboard(b"what was there")

    result = run_rtun(["copy", "replacement"], remote_home)

    assert result.returncode == 4
    assert "copy is turned off" in err(result) and "[actions] copy = true" in err(result)
    assert xvfb.clipboard() == b"what was there"


@pytest.mark.parametrize(
    "daemon_config",
    ["[clipboard]\nmax_bytes = 1000\n[actions]\npaste = true\n"],
    ids=["max_bytes 1000, paste on"],
)
def test_the_daemons_size_limit_refuses_copy_and_paste_past_it(forward, remote_home, xvfb):
    xvfb.set_clipboard(b"before")

    result = run_rtun(["copy"], remote_home, input=b"x" * 1001)

    assert result.returncode == 4
    assert (
        "1001 bytes is more than the clipboard takes on your computer ([clipboard] max_bytes = 1000)"
        in err(result)
    )
    assert xvfb.clipboard() == b"before"

    assert run_rtun(["copy"], remote_home, input=b"y" * 1000).returncode == 0  # at the limit: fine
    xvfb.wait_clipboard(b"y" * 1000)

    xvfb.set_clipboard(b"z" * 1001)
    result = run_rtun(["paste"], remote_home)
    assert result.returncode == 4 and result.stdout == b""
    assert "more than 1000 bytes" in err(result) and "[clipboard] max_bytes = 1000" in err(result)


def test_copy_refuses_standard_input_past_its_own_limit_before_sending(forward, remote_home, xvfb, daemon):
    xvfb.set_clipboard(b"unchanged")

    result = run_rtun(["copy"], remote_home, input=b"\n" * (64 * MIB + 1))

    assert result.returncode == 1
    assert err(result) == "rtun copy: standard input holds more than 64 MiB, more than rtun copy takes\n"
    assert xvfb.clipboard() == b"unchanged"
    assert "clipboard" not in daemon.log_text()  # no request reached it


@pytest.mark.parametrize("daemon_config", [PASTE_ON], ids=["paste on"])
@pytest.mark.parametrize("daemon_env", ["only xsel"], indirect=True)
def test_without_xclip_the_daemon_uses_xsel(forward, remote_home, xvfb, daemon):
    assert run_rtun(["copy"], remote_home, input=UNICODE).returncode == 0
    xvfb.wait_clipboard(UNICODE)  # read with xclip: the daemon has none
    xvfb.set_clipboard(b"set by xclip, read by xsel")

    result = run_rtun(["paste"], remote_home)

    assert result.stdout == b"set by xclip, read by xsel", err(result)
    assert "with xsel" in daemon.log_text() and "with xclip" not in daemon.log_text()


@pytest.mark.parametrize("daemon_config", [PASTE_ON], ids=["paste on"])
@pytest.mark.parametrize("daemon_env", ["fresh display"], indirect=True)
def test_paste_of_an_empty_clipboard_prints_nothing_and_succeeds(forward, remote_home):
    result = run_rtun(["paste"], remote_home)

    assert result.returncode == 0, err(result)
    assert result.stdout == b""


@pytest.mark.parametrize("daemon_env", ["no display"], indirect=True)
def test_a_daemon_without_a_display_refuses_naming_the_setting(forward, remote_home):
    result = run_rtun(["copy", "text"], remote_home)

    assert result.returncode == 4
    assert "no display" in err(result) and "[clipboard] copy" in err(result)


# ---- the client's own bounds (pure) ------------------------------------------------------------


def test_the_client_reads_standard_input_up_to_its_limit_and_no_further():
    import io

    from rtun.commands.clipboard import read_bounded

    assert read_bounded(io.BytesIO(b"x" * 10), limit=10) == b"x" * 10
    stream = io.BytesIO(b"x" * 100)
    with pytest.raises(RtunError, match="standard input holds more than 10 bytes"):
        read_bounded(stream, limit=10)
    assert stream.tell() == 11  # stopped reading one byte past the limit


def test_paste_keeps_nothing_past_its_limit():
    from rtun.commands.clipboard import _Collected

    collected = _Collected(limit=10)
    collected(b"12345")
    collected(b"67890")
    with pytest.raises(RtunError, match="the clipboard holds more than 10 bytes"):
        collected(b"!")
    assert b"".join(collected.pieces) == b"1234567890"
