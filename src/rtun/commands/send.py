"""`rtun send`: save files, directories or standard input on your computer."""

from __future__ import annotations

import argparse
import sys

from rtun.command import Command, json_option, print_json, socket_option
from rtun.protocol import peertext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rtun.client.outcome import SendResult


def _arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument("-r", "--recursive", action="store_true", help="accepted for RTUN compatibility")
    parser.add_argument("--to", metavar="DEST", help="relative path inside the save directory")
    replacing = parser.add_mutually_exclusive_group()
    replacing.add_argument("--overwrite", action="store_true", help="replace existing files")
    replacing.add_argument(
        "--update",
        action="store_true",
        help="send only what changed: skip files already there with the same size and "
        "modification time, replace changed ones in place (regular files only), add new ones",
    )
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
    from rtun.client.outcome import SendResult
    from rtun.errors import RtunError

    options = SendOptions(
        socket=args.socket,
        overwrite=args.overwrite,
        channels=args.channels,
        resume=args.resume,
        update=args.update,
    )
    result = SendResult([], [])
    try:
        upload.send(args.paths, args.to, options=options, quiet=args.quiet, result=result)
    except RtunError as exc:  # what was saved before the failure is said all the same
        _report(result, args)
        if args.json:  # what failed too, and the exit code says it failed
            print_json({**result.document(), "failed": {"error": exc.message, "files": result.not_saved}})
            print(f"rtun send: {peertext.escaped(exc.message, peertext.PATH_LIMIT)}", file=sys.stderr)
            return exc.exit_code
        raise  # said last, as any other failure
    _report(result, args)
    if args.json:  # with -q too: -q is about the terminal, the document is for a script
        print_json(result.document())
    return 0


def _report(result: "SendResult", args: argparse.Namespace) -> None:
    """Warnings on stderr; without --json or -q, each file saved (and with --update, what
    happened to it: saved, replaced, unchanged) on stdout."""
    for warning in result.warnings:
        print(f"rtun send: warning: {peertext.escaped(warning, peertext.PATH_LIMIT)}", file=sys.stderr)
    if args.json or args.quiet:
        return
    replaced = set(result.replaced)
    for path in result.saved:
        shown = peertext.escaped(path, peertext.PATH_LIMIT)
        if args.update:
            shown = f"{'replaced' if path in replaced else 'saved':9} {shown}"
        print(shown)
    for path in result.unchanged if args.update else []:
        print(f"unchanged {peertext.escaped(path, peertext.PATH_LIMIT)}")


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
        "rtun send --update results/             # again after each run: only what changed moves",
    ],
)
