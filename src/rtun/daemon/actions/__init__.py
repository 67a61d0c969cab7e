"""What the daemon does for a request: notify, receive files, view."""

from __future__ import annotations


class Refused(Exception):
    """The daemon will not carry out a request; ``text`` tells the client why."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
