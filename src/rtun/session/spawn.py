"""Child processes started with ``posix_spawn``: with pipes on their standard streams
(:class:`Child`), or on this process's own (:func:`start`, :func:`wait`).

`rtun ssh` starts ssh before anything else, and importing :mod:`subprocess` first would cost
it ~10 ms of the time that ssh's login then waits for; its session's ssh starts this way too,
so that a login with a command never loads subprocess (4 ms of CPU while ssh logs in).
"""

from __future__ import annotations

import os
import signal
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import BinaryIO, List, Optional, Sequence, Tuple


# Signals Python ignores, which a spawned program would otherwise inherit ignored.
_DEFAULTS = (signal.SIGPIPE, signal.SIGXFSZ)


class Child:
    """``argv`` with its stdin and stdout (and stderr, if ``capture_stderr``) on pipes; SIGINT
    ignored in it if ``ignore_sigint`` (a program that keeps an ignored SIGINT, as ssh does,
    then survives the user's Ctrl-C)."""

    def __init__(
        self, argv: "Sequence[str]", capture_stderr: bool = False, ignore_sigint: bool = False
    ) -> None:
        self.args = list(argv)
        self.returncode: Optional[int] = None
        pipes = [os.pipe() for _ in range(3 if capture_stderr else 2)]
        actions: List[Tuple[int, int, int]] = [
            (os.POSIX_SPAWN_DUP2, pipes[0][0], 0),
            (os.POSIX_SPAWN_DUP2, pipes[1][1], 1),
        ]
        if capture_stderr:
            actions.append((os.POSIX_SPAWN_DUP2, pipes[2][1], 2))
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if ignore_sigint else None
        try:
            # SIGPIPE and SIGXFSZ as programs expect them (an ignored signal is inherited).
            self.pid = os.posix_spawnp(
                self.args[0], self.args, dict(os.environ), file_actions=actions, setsigdef=_DEFAULTS
            )
        except OSError:
            for read_end, write_end in pipes:
                os.close(read_end)
                os.close(write_end)
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        os.close(pipes[0][0])
        os.close(pipes[1][1])
        self.stdin: Optional[BinaryIO] = os.fdopen(pipes[0][1], "wb", buffering=0)
        self.stdout: Optional[BinaryIO] = os.fdopen(pipes[1][0], "rb", buffering=0)
        self.stderr: Optional[BinaryIO] = None
        if capture_stderr:
            os.close(pipes[2][1])
            self.stderr = os.fdopen(pipes[2][0], "rb", buffering=0)

    def poll(self) -> "Optional[int]":
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: "Optional[float]" = None) -> "Optional[int]":
        """The exit code; None if ``timeout`` seconds passed first."""
        if timeout is None:
            if self.returncode is None:
                self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
            return self.returncode
        deadline = time.monotonic() + timeout
        pause = 0.0005
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
            pause = min(pause * 2, 0.05)
        return self.returncode

    def signal(self, number: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, number)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM, then SIGKILL if it is still there after ``timeout``."""
        self.signal(signal.SIGTERM)
        if self.wait(timeout) is None:
            self.signal(signal.SIGKILL)
            self.wait()

    def close_stdin(self) -> None:
        if self.stdin is not None:
            try:
                self.stdin.close()
            except OSError:
                pass

    def close_streams(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def start(argv: "Sequence[str]") -> int:
    """``argv`` on this process's own standard streams (a session on the user's terminal), with
    SIGINT and SIGPIPE at their defaults whatever this process does with them; its PID. Raises
    OSError if it cannot be started."""
    return os.posix_spawnp(argv[0], list(argv), dict(os.environ), setsigdef=(signal.SIGINT, *_DEFAULTS))


def wait(pid: int) -> int:
    """The exit code of ``pid``, as subprocess gives it (minus the signal that ended it)."""
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
