"""The `rtun` command: parses arguments, calls one function, turns errors into one line and an exit code.

Only the stdlib is imported here; each command imports what it needs when it runs, so the
remote-side commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Optional, Sequence

from rtun import __version__
from rtun.errors import RtunError

Handler = Callable[[argparse.Namespace], int]


def _lazy(target: str) -> Handler:
    """A handler named "module:function", imported only when its command runs."""

    def run(args: argparse.Namespace) -> int:
        module_name, _, function_name = target.partition(":")
        return getattr(importlib.import_module(module_name), function_name)(args)

    return run


def _socket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s", "--socket", metavar="PATH",
        help="daemon socket (default: $RTUN_SOCK, else the newest live ~/.rtun/rtun.sock*)",
    )


def _add_reach_back_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = sub.add_parser("server", help="run the local daemon that remote commands reach")
    p.add_argument("-s", "--socket", metavar="PATH", help="socket to listen on (default ~/.rtun/rtun.sock)")
    p.add_argument("-d", "--daemon", action="store_true", help="detach; print the PID once ready")
    p.add_argument("-l", "--log", metavar="FILE", help="log file (default ~/.rtun/rtun.log with -d)")
    p.add_argument("-D", "--dir", metavar="DIR", help="where received files go (default: downloads)")
    p.add_argument("-v", "--verbose", action="store_true", default=None, help="log more detail")
    p.add_argument("--config", metavar="FILE", help="config file (default ~/.config/rtun/config.toml)")
    p.set_defaults(handler=_lazy("rtun.commands:server"))

    p = sub.add_parser("ping", help="check that the daemon answers (prints OK PONG)")
    _socket_option(p)
    p.set_defaults(handler=_lazy("rtun.commands:ping"))

    p = sub.add_parser("notify", help="show a desktop notification on your computer")
    _socket_option(p)
    p.add_argument("-t", "--title", help="title (default: this server's host name)")
    p.add_argument("message", nargs="+", help="message words; - reads standard input")
    p.set_defaults(handler=_lazy("rtun.commands:notify"))

    p = sub.add_parser("send", help="save files or directories on your computer")
    _socket_option(p)
    p.add_argument("-r", "--recursive", action="store_true", help="accepted for RTUN compatibility")
    p.add_argument("--to", metavar="DEST", help="relative path inside the save directory")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no saved paths")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories; - reads stdin")
    p.set_defaults(handler=_lazy("rtun.commands:send"))

    for name in ("view", "open"):
        p = sub.add_parser(name, help="open a file with your computer's desktop opener")
        _socket_option(p)
        p.add_argument("file")
        p.set_defaults(handler=_lazy("rtun.commands:view"))

    # Diagnostics kept from RTUN, left out of the main help.
    p = sub.add_parser("pid")
    _socket_option(p)
    p.set_defaults(handler=_lazy("rtun.commands:pid"))
    p = sub.add_parser("echo")
    _socket_option(p)
    p.add_argument("text", nargs="*")
    p.set_defaults(handler=_lazy("rtun.commands:echo"))
    p = sub.add_parser("shutdown")
    _socket_option(p)
    p.set_defaults(handler=_lazy("rtun.commands:shutdown"))


def _add_tunnel_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Commands of the reverse tunnel agent (rtun.tunnel)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtun",
        description="Reach back to your computer from an SSH session, and keep machines "
        "behind NAT reachable through a reverse tunnel.",
    )
    parser.add_argument("--version", action="version", version=f"rtun {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_reach_back_commands(sub)
    _add_tunnel_commands(sub)
    hidden = {"pid", "echo", "shutdown"}
    sub._choices_actions = [a for a in sub._choices_actions if a.dest not in hidden]
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except RtunError as exc:
        print(f"rtun {args.command}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"rtun {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1

