"""`rtun copy` and `rtun paste`: your computer's clipboard, from the server.

Both hold the text in memory, bounded: a clipboard is for text, and the daemon has a limit of
its own ([clipboard] max_bytes, 4 MiB by default), which it checks before any data is sent.
"""

from __future__ import annotations

import argparse
import sys

from rtun.client import requests
from rtun.command import Command, socket_option
from rtun.errors import RtunError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import BinaryIO, List

MAX_BYTES = 64 * 1024 * 1024  # what either command holds in memory here


def read_bounded(stream: "BinaryIO", limit: int = MAX_BYTES) -> bytes:
    """All of ``stream``, or an error as soon as it has more than ``limit`` bytes."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise RtunError(f"standard input holds more than {_size(limit)}, more than rtun copy takes")
    return data


def _size(nbytes: int) -> str:
    return f"{nbytes // (1024 * 1024)} MiB" if nbytes % (1024 * 1024) == 0 else f"{nbytes} bytes"


def _copy_arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument(
        "text",
        nargs="*",
        metavar="TEXT",
        help="the text to copy, words joined with spaces (none, or -, reads standard input)",
    )


def _copy(args: argparse.Namespace) -> int:
    if args.text and args.text != ["-"]:
        import os

        data = os.fsencode(" ".join(args.text))  # the bytes as typed, even if not UTF-8
    elif sys.stdin is None:
        raise RtunError("no standard input to copy (give the text as arguments)")
    else:
        data = read_bounded(sys.stdin.buffer)
    requests.copy(args.socket, data)
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


def _paste(args: argparse.Namespace) -> int:
    collected = _Collected()
    requests.paste(args.socket, collected)
    out = sys.stdout.buffer
    for piece in collected.pieces:
        out.write(piece)
    out.flush()
    return 0


copy = Command(
    _copy_arguments,
    _copy,
    description="Put TEXT, or standard input, on the clipboard of your computer.",
    examples=["git rev-parse HEAD | rtun copy", "rtun copy 'some text'"],
)
paste = Command(
    _paste_arguments,
    _paste,
    description="Print the clipboard of your computer, exactly "
    "as it is. Off unless [actions] paste = true in ~/.config/rtun/config.toml on your computer "
    "(`rtun server reload` there applies it).",
)
