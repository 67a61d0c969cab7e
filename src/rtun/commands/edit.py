"""`rtun edit FILE`: edit a server file in your computer's editor; each save comes back here."""

from __future__ import annotations

import argparse

from rtun.command import Command, socket_option

DESCRIPTION = (
    "Open FILE in the editor on your computer (the rtun daemon's [edit] editor, such as "
    "code --wait). Every save there replaces FILE here atomically, keeping its mode, unless FILE "
    "changed here since it was opened or last saved: such a save is refused, not written. A "
    "missing FILE opens empty and is created on the first save. Returns when the editor closes "
    "the file: 0 if every save was written, 1 if any was not, 4 if the daemon refused the edit."
)


def _arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="say nothing about saves that were written"
    )
    parser.add_argument("file")


def _run(args: argparse.Namespace) -> int:
    from rtun.client import edit as editing

    return editing.edit(args.socket, args.file, quiet=args.quiet)


edit = Command(
    _arguments,
    _run,
    description=DESCRIPTION,
    examples=[
        "rtun edit ~/.bashrc        # in your editor; each save is written back here",
    ],
)
