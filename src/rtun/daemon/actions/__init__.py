"""What the daemon does for a request: notify, receive files, view."""

from __future__ import annotations

import os


class Refused(Exception):
    """The daemon will not carry out a request; ``text`` tells the client why."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


def pid_alive(pid: int) -> bool:
    """Whether a process exists (used to tell leftovers of a dead daemon from a live one's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's
    return True
