"""`rtun install HOST`: copy (or upgrade) the single-file client to ~/.rtun/bin/rtun on HOST.

For servers with python3 (3.9+) but no pip or no network. `rtun ssh HOST --install` does the
same before the session.
"""

from __future__ import annotations

import argparse

from rtun.command import Command
from rtun.errors import UsageError
from rtun.protocol import peertext
from rtun.session import installer, master, sshopts
from rtun.ssh import argv as sshargv


def _arguments(parser: argparse.ArgumentParser) -> None:
    sshopts.declare(parser)
    parser.add_argument("host", metavar="HOST", help="what you would give ssh: an alias, [user@]host, ...")
    parser.add_argument("remote_command", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _run(args: argparse.Namespace) -> int:
    inv = sshopts.from_args(args)
    if inv.command:
        raise UsageError(f"rtun install takes no command (got {' '.join(inv.command)!r})")
    with master.Login(sshargv.ssh_base(check=False), inv) as conn:
        conn.prelude()
        for line in installer.install(conn):
            print(peertext.escaped(line, 2000), flush=True)  # holds what the server reported
    return 0


install = Command(
    _arguments,
    _run,
    usage="rtun install [ssh options] HOST",
    description="Copy the single-file rtun client (a zipapp of this version, stdlib "
    "only) to ~/.rtun/bin/rtun on HOST, or upgrade it; HOST needs only python3.",
)
