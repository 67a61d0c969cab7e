"""`rtun open` (skeleton)."""

from __future__ import annotations

import argparse

from rtun.command import Command, socket_option


def _arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument("target")


def _run(args: argparse.Namespace) -> int:
    from rtun import upload

    upload.view(args.socket, args.target)
    return 0


open_target = Command(_arguments, _run)
