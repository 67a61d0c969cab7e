"""Leftovers of daemons that died mid-work (SIGKILL, power loss), found by the PID in their names.

Partial files are ``.rtun-<pid>-<random>.part`` anywhere below the save directory, viewed
files live in ``rtun-view-<pid>-<random>/`` in the temporary directory. Either kind is removed
once the process that made it is gone, never while it, or this daemon, still runs.
"""

from __future__ import annotations

import os
import shutil
import stat
from typing import Iterator, List, Tuple


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's
    return True


def owner_gone(name: str, prefix: str) -> bool:
    """Whether the process named in ``<prefix><pid>-...`` is neither this one nor alive."""
    pid_text = name[len(prefix):].split("-", 1)[0]
    if not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not pid_alive(pid)


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
    """Remove this user's ``<prefix><pid>-*<suffix>`` files and directories whose process is
    gone; returns what was removed."""
    removed = []
    for parent, name in _entries(directory, recursive):
        if not (name.startswith(prefix) and name.endswith(suffix)) or not owner_gone(name, prefix):
            continue
        path = os.path.join(parent, name)
        try:
            st = os.lstat(path)
            if st.st_uid != os.getuid():
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(path)
            else:
                os.unlink(path)
        except OSError:
            continue
        removed.append(path)
    return removed
