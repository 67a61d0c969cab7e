"""`rtun copy` and `rtun paste`: your computer's clipboard, from the server.

Both hold the data in memory, bounded: the daemon has a limit of its own ([clipboard]
max_bytes, 4 MiB by default), which it checks before any data is sent. Text by default; an
image when --type names one or when copy's one argument is an image file (told by its first
bytes). With no daemon to answer, copy goes through the terminal (OSC 52, ``client/osc52``).
"""

from __future__ import annotations

import argparse
import sys

from rtun.client import requests
from rtun.command import Command, socket_option
from rtun.errors import NoDaemonError, RtunError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import BinaryIO, List, Optional, Tuple, Union

TEXT = "text/plain"

MAX_BYTES = 64 * 1024 * 1024  # what either command holds in memory here


def read_bounded(stream: "BinaryIO", limit: int = MAX_BYTES, what: str = "standard input") -> bytes:
    """All of ``stream``, or an error as soon as it has more than ``limit`` bytes."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise RtunError(f"{what} holds more than {_size(limit)}, more than rtun copy takes")
    return data


def _size(nbytes: int) -> str:
    return f"{nbytes // (1024 * 1024)} MiB" if nbytes % (1024 * 1024) == 0 else f"{nbytes} bytes"


def _types() -> "List[str]":
    from rtun.protocol import messages

    return list(messages.CLIPBOARD_TYPES[1:])


def _copy_arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument(
        "text",
        nargs="*",
        metavar="TEXT",
        help="the text to copy, words joined with spaces (none, or -, reads standard input); "
        "one word naming an image file (PNG, JPEG, GIF, WebP, BMP: told by its first bytes) "
        "copies the image",
    )
    parser.add_argument(
        "--type",
        choices=_types(),
        metavar="TYPE",
        help="what the data is: text/plain (the default) or an image type, "
        f"{', '.join(_types()[1:])}; the data must be one",
    )
    parser.add_argument(
        "--osc52",
        action="store_true",
        help="copy through the terminal (OSC 52) even when a daemon answers; text only, at most "
        f"{_osc52_limit()} bytes (a 100,000-byte sequence: hterm's limit). Without it, rtun copy "
        "does this only when no daemon answers and a terminal is attached",
    )


def _osc52_limit() -> str:
    from rtun.client.osc52 import MAX_DATA

    return f"{MAX_DATA:,}"


def _image_file(path: str) -> "Optional[str]":
    """The image type of the file at ``path`` (by its first bytes), or None: not an image, or
    no file."""
    import os

    from rtun.protocol.imagetypes import SNIFF_BYTES, sniff

    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as source:
            return sniff(source.read(SNIFF_BYTES))
    except OSError:
        return None


def _to_copy(args: argparse.Namespace) -> "Tuple[bytes, str]":
    """The data and its type ("" for text) that the command line asks to copy."""
    import os

    mime = "" if args.type in (None, TEXT) else args.type
    words = [] if args.text == ["-"] else args.text
    if len(words) == 1 and (mime or _image_file(words[0])):
        path = words[0]
        try:
            with open(path, "rb") as source:
                data = read_bounded(source, what=path)
        except OSError as exc:
            raise RtunError(f"cannot read {path}: {exc.strerror or exc}") from None
        what = path
        mime = mime or _image_file(path) or ""
    elif words:
        if mime:
            raise UsageError(f"--type {mime} copies one image file or standard input, not words")
        return os.fsencode(" ".join(words)), ""  # the bytes as typed, even if not UTF-8
    elif sys.stdin is None:
        raise RtunError("no standard input to copy (give the text as arguments)")
    else:
        data, what = read_bounded(sys.stdin.buffer), "standard input"
    if mime:
        from rtun.protocol.imagetypes import is_image

        if not is_image(data, mime):
            raise RtunError(f"{what} is not a {mime} image (it does not begin as one)")
    return data, mime


def _copy(args: argparse.Namespace) -> int:
    data, mime = _to_copy(args)
    if args.osc52:
        if mime:
            raise UsageError("--osc52 copies text only: terminals take no images through OSC 52")
        return _through_terminal(data, because="")
    try:
        requests.copy(args.socket, data, mime)
    except NoDaemonError as exc:
        if mime:
            raise
        return _through_terminal(data, because=exc)
    return 0


def _through_terminal(data: bytes, because: "Union[str, NoDaemonError]") -> int:
    """Copy with OSC 52 (``because`` the daemon did not answer, or "" when asked to)."""
    import os

    from rtun.client import osc52

    fd = osc52.open_terminal()
    if isinstance(because, NoDaemonError):
        if fd < 0:
            raise because  # no terminal either: the usual failure
        if len(data) > osc52.MAX_DATA:
            os.close(fd)
            raise NoDaemonError(f"{because.message}; nor through the terminal: {osc52.too_large(len(data))}")
    elif fd < 0:
        raise RtunError("cannot copy through the terminal: no terminal is attached (/dev/tty)")
    osc52.write(fd, data, os.environ)
    why = "no rtun daemon answered; " if because else ""
    sys.stderr.write(
        f"rtun copy: {why}copied {len(data)} bytes through your terminal (OSC 52), if it allows that\n"
    )
    return 0


class _Collected:
    """The pasted pieces, bounded; written out only once the whole clipboard has arrived."""

    def __init__(self, limit: int = MAX_BYTES) -> None:
        self.limit = limit
        self.pieces: "List[bytes]" = []
        self.size = 0

    def __call__(self, piece: bytes) -> None:
        self.size += len(piece)
        if self.size > self.limit:
            raise RtunError(f"the clipboard holds more than {_size(self.limit)}, more than rtun paste takes")
        self.pieces.append(piece)


def _paste_arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument(
        "--type",
        choices=_types(),
        metavar="TYPE",
        help=f"what to paste: text/plain (the default) or an image type, {', '.join(_types()[1:])}",
    )
    parser.add_argument(
        "--list-types",
        action="store_true",
        help="print the types the clipboard holds, one a line, as its tool names them",
    )


def _paste(args: argparse.Namespace) -> int:
    if args.list_types:
        if args.type:
            raise UsageError("--list-types takes no --type")
        from rtun.protocol import peertext

        for name in requests.clipboard_types(args.socket):
            print(peertext.one_line(name))
        return 0
    collected = _Collected()
    requests.paste(args.socket, collected, "" if args.type in (None, TEXT) else args.type)
    out = sys.stdout.buffer
    for piece in collected.pieces:
        out.write(piece)
    out.flush()
    return 0


copy = Command(
    _copy_arguments,
    _copy,
    description="Put TEXT, standard input or an image on the clipboard of your computer. With no "
    "daemon to answer and a terminal attached, the text goes through the terminal (OSC 52).",
    examples=[
        "git rev-parse HEAD | rtun copy",
        "rtun copy 'some text'",
        "rtun copy plot.png                   # an image file: its type told by its content",
        "rtun copy --type image/png < plot.png",
        "rtun copy --osc52 < notes.txt        # through the terminal, without the daemon",
    ],
)
paste = Command(
    _paste_arguments,
    _paste,
    description="Print the clipboard of your computer, exactly "
    "as it is. Off unless [actions] paste = true in ~/.config/rtun/config.toml on your computer "
    "(`rtun server reload` there applies it).",
    examples=[
        "rtun paste > notes.txt",
        "rtun paste --type image/png > shot.png",
        "rtun paste --list-types",
    ],
)
