"""Leftovers of daemons that died mid-work (SIGKILL, power loss), told apart from live work by
a lock: a live daemon holds an exclusive ``flock`` on every temporary file it writes and on its
directory of viewed files, and the kernel drops the lock when the process dies. A PID in a name
would not do: after a reboot or a long uptime it belongs to some other live process.

Partial files are ``.rtun-<pid>-<random>.part`` anywhere below the save directory, viewed files
live in ``rtun-view-<pid>-<random>/`` in the temporary directory. A temporary symbolic link
(which cannot be locked) is renamed microseconds after it is made, so one that is older than a
minute is a leftover too.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
import time
from typing import Iterator, List, Optional, Tuple

LINK_MAX_AGE = 60.0  # seconds: no live daemon keeps a temporary link this long
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)


def hold(fd: int) -> None:
    """Mark what ``fd`` refers to as in use by this process, until the fd is closed."""
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def private_directory(prefix: str, directory: Optional[str] = None) -> Tuple[str, int]:
    """A new directory ``<prefix><pid>-<random>`` (mode 0700) in ``directory`` (default: the
    temporary directory), and a descriptor of it that holds it: no other daemon's sweep
    removes it while this one lives. The caller closes the descriptor, then removes it."""
    path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=directory)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    try:
        hold(fd)
    except BaseException:
        os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        raise
    return path, fd


def _unused(path: str, st: os.stat_result) -> bool:
    """Whether no live process holds ``path`` (a file or directory we may open)."""
    if stat.S_ISLNK(st.st_mode):
        return time.time() - st.st_mtime > LINK_MAX_AGE
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live daemon holds it
    finally:
        os.close(fd)  # also drops our own lock at once
    return True


def _entries(directory: str, recursive: bool) -> Iterator[Tuple[str, str]]:
    if not recursive:
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for name in names:
            yield directory, name
        return
    for parent, dirs, files in os.walk(directory):  # os.walk does not follow links by default
        for name in dirs + files:
            yield parent, name


def remove_leftovers(directory: str, prefix: str, suffix: str = "", recursive: bool = False) -> List[str]:
    """Remove this user's ``<prefix>*<suffix>`` files and directories that no live process holds;
    returns what was removed."""
    removed = []
    for parent, name in _entries(directory, recursive):
        if not (name.startswith(prefix) and name.endswith(suffix)):
            continue
        if name.startswith(f"{prefix}{os.getpid()}-"):
            continue  # this daemon's own, perhaps made a moment ago and not yet locked
        path = os.path.join(parent, name)
        try:
            st = os.lstat(path)
            if st.st_uid != os.getuid() or not _unused(path, st):
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            continue
        removed.append(path)
    return removed
