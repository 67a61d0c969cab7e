"""What each reach-back command does with its parsed arguments: one call, then print the result."""

from __future__ import annotations

import argparse

from rtun import client, wire


def ping(args: argparse.Namespace) -> int:
    client.connect(args.socket).close()
    print("OK PONG")
    return 0


def pid(args: argparse.Namespace) -> int:
    print("OK " + client.simple_request(args.socket, wire.Pid()))
    return 0


def echo(args: argparse.Namespace) -> int:
    print("OK " + client.simple_request(args.socket, wire.Echo(" ".join(args.text))))
    return 0


def shutdown(args: argparse.Namespace) -> int:
    print("OK " + client.simple_request(args.socket, wire.Shutdown()))
    return 0


def server(args: argparse.Namespace) -> int:
    from rtun.daemon import config, start

    settings = config.load(
        args.config, socket=args.socket, log=args.log, save_dir=args.dir, verbose=args.verbose
    )
    return start.serve(settings, detach=args.daemon)


def notify(args: argparse.Namespace) -> int:
    import socket
    import sys

    words = [sys.stdin.buffer.read().decode("utf-8", "replace") if word == "-" else word for word in args.message]
    title = args.title if args.title is not None else socket.gethostname()
    client.notify(args.socket, title, " ".join(words).strip())
    return 0


def send(args: argparse.Namespace) -> int:
    import sys

    from rtun import upload

    result = upload.send(args.socket, args.paths, args.to, args.overwrite, args.quiet)
    for warning in result.warnings:
        print(f"rtun send: warning: {warning}", file=sys.stderr)
    if not args.quiet:
        for path in result.saved:
            print(path)
    return 0


def view(args: argparse.Namespace) -> int:
    from rtun import upload

    upload.view(args.socket, args.file)
    return 0
