"""What an `rtun` command is: its options and its handler, declared together in its own module.

The CLI (cli.py) imports only the module of the command being run and builds only that
command's parser, so the remote-side commands start fast.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    import argparse
    from typing import Callable, Dict, Optional, Sequence


class Command:
    """``arguments(parser)`` declares the options; ``run(args)`` does the work and returns the
    exit code. Failures are raised as :class:`rtun.errors.RtunError`, never printed here."""

    __slots__ = ("arguments", "run", "usage", "description", "examples")

    def __init__(
        self,
        arguments: "Callable[[argparse.ArgumentParser], None]",
        run: "Callable[[argparse.Namespace], int]",
        usage: "Optional[str]" = None,
        description: "Optional[str]" = None,
        *,
        examples: "Sequence[str]" = (),
    ) -> None:
        self.arguments = arguments
        self.run = run
        self.usage = usage
        self.description = description
        self.examples = tuple(examples)  # command lines, each with a short comment, for --help


def socket_option(parser: "argparse.ArgumentParser") -> None:
    """``-s/--socket`` and ``-v``, which every client command takes."""
    import argparse

    class Verbose(argparse.Action):
        """Discovery reads $RTUN_VERBOSE: the flag sets it for this process."""

        def __call__(
            self,
            parser: "argparse.ArgumentParser",
            namespace: "argparse.Namespace",
            values: object,
            option_string: "Optional[str]" = None,
        ) -> None:
            import os

            os.environ["RTUN_VERBOSE"] = "1"

    parser.add_argument(
        "-s",
        "--socket",
        metavar="PATH",
        help="daemon socket (default: $RTUN_SOCK, else a live ~/.rtun/rtun.sock* of this laptop, "
        "else the newest live one)",
    )
    parser.add_argument("-v", "--verbose", nargs=0, action=Verbose, help="say which socket was used, and why")


def json_option(parser: "argparse.ArgumentParser") -> None:
    """``--json``: one JSON document on stdout instead of the lines for people (README.md,
    JSON output, documents each command's keys; keys are only ever added)."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout (keys documented in README.md)"
    )


def print_json(document: "Dict[str, object]") -> None:
    """Non-ASCII and control characters are escaped: the output is safe on a terminal."""
    import json
    import sys

    sys.stdout.write(json.dumps(document, indent=2) + "\n")
