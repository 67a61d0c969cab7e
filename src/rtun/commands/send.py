"""`rtun send`: save files, directories or standard input on your computer."""

from __future__ import annotations

import argparse
import sys

from rtun.command import Command, json_option, print_json, socket_option
from rtun.protocol import peertext


def _arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument("-r", "--recursive", action="store_true", help="accepted for RTUN compatibility")
    parser.add_argument("--to", metavar="DEST", help="relative path inside the save directory")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no saved paths")
    parser.add_argument(
        "--channels",
        type=_channels,
        default=0,
        metavar="N",
        help="connections for large files and trees (default: as many as raise the "
        "throughput, up to 16; 1: one)",
    )
    parser.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="send large files whole, not only what an interrupted send left out",
    )
    json_option(parser)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="files or directories; - reads stdin")


def _run(args: argparse.Namespace) -> int:
    from rtun.client import upload
    from rtun.client.options import SendOptions

    options = SendOptions(
        socket=args.socket, overwrite=args.overwrite, channels=args.channels, resume=args.resume
    )
    result = upload.send(args.paths, args.to, options=options, quiet=args.quiet)
    for warning in result.warnings:
        print(f"rtun send: warning: {peertext.escaped(warning, peertext.PATH_LIMIT)}", file=sys.stderr)
    if args.json:  # with -q too: -q is about the terminal, the document is for a script
        print_json({"saved": result.saved, "warnings": result.warnings})
    elif not args.quiet:
        for path in result.saved:
            print(peertext.escaped(path, peertext.PATH_LIMIT))
    return 0


def _channels(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 16:
        raise argparse.ArgumentTypeError("N must be a whole number from 1 to 16")
    return int(text)


send = Command(
    _arguments,
    _run,
    examples=[
        "rtun send results/ model.pt          # prints where each file was saved",
        "tar c logs | rtun send - --to logs.tar",
        "rtun send --to runs/ --overwrite out.csv",
    ],
)
