"""`rtun notify`: a desktop notification on your computer."""

from __future__ import annotations

import argparse
import socket
import sys

from rtun.client import requests
from rtun.command import Command, socket_option


def _arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument("-t", "--title", help="title (default: this server's host name)")
    parser.add_argument("message", nargs="+", help="message words; - reads standard input")


def _run(args: argparse.Namespace) -> int:
    words = [
        sys.stdin.buffer.read().decode("utf-8", "replace") if word == "-" else word for word in args.message
    ]
    title = args.title if args.title is not None else socket.gethostname()
    requests.notify(args.socket, title, " ".join(words).strip())
    return 0


notify = Command(
    _arguments,
    _run,
    examples=[
        'rtun notify -t "train.py" "epoch 40 done"',
        "make 2>&1 | tail -n 3 | rtun notify -",
    ],
)
