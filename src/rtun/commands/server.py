"""`rtun server`: the local daemon that the remote commands reach."""

from __future__ import annotations

import argparse

from rtun.command import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s", "--socket", metavar="PATH", help="socket to listen on (default ~/.rtun/rtun.sock)"
    )
    parser.add_argument("-d", "--daemon", action="store_true", help="detach; print the PID once ready")
    parser.add_argument("-l", "--log", metavar="FILE", help="log file (default ~/.rtun/rtun.log with -d)")
    parser.add_argument("-D", "--dir", metavar="DIR", help="where received files go (default: downloads)")
    parser.add_argument("-v", "--verbose", action="store_true", default=None, help="log more detail")
    parser.add_argument("--config", metavar="FILE", help="config file (default ~/.config/rtun/config.toml)")


def _run(args: argparse.Namespace) -> int:
    from rtun.daemon import config, start

    settings = config.load(
        args.config, socket=args.socket, log=args.log, save_dir=args.dir, verbose=args.verbose
    )
    return start.serve(settings, detach=args.daemon)


server = Command(
    _arguments,
    _run,
    examples=[
        "rtun server -d             # in the background; logs to ~/.rtun/rtun.log",
        "rtun server -v             # in the foreground, logging each request",
    ],
)
