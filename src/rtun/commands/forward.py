"""`rtun forward PORT[:LOCAL]...`: this server's ``localhost:PORT`` on your computer, at
``127.0.0.1:LOCAL`` (the same port by default, or the next free one), until Ctrl-C or ``--for``.

Also the background holder `rtun open` starts for the loopback URLs it opens (``--report-fd``,
not shown in --help): it reports the ports it got on that descriptor, then holds the forwards
while the server ports listen.
"""

from __future__ import annotations

import argparse
import sys

from rtun.command import Command, socket_option
from rtun.errors import RtunError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Dict, List, Tuple

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h`` or ``1d``, in seconds."""
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    value = float(number) * _UNITS[unit]
    if not 0 < value < float("inf"):
        raise ValueError(text)
    return value


duration.__name__ = "duration (90, 90s, 10m, 2h)"  # what argparse names in "invalid ... value"


def _arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument(
        "ports",
        nargs="+",
        metavar="PORT[:LOCAL]",
        help="a port of this server's localhost, and where it listens on your computer "
        "(default: the same port, or the next free one if it is taken; 80 goes to 8080)",
    )
    parser.add_argument(
        "--for", dest="seconds", type=duration, metavar="DURATION", help="end after this long (90s, 10m, 2h)"
    )
    parser.add_argument(
        "--while-listening",
        action="store_true",
        help="end each forward once nothing listens on its port here any more (Linux servers)",
    )
    # `rtun open`'s background holder: where to report the ports, which to take exactly.
    parser.add_argument("--report-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--exact-port", type=int, action="append", default=[], help=argparse.SUPPRESS)


def _specs(texts: "List[str]") -> "List[Tuple[int, int]]":
    from rtun.client.forward import local_for, parse_spec

    specs = []
    for text in texts:
        try:
            server_port, local = parse_spec(text)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        specs.append((server_port, local or local_for(server_port)))
    return specs


def _run(args: argparse.Namespace) -> int:
    from rtun.client import forward

    specs = _specs(args.ports)
    if args.report_fd is not None:
        return _hold_for_open(args, specs)
    helds = []
    try:
        for server_port, local in specs:
            held = forward.request(args.socket, server_port, local)
            helds.append(held)
            moved = f" ({local} is in use there)" if held.port != local else ""
            print(
                f"localhost:{server_port} here is 127.0.0.1:{held.port} on your computer{moved}", flush=True
            )
        until = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
        print(f"rtun forward: forwarding {until}", file=sys.stderr, flush=True)
        forward.keep(helds, seconds=args.seconds, while_listening=args.while_listening)
    except KeyboardInterrupt:
        return 0  # the way to end it
    finally:
        for held in helds:
            held.close()
    return 0


def _hold_for_open(args: argparse.Namespace, specs: "List[Tuple[int, int]]") -> int:
    """`rtun open`'s holder: a login's redirect must reach the very port it names
    (``--exact-port``); a page may move to the next free one."""
    import json
    import os

    from rtun.client import forward

    helds = []
    results: "List[Dict[str, object]]" = []
    for server_port, local in specs:
        exact = server_port in args.exact_port
        try:
            held = forward.request(args.socket, server_port, local, exact=exact)
        except RtunError as exc:
            results.append({"error": exc.message})
            continue
        helds.append(held)
        results.append({"port": held.port})
    with os.fdopen(args.report_fd, "w") as report:
        report.write(json.dumps(results) + "\n")
    if helds:
        forward.keep(helds, seconds=args.seconds, while_listening=True, idle=OPEN_IDLE)
    return 0


OPEN_IDLE = 30 * 60.0  # seconds without a connection before a forward `rtun open` made ends

forward_command = Command(
    _arguments,
    _run,
    usage="rtun forward [-s PATH] [--for DURATION] [--while-listening] PORT[:LOCAL]...",
    description="Reach this server's localhost:PORT from your computer's browser and programs, at "
    "127.0.0.1:LOCAL there, until Ctrl-C. Loopback only: nothing is opened to the network.",
    examples=[
        "rtun forward 8888          # Jupyter here, http://127.0.0.1:8888 there",
        "rtun forward 6006:16006    # TensorBoard here, 127.0.0.1:16006 there",
        "rtun forward 3000 --for 2h",
    ],
)
