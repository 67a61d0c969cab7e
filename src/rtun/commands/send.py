"""`rtun send`: save files, directories or standard input on your computer."""

from __future__ import annotations

import argparse
import sys

from rtun.command import Command, socket_option


def _arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument("-r", "--recursive", action="store_true", help="accepted for RTUN compatibility")
    parser.add_argument("--to", metavar="DEST", help="relative path inside the save directory")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no saved paths")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or directories; - reads stdin")


def _run(args: argparse.Namespace) -> int:
    from rtun import upload

    result = upload.send(args.socket, args.paths, args.to, args.overwrite, args.quiet)
    for warning in result.warnings:
        print(f"rtun send: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        for path in result.saved:
            print(path)
    return 0


send = Command(_arguments, _run)
