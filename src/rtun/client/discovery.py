"""Which socket leads to the daemon: -s, else $RTUN_SOCK, else the sockets `rtun ssh` forwards
into ~/.rtun, newest first and those of the same laptop first; each is probed before use.

Stdlib only: it runs on every `rtun` command that talks to the daemon.
"""

from __future__ import annotations

import os
import socket
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Callable, List, Optional, Tuple

from rtun import paths
from rtun.client.pump import ClientConnection, PathTooLong
from rtun.errors import NoDaemonError

SETUP_HINT = (
    "log in from your computer with `rtun ssh HOST` (or run `rtun server` there and log in "
    "with the `ssh -R` forward shown in README.md)"
)
START_HINT = "rtun server -d"
ACCEPT_TIMEOUT = 2.0  # a listener accepts at once, whatever is behind it


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
            raise _no_daemon([(explicit, exc.message)], f"no rtun daemon answers on {exc.message}") from None
    named = os.environ.get("RTUN_SOCK")
    laptop = None
    failed = ""
    tried: "List[Tuple[str, str]]" = []  # each socket that did not answer, and what it said
    if named:
        try:
            conn = ClientConnection.open(named, probe=probe)
        except (NoDaemonError, PathTooLong) as exc:  # no answer, or a path too long for sun_path
            failed = exc.message
            laptop = paths.laptop_of(named)
            tried.append((named, exc.message))
        else:
            _say(f"using {named} ($RTUN_SOCK)")
            return conn
    candidates = [p for p in paths.same_laptop_first(paths.socket_candidates(), laptop) if p != named]
    for path in candidates:
        try:
            conn = ClientConnection.open(path, probe=probe)
        except NoDaemonError as exc:
            tried.append((path, exc.message))
            continue
        except PathTooLong:  # skip a candidate
            tried.append((path, f"{path}: too long for a socket path"))
            continue
        _say(_why(path, named=named, failed=failed, laptop=laptop))
        return conn
    where = os.path.join(paths.rtun_dir(), paths.SOCKET_NAME + "*")
    others = [message for path, message in tried if path != named]
    found = f"tried {'; '.join(others)}" if others else f"no other socket in {where}"
    if named:
        raise _no_daemon(tried, f"no rtun daemon answers on $RTUN_SOCK ({failed}) nor elsewhere ({found})")
    if not tried:
        raise NoDaemonError(
            f"no rtun socket found ({where}): nothing forwards this login to your computer; {SETUP_HINT}"
        )
    raise _no_daemon(tried, f"no rtun daemon answers ({found})")


def _no_daemon(tried: "List[Tuple[str, str]]", said: str) -> NoDaemonError:
    """What to do about sockets that did not answer. One that accepts with no daemon at its far
    end is a live forward whose daemon is not running: start the daemon, and this session works
    again. Sockets that refuse are left from sessions that have ended: log in again."""
    for path, message in tried:
        if _accepts(path):
            reason = message[len(path) + 2 :] if message.startswith(path + ": ") else message
            return NoDaemonError(
                f"the forward to your computer ({path}) is up, but no rtun daemon answers at its "
                f"end ({reason}): start the daemon on your computer with `{START_HINT}`, and this "
                "session works again as it is"
            )
    if tried and all(_is_socket(path) for path, _ in tried):
        which = "the socket is" if len(tried) == 1 else "the sockets are"
        return NoDaemonError(
            f"{said}: nothing listens there any more, {which} left from ssh sessions that have "
            f"ended; {SETUP_HINT}"
        )
    return NoDaemonError(f"{said}; {SETUP_HINT}")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _accepts(path: str) -> bool:
    """Whether something listens on ``path``: sshd does for as long as its session lasts, and
    takes a connection whatever is at the far end; a socket of an ended session refuses."""
    if not paths.socket_path_fits(path):
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(ACCEPT_TIMEOUT)
    try:
        sock.connect(path)
    except OSError:
        return False
    finally:
        sock.close()
    return True


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
