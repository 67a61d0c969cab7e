"""Creating the daemon's UNIX socket safely, and removing it only while it is still ours."""

from __future__ import annotations

import logging
import os
import socket
import stat
from dataclasses import dataclass

from rtun import paths
from rtun.errors import RtunError

log = logging.getLogger("rtun.daemon")


class SocketInUseError(RtunError):
    """Another daemon answers on this socket; stop it first or choose another with -s."""


@dataclass(frozen=True)
class Listener:
    sock: socket.socket
    path: str
    inode: int
    device: int

    def is_still_ours(self) -> bool:
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return (st.st_ino, st.st_dev) == (self.inode, self.device)

    def remove(self) -> None:
        """Unlink the socket file unless another daemon has replaced it meanwhile."""
        if self.is_still_ours():
            try:
                os.unlink(self.path)
            except OSError as exc:
                log.warning("could not remove socket %s: %s", self.path, exc)


def prepare_directory(directory: str) -> None:
    """Create the socket's directory (0700) and refuse one that others may write to."""
    if directory == paths.rtun_dir() and not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise RtunError(f"socket directory {directory}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise RtunError(f"socket directory {directory} is not a directory")
    if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise RtunError(
            f"refusing to start: socket directory {directory} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):o}); use a private directory such as ~/.rtun"
        )


def _accepts_connections(path: str) -> bool:
    """Whether something listens on the socket: a stale one refuses at once. A live socket is
    never replaced, whatever speaks on it."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _temporary_path(directory: str, name: str) -> str:
    """Where to bind before the rename: ``.NAME.PID.tmp``, or where that would not fit in
    sun_path, a free name as long as NAME itself (which fits wherever NAME does)."""
    preferred = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    if paths.socket_path_fits(preferred):
        return preferred
    letters = "abcdefghijklmnopqrstuvwxyz"
    for _ in range(1000):
        candidate = "".join(letters[b % len(letters)] for b in os.urandom(len(name)))
        if candidate != name and not os.path.lexists(os.path.join(directory, candidate)):
            return os.path.join(directory, candidate)
    raise RtunError(f"cannot listen on {os.path.join(directory, name)}: no free temporary name beside it")


def bind(path: str) -> Listener:
    """Listen on ``path`` with mode 0600 from the first moment the file exists.

    The socket is bound under a hidden temporary name with a restrictive umask and then renamed
    into place, so a stale socket is replaced atomically and no client ever sees a wider mode.
    """
    path = os.path.abspath(path)
    if not paths.socket_path_fits(path):
        raise RtunError(
            f"socket path is too long for this OS (at most {paths.SUN_PATH_MAX - 1} bytes): {path}"
        )
    directory, name = os.path.split(path)
    prepare_directory(directory)
    try:
        existing = os.lstat(path)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise RtunError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    if existing is not None:
        if not stat.S_ISSOCK(existing.st_mode):
            # Only ever replace a stale socket, never a file of the user's.
            raise RtunError(f"refusing to replace {path}: it exists and is not a socket")
        if _accepts_connections(path):
            raise SocketInUseError(f"socket {path} is already in use: something accepts connections on it")
        log.info("replacing stale socket %s", path)
    temporary = _temporary_path(directory, name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if os.path.lexists(temporary):  # only ever our own PID's leftover (_temporary_path)
            os.unlink(temporary)
        previous_umask = os.umask(0o177)
        try:
            sock.bind(temporary)
        finally:
            os.umask(previous_umask)
        sock.listen(128)
        os.rename(temporary, path)
        st = os.lstat(path)
    except OSError as exc:
        sock.close()
        raise RtunError(f"cannot listen on {path}: {exc.strerror or exc}") from None
    return Listener(sock, path, st.st_ino, st.st_dev)
