"""`rtun ping`, and the diagnostics RTUN had: `pid`, `echo`, `shutdown`."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from rtun.protocol import wire

from rtun.client import discovery
from rtun.command import Command, json_option, print_json, socket_option
from rtun.protocol import messages


def _ping_arguments(parser: "argparse.ArgumentParser") -> None:
    socket_option(parser)
    json_option(parser)


def _ping(args: "argparse.Namespace") -> int:
    with discovery.connect(args.socket) as conn:  # a daemon answered PING, or this raised
        if not args.json:
            print("OK PONG")
            return 0
        import time

        # One more PING on the open connection: the round trip alone, without the connect.
        began = time.perf_counter()
        reply = conn.request(messages.Ping())
        seconds = time.perf_counter() - began
    print_json({"reply": reply.text, "socket": conn.path, "rtt_ms": round(seconds * 1000, 3)})
    return 0


def _simple(args: "argparse.Namespace", request: "wire.Request") -> int:
    """PID, ECHO or SHUTDOWN: prints the reply. The requests module (and the handshake it
    brings) is imported here, not by `rtun ping`, which needs neither."""
    from rtun.client import requests

    print("OK " + requests.simple_request(args.socket, request))
    return 0


def _pid(args: "argparse.Namespace") -> int:
    return _simple(args, messages.Pid())


def _echo_arguments(parser: "argparse.ArgumentParser") -> None:
    socket_option(parser)
    parser.add_argument("text", nargs="*")


def _echo(args: "argparse.Namespace") -> int:
    return _simple(args, messages.Echo(" ".join(args.text)))


def _shutdown(args: "argparse.Namespace") -> int:
    return _simple(args, messages.Shutdown())


ping = Command(
    _ping_arguments,
    _ping,
    examples=[
        "rtun ping                  # OK PONG when your computer's daemon answers",
        "rtun ping -v               # ... and which socket answered",
    ],
)
pid = Command(socket_option, _pid)
echo = Command(_echo_arguments, _echo)
shutdown = Command(socket_option, _shutdown)
