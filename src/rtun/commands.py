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
