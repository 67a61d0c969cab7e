"""Which tool copies, pastes or lists an image type, and its command line (pure: the programs
are looked up in a stand-in $PATH). Real xclip on Xvfb: tests/test_clipboard_types.py."""

from __future__ import annotations

from typing import Callable, Optional

import pytest

from rtun.daemon.actions.cliptools import choose
from rtun.protocol import messages
from rtun.protocol.messages import Rejected

X11 = {"DISPLAY": ":0", "WAYLAND_DISPLAY": ""}
WAYLAND = {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}


def which_of(*present: str) -> Callable[[str], Optional[str]]:
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_xclip_gets_the_type_as_its_target() -> None:
    which = which_of("xclip")
    assert choose((), "copy", "linux", X11, which, "image/png").argv == (
        "/usr/bin/xclip", "-selection", "clipboard", "-t", "image/png", "-in",
    )  # fmt: skip
    assert choose((), "paste", "linux", X11, which, "image/jpeg").argv[-3:] == ("-t", "image/jpeg", "-out")
    assert choose((), "list", "linux", X11, which).argv[-3:] == ("-t", "TARGETS", "-out")
    # Text keeps the command line it always had.
    assert choose((), "copy", "linux", X11, which, "text/plain").argv == (
        "/usr/bin/xclip", "-selection", "clipboard", "-in",
    )  # fmt: skip


def test_wl_clipboard_gets_the_type_and_lists_with_wl_paste() -> None:
    which = which_of("wl-copy", "wl-paste")
    assert choose((), "copy", "linux", WAYLAND, which, "image/webp").argv == (
        "/usr/bin/wl-copy", "--type", "image/webp",
    )  # fmt: skip
    assert choose((), "paste", "linux", WAYLAND, which, "image/png").argv == (
        "/usr/bin/wl-paste", "--type", "image/png",
    )  # fmt: skip
    assert choose((), "list", "linux", WAYLAND, which).argv == ("/usr/bin/wl-paste", "--list-types")


def test_macos_copies_images_with_osascript_through_a_file_named_as_its_argument() -> None:
    which = which_of("pbcopy", "pbpaste", "osascript")
    tool = choose((), "copy", "darwin", {}, which, "image/png")
    assert tool.argv[0] == "/usr/bin/osascript" and tool.via_file
    script = "\n".join(tool.argv[2::2])
    assert "«class PNGf»" in script and "item 1 of argv" in script
    assert all(flag == "-e" for flag in tool.argv[1::2])
    assert "«class JPEG»" in "\n".join(choose((), "paste", "darwin", {}, which, "image/jpeg").argv)
    assert choose((), "list", "darwin", {}, which).argv == ("/usr/bin/osascript", "-e", "clipboard info")
    with pytest.raises(Rejected, match="convert the image to PNG"):
        choose((), "copy", "darwin", {}, which, "image/webp")


@pytest.mark.parametrize("kind, mime", [("copy", "image/png"), ("paste", "image/gif"), ("list", "")])
def test_xsel_holds_text_only_and_says_what_to_install(kind: str, mime: str) -> None:
    with pytest.raises(Rejected) as refused:
        choose((), kind, "linux", X11, which_of("xsel"), mime)
    assert "xsel" in refused.value.text and "install xclip" in refused.value.text


@pytest.mark.parametrize("kind, mime", [("copy", "image/png"), ("paste", "image/bmp"), ("list", "")])
def test_a_configured_command_is_text_only(kind: str, mime: str) -> None:
    with pytest.raises(Rejected) as refused:
        choose(("my-clip", "--in"), kind, "linux", X11, which_of("my-clip", "xclip"), mime)
    assert refused.value.code == messages.E_REFUSED_TYPE
    assert "text command" in refused.value.text and "[clipboard]" in refused.value.text
    # Text still goes to it.
    assert choose(("my-clip", "--in"), "copy", "linux", X11, which_of("my-clip")).argv == (
        "/usr/bin/my-clip",
        "--in",
    )


def test_macos_clipboard_info_is_read_as_mime_types() -> None:
    from rtun.daemon.actions.clipboard import _mac_types

    info = "«class PNGf», 4096, «class 8BPS», 9000, «class utf8», 12, string, 12"
    assert _mac_types(info) == ["text/plain", "image/png"]
    assert _mac_types("«class JPEG», 10") == ["image/jpeg"]
