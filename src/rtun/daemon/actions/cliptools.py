"""Which clipboard tool does a COPY, a PASTE or a listing of types, and its command line.

The tool is ``[clipboard] copy`` / ``paste`` if set, else the platform's: ``pbcopy`` and
``pbpaste`` on macOS (``osascript`` for images and types); ``wl-copy`` and ``wl-paste`` under
Wayland; ``xclip``, else ``xsel``, under X11. A type on a command line is always one of
``messages.IMAGE_TYPES`` (the wire refuses every other), never text from the socket.

Configured commands are text commands: images and listings are refused while one is set (it
may not know a type option, and guessing one would hand it data it would paste as text). xsel
holds text only: images and listings are refused with what to install.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Tuple

from rtun.daemon.actions.advice import setting as change
from rtun.protocol import messages
from rtun.protocol.messages import Rejected

COPY, PASTE, LIST = "copy", "paste", "list"


@dataclass(frozen=True)
class Tool:
    """A clipboard command: its argv (the program found on $PATH), what it needs in its
    environment, and for a built-in paste tool the error it writes when the clipboard is empty
    (read as an empty clipboard, as xsel and pbpaste answer it). ``via_file``: the data goes
    through a private file whose path ends the argv (osascript's images), not a pipe."""

    argv: Tuple[str, ...]
    name: str
    empty_error: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()
    via_file: bool = False


@dataclass(frozen=True)
class Builtin:
    copy: Tuple[str, ...]
    paste: Tuple[str, ...]
    empty_error: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()


UTF8 = (("LC_CTYPE", "UTF-8"),)
BUILTIN = {
    # pbcopy and pbpaste read and write text in the locale's encoding: a daemon started by
    # launchd has none, and turns every non-ASCII character into garbage.
    "pbcopy": Builtin(("pbcopy",), ("pbpaste",), None, UTF8),
    "wl-copy": Builtin(("wl-copy",), ("wl-paste", "--no-newline"), "Nothing is copied"),
    "xclip": Builtin(
        ("xclip", "-selection", "clipboard", "-in"),
        ("xclip", "-selection", "clipboard", "-out"),
        "not available",
    ),
    "xsel": Builtin(("xsel", "--clipboard", "--input"), ("xsel", "--clipboard", "--output")),
}

# macOS: the pasteboard class AppleScript reads and writes each image type as. WebP and BMP
# have none that other programs paste.
MAC_CLASSES = {"image/png": "PNGf", "image/jpeg": "JPEG", "image/gif": "GIFf"}
# The file's path is the script's argument, never part of its text.
_MAC_COPY = "on run argv\nset the clipboard to (read (POSIX file (item 1 of argv)) as «class {}»)\nend run"
_MAC_PASTE = (
    "on run argv\nset f to open for access (POSIX file (item 1 of argv)) with write permission\n"
    "try\nwrite (the clipboard as «class {}») to f\non error m\nclose access f\nerror m\nend try\n"
    "close access f\nend run"
)

Which = Callable[[str], Optional[str]]


def builtin_name(platform: str, environ: Mapping[str, str], which: Which, setting: str) -> str:
    """The built-in tool for this platform and session, or a refusal saying what to do."""
    if platform == "darwin":
        return "pbcopy"
    wayland, x11 = environ.get("WAYLAND_DISPLAY"), environ.get("DISPLAY")
    if wayland and which("wl-copy") and which("wl-paste"):
        return "wl-copy"
    if x11:
        for name in ("xclip", "xsel"):
            if which(name):
                return name
    if not wayland and not x11:
        raise Rejected(
            messages.E_OPEN,
            "no clipboard on your computer: its rtun daemon has no display (neither "
            "WAYLAND_DISPLAY nor DISPLAY is set); start the daemon from your desktop session, "
            f"or {change(setting)}",
        )
    wanted = (["wl-clipboard (wl-copy, wl-paste)"] if wayland else []) + (["xclip or xsel"] if x11 else [])
    raise Rejected(
        messages.E_OPEN,
        f"no clipboard tool found on your computer: install {' or '.join(wanted)} there, "
        f"or {change(setting)}",
    )


def _what(kind: str, mime: str) -> str:
    return "list the clipboard's types" if kind == LIST else f"{kind} {mime} images"


def typed_argv(name: str, kind: str, mime: str) -> Tuple[Tuple[str, ...], bool]:
    """The built-in ``name``'s argv to copy or paste an image of type ``mime``, or to list the
    clipboard's types; and whether the data goes through a file (see Tool)."""
    if name == "xclip":
        target = "TARGETS" if kind == LIST else mime
        return ("xclip", "-selection", "clipboard", "-t", target, "-in" if kind == COPY else "-out"), False
    if name == "wl-copy":
        if kind == LIST:
            return ("wl-paste", "--list-types"), False
        return (("wl-copy", "--type", mime) if kind == COPY else ("wl-paste", "--type", mime)), False
    if name == "pbcopy":
        if kind == LIST:
            return ("osascript", "-e", "clipboard info"), False
        if mime not in MAC_CLASSES:
            raise Rejected(
                messages.E_REFUSED_TYPE,
                f"cannot {kind} {mime} images on macOS (its clipboard takes PNG, JPEG and GIF "
                "from rtun): convert the image to PNG first",
            )
        script = (_MAC_COPY if kind == COPY else _MAC_PASTE).format(MAC_CLASSES[mime])
        return ("osascript",) + tuple(arg for line in script.split("\n") for arg in ("-e", line)), True
    raise Rejected(  # xsel: text only
        messages.E_OPEN,
        f"cannot {_what(kind, mime)}: xsel, the clipboard tool the daemon found on your computer, "
        "holds text only; install xclip there (or wl-clipboard under Wayland)",
    )


def choose(
    configured: Sequence[str],
    kind: str,
    platform: str = sys.platform,
    environ: Optional[Mapping[str, str]] = None,
    which: Which = shutil.which,
    mime: str = "",
) -> Tool:
    """The tool that copies (``kind`` "copy"), pastes ("paste") or lists the types ("list"):
    the configured command if there is one, else the built-in one. ``mime``: an image type, or
    "" (text)."""
    typed = kind == LIST or mime not in ("", messages.TEXT_TYPE)
    setting = f"[clipboard] {PASTE if kind == LIST else kind}"
    if configured:
        if typed:
            raise Rejected(
                messages.E_REFUSED_TYPE,
                f"cannot {_what(kind, mime)}: {setting} is set on your computer, and it is a text "
                f"command; to use the built-in tools (xclip, wl-clipboard, macOS) for images, "
                f"remove {setting} there and run `rtun server reload`",
            )
        program = which(configured[0])
        if program is None:
            raise Rejected(
                messages.E_OPEN,
                f"cannot use the clipboard on your computer: {configured[0]!r} "
                f"was not found there; install it, or {change(setting)}",
            )
        return Tool((program,) + tuple(configured[1:]), os.path.basename(configured[0]))
    name = builtin_name(platform, os.environ if environ is None else environ, which, setting)
    builtin = BUILTIN[name]
    via_file = False
    if typed:
        argv, via_file = typed_argv(name, kind, mime)
    else:
        argv = builtin.copy if kind == COPY else builtin.paste
    program = which(argv[0])
    if program is None:  # pbcopy, pbpaste and osascript come with macOS; the others found above
        raise Rejected(
            messages.E_OPEN,
            f"no clipboard tool found on your computer: {argv[0]!r} is missing; {change(setting)}",
        )
    empty = builtin.empty_error if kind == PASTE and not typed else None
    return Tool((program,) + argv[1:], argv[0], empty, builtin.env, via_file)
