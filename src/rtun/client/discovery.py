"""Which socket leads to the daemon: -s, else $RTUN_SOCK, else the sockets `rtun ssh` forwards
into ~/.rtun, newest first and those of the same laptop first; each is probed before use.

Stdlib only: it runs on every `rtun` command that talks to the daemon.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Callable, Optional

from rtun import paths
from rtun.client.pump import ClientConnection, PathTooLong
from rtun.errors import NoDaemonError

SETUP_HINT = (
    "log in from your computer with `rtun ssh HOST` (or run `rtun server` there and log in "
    "with the `ssh -R` forward shown in README.md)"
)


def _say(message: str) -> None:
    """With $RTUN_VERBOSE set: one line on stderr saying which socket was used and why."""
    if os.environ.get("RTUN_VERBOSE"):
        import sys

        sys.stderr.write(f"rtun: {message}\n")


def connect(
    explicit: Optional[str] = None, *, probe: "Optional[Callable[[ClientConnection], None]]" = None
) -> ClientConnection:
    """The first socket that answers PING: -s, else $RTUN_SOCK, else ~/.rtun/rtun.sock* newest
    first. When $RTUN_SOCK does not answer (a shell in a tmux started by an earlier login keeps
    the old name), the live sockets of the same laptop come first, then any live one."""
    if explicit:
        try:
            return ClientConnection.open(explicit, probe=probe)
        except NoDaemonError as exc:
            raise NoDaemonError(f"no rtun daemon answers on {exc.message}; {SETUP_HINT}") from None
    named = os.environ.get("RTUN_SOCK")
    laptop = None
    failed = ""
    if named:
        try:
            conn = ClientConnection.open(named, probe=probe)
        except (NoDaemonError, PathTooLong) as exc:  # no answer, or a path too long for sun_path
            failed = exc.message
            laptop = paths.laptop_of(named)
        else:
            _say(f"using {named} ($RTUN_SOCK)")
            return conn
    candidates = [p for p in paths.same_laptop_first(paths.socket_candidates(), laptop) if p != named]
    tried = []
    for path in candidates:
        try:
            conn = ClientConnection.open(path, probe=probe)
        except NoDaemonError as exc:
            tried.append(exc.message)
            continue
        except PathTooLong:  # skip a candidate
            tried.append(f"{path}: too long for a socket path")
            continue
        _say(_why(path, named=named, failed=failed, laptop=laptop))
        return conn
    where = os.path.join(paths.rtun_dir(), paths.SOCKET_NAME + "*")
    found = f"tried {'; '.join(tried)}" if tried else f"no other socket in {where}"
    if named:
        raise NoDaemonError(
            f"no rtun daemon answers on $RTUN_SOCK ({failed}) nor elsewhere ({found}); {SETUP_HINT}"
        )
    if not tried:
        raise NoDaemonError(f"no rtun socket found ({where}); {SETUP_HINT}")
    raise NoDaemonError(f"no rtun daemon answers ({found}); {SETUP_HINT}")


def _why(path: str, *, named: Optional[str], failed: str, laptop: Optional[str]) -> str:
    owner = paths.laptop_of(path)
    if not named:
        return f"using {path}, the newest live socket" + (f" (laptop {owner})" if owner else "")
    if laptop is not None and owner == laptop:
        reason = f"the newest live socket of the same laptop ({laptop})"
    elif laptop is not None:
        reason = f"the newest live socket; none of laptop {laptop} answers"
    else:
        reason = "the newest live socket"
    return f"$RTUN_SOCK does not answer ({failed}); using {path}, {reason}"
