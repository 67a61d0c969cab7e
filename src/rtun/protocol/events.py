"""What the daemon's receiver (receiver.py) reads from a connection: its events, values only.

A request is a value of ``messages``; an upload's parts are the events below. File data is a
view of the receiver's buffer, valid until the receiver is called again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple, Union

if TYPE_CHECKING:
    from rtun.protocol import messages
    from rtun.protocol.messages import Request, Sentinel


class Event:
    __slots__: Tuple[str, ...] = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"


class Upload(Event):
    """A SEND, VIEW, PUT, COPY or EDIT request: the daemon answers with ``accept()`` or
    ``reject()``.

    ``parts`` is the SEND path or the PUT destination as safe components (() for VIEW and EDIT,
    whose name is only a name, for COPY, and for a PUT to the save directory itself).
    """

    __slots__ = ("request", "parts")

    def __init__(
        self,
        request: Union[
            messages.Send, messages.View, messages.Put, messages.Copy, messages.Edit, messages.Range
        ],
        parts: Tuple[str, ...],
    ) -> None:
        self.request = request
        self.parts = parts


class Directory(Event):
    __slots__ = ("parts", "mode", "mtime")

    def __init__(self, parts: Tuple[str, ...], mode: int, mtime: float) -> None:
        self.parts, self.mode, self.mtime = parts, mode, mtime


class Link(Event):
    __slots__ = ("parts", "target")

    def __init__(self, parts: Tuple[str, ...], target: str) -> None:
        self.parts, self.target = parts, target


class FileStart(Event):
    """A file's data follows as Data events; mode and mtime are None for v1 uploads, size is
    None when the sender did not know it (standard input)."""

    __slots__ = ("parts", "mode", "mtime", "size")

    def __init__(
        self, parts: Tuple[str, ...], mode: Optional[int], mtime: Optional[float], size: Optional[int]
    ) -> None:
        self.parts, self.mode, self.mtime, self.size = parts, mode, mtime, size


class Data(Event):
    __slots__ = ("data",)

    def __init__(self, data: memoryview) -> None:
        self.data = data


class FileEnd(Event):
    """Every byte of the file has arrived, and its size and SHA-256 (``digest``, hex) are
    verified."""

    __slots__ = ("size", "digest")

    def __init__(self, size: int, digest: str = "") -> None:
        self.size = size
        self.digest = digest


class WholeFile(Event):
    """A small file of a PUT whose every byte arrived at once: what FileStart, Data and FileEnd
    would say, in one event. ``data`` is a view of the receive buffer, valid until the receiver
    is called again; size and SHA-256 (``digest``, hex) are verified."""

    __slots__ = ("parts", "mode", "mtime", "size", "data", "digest")

    def __init__(
        self, parts: Tuple[str, ...], mode: int, mtime: float, size: int, data: memoryview, digest: str
    ) -> None:
        self.parts, self.mode, self.mtime, self.size, self.data, self.digest = (
            parts,
            mode,
            mtime,
            size,
            data,
            digest,
        )


class UploadEnd(Event):
    """The upload is complete; the daemon now owes its final ``reply``."""

    __slots__ = ()


if TYPE_CHECKING:
    ReceivedEvent = Union[Request, Event, Sentinel]  # Sentinel: NEED_DATA or CLOSED
