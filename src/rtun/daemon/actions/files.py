"""Receiving files: what the daemon does with each event of a SEND or PUT upload.

The protocol core has already checked the order, the limits, the paths, every size and every
SHA-256; this action decides where things go (the save directory, a free name unless the client
asked to overwrite or update, links only when they stay inside the transfer) and keeps the
free-space reserve. With --update it first answers which files are already there (PUT
``update: "check"``), by what it finds on disk, never by what the client says. It never
touches the socket.
"""

from __future__ import annotations

import os
import stat
import time
from typing import Dict, List, Optional, Set, Tuple, Union

from rtun.daemon.actions.viewtypes import HEAD_LEN, LAUNCHER_TYPES, extension, is_launcher
from rtun.daemon.storage.direct import DIRECT_MIN
from rtun.daemon.storage.small import SMALL_MAX, Placed, SmallFiles
from rtun.daemon.storage.space import Claim, Space
from rtun.daemon.storage.tree import UPDATE, PartFile, Tree, UnnamedFile, refusal_for
from rtun.daemon.storage.writing import Workers
from rtun.protocol import messages, names
from rtun.protocol.events import Directory, FileStart, Link, WholeFile
from rtun.protocol.limits import MAX_REPLY_LISTING, MAX_TRACKED_DIRECTORIES
from rtun.protocol.messages import Rejected

DEFAULT_MODE = 0o644  # v1 uploads carry no mode
OBJECT_COST = 64  # bytes a small Python object costs beyond its text: budgets count memory
MAX_MADE = 8  # tracked PUTs whose directories wait for their "mtimes" PUT (each within 4 MiB)
MADE_SECONDS = 3600.0
UNNAMED_MAX = 1024 * 1024  # a tree's files up to this size have no name until complete
SAME_MTIME = 1e-3  # seconds: mtimes this close are the same (a float in JSON, ns on disk)


class Transfer:
    """One upload into ``tree`` below ``base``: fed the receiver's events, in order."""

    def __init__(
        self,
        tree: Tree,
        base: Tuple[str, ...],
        overwrite: int,
        claim: Claim,
        default_mode: int = DEFAULT_MODE,
        check: bool = False,
    ) -> None:
        self.tree = tree
        self.base = base
        self.overwrite = overwrite  # tree.KEEP, OVERWRITE or UPDATE
        # PUT "update": "check": nothing is written; each file and link entry is compared with
        # what is on disk, and the reply lists them by their index among those entries.
        self.check = check
        self.checked = 0
        self.unchanged: List[List[object]] = []
        self.changed: List[List[object]] = []
        self.claim = claim  # space on the disk, paid for by every byte written
        self.default_mode = default_mode
        # What the reply lists, bounded (MAX_REPLY_LISTING): past it, only counted.
        self.saved: List[str] = []
        self.skipped: List[str] = []
        self.unlisted_saved = 0
        self.unlisted_skipped = 0
        self._listed_bytes = 0
        self._tracked_bytes = 0
        self.files = 0
        self.bytes = 0
        # Modes and mtimes of the directories this transfer made, applied last (writing inside a
        # directory changes its mtime). Directories that existed before are left as they were.
        self._directories: Dict[Tuple[str, ...], Tuple[int, float]] = {}
        self._file: Optional[FileStart] = None
        self._part: Optional[Union[PartFile, UnnamedFile]] = None
        self._head: Optional[bytes] = None  # the first bytes of a file that may be a launcher
        self._mode = DEFAULT_MODE
        self._data: Optional[bytearray] = None  # a small file's data, until it is verified
        self._small = SmallFiles(tree, overwrite)
        # PUT "mtimes": the directories an earlier PUT of this transfer made get their mtime back.
        self.restore: "Set[Tuple[str, ...]]" = set()

    def _list(self, listing: List[str], text: str) -> bool:
        """Add to what the reply lists while the budget lasts; False once it is spent."""
        self._listed_bytes += len(text) + OBJECT_COST  # what the str and its list slot take
        if self._listed_bytes > MAX_REPLY_LISTING:
            return False
        listing.append(text)
        return True

    def _saved(self, path: str) -> None:
        if not self._list(self.saved, path):
            self.unlisted_saved += 1

    def _checked(self, listing: List[List[object]], parts: Tuple[str, ...]) -> None:
        """An entry of a check, listed by index (with its path while the budget lasts)."""
        path = self.tree.path(parts)
        listing.append([self.checked, path if self._list([], path) else ""])

    def _check_file(self, event: FileStart) -> None:
        st = self.tree.existing(event.parts)
        if st is not None and stat.S_ISREG(st.st_mode):
            same = (
                st.st_size == event.size
                and event.mtime is not None
                and abs(st.st_mtime - event.mtime) < SAME_MTIME
            )
            self._checked(self.unchanged if same else self.changed, event.parts)
        self.checked += 1

    def directory(self, event: Directory) -> None:
        if self.check:  # a check makes nothing
            return
        self._placed(self._small.flush())  # before the tree may close a descriptor they use
        self.tree.directory(event.parts)
        if self.tree.made != event.parts:  # it existed before: its mode and mtime stay,
            if event.parts in self.restore:  # ... unless this transfer's first PUT made it
                self._track(event.parts, -1, event.mtime)
            return
        self._track(event.parts, event.mode, event.mtime)

    def _track(self, parts: Tuple[str, ...], mode: int, mtime: float) -> None:
        """Metadata applied at the end (mode -1: the mtime alone)."""
        self._tracked_bytes += sum(len(p) + OBJECT_COST for p in parts) + OBJECT_COST
        if self._tracked_bytes <= MAX_TRACKED_DIRECTORIES:
            self._directories[parts] = (mode, mtime)
        else:  # memory stays bounded; this directory's mtime may move as files arrive in it
            self._set_metadata(parts, mode, mtime)

    def _set_metadata(self, parts: Tuple[str, ...], mode: int, mtime: float) -> None:
        if mode >= 0:
            self.tree.set_metadata(parts, mode, mtime)
            return
        try:
            os.utime(self.tree.directory(parts, create=False), (mtime, mtime))
        except OSError as exc:
            raise refusal_for(exc, "/".join(parts)) from None

    def link(self, event: Link) -> None:
        if self.check:
            if self.tree.link_target(event.parts) == event.target:
                self._checked(self.unchanged, event.parts)
            self.checked += 1
            return
        self._placed(self._small.flush())
        if not names.link_stays_inside(event.parts, event.target, len(self.base) + 1):
            if not self._list(
                self.skipped, f"{'/'.join(event.parts)}: symbolic link points outside the transfer"
            ):
                self.unlisted_skipped += 1
            return
        self._saved(self.tree.link(event.parts, event.target, self.overwrite))

    def start_file(self, event: FileStart) -> None:
        if self.check:  # a question: no data follows
            self._check_file(event)
            return
        mode = self.default_mode if event.mode is None else event.mode
        if mode & 0o111 and extension(event.parts[-1]) in LAUNCHER_TYPES:
            mode &= ~0o111  # a double click would run it
        self._file = event
        self._mode = mode
        if event.mode is not None and event.size is not None and event.size <= SMALL_MAX:
            self._data = bytearray()  # a tree's small file: held until verified (storage/small.py)
            return
        self._placed(self._small.flush())  # files in order; descriptors the helpers use stay open
        # Files of a tree up to UNNAMED_MAX are received unnamed where the system allows, large
        # ones past the page cache. v1 uploads (one file per connection: a FileStart without a
        # mode) keep a temporary name on disk.
        unnamed = event.mode is not None and event.size is not None and event.size <= UNNAMED_MAX
        direct = event.size is not None and event.size >= DIRECT_MIN
        self._part = self.tree.new_file(event.parts, mode, unnamed, direct)
        # Only a file that would arrive executable needs its first bytes looked at.
        self._head = b"" if self._part.mode & 0o111 else None

    def write(self, data: memoryview) -> None:
        # Claimed before it is written: declared totals may be lies, several transfers share
        # the disk, and the reserve must hold whatever they send.
        self.claim.written(len(data))
        if self._data is not None:
            self._data += data
            return
        part = self._part
        assert part is not None
        part.write(data)
        head = self._head
        if head is not None and len(head) < HEAD_LEN:
            self._head = head + bytes(data[: HEAD_LEN - len(head)])

    def end_file(self) -> Optional[str]:
        """The file is complete and verified: give it its final name, which is returned (None
        for a small file of a tree: it is placed a little later, in order)."""
        event = self._file
        assert event is not None
        self._file = None
        if self._data is not None:
            data, self._data = self._data, None
            # Executable content a desktop takes for a launcher loses its execute bits.
            drop = bool(self._mode & 0o111 & ~self.tree.umask) and is_launcher(bytes(data[:HEAD_LEN]))
            self._placed(self._small.add(event.parts, self._mode, event.mtime, data, drop))
            return None
        part = self._part
        assert part is not None
        part.finish(event.mtime, drop_execute=self._head is not None and is_launcher(self._head))
        final = part.place(event.parts[-1], self.overwrite)
        self._part = None
        parts = event.parts[:-1] + (final,)
        self._placed([(parts, part.size)])
        return self.tree.path(parts)

    def whole_file(self, event: WholeFile) -> None:
        """A file of a tree that arrived whole and verified: start_file, write and end_file in
        one call, its data copied once (the event's view dies at the next event)."""
        if self.check or event.size > SMALL_MAX:
            self.start_file(FileStart(event.parts, event.mode, event.mtime, event.size))
            self.write(event.data)
            self.end_file()
            return
        self.claim.written(event.size)
        mode = event.mode
        if mode & 0o111:
            if extension(event.parts[-1]) in LAUNCHER_TYPES:
                mode &= ~0o111  # a double click would run it
            drop = bool(mode & 0o111 & ~self.tree.umask) and is_launcher(bytes(event.data[:HEAD_LEN]))
        else:
            drop = False
        self._placed(self._small.add(event.parts, mode, event.mtime, bytes(event.data), drop))

    def _placed(self, placed: Placed) -> None:
        for parts, size in placed:
            self._saved(self.tree.path(parts))
            self.files += 1
            self.bytes += size

    @property
    def made_directories(self) -> "List[Tuple[str, ...]]":
        return [parts for parts, (mode, _) in self._directories.items() if mode >= 0]

    def finish(self) -> None:
        """After the last entry: the metadata of the directories made, deepest first."""
        self._placed(self._small.flush())
        for parts, (mode, mtime) in sorted(self._directories.items(), key=lambda d: len(d[0]), reverse=True):
            self._set_metadata(parts, mode, mtime)

    def abort(self) -> None:
        """The upload failed: the file being received goes, no final name is touched."""
        self._small.abandon()
        self._data = None
        if self._part is not None:
            self._part.discard()
            self._part = None

    def close(self) -> None:
        self.abort()
        self.claim.close()
        self.tree.close()


class Uploads:
    """SEND and PUT, confined to the configured save directory."""

    def __init__(self, save_dir: str, min_free: int, umask: int) -> None:
        # Resolved once, at start: a save directory that is a link to another (a common
        # ~/Downloads set-up) is used as its target; below it, nothing is followed.
        self.save_dir = os.path.realpath(save_dir)
        self.space = Space(self.save_dir, min_free)
        self.umask = umask
        self.workers = Workers()  # the helper threads of every transfer; close() stops them
        self._made: Dict[str, Tuple[float, Set[Tuple[str, ...]]]] = {}  # PUT "track" tokens

    def close(self) -> None:
        """The daemon stops: what the helper threads are writing is written, then they end."""
        self.workers.shutdown()

    def begin(self, request: Union[messages.Send, messages.Put], base: Tuple[str, ...]) -> Transfer:
        """Checks that need no data, before READY: the declared size must fit."""
        check = False
        if isinstance(request, messages.Send):
            needed, overwrite, base = request.size, 0, base[:-1]
        else:
            needed, overwrite = request.total_bytes, int(request.overwrite)
            if request.update == messages.UPDATE_REPLACE:
                overwrite = UPDATE
            check = request.update == messages.UPDATE_CHECK
        try:
            tree = Tree(self.save_dir, self.umask, self.workers)  # made again if it was removed
        except OSError as exc:
            raise Rejected(
                messages.E_CREATE, f"cannot use the save directory {self.save_dir}: {exc.strerror or exc}"
            ) from None
        try:
            claim = Claim(self.space, needed)
        except BaseException:
            tree.close()
            raise
        transfer = Transfer(tree, base, overwrite, claim, check=check)
        if isinstance(request, messages.Put) and request.mtimes:
            transfer.restore = self._made.pop(request.mtimes, (0.0, set()))[1]
        return transfer

    def made(self, transfer: Transfer) -> str:
        """A token for the directories ``transfer`` made (PUT "track"), for a later "mtimes"."""
        now = time.monotonic()
        for token in [t for t, (when, _) in self._made.items() if now - when > MADE_SECONDS]:
            del self._made[token]
        while len(self._made) >= MAX_MADE:
            del self._made[min(self._made, key=lambda t: self._made[t][0])]
        token = os.urandom(16).hex()
        self._made[token] = (now, set(transfer.made_directories))
        return token

    @staticmethod
    def summary(transfer: Transfer) -> str:
        if transfer.check:
            return (
                f"checked {transfer.checked} files for --update in {transfer.tree.path(transfer.base)}: "
                f"{len(transfer.unchanged)} unchanged, {len(transfer.changed)} changed"
            )
        skipped = len(transfer.skipped) + transfer.unlisted_skipped
        return (
            f"received {transfer.files} files ({transfer.bytes} bytes) into "
            f"{transfer.tree.path(transfer.base)}" + (f", skipped {skipped}" if skipped else "")
        )

    @staticmethod
    def reply(transfer: Transfer) -> Dict[str, object]:
        """PUT's reply: what was saved and skipped, with counts of what the listing left out."""
        if transfer.check:
            return {"unchanged": transfer.unchanged, "changed": transfer.changed}
        data: Dict[str, object] = {"saved": transfer.saved, "skipped": transfer.skipped}
        if transfer.unlisted_saved or transfer.unlisted_skipped:
            data["unlisted"] = {"saved": transfer.unlisted_saved, "skipped": transfer.unlisted_skipped}
        return data
