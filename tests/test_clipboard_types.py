"""Images on the clipboard end to end, and `rtun copy --osc52` beside a daemon that answers: the
real client on the "server" side, the real sshd and ssh -R forward, a real daemon on a real X
server (Xvfb) whose clipboard the tests read and set themselves with xclip. The fixtures are
tests/test_clipboard.py's."""

# ruff: noqa: F811  (the fixtures imported from test_clipboard are found by name, as arguments)
from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Optional

import pytest

from rtun.client import requests
from rtun.errors import RemoteError
from rtun.protocol import messages
from support.images import GIF, png
from support.raw import RawClient
from support.rtun import run_rtun
from support.terminal import run_in_pty
from support.turns import TurnCounter
from support.wait import wait_until
from support.xvfb import XCLIP, Xvfb
from test_clipboard import PASTE_ON, daemon, daemon_config, daemon_env, err, xvfb  # noqa: F401

PLOT = png(seed=1)


def x_clipboard(x: Xvfb, target: str) -> Optional[bytes]:
    """The CLIPBOARD selection as ``target``, read with xclip; None when it has no such target."""
    done = subprocess.run(
        [XCLIP, "-selection", "clipboard", "-t", target, "-out"],
        env=dict(os.environ, **x.env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=10,
    )
    return done.stdout if done.returncode == 0 else None


def targets(x: Xvfb) -> list:
    """The types the clipboard's owner offers (an xclip owner hands its data out as any type
    it is asked for, so only this tells what it holds)."""
    return (x_clipboard(x, "TARGETS") or b"").split()


def wait_x_clipboard(x: Xvfb, target: str, expected: bytes) -> None:
    wait_until(lambda: x_clipboard(x, target) == expected, timeout=10, what=f"the clipboard to hold {target}")


def set_x_image(x: Xvfb, data: bytes, target: str = "image/png") -> None:
    subprocess.run(
        [XCLIP, "-selection", "clipboard", "-t", target, "-in"],
        env=dict(os.environ, **x.env),
        input=data,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=10,
        check=True,
    )
    wait_x_clipboard(x, target, data)


def test_copy_type_image_png_puts_the_image_on_the_x_clipboard(forward, remote_home, xvfb, daemon):
    result = run_rtun(["copy", "--type", "image/png"], remote_home, input=PLOT)

    assert result.returncode == 0, err(result)
    assert result.stderr == b""
    wait_x_clipboard(xvfb, "image/png", PLOT)  # byte for byte, as another program reads it
    assert b"image/png" in targets(xvfb)
    assert f"copied {len(PLOT)} bytes of image/png to the clipboard with xclip" in daemon.log_text()


def test_copy_of_an_image_file_tells_its_type_from_its_content(forward, remote_home, xvfb):
    (remote_home / "plot.dat").write_bytes(PLOT)  # no telling extension
    (remote_home / "anim").write_bytes(GIF)

    assert run_rtun(["copy", str(remote_home / "plot.dat")], remote_home).returncode == 0
    wait_x_clipboard(xvfb, "image/png", PLOT)
    assert run_rtun(["copy", str(remote_home / "anim")], remote_home).returncode == 0
    wait_x_clipboard(xvfb, "image/gif", GIF)

    # A text file named on the command line is not read: the words are the text, as ever.
    (remote_home / "notes.txt").write_text("the file's text")
    assert run_rtun(["copy", str(remote_home / "notes.txt")], remote_home).returncode == 0
    xvfb.wait_clipboard(str(remote_home / "notes.txt").encode())


@pytest.mark.parametrize("daemon_config", [PASTE_ON], ids=["paste on"])
def test_paste_type_image_png_gives_the_image_another_program_copied(forward, remote_home, xvfb):
    set_x_image(xvfb, PLOT)

    result = run_rtun(["paste", "--type", "image/png"], remote_home)

    assert result.returncode == 0, err(result)
    assert result.stdout == PLOT

    listed = run_rtun(["paste", "--list-types"], remote_home)
    assert listed.returncode == 0, err(listed)
    assert "image/png" in listed.stdout.decode().splitlines()

    missing = run_rtun(["paste", "--type", "image/gif"], remote_home)
    assert missing.returncode == 4 and missing.stdout == b""
    assert "holds no image/gif" in err(missing) and err(missing).count("\n") == 1


def test_listing_the_types_is_paste_and_off_by_default(forward, remote_home, xvfb):
    result = run_rtun(["paste", "--list-types"], remote_home)

    assert result.returncode == 4 and result.stdout == b""
    assert "[actions] paste = true" in err(result)


def test_data_that_is_not_the_image_it_claims_is_refused_and_the_clipboard_left_alone(
    forward, remote_home, xvfb
):
    xvfb.set_clipboard(b"what was there")

    result = run_rtun(["copy", "--type", "image/png"], remote_home, input=b"not a PNG at all")
    assert result.returncode == 1
    assert err(result) == "rtun copy: standard input is not a image/png image (it does not begin as one)\n"

    # The daemon checks for itself: a client that skips the check is refused there.
    with pytest.raises(RemoteError) as refused:
        requests.copy(str(forward.remote), GIF, "image/png")
    assert refused.value.code == messages.E_REFUSED_TYPE
    assert "not a image/png image" in refused.value.message and "left alone" in refused.value.message
    assert xvfb.clipboard() == b"what was there"
    assert b"image/png" not in targets(xvfb)


def test_a_type_outside_the_fixed_list_is_refused(forward, remote_home, xvfb):
    xvfb.set_clipboard(b"unchanged")

    result = run_rtun(["copy", "--type", "image/svg+xml"], remote_home, input=b"<svg/>")
    assert result.returncode == 2 and "invalid choice" in err(result)

    with RawClient(forward.remote) as raw:
        reply = raw.command('COPY {"bytes":3,"type":"-t TARGETS"}')
    assert reply.startswith(b"ERROR 113 unknown clipboard type")
    assert xvfb.clipboard() == b"unchanged"


@pytest.mark.parametrize("daemon_config", [PASTE_ON], ids=["paste on"])
@pytest.mark.parametrize("daemon_env", ["only xsel"], indirect=True)
def test_with_only_xsel_images_are_refused_naming_what_to_install(forward, remote_home, xvfb):
    xvfb.set_clipboard(b"text stays")

    for args, data in ((["copy", "--type", "image/png"], PLOT), (["paste", "--type", "image/png"], None)):
        result = run_rtun(args, remote_home, input=data)

        assert result.returncode == 4 and result.stdout == b""
        message = err(result)
        assert message.count("\n") == 1 and "xsel" in message and "install xclip" in message
    assert xvfb.clipboard() == b"text stays"


@pytest.mark.parametrize("daemon_config", ['[clipboard]\ncopy = ["xclip", "-selection", "clipboard"]\n'])
def test_a_configured_text_command_is_never_handed_an_image(forward, remote_home, xvfb):
    xvfb.set_clipboard(b"text stays")

    result = run_rtun(["copy", "--type", "image/png"], remote_home, input=PLOT)

    assert result.returncode == 4
    assert "[clipboard] copy is set" in err(result) and "text command" in err(result)
    assert xvfb.clipboard() == b"text stays"


def test_an_older_daemon_gets_no_image_and_the_client_says_why(forward, remote_home, xvfb, short_tmp: Path):
    # The real daemon, its HELLO reply without the feature word: as a daemon before clipboard
    # types answers (it would read the header without its type, and paste the PNG as text).
    relay = TurnCounter(
        short_tmp / "old.sock", forward.remote, rewrite=lambda data: data.replace(b" clipboard-types", b"")
    )
    xvfb.set_clipboard(b"unchanged")
    try:
        result = run_rtun(["copy", "-s", str(relay.listen), "--type", "image/png"], remote_home, input=PLOT)
        listed = run_rtun(["paste", "-s", str(relay.listen), "--list-types"], remote_home)
        text = run_rtun(["copy", "-s", str(relay.listen), "text still goes"], remote_home)
    finally:
        relay.close()

    assert result.returncode == 1
    assert err(result) == (
        "rtun copy: the rtun daemon on your computer is too old for image/png on the clipboard: "
        "update rtun there\n"
    )
    assert listed.returncode == 1 and "too old" in err(listed)
    assert text.returncode == 0, err(text)
    xvfb.wait_clipboard(b"text still goes")
    assert b"image/png" not in targets(xvfb)


def test_osc52_goes_through_the_terminal_even_when_the_daemon_answers(forward, remote_home, xvfb, daemon):
    xvfb.set_clipboard(b"left alone")

    run = run_in_pty(["copy", "--osc52", "via the terminal"], remote_home)

    assert run.returncode == 0, run.stderr
    assert run.tty == b"\x1b]52;c;" + base64.b64encode(b"via the terminal") + b"\x07"
    assert "no rtun daemon" not in run.stderr.decode() and "OSC 52" in run.stderr.decode()
    assert xvfb.clipboard() == b"left alone"
    assert "copied" not in daemon.log_text()
