"""`rtun config`: where the daemon's config file is, and every setting in effect (the file's
and the defaults), in the file's own format: what to copy into it, and what `rtun server` reads."""

from __future__ import annotations

import argparse
import sys

from rtun.command import Command
from rtun.errors import RtunError


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--path", action="store_true", help="print only the config file's path")
    parser.add_argument("--config", metavar="FILE", help="config file (default ~/.config/rtun/config.toml)")


def _run(args: argparse.Namespace) -> int:
    import os

    from rtun import paths

    path = os.path.abspath(os.path.expanduser(args.config or paths.config_file()))
    if args.path:
        print(path)
        return 0
    try:
        from rtun.daemon import config
    except ImportError:  # the single-file client on a server: the daemon and its settings are elsewhere
        raise RtunError("the daemon's settings are on your computer: run `rtun config` there") from None
    given = config.from_file(path)
    state = "" if os.path.exists(path) else " (no such file: every setting is the default)"
    sys.stdout.write(f"# {path}{state}\n# `rtun server reload` applies a change to the running daemon\n\n")
    sys.stdout.write(config.as_toml(config.load(path), given))
    return 0


config = Command(
    _arguments,
    _run,
    description="Print the path of the daemon's config file and every "
    "setting in effect, the file's and the defaults, as the file would write them.",
    examples=[
        "rtun config                 # what the daemon uses, key by key",
        '$EDITOR "$(rtun config --path)"',
    ],
)
