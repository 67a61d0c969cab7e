"""The errors rtun reports to its user. Each carries its one-line message and exit code.

Exit codes (documented in README.md): 1 general failure, 2 usage, 3 no daemon reachable,
4 the daemon refused the request, 5 the connection was lost mid-request.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Optional


class RtunError(Exception):
    """Something went wrong that the user can act on; the message says what."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(RtunError):
    """The command line does not make sense; see `rtun COMMAND --help`."""

    exit_code = 2


class NoDaemonError(RtunError):
    """No rtun daemon answered. Start `rtun server` on your computer and log in with an
    `ssh -R` forward of its socket (see README.md)."""

    exit_code = 3


class RemoteError(RtunError):
    """The daemon understood the request and refused it; its reason is the message."""

    exit_code = 4

    def __init__(self, message: str, code: Optional[int] = None) -> None:
        super().__init__(message)
        self.code = code


class ConnectionLostError(RtunError):
    """The daemon or the ssh forward went away in the middle of a request."""

    exit_code = 5
