"""COPY and PASTE: this computer's clipboard, through the platform's own tools.

(Skeleton: the tools are run by ``Clipboard.copy`` and ``Clipboard.paste``.)
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from rtun.daemon.actions.files import Transfer
from rtun.protocol import wire
from rtun.protocol.receiver import FileStart
from rtun.protocol.wire import Rejected


class Sink(Transfer):
    """The one file of a COPY, kept in memory (its size was checked against the limit before
    READY, and the receiver holds the peer to it)."""

    def __init__(self) -> None:
        self._pieces: List[bytes] = []
        self.data: Optional[bytes] = None

    def start_file(self, event: FileStart) -> None:
        self._pieces = []

    def write(self, data: memoryview) -> None:
        self._pieces.append(bytes(data))

    def end_file(self) -> str:
        self.data = b"".join(self._pieces)
        self._pieces = []
        return ""

    def finish(self) -> None:
        pass

    def abort(self) -> None:
        self._pieces = []
        self.data = None

    def close(self) -> None:
        pass


class Clipboard:
    def __init__(self, copy_command: Sequence[str], paste_command: Sequence[str], max_bytes: int) -> None:
        self.copy_command = tuple(copy_command)
        self.paste_command = tuple(paste_command)
        self.max_bytes = max_bytes

    async def copy(self, data: bytes) -> None:
        raise Rejected(wire.E_UNKNOWN, "copy is not implemented yet")

    async def paste(self) -> bytes:
        raise Rejected(wire.E_UNKNOWN, "paste is not implemented yet")
