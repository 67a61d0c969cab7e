"""`rtun doctor [HOST]`: one line per check of what rtun needs, and exit 1 if any fails.

Here: the config file, the daemon, notifications, the opener, browser, clipboard and editor, the
save directory. With HOST (through ssh, as `rtun ssh` logs in): python3 and the rtun client
there, ~/.rtun, stale sockets, and a real forward with a PING through it, timed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from rtun import __version__
from rtun.command import Command, json_option, print_json
from rtun.errors import RtunError, UsageError
from rtun.protocol import peertext
from rtun.session import checks, identity, master, remote, sshopts
from rtun.ssh import argv as sshargv

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

_COLOURS = {checks.OK: "\033[32m", checks.WARN: "\033[33m", checks.FAIL: "\033[31m"}
_LABELS = {checks.OK: "ok", checks.WARN: "warn", checks.FAIL: "FAIL"}


def _arguments(parser: argparse.ArgumentParser) -> None:
    json_option(parser)
    parser.add_argument(
        "--config", metavar="FILE", help="the daemon's config file (default ~/.config/rtun/config.toml)"
    )
    sshopts.declare(parser)
    parser.add_argument("host", metavar="HOST", nargs="?", help="also check this server, through ssh")
    parser.add_argument("remote_command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _remote(inv: sshopts.Invocation, socket_path: "Optional[str]") -> "List[checks.Check]":
    began = time.monotonic()
    with master.Login(sshargv.ssh_base(check=False), inv, quiet=True) as conn:
        try:
            report = conn.prelude()
        except RtunError as exc:
            said = peertext.last_line(conn.stderr_text())
            return [
                checks.Check(
                    "ssh",
                    checks.FAIL,
                    exc.message + (f" ({said})" if said and said not in exc.message else ""),
                    f"check that `ssh {inv.host}` logs in",
                )
            ]
        seconds = time.monotonic() - began
        forwarded: Optional[str] = None
        reason: Optional[str] = "no daemon answers here"
        if socket_path is not None:
            try:
                sock = remote.session_socket(
                    conn.home, identity.laptop_id(), report.get("host", ""), os.urandom(4).hex()
                )
                conn.remove_at_end(sock)
                conn.forward(sock, socket_path)
                forwarded, reason = sock, None
            except (RtunError, ValueError) as exc:
                reason = str(exc)
        found = checks.probe(conn, forwarded)
        return checks.remote_checks(conn, report, found, forwarded, reason, seconds)


def _print(results: "List[checks.Check]") -> None:
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    for check in results:
        label = _LABELS[check.status]
        if colour:
            label = f"{_COLOURS[check.status]}{label:<4}\033[0m"
        line = f"{label:<4}  {check.name}: {peertext.escaped(check.detail, 2000)}"  # holds server text
        if check.fix and check.status != checks.OK:
            line += f" -- {check.fix}"
        print(line)


def _run(args: argparse.Namespace) -> int:
    if args.host is None and (args.ssh_options or args.remote_command):
        raise UsageError("ssh options need a HOST")
    # Before anything reads args: --json and --config may follow the host.
    inv = sshopts.from_args(args) if args.host is not None else None
    results, socket_path = checks.local_checks(args.config)
    if inv is not None:
        results += _remote(inv, socket_path)
    failed = any(c.status == checks.FAIL for c in results)
    if args.json:
        print_json(
            {
                "ok": not failed,
                "version": __version__,
                "laptop": _laptop(),
                "host": args.host,
                "checks": [c.as_dict() for c in results],
            }
        )
    else:
        _print(results)
    return 1 if failed else 0


def _laptop() -> "Optional[str]":
    try:
        return identity.laptop_id()
    except OSError:
        return None


doctor = Command(
    _arguments,
    _run,
    usage="rtun doctor [--json] [--config FILE] [[ssh options] HOST]",
    description="Check what rtun needs on this computer and, with HOST, on that server "
    "(through ssh). Exit 1 if anything would stop rtun from working.",
)
