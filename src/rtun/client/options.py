"""Where and how `rtun send` puts files, as one value handed down instead of five positionals."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: every send would pay
    from typing import Optional


class SendOptions:
    """The daemon's socket (None: discover it), the directory on your computer the files go to
    (relative to the save directory), whether they may replace files there, how many connections
    to use for large files (0: as many as raise the throughput), whether an interrupted
    transfer resumes, and whether files already there are skipped or replaced (--update).
    Not changed once made: ``below`` gives a new value."""

    __slots__ = ("socket", "dest", "overwrite", "channels", "resume", "update")

    def __init__(
        self,
        *,
        socket: Optional[str] = None,
        dest: str = "",
        overwrite: bool = False,
        channels: int = 0,
        resume: bool = True,
        update: bool = False,
    ) -> None:
        self.socket = socket
        self.dest = dest
        self.overwrite = overwrite
        self.channels = channels
        self.resume = resume
        self.update = update

    def below(self, directory: str) -> "SendOptions":
        """The same options, for a directory inside ``dest``."""
        dest = "/".join(p for p in (self.dest, directory) if p)
        return SendOptions(
            socket=self.socket,
            dest=dest,
            overwrite=self.overwrite,
            channels=self.channels,
            resume=self.resume,
            update=self.update,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SendOptions) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    __hash__ = None  # type: ignore[assignment]  # compared by value, not a key

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"SendOptions({fields})"
