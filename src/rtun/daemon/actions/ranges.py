"""RANGES, RANGE and COMMIT: one large file received as ranges, over several connections at once,
and resumed after an interruption.

The file is written in place, with ``pwrite``, into one temporary file in its final directory
(a part file, as for SEND and PUT: never under its final name until COMMIT). Each range is
verified by its SHA-256 as it arrives; COMMIT checks that the verified ranges cover the file
exactly and that the digest of their digests is the client's, then places the file as PUT
would. A transfer whose connections all went away is kept, under its temporary name, for
``KEEP_SECONDS``; the same client sending the same file again (the same ``key``) is told which
ranges are already here and sends only the rest. Nothing here touches the socket.

Space: every block a write newly takes on the disk is paid for (storage/space.py) before it is
written, whatever order ranges arrive in (storage/extents.py), and while connections are
attached the file holds a claim for what it has still to take, so two files cannot both pass
the open check against the same free space. Descriptors: a file holds only its part file's;
its directory is found again from the save directory, without following links, when it is
needed (at COMMIT, resumption and removal). Mode: the part file has no execute bits until
COMMIT gives it its final mode.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import os
import stat
import time
from concurrent.futures import Future
from typing import Dict, List, Optional, Tuple

from rtun.daemon.actions.files import DEFAULT_MODE
from rtun.daemon.actions.viewtypes import HEAD_LEN, LAUNCHER_TYPES, extension, is_launcher
from rtun.daemon.storage.direct import DirectAt
from rtun.daemon.storage.extents import Extents, block_size
from rtun.daemon.storage.space import Claim, Space
from rtun.daemon.storage.tree import UPDATE, PartFile, Tree, refusal_for
from rtun.daemon.storage.writing import Workers
from rtun.protocol import messages, names
from rtun.protocol.limits import MAX_RANGES, MIN_RANGE
from rtun.protocol.messages import Rejected

log = logging.getLogger("rtun.daemon")

KEEP_SECONDS = 3600.0  # an interrupted transfer's data waits this long for its resumption
STALE_SECONDS = 60.0  # a file no range reached for this long may make room, connections or not
MAX_FILES = 16  # ranged files open or kept at once (each holds one descriptor: its part file)
META_PIECES = 64  # separate pieces of a file per block of the file system's own (extent maps)
META_SPAN = 1 << 21  # blocks of a file per block of extent map (ext4: 128 MiB an extent)


class RangedFile:
    def __init__(
        self, request: messages.Ranges, tree: Tree, umask: int, save_dir: str, workers: Workers
    ) -> None:
        self.key = request.key
        self.parts = names.join(names.components(request.dest) if request.dest else (), request.name)
        self.size = request.size
        self.mtime = request.mtime
        self.overwrite = UPDATE if request.update else int(request.overwrite)  # how COMMIT places it
        mode = request.mode if request.mode else DEFAULT_MODE
        if extension(self.parts[-1]) in LAUNCHER_TYPES:
            mode &= ~0o111
        self.mode = stat.S_IMODE(mode) & 0o777 & ~umask  # given at COMMIT; until then no execute bits
        part = tree.new_file(self.parts, self.mode & ~0o111)  # named, buffered: kept between connections
        assert isinstance(part, PartFile) and part.fd is not None
        self.part: Optional[PartFile] = part
        self._writes = DirectAt(part.fd, save_dir)  # whole ranges past the page cache
        self._workers = workers
        self.extents = Extents(self.size, block_size(os.fstat(part.fd).st_blksize))
        block = self.extents.block
        # The file system's own blocks (extent maps): one up front, one more per META_PIECES
        # pieces as they appear.
        self.allowance = block * (1 + self.extents.blocks // META_SPAN)
        self._meta_paid = 0  # bytes of extent map paid as pieces appeared
        self.claim: Optional[Claim] = None  # while connections are attached: what is still to come
        self.verified: Dict[int, Tuple[int, bytes]] = {}  # offset -> (length, SHA-256)
        self._starts: List[int] = []  # the offsets of ``verified``, sorted
        self.users = 0  # connections attached now
        self.in_flight: Dict[int, int] = {}  # offset -> size of ranges being received now
        self.last_activity = time.monotonic()
        self.connections = 0  # connections that attached since it was opened or resumed
        self.received = 0  # bytes received since then
        self.idle_since = time.monotonic()
        self._head = bytearray(min(HEAD_LEN, self.size))  # the launcher check reads it at COMMIT

    @property
    def what(self) -> str:
        return "/".join(self.parts)

    @property
    def to_come(self) -> int:
        """What the file may still take on the disk: claimed while connections are attached."""
        return self.extents.left_bytes + self.allowance

    @property
    def paid(self) -> int:
        """What the file has paid for (and may take on the disk) so far."""
        return self.extents.covered_bytes + self._meta_paid + self.allowance

    @property
    def direct_bytes(self) -> int:
        """Bytes written past the page cache (storage/direct.py's DirectAt)."""
        return self._writes.direct_bytes

    def same_file(self, request: messages.Ranges) -> bool:
        parts = names.join(names.components(request.dest) if request.dest else (), request.name)
        return (parts, request.size) == (self.parts, self.size)

    def have(self) -> List[List[object]]:
        return [[offset, length, digest.hex()] for offset, (length, digest) in sorted(self.verified.items())]

    def begin_range(self, offset: int, size: int) -> None:
        """Before a range's first byte is written over the file: what it overlaps is no longer
        verified (a range that fails or stops short must not leave a verified range damaged),
        and no other connection may be writing there."""
        self.check_range(offset, size)
        end = offset + size
        if any(o < end and offset < o + n for o, n in self.in_flight.items()):
            raise Rejected(messages.E_BUSY, f"{self.what}: another connection is sending that range")
        for other in self._overlapping(offset, end):
            del self.verified[other]
        self.in_flight[offset] = size
        self.last_activity = time.monotonic()

    def _overlapping(self, offset: int, end: int) -> List[int]:
        """The verified ranges that [offset, end) overlaps, taken out of the sorted offsets.
        Verified ranges never overlap one another, so sorted by offset they are sorted by end
        too: the ones overlapping are those just before the first that starts at ``end`` or
        later. (A scan of all of them for every range was quadratic: 0.2 CPU-s per GiB at 1 MiB
        ranges, minutes for a file of MAX_RANGES.)"""
        starts = self._starts
        last = bisect.bisect_left(starts, end)
        first = last
        while first > 0 and starts[first - 1] + self.verified[starts[first - 1]][0] > offset:
            first -= 1
        found = starts[first:last]
        del starts[first:last]
        return found

    def end_range(self, offset: int) -> None:
        self.in_flight.pop(offset, None)

    def check_range(self, offset: int, size: int) -> None:
        if offset + size > self.size or (size == 0 and self.size):
            raise Rejected(
                messages.E_BAD_SIZE, f"range {offset}+{size} is outside the file's {self.size} bytes"
            )
        if size < MIN_RANGE and offset + size != self.size:
            raise Rejected(
                messages.E_BAD_SIZE, f"ranges are at least {MIN_RANGE} bytes, but for a file's last"
            )
        if len(self.verified) >= MAX_RANGES:
            raise Rejected(messages.E_BAD_REQUEST, "too many ranges for one file")

    def write(self, offset: int, data: memoryview) -> "Future[None]":
        """Write ``data`` at ``offset`` (inside the file: check_range), after paying for the
        blocks it newly takes; a direct write runs in a helper thread (it waits for the device,
        which the event loop must not): its future, which raises a Rejected for a failed
        write. ``data`` must stay as it is until the future is done (written)."""
        part = self.part
        assert part is not None and part.fd is not None
        self.received += len(data)
        if offset < len(self._head):  # the part file is write-only: keep the head as it passes
            self._head[offset : min(offset + len(data), len(self._head))] = data[: len(self._head) - offset]
        self.extents.add(offset, len(data), self._pay)
        if self._writes.direct:
            return self._workers.submit(self._write, data, offset)
        done: "Future[None]" = Future()  # into memory (tmpfs) or the page cache: no wait to hand off
        try:
            self._write(data, offset)
            done.set_result(None)
        except Rejected as exc:
            done.set_exception(exc)
        return done

    def _write(self, data: memoryview, offset: int) -> None:
        try:
            self._writes.write(data, offset)
        except OSError as exc:
            raise refusal_for(exc, self.what) from None

    def _pay(self, new: int, pieces: int) -> None:
        meta = self.extents.block if pieces // META_PIECES * self.extents.block > self._meta_paid else 0
        if self.claim is None:  # only attached files are written; this is a bug, not a peer
            raise Rejected(messages.E_BAD_REQUEST, f"{self.what}: no connection holds this file")
        self.claim.written(new + meta, step=0)  # from the claim of what is to come: enough
        self._meta_paid += meta

    def verified_range(self, offset: int, size: int, digest: bytes) -> None:
        """Record a range whose SHA-256 matched (begin_range forgot what it overlaps)."""
        if offset not in self.verified:
            bisect.insort(self._starts, offset)
        self.verified[offset] = (size, digest)
        self.last_activity = time.monotonic()

    def commit(self, digest: str, tree: Tree) -> str:
        """Check coverage and the digest of digests, then give the file its final mode and name
        (in ``tree``, the part's directory found again)."""
        if self.in_flight:
            raise Rejected(messages.E_BUSY, f"{self.what}: ranges are still arriving")
        position, combined = 0, hashlib.sha256()
        for offset, (length, range_digest) in sorted(self.verified.items()):
            if offset != position:
                break
            position += length
            combined.update(range_digest)
        if position != self.size:
            raise Rejected(messages.E_SHORT, f"{self.what}: ranges cover {position} of {self.size} bytes")
        if combined.hexdigest() != digest:
            raise Rejected(messages.E_CHECKSUM, f"{self.what}: the ranges are not the file the client sent")
        part = self.part
        assert part is not None and part.fd is not None
        part.size = self.size
        mode = self.mode & ~0o111 if is_launcher(bytes(self._head)) else self.mode
        if mode != part.mode:
            try:
                os.fchmod(part.fd, mode)
            except OSError as exc:
                raise refusal_for(exc, self.what) from None
            part.mode = mode
        part.finish(self.mtime)
        final = part.place(self.parts[-1], self.overwrite)
        self.part = None
        return tree.path(self.parts[:-1] + (final,))


async def written(future: "Future[None]") -> None:
    """Wait for a ranged file's write (RangedFile.write). A caller cancelled meanwhile still
    waits for the write to end: the buffer and the descriptor it uses must outlive it."""
    waiting = asyncio.wrap_future(future)
    try:
        await asyncio.shield(waiting)
    except asyncio.CancelledError:
        await asyncio.wait([waiting])
        raise


class RangedFiles:
    """The ranged files being received or kept for resumption, by key."""

    def __init__(self, save_dir: str, space: Space, umask: int, workers: Workers) -> None:
        self.save_dir = save_dir
        self.workers = workers
        self.space = space
        self.umask = umask
        self._files: Dict[str, RangedFile] = {}

    def open(self, request: messages.Ranges) -> RangedFile:
        """Start a ranged file, or with ``resume`` find the one kept under the same key."""
        self.expire()
        if request.join:
            found = self._files.get(request.key)
            if found is None or not found.same_file(request):
                raise Rejected(messages.E_BAD_REQUEST, "no such ranged transfer to join")
            return self._attach(found)
        kept = self._files.get(request.key)
        if kept is not None:
            if kept.users:
                raise Rejected(messages.E_BUSY, "this file is being received on other connections")
            if request.resume and kept.same_file(request) and self._still_there(kept):
                log.info("resuming %s: %d ranges kept", ascii(kept.what)[1:-1], len(kept.verified))
                kept.connections = kept.received = 0
                return self._attach(kept)
            self._drop(kept)
        if len(self._files) >= MAX_FILES:
            now = time.monotonic()
            unused = [
                f
                for f in self._files.values()
                if not f.users or (not f.in_flight and now - f.last_activity > STALE_SECONDS)
            ]
            if not unused:
                raise Rejected(messages.E_BUSY, "too many large files being received: try again later")
            self._drop(min(unused, key=lambda f: (f.users, f.last_activity)))
        # The whole file must fit before anything is made (the exact claim follows).
        self.space.claim(request.size)
        self.space.settle(request.size)
        tree = self._tree()
        try:
            ranged = RangedFile(request, tree, self.umask, self.save_dir, self.workers)
            try:
                self._attach(ranged)
            except BaseException:
                self._discard(ranged, tree)
                raise
        finally:
            tree.close()  # the file holds its part's descriptor, not its directories'
        assert ranged.part is not None
        ranged.part.dir_fd = -1  # found again when needed (_find)
        self._files[request.key] = ranged
        return ranged

    def _tree(self) -> Tree:
        try:
            return Tree(self.save_dir, self.umask)
        except OSError as exc:
            raise refusal_for(exc, "the save directory") from None

    def _find(self, ranged: RangedFile) -> Optional[Tree]:
        """The part file's directory opened again from the save directory, without following
        links (Tree), with the part's descriptor set to it; None if the part is no longer
        where it was made (its directory moved or replaced: the file cannot be placed)."""
        part = ranged.part
        if part is None or part.fd is None:
            return None
        try:
            tree = Tree(self.save_dir, self.umask)
        except OSError:
            return None
        try:
            dir_fd = tree.directory(ranged.parts[:-1], create=False)
            there = os.stat(part.name, dir_fd=dir_fd, follow_symlinks=False)
            ours = os.fstat(part.fd)
            if (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino):
                part.dir_fd = dir_fd
                return tree
        except (OSError, Rejected):
            pass
        tree.close()
        return None

    def _still_there(self, ranged: RangedFile) -> bool:
        tree = self._find(ranged)
        if tree is None:
            return False
        tree.close()
        assert ranged.part is not None
        ranged.part.dir_fd = -1
        return True

    def _attach(self, ranged: RangedFile) -> RangedFile:
        if not ranged.users:  # what the file may still take is held while it is written
            ranged.claim = Claim(self.space, ranged.to_come)
        ranged.users += 1
        ranged.connections += 1
        return ranged

    def detach(self, ranged: RangedFile) -> None:
        """A connection is done with the file (it ended, or the file was committed)."""
        ranged.users -= 1
        if not ranged.users:
            ranged.idle_since = time.monotonic()
            self._release(ranged)  # what is written stays on the disk; the rest is not held

    def _release(self, ranged: RangedFile) -> None:
        if ranged.claim is not None:
            ranged.claim.close()
            ranged.claim = None

    def commit(self, ranged: RangedFile, digest: str) -> str:
        tree = self._find(ranged)
        if tree is None:
            self._drop(ranged)
            raise Rejected(
                messages.E_CREATE, f"{ranged.what}: its directory was moved or replaced while it was received"
            )
        try:
            path = ranged.commit(digest, tree)
        except BaseException:
            if ranged.part is not None and ranged.part.fd is None:  # placing it failed: it goes
                self._files.pop(ranged.key, None)
                self._discard(ranged, tree)
            raise
        finally:
            if ranged.part is not None:
                ranged.part.dir_fd = -1
            tree.close()
        self._files.pop(ranged.key, None)
        self._release(ranged)
        return path

    def expire(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        for ranged in [f for f in self._files.values() if not f.users and now - f.idle_since > KEEP_SECONDS]:
            log.info("dropping the kept part of %s: not resumed in time", ascii(ranged.what)[1:-1])
            self._drop(ranged)

    def _drop(self, ranged: RangedFile) -> None:
        self._files.pop(ranged.key, None)
        self._discard(ranged, self._find(ranged))

    def _discard(self, ranged: RangedFile, tree: Optional[Tree]) -> None:
        """The part file goes: unlinked where it was found (``tree``), else only closed (the
        leftover sweep removes it once no lock holds it)."""
        part, ranged.part = ranged.part, None
        if part is not None:
            if tree is not None:
                part.discard()
            elif part.fd is not None:
                os.close(part.fd)
                part.fd = None
        if tree is not None:
            tree.close()
        self._release(ranged)

    def close(self) -> None:
        for ranged in list(self._files.values()):
            self._drop(ranged)
