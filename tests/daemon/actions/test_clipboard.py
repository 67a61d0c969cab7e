"""The clipboard action: which tool it picks, and how it runs one (real processes: stand-in tools
written in Python, and xclip and xsel on a real Xvfb). The end-to-end tests through sshd are in
tests/test_clipboard.py."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import pytest

from rtun.daemon.actions.clipboard import Clipboard, choose
from rtun.protocol import messages
from rtun.protocol.messages import Rejected
from support.wait import wait_until
from support.xvfb import Xvfb, running_xvfb

XCLIP_COPY = ("xclip", "-selection", "clipboard", "-in")
XCLIP_PASTE = ("xclip", "-selection", "clipboard", "-out")


def which_of(*present: str) -> Callable[[str], Optional[str]]:
    return lambda name: f"/usr/bin/{name}" if name in present else None


# ---- which tool ------------------------------------------------------------------------------


def test_macos_uses_pbcopy_and_pbpaste_whatever_the_environment() -> None:
    which = which_of("pbcopy", "pbpaste", "xclip")
    assert choose((), "copy", "darwin", {}, which).argv == ("/usr/bin/pbcopy",)
    assert choose((), "copy", "darwin", {}, which).env == (("LC_CTYPE", "UTF-8"),)
    assert choose((), "paste", "darwin", {"DISPLAY": ":0"}, which).argv == ("/usr/bin/pbpaste",)


def test_wayland_uses_wl_copy_and_wl_paste_without_its_added_newline() -> None:
    env = {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    which = which_of("wl-copy", "wl-paste", "xclip")
    assert choose((), "copy", "linux", env, which).argv == ("/usr/bin/wl-copy",)
    assert choose((), "paste", "linux", env, which).argv == ("/usr/bin/wl-paste", "--no-newline")


def test_wayland_without_wl_clipboard_uses_xwayland_through_xclip() -> None:
    env = {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    assert choose((), "copy", "linux", env, which_of("xclip")).argv == ("/usr/bin/xclip",) + XCLIP_COPY[1:]


def test_x11_prefers_xclip_then_xsel_and_ignores_wl_clipboard() -> None:
    env = {"DISPLAY": ":0", "WAYLAND_DISPLAY": ""}
    assert (
        choose((), "paste", "linux", env, which_of("xclip", "xsel", "wl-copy", "wl-paste")).argv
        == ("/usr/bin/xclip",) + XCLIP_PASTE[1:]
    )
    assert choose((), "copy", "linux", env, which_of("xsel")).argv == (
        "/usr/bin/xsel",
        "--clipboard",
        "--input",
    )
    assert choose((), "paste", "linux", env, which_of("xsel")).argv == (
        "/usr/bin/xsel",
        "--clipboard",
        "--output",
    )


@pytest.mark.parametrize("kind", ["copy", "paste"])
def test_no_display_is_refused_naming_the_setting(kind: str) -> None:
    with pytest.raises(Rejected) as refused:
        choose((), kind, "linux", {"DISPLAY": "", "HOME": "/h"}, which_of("xclip", "xsel"))
    assert refused.value.code == messages.E_OPEN
    assert "no display" in refused.value.text and "DISPLAY" in refused.value.text
    assert f"[clipboard] {kind}" in refused.value.text


@pytest.mark.parametrize(
    "env, wanted",
    [
        ({"DISPLAY": ":0"}, "install xclip or xsel"),
        ({"WAYLAND_DISPLAY": "wayland-0"}, "install wl-clipboard"),
    ],
)
def test_a_display_without_a_tool_says_what_to_install(env: Dict[str, str], wanted: str) -> None:
    with pytest.raises(Rejected) as refused:
        choose((), "copy", "linux", env, which_of())
    assert wanted in refused.value.text and "[clipboard] copy" in refused.value.text


def test_a_configured_command_wins_even_without_a_display() -> None:
    tool = choose(("tmux", "load-buffer", "-"), "copy", "linux", {}, which_of("tmux", "xclip"))
    assert tool.argv == ("/usr/bin/tmux", "load-buffer", "-") and tool.name == "tmux"
    assert tool.empty_error is None


def test_a_configured_command_that_is_missing_names_its_setting() -> None:
    with pytest.raises(Rejected) as refused:
        choose(("my-paste",), "paste", "linux", {"DISPLAY": ":0"}, which_of("xclip"))
    assert "'my-paste' was not found" in refused.value.text and "[clipboard] paste" in refused.value.text


# ---- running a tool (stand-ins written in Python) --------------------------------------------


def tool(directory: Path, name: str, body: str) -> Path:
    """An executable stand-in for a clipboard tool."""
    path = directory / name
    path.write_text(f"#!{sys.executable}\nimport os, sys, time\n{body}\n")
    path.chmod(0o755)
    return path


def run(coroutine):
    return asyncio.run(coroutine)


def refusal(coroutine) -> Rejected:
    with pytest.raises(Rejected) as refused:
        run(coroutine)
    return refused.value


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")  # a zombie no one reaped yet
    except FileNotFoundError:
        return True


def test_copy_returns_at_once_though_the_tool_left_a_process_serving_the_selection(tmp_path: Path) -> None:
    # As xclip does: read standard input, fork a process that stays (with every descriptor it
    # was given), and exit. A pipe that process held would keep the copy waiting for it.
    copier = tool(
        tmp_path,
        "copier",
        f"""
data = sys.stdin.buffer.read()
if os.fork():
    sys.exit(0)
open({str(tmp_path / "server.pid")!r}, "w").write(str(os.getpid()))
open({str(tmp_path / "copied")!r}, "wb").write(data)
time.sleep(30)
""",
    )
    data = b"\x00\xff binary \xe2\x9c\x93\r\n" * 1000
    started = time.monotonic()
    run(Clipboard([str(copier)], [], 1 << 20, timeout=10).copy(data))
    took = time.monotonic() - started
    pid = int(
        wait_until(lambda: (tmp_path / "server.pid").exists() and (tmp_path / "server.pid").read_text())
    )
    try:
        assert took < 5
        assert wait_until(
            lambda: (tmp_path / "copied").exists() and (tmp_path / "copied").read_bytes() == data
        )
        assert not gone(pid)  # what serves the selection is left running
    finally:
        os.kill(pid, 9)


def test_a_failing_tool_is_refused_with_its_status_and_first_error_line(tmp_path: Path) -> None:
    failing = tool(
        tmp_path,
        "failing",
        "sys.stdin.read(); sys.stderr.write('cannot open display\\x1b[31m\\nmore\\n'); sys.exit(3)",
    )
    clipboard = Clipboard([str(failing)], [str(failing)], 1000)
    for refused in (refusal(clipboard.copy(b"x")), refusal(clipboard.paste())):
        assert refused.code == messages.E_OPEN
        assert "failing exited with status 3: cannot open display?[31m" in refused.text
        assert "more" not in refused.text


def test_a_tool_that_exits_without_reading_its_input_is_a_clear_refusal(tmp_path: Path) -> None:
    quits = tool(tmp_path, "quits", "sys.exit(1)")
    refused = refusal(Clipboard([str(quits)], [], 1 << 30).copy(os.urandom(4 << 20)))
    assert "quits exited with status 1" in refused.text


def test_paste_returns_the_output_byte_for_byte_up_to_max_bytes(tmp_path: Path) -> None:
    data = bytes(range(256)) * 4
    source = tmp_path / "data"
    source.write_bytes(data)
    printer = tool(tmp_path, "printer", f"sys.stdout.buffer.write(open({str(source)!r}, 'rb').read())")
    assert run(Clipboard([], [str(printer)], len(data)).paste()) == data


def test_paste_past_max_bytes_is_refused_and_the_tool_killed(tmp_path: Path) -> None:
    endless = tool(
        tmp_path,
        "endless",
        f"""
open({str(tmp_path / "tool.pid")!r}, "w").write(str(os.getpid()))
while True:
    sys.stdout.buffer.write(b"y" * 65536)
""",
    )
    started = time.monotonic()
    refused = refusal(Clipboard([], [str(endless)], 1000, timeout=30).paste())
    assert time.monotonic() - started < 10
    assert refused.code == messages.E_TOO_LARGE
    assert "more than 1000 bytes" in refused.text and "[clipboard] max_bytes = 1000" in refused.text
    assert gone(int((tmp_path / "tool.pid").read_text()))


def test_a_hung_tool_is_killed_with_its_children_at_the_deadline(tmp_path: Path) -> None:
    hung = tool(
        tmp_path,
        "hung",
        f"""
child = os.fork()
if child == 0:
    time.sleep(60)
    sys.exit(0)
open({str(tmp_path / "pids")!r}, "w").write(f"{{os.getpid()}} {{child}}")
time.sleep(60)
""",
    )
    started = time.monotonic()
    refused = refusal(Clipboard([], [str(hung)], 1000, timeout=0.5).paste())
    assert time.monotonic() - started < 5
    assert refused.code == messages.E_OPEN and "hung did not answer within" in refused.text
    parent, child = (int(p) for p in (tmp_path / "pids").read_text().split())
    assert gone(parent)
    wait_until(lambda: gone(child), what="the tool's child to be killed with it")


def test_an_empty_clipboard_reads_as_empty_only_for_the_error_a_builtin_tool_says_it_with(
    tmp_path: Path,
) -> None:
    tool(tmp_path, "xclip", "sys.stderr.write('Error: target STRING not available\\n'); sys.exit(1)")
    tool(tmp_path, "mine", "sys.stderr.write('Error: target STRING not available\\n'); sys.exit(1)")
    env = {"DISPLAY": ":0"}

    def which(name: str) -> Optional[str]:
        return str(tmp_path / name) if (tmp_path / name).exists() else None

    assert run(Clipboard([], [], 1000, environ=env, which=which).paste()) == b""
    refused = refusal(Clipboard([], ["mine"], 1000, environ=env, which=which).paste())
    assert "mine exited with status 1: Error: target STRING not available" in refused.text
    (tmp_path / "xclip").unlink()
    tool(tmp_path, "xclip", 'sys.stderr.write("Error: Can\'t open display: :0\\n"); sys.exit(1)')
    refused = refusal(Clipboard([], [], 1000, environ=env, which=which).paste())
    assert "Can't open display" in refused.text


def test_a_tool_that_cannot_be_started_is_a_refusal(tmp_path: Path) -> None:
    not_executable = tmp_path / "plain"
    not_executable.write_text("no")
    refused = refusal(
        Clipboard([], [], 10, environ={"DISPLAY": ":0"}, which=lambda name: str(not_executable)).paste()
    )
    assert refused.code == messages.E_OPEN and "cannot start 'xclip'" in refused.text


# ---- on a real X server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def xvfb() -> Iterator[Xvfb]:
    with running_xvfb() as server:
        yield server


def on(server: Xvfb) -> Dict[str, str]:
    """The daemon's environment with the display of ``server`` (the tools run in it)."""
    return dict(os.environ, **server.env)


def without(*missing: str) -> Callable[[str], Optional[str]]:
    return lambda name: None if name in missing else shutil.which(name)


@pytest.mark.parametrize("missing", [(), ("xclip",)], ids=["xclip", "xsel"])
def test_copy_and_paste_on_a_real_x_clipboard(
    xvfb: Xvfb, missing: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    # A NUL ends xsel's text; xclip keeps every byte.
    data = "clé ✓ 表 🎉\t\x1b[1m bold\r\n".encode() + (b"\x00\xff\xfe" if not missing else b"")
    clipboard = Clipboard([], [], 1 << 20, environ=on(xvfb), which=without(*missing))
    caplog.set_level(logging.INFO, "rtun.daemon")

    run(clipboard.copy(data))

    xvfb.wait_clipboard(data)  # read independently, with xclip
    assert run(clipboard.paste()) == data
    tool_name = "xsel" if missing else "xclip"
    assert f"copied {len(data)} bytes to the clipboard with {tool_name}" in caplog.text
    assert f"pasted {len(data)} bytes from the clipboard with {tool_name}" in caplog.text
    assert "bold" not in caplog.text


def test_paste_of_what_another_program_copied(xvfb: Xvfb) -> None:
    xvfb.set_clipboard(b"from a local app \xe2\x9c\x93")
    assert run(Clipboard([], [], 1000, environ=on(xvfb)).paste()) == b"from a local app \xe2\x9c\x93"


def test_paste_of_an_empty_x_clipboard_is_empty() -> None:
    with running_xvfb() as fresh:  # its own server: nothing has ever owned its clipboard
        assert fresh.clipboard() is None
        assert run(Clipboard([], [], 1000, environ=on(fresh)).paste()) == b""
        assert run(Clipboard([], [], 1000, environ=on(fresh), which=without("xclip")).paste()) == b""


def test_pbcopy_and_pbpaste_get_a_utf8_locale(tmp_path: Path) -> None:
    # A daemon started by launchd has no locale, and pbcopy would mangle non-ASCII text.
    record = tmp_path / "locale"
    tool(tmp_path, "pbcopy", f"open({str(record)!r}, 'w').write(os.environ.get('LC_CTYPE', '-'))")
    tool(tmp_path, "pbpaste", "sys.stdout.write(os.environ.get('LC_CTYPE', '-'))")

    def which(name: str) -> Optional[str]:
        return str(tmp_path / name) if (tmp_path / name).exists() else None

    # PYTHONCOERCECLOCALE=0: the stand-ins, Python themselves, would otherwise rewrite LC_CTYPE.
    clipboard = Clipboard(
        [], [], 1000, platform="darwin", environ={"HOME": "/h", "PYTHONCOERCECLOCALE": "0"}, which=which
    )
    run(clipboard.copy(b"x"))
    assert record.read_text() == "UTF-8"
    assert run(clipboard.paste()) == b"UTF-8"


def test_a_copy_tool_that_never_reads_is_killed_at_the_deadline(tmp_path: Path) -> None:
    stuck = tool(
        tmp_path,
        "stuck",
        f"open({str(tmp_path / 'tool.pid')!r}, 'w').write(str(os.getpid())); time.sleep(60)",
    )
    started = time.monotonic()
    refused = refusal(Clipboard([str(stuck)], [], 1 << 30, timeout=0.5).copy(b"z" * (4 << 20)))  # > a pipe
    assert time.monotonic() - started < 4
    assert refused.code == messages.E_OPEN and "stuck did not finish within" in refused.text
    assert gone(int((tmp_path / "tool.pid").read_text()))


# ---- types -----------------------------------------------------------------------------------


def test_a_listing_of_types_is_bounded_and_printable(tmp_path: Path) -> None:
    lister = tool(
        tmp_path,
        "xclip",
        "print('TARGETS'); print('image/png'); print('image/png'); print('\\x1b[31mred\\x1b[0m');"
        "print('x' * 5000); [print(f'type{i}') for i in range(500)]",
    )
    clipboard = Clipboard(
        [], [], 1000, environ={"DISPLAY": ":0"}, which=lambda n: str(lister) if n == "xclip" else None
    )

    types = run(clipboard.list_types())

    assert types[:3] == ["TARGETS", "image/png", "[31mred[0m"]  # no escape reaches the server
    assert types[3] == "x" * 100 and len(types) == 64


def test_a_pasted_image_must_be_the_type_asked_for(tmp_path: Path) -> None:
    # An xclip that owns the selection answers any type with its data: text is no PNG.
    printer = tool(tmp_path, "xclip", "sys.stdout.write('plain text')")
    clipboard = Clipboard(
        [], [], 1000, environ={"DISPLAY": ":0"}, which=lambda n: str(printer) if n == "xclip" else None
    )

    refused = refusal(clipboard.paste("image/png"))

    assert "holds no image/png" in refused.text and "--list-types" in refused.text
    assert run(clipboard.paste()) == b"plain text"


def test_copy_checks_the_image_before_any_tool_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    copier = tool(tmp_path, "xclip", f"open({str(marker)!r}, 'w').close()")
    clipboard = Clipboard(
        [], [], 1000, environ={"DISPLAY": ":0"}, which=lambda n: str(copier) if n == "xclip" else None
    )

    refused = refusal(clipboard.copy(b"GIF89a...", "image/png"))

    assert refused.code == messages.E_REFUSED_TYPE and not marker.exists()
