"""`rtun done`: run a command, then notify your computer when it ends; or, with --status, notify
about a command that has just ended (``make; rtun done --status $?``); or, with --pid, when
processes already running end (rtun.client.pidwatch watches them).

The exit code is the command's own whatever happens to the notification: a failed notification
is one warning line on stderr. The command runs in the foreground, in rtun's own process group,
so Ctrl-C and Ctrl-Z reach it from the terminal as if rtun were not there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from rtun.command import Command, socket_option
from rtun.errors import RtunError, UsageError
from rtun.protocol import peertext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

TITLE_CHARS = 60  # of the command in the title, which notification popups cut early anyway
BODY_CHARS = 300  # of the command in the body, when the title had to shorten it
USAGE = (
    "rtun done [-s PATH] [--min-seconds N] [--command TEXT] [--] COMMAND [ARG...]\n"
    "       rtun done --status CODE [--seconds S | --since EPOCH] [--command TEXT] "
    "[--min-seconds N]\n"
    "       rtun done --pid PID [--pid PID...] [--command TEXT] [--min-seconds N]"
)


class CannotRunError(RtunError):
    """The command could not be started: 127 when it is not found, 126 otherwise (as shells do).
    Nothing ran, so nothing is notified."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _seconds(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise ValueError(text)
    return value


def _exit_status(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 255:
        raise ValueError(text)
    return value


def _pid(text: str) -> int:
    value = int(text)
    if not 0 < value < 2**31:
        raise ValueError(text)
    return value


_seconds.__name__ = "number of seconds"  # what argparse names in "invalid ... value"
_exit_status.__name__ = "exit status (0 to 255)"
_pid.__name__ = "process ID"


def _arguments(parser: argparse.ArgumentParser) -> None:
    socket_option(parser)
    parser.add_argument(
        "--min-seconds",
        type=_seconds,
        default=0.0,
        metavar="N",
        help="no notification when the command took less than N seconds",
    )
    parser.add_argument(
        "--status",
        type=_exit_status,
        metavar="CODE",
        help="notify about a command that already ended with this status "
        "(`; rtun done --status $?`); rtun exits with it",
    )
    parser.add_argument(
        "--pid",
        type=_pid,
        action="append",
        metavar="PID",
        help="notify when process PID ends, any process, not only one rtun started (how long "
        "it ran while watched, and its exit status where the system tells it); give it again "
        "for more: one notification for each as it ends, and rtun returns when all have ended",
    )
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--seconds", type=_seconds, metavar="S", help="with --status: how long it ran")
    when.add_argument(
        "--since",
        type=_seconds,
        metavar="EPOCH",
        help="with --status: when it started, in seconds since the epoch ($EPOCHSECONDS)",
    )
    parser.add_argument(
        "--command",
        dest="shown",
        metavar="TEXT",
        help="the command as the notification shows it (default: COMMAND's words, or with "
        "--pid the process's command line; "
        "say something else to keep a secret on its command line off the screen)",
    )
    parser.add_argument(
        "argv",
        nargs=argparse.REMAINDER,
        metavar="COMMAND",
        help="the command to run and its arguments (after --)",
    )


def _run(args: argparse.Namespace) -> int:
    argv: List[str] = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if args.pid:
        if argv or args.status is not None:
            raise UsageError("give --pid, --status or a command to run, one of them")
        if args.seconds is not None or args.since is not None:
            raise UsageError("--seconds and --since go with --status")
        return _watch(args)
    if args.status is not None:
        if argv:
            raise UsageError("give --status or a command to run, not both")
        return _previous(args)
    if not argv:
        raise UsageError("name the command to run: rtun done -- COMMAND [ARG...]")
    if args.seconds is not None or args.since is not None:
        raise UsageError("--seconds and --since go with --status")
    import shlex

    began = time.monotonic()
    code = run_in_foreground(argv)
    shown = args.shown if args.shown is not None else shlex.join(argv)
    _notify(args, shown, code, time.monotonic() - began)
    return code


def _previous(args: argparse.Namespace) -> int:
    seconds: Optional[float] = args.seconds
    if args.since is not None:
        seconds = max(0.0, time.time() - args.since)
    if args.min_seconds and seconds is None:
        raise UsageError("--min-seconds with --status needs --seconds or --since")
    _notify(args, args.shown, args.status, seconds)
    return int(args.status)


def _watch(args: argparse.Namespace) -> int:
    """Wait for each --pid to end and notify about it; 0 once all have (Ctrl-C: 130, and no more
    notifications). A failed notification is a warning, as for a command."""
    from rtun.client.pidwatch import Watch

    watch = Watch(args.pid)
    try:
        if os.getpid() in watch.pids:
            raise UsageError("--pid names rtun itself, which ends only after it")
        shown = {pid: args.shown if args.shown is not None else watch.command(pid) for pid in watch.pids}
        began = time.monotonic()
        for pid, code in watch.ended():
            _notify(args, shown[pid], code, time.monotonic() - began, pid=pid)
    finally:
        watch.close()
    return 0


def run_in_foreground(argv: "List[str]") -> int:
    """Run ``argv`` to its end: its exit code, 128 + N when signal N killed it."""
    import signal
    import subprocess

    def ignore(signum: int, frame: object) -> None:
        """The terminal sends Ctrl-C and Ctrl-\\ to the command too: it decides, rtun waits."""

    # A handler, not SIG_IGN: exec resets handlers to the default, but would pass SIG_IGN on.
    # A signal already ignored (a background job's SIGINT, nohup's SIGHUP) stays ignored for both.
    previous = {}
    for signum in (signal.SIGINT, signal.SIGQUIT):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, ignore)
    try:
        try:
            child = subprocess.Popen(argv, close_fds=False)  # passes on what rtun was given
        except FileNotFoundError:
            raise CannotRunError(f"{argv[0]}: command not found", 127) from None
        except OSError as exc:
            raise CannotRunError(f"cannot run {argv[0]}: {exc.strerror or exc}", 126) from None

        def forward(signum: int, frame: object) -> None:
            """`kill` of rtun alone (a job's SIGTERM, a closed terminal's SIGHUP) reaches it."""
            child.send_signal(signum)

        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, forward)
        returncode = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - returncode if returncode < 0 else returncode


def status_text(code: int) -> str:
    """ "finished", "interrupted" (130: Ctrl-C), "failed with status N" (and the signal's name
    where N is 128 + a signal)."""
    if code == 0:
        return "finished"
    if code == 130:
        return "interrupted"
    if 128 < code < 128 + 65:
        import signal

        try:
            return f"failed with status {code} ({signal.Signals(code - 128).name})"
        except ValueError:
            pass
    return f"failed with status {code}"


def duration_text(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole} s"
    minutes, whole = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {whole:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def shorten(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters, its cut marked."""
    line = " ".join(text[: limit * 4].split())  # bounded before split: --command can be anything
    return line if len(line) <= limit else line[: limit - 1] + "\u2026"


def message(
    command: "Optional[str]",
    code: "Optional[int]",
    seconds: "Optional[float]",
    host: str,
    *,
    pid: "Optional[int]" = None,
) -> "List[str]":
    """The notification's title and body: the command (shortened), its status (None: not known)
    and duration; for a process watched with --pid, its PID and how long it was watched."""
    status = status_text(code) if code is not None else "ended"
    if pid is None:
        unnamed = "Command"
        where = f"on {host}" + (f" after {duration_text(seconds)}" if seconds is not None else "")
    else:
        unnamed = f"Process {pid}"
        where = f"PID {pid} on {host}" + (
            f", watched for {duration_text(seconds)}" if seconds is not None else ""
        )
        if code is None:
            where += "; its exit status is not known"
    if not command or not command.strip():
        return [f"{unnamed} {status}", where]
    short = shorten(command, TITLE_CHARS)
    body = []
    if short != " ".join(command.split()):
        body.append(shorten(command, BODY_CHARS))
    body.append(where)
    return [f"{short} {status}", "\n".join(body)]


def _notify(
    args: argparse.Namespace,
    command: "Optional[str]",
    code: "Optional[int]",
    seconds: "Optional[float]",
    *,
    pid: "Optional[int]" = None,
) -> None:
    """Notify, unless the command was quicker than --min-seconds; a failure is a warning."""
    if seconds is not None and seconds < args.min_seconds:
        return
    import socket

    from rtun.client import requests

    title, body = message(command, code, seconds, socket.gethostname(), pid=pid)
    try:
        requests.notify(args.socket, title, body)
    except RtunError as exc:
        print(f"rtun done: warning: no notification: {peertext.escaped(exc.message)}", file=sys.stderr)
    except (OSError, KeyboardInterrupt) as exc:  # the exit code is the command's, always
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else exc.strerror or exc
        print(f"rtun done: warning: no notification: {reason}", file=sys.stderr)


done = Command(
    _arguments,
    _run,
    usage=USAGE,
    description="Run COMMAND in the foreground and exit with its exit code; when it "
    "ends, notify your computer with the command, its status and how long it ran. "
    "With --status, notify about a command that has already ended. With --pid, wait for "
    "processes already running (any, not only rtun's) and notify as each ends; exit 0.",
    examples=[
        "rtun done -- make -j8 test          # exits with make's code",
        "rtun done --min-seconds 60 -- ./train.py",
        "rtun done --status $? --since $start   # about a command that already ended",
        "rtun done --pid 4242 --pid 4250     # one notification as each of them ends",
        "rtun done --pid $(pgrep -n train.py) --command training",
    ],
)
