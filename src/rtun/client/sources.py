"""What `rtun send` and `rtun view` send, and how it is read: the plan of entries (a walk of
the sources), the reader that reads files through one buffer, and the progress bar.

Stdlib only, and nothing slow at import: it runs on every send.
"""

from __future__ import annotations

import os
import stat
import sys
import time

from rtun.errors import RtunError, UsageError
from rtun.protocol import framing

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: every send would pay
    from typing import BinaryIO, Iterator, List, Optional, Tuple, Union

CHUNK = 1024 * 1024  # large reads and writes: transfers should go at the speed of the channel
STDIN = "-"


class Item:
    """One thing to send: an entry for the stream, and where its data comes from."""

    __slots__ = ("entry", "source")
    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __init__(
        self,
        entry: Union[framing.DirEntry, framing.FileEntry, framing.LinkEntry],
        source: Optional[str] = None,
    ) -> None:
        self.entry = entry
        self.source = source  # a file's local path; None with a FileEntry means stdin

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Item) and (self.entry, self.source) == (other.entry, other.source)

    def __repr__(self) -> str:
        return f"Item({self.entry!r}, {self.source!r})"


class SendPlan:
    """Everything a send moves, in order (parents before what they hold), with its totals and
    the warnings about what was left out."""

    def __init__(self, items: List[Item], *, total_bytes: int, total_files: int, warnings: List[str]) -> None:
        self.items = items
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.warnings = warnings


def _split_dest(dest: Optional[str], several: bool) -> Tuple[str, Optional[str]]:
    """Split --to into (directory prefix, file name): ``x/`` or several sources mean a directory."""
    if not dest:
        return "", None
    if dest.endswith("/") or several:
        return dest.rstrip("/"), None
    return os.path.dirname(dest), os.path.basename(dest)


def plan(sources: List[str], dest: Optional[str]) -> Tuple[str, SendPlan]:
    """What to send, as entries relative to the returned destination directory."""
    dest_dir, dest_name = _split_dest(dest, several=len(sources) > 1)
    items: List[Item] = []
    warnings: List[str] = []
    total = 0
    for source in sources:
        if source == STDIN:
            if dest_name is None:
                raise UsageError("reading standard input needs --to NAME")
            items.append(Item(framing.FileEntry(dest_name, 0o644, time.time(), None)))
            continue
        try:
            st = os.stat(source)
        except OSError as exc:
            raise RtunError(f"cannot read {source}: {exc.strerror}") from None
        name = dest_name or os.path.basename(os.path.abspath(source))  # "." sends its own name
        if stat.S_ISREG(st.st_mode):
            items.append(
                Item(framing.FileEntry(name, stat.S_IMODE(st.st_mode), st.st_mtime, st.st_size), source)
            )
            total += st.st_size
        elif stat.S_ISDIR(st.st_mode):
            total += _walk(source, name, items=items, warnings=warnings)
        else:
            raise RtunError(f"{source} is not a regular file or directory")
    files = sum(1 for i in items if isinstance(i.entry, framing.FileEntry))
    return dest_dir, SendPlan(items, total_bytes=total, total_files=files, warnings=warnings)


def _walk(top: str, name: str, *, items: List[Item], warnings: List[str]) -> int:
    """Add a directory tree, parents before what they hold; links are sent as links, other
    special files are skipped."""
    total = 0
    st = os.stat(top)
    items.append(Item(framing.DirEntry(name, stat.S_IMODE(st.st_mode), st.st_mtime)))
    pending = [(top, name)]  # directories whose entries are still to be listed
    while pending:
        directory, prefix = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = _directories_first(listing)
        except OSError as exc:
            warnings.append(f"skipped {exc.filename or directory}: {exc.strerror}")
            continue
        below = []
        for entry in entries:
            remote = f"{prefix}/{entry.name}"
            try:
                st = entry.stat(follow_symlinks=False)  # lstat: a link is sent as a link
            except OSError as exc:
                warnings.append(f"skipped {entry.path}: {exc.strerror}")
                continue
            mode = st.st_mode
            if stat.S_ISREG(mode):
                items.append(
                    Item(framing.FileEntry(remote, stat.S_IMODE(mode), st.st_mtime, st.st_size), entry.path)
                )
                total += st.st_size
            elif stat.S_ISDIR(mode):
                items.append(Item(framing.DirEntry(remote, stat.S_IMODE(mode), st.st_mtime)))
                below.append((entry.path, remote))
            elif stat.S_ISLNK(mode):
                try:
                    items.append(Item(framing.LinkEntry(remote, os.readlink(entry.path))))
                except OSError as exc:
                    warnings.append(f"skipped {entry.path}: {exc.strerror}")
            else:
                warnings.append(f"skipped {entry.path}: not a regular file, directory or link")
        pending.extend(reversed(below))  # depth first, in name order
    return total


def _directories_first(listing: "Iterator[os.DirEntry[str]]") -> "List[os.DirEntry[str]]":
    """As os.walk lists them: directories (and links to them), then the rest, each by name."""
    from operator import attrgetter

    directories: "List[os.DirEntry[str]]" = []
    others: "List[os.DirEntry[str]]" = []
    for entry in listing:
        try:
            is_dir = entry.is_dir()  # the type the listing gave; a link is followed
        except OSError:
            is_dir = False
        (directories if is_dir else others).append(entry)
    name = attrgetter("name")
    directories.sort(key=name)
    others.sort(key=name)
    return directories + others


class Progress:
    """A tqdm bar on a terminal (when tqdm is installed); otherwise nothing at all."""

    def __init__(self, total: Optional[int], *, files: int, enabled: bool) -> None:
        self._bar = None
        self._enabled = enabled
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            desc = f"{files} files" if files > 1 else None
            self._bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                file=sys.stderr,
                leave=False,
            )

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def say(self, text: str) -> None:
        """A line for the user on stderr (above the bar, if one is shown); nothing with -q."""
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class Reader:
    """Reads files through one reused 1 MiB buffer: a fresh buffer per file would cost a 1 MiB
    allocation and zero-fill for every small file of a tree."""

    def __init__(self) -> None:
        self._buffer = memoryview(bytearray(CHUNK))

    def chunks(self, source: Optional[str]) -> Iterator[memoryview]:
        """A file's data (standard input for None); each chunk is valid until the next one."""
        if source is None:
            yield from self._stream(sys.stdin.buffer, "standard input")
            return
        fd = self._open(source)
        try:
            while True:
                length = self._read(fd, self._buffer, source)
                if not length:
                    return
                yield self._buffer[:length]
        finally:
            os.close(fd)

    def read_whole(self, source: str, size: Optional[int]) -> memoryview:
        """A file smaller than the buffer, listed with ``size``, in one read() of a byte more:
        getting that byte, or fewer, shows that it changed size. Valid until the next read."""
        assert size is not None and size < len(self._buffer)
        fd = self._open(source)
        try:
            return self._buffer[: self._read(fd, self._buffer[: size + 1], source)]
        finally:
            os.close(fd)

    @staticmethod
    def _open(source: str) -> int:
        try:
            return os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise RtunError(f"cannot read {source}: {exc.strerror or exc}") from None

    @staticmethod
    def _read(fd: int, into: memoryview, source: str) -> int:
        try:
            return os.readv(fd, [into])
        except OSError as exc:
            raise RtunError(f"cannot read {source}: {exc.strerror or exc}") from None

    def _stream(self, stream: BinaryIO, what: str) -> Iterator[memoryview]:
        try:
            while True:
                length = stream.readinto(self._buffer)  # type: ignore[attr-defined]
                if not length:
                    return
                yield self._buffer[:length]
        except OSError as exc:
            raise RtunError(f"cannot read {what}: {exc.strerror or exc}") from None
