"""`rtun view FILE`: open a file with your computer's desktop opener (`rtun open FILE` does the same)."""

from __future__ import annotations

import argparse

from rtun.command import Command, socket_option


def _arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument("file")


def _run(args: argparse.Namespace) -> int:
    from rtun.client import upload

    upload.view(args.socket, args.file)
    return 0


view = Command(
    _arguments,
    _run,
    examples=[
        "rtun view plot.png         # opens on your computer with its desktop opener",
    ],
)
