"""The control masters that `rtun ssh` logins to one destination share: where a master's control
socket is, how a login finds a live one, and the lock under which one is started.

A login with no forwards of the user's own (-L, -R, -D, -w) gets its master at
``~/.rtun/masters/KEY``, KEY a hash of everything that decides the connection: the ssh command
line (``RTUN_SSH_COMMAND``), the user's connection options and the destination as typed (the
way ssh's own ``ControlPath %C`` names a connection, without an ``ssh -G`` on the way to it).
A later login with the same KEY finds that master (an alive check on its socket) and becomes a
client of it: no TCP connection, key exchange or authentication of its own. The master is
started with ``ControlPersist`` (:func:`linger`): ssh puts it in the background, in a session
of its own, away from the terminal of the login that started it; it lives while any login
uses it and ends ``linger`` seconds after the last one.
"""

from __future__ import annotations

import os

from rtun import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Sequence

DIR_NAME = "masters"
LINGER = 10  # seconds a shared master stays after its last login: a next command reuses it
LINGER_ENV = "RTUN_SSH_LINGER"  # seconds; 0: no shared masters, one private master per login
LINGER_MAX = 86400


def linger() -> int:
    """The seconds a shared master outlives its last login (``RTUN_SSH_LINGER``, default 10;
    0 turns sharing off)."""
    value = os.environ.get(LINGER_ENV, "").strip()
    if not value:
        return LINGER
    try:
        return min(max(int(value), 0), LINGER_MAX)
    except ValueError:
        return LINGER


def _private_dir(path: str) -> bool:
    """Whether ``path`` is a real directory (no symlink) of this user that no one else may use."""
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def directory() -> "Optional[str]":
    """``~/.rtun/masters``, made 0700 if missing; None if it (or ``~/.rtun``) is not a private
    directory of this user: then a login gets a private master, as without sharing."""
    top = paths.rtun_dir()
    path = os.path.join(top, DIR_NAME)
    try:
        os.makedirs(top, mode=0o700, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    return path if _private_dir(top) and _private_dir(path) else None


def _digest(data: bytes) -> str:
    """SHA-256 in hex. The interpreter's built-in module when there is one: hashlib would load
    OpenSSL (~3 ms) while the user waits for ssh to start."""
    import importlib

    for name in ("_sha2", "_sha256"):  # Python 3.12+, then 3.9-3.11
        try:
            return str(importlib.import_module(name).sha256(data).hexdigest())
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256(data).hexdigest()


def key(base: "Sequence[str]", options: "Sequence[str]", destination: str) -> str:
    """What names a shared master: the ssh command line, the connection options, the destination."""
    words = [*base, "\0", *options, "\0", destination]
    return _digest("\0".join(words).encode("utf-8", "surrogateescape"))[:32]


def control_path(base: "Sequence[str]", options: "Sequence[str]", destination: str) -> "Optional[str]":
    """The shared master's control socket for this connection; None if there is to be none
    (sharing is off, the directory is not private, the path would not fit sun_path)."""
    if linger() <= 0:
        return None
    where = directory()
    if where is None:
        return None
    path = os.path.join(where, key(base, options, destination))
    # ssh binds PATH.XXXXXXXXXXXXXXXX first, then links it to PATH.
    return path if len(os.fsencode(path)) + 20 < paths.SUN_PATH_MAX else None


class Lock:
    """An exclusive lock beside the control socket, held from finding no master until the new
    one listens, so that two logins at once start one master (the second then shares it)."""

    def __init__(self, control: str) -> None:
        import fcntl

        self.fd: Optional[int] = os.open(control + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None


def find(control: str) -> "Optional[int]":
    """The PID of the live master at ``control``; None if there is none. A socket that refuses
    connections (its master was killed before it could remove it) is removed: ssh would not
    bind a new one over it."""
    if not os.path.lexists(control):  # a first login: no socket module to load (3-4 ms)
        return None
    import socket

    from rtun.ssh import mux

    pid = mux.alive(control)
    if pid is None and os.path.lexists(control):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(control)
            except ConnectionRefusedError:
                try:
                    os.unlink(control)
                except OSError:
                    pass
            except OSError:
                pass
    return pid
