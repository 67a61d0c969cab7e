"""`rtun ping`, and the diagnostics RTUN had: `pid`, `echo`, `shutdown`."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

from rtun import client
from rtun.command import Command, socket_option
from rtun.protocol import wire


def _ping(args: "argparse.Namespace") -> int:
    client.connect(args.socket).close()
    print("OK PONG")
    return 0


def _pid(args: "argparse.Namespace") -> int:
    print("OK " + client.simple_request(args.socket, wire.Pid()))
    return 0


def _echo_arguments(parser: "argparse.ArgumentParser") -> None:
    socket_option(parser)
    parser.add_argument("text", nargs="*")


def _echo(args: "argparse.Namespace") -> int:
    print("OK " + client.simple_request(args.socket, wire.Echo(" ".join(args.text))))
    return 0


def _shutdown(args: "argparse.Namespace") -> int:
    print("OK " + client.simple_request(args.socket, wire.Shutdown()))
    return 0


ping = Command(socket_option, _ping)
pid = Command(socket_option, _pid)
echo = Command(_echo_arguments, _echo)
shutdown = Command(socket_option, _shutdown)
