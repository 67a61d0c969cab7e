"""RANGES, RANGE and COMMIT: one large file received as ranges, over several connections at once,
and resumed after an interruption.

The file is written in place, with ``pwrite``, into one temporary file in its final directory
(a part file, as for SEND and PUT: never under its final name until COMMIT). Each range is
verified by its SHA-256 as it arrives; COMMIT checks that the verified ranges cover the file
exactly and that the digest of their digests is the client's, then places the file as PUT
would. A transfer whose connections all went away is kept, under its temporary name, for
``KEEP_SECONDS``; the same client sending the same file again (the same ``key``) is told which
ranges are already here and sends only the rest. Nothing here touches the socket.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import os
import time
from typing import Dict, List, Optional, Tuple

from rtun.daemon.actions.files import DEFAULT_MODE
from rtun.daemon.actions.viewtypes import HEAD_LEN, LAUNCHER_TYPES, extension, is_launcher
from rtun.daemon.storage.space import Claim, Space
from rtun.daemon.storage.tree import PartFile, Tree, refusal_for
from rtun.protocol import names, wire
from rtun.protocol.limits import MAX_RANGES, MIN_RANGE
from rtun.protocol.wire import Rejected

log = logging.getLogger("rtun.daemon")

KEEP_SECONDS = 3600.0  # an interrupted transfer's data waits this long for its resumption
STALE_SECONDS = 60.0  # a file no range reached for this long may make room, connections or not
MAX_FILES = 16  # ranged files open or kept at once (each holds a descriptor)


class RangedFile:
    def __init__(self, request: wire.Ranges, tree: Tree, claim: Claim, umask: int) -> None:
        self.key = request.key
        self.parts = names.join(names.components(request.dest) if request.dest else (), request.name)
        self.size = request.size
        self.mtime = request.mtime
        self.overwrite = request.overwrite
        self.tree = tree
        self.claim = claim
        mode = request.mode if request.mode else DEFAULT_MODE
        if extension(self.parts[-1]) in LAUNCHER_TYPES:
            mode &= ~0o111
        part = tree.new_file(self.parts, mode)  # named, buffered: kept between connections
        assert isinstance(part, PartFile)
        self.part: Optional[PartFile] = part
        self.verified: Dict[int, Tuple[int, bytes]] = {}  # offset -> (length, SHA-256)
        self._starts: List[int] = []  # the offsets of ``verified``, sorted
        self.users = 0  # connections attached now
        self.in_flight: Dict[int, int] = {}  # offset -> size of ranges being received now
        self.last_activity = time.monotonic()
        self.connections = 0  # connections that attached since it was opened or resumed
        self.received = 0  # bytes received since then
        self.idle_since = time.monotonic()
        self._claimed_through = 0  # bytes of the file paid for in the disk claim
        self._head = bytearray(min(HEAD_LEN, self.size))  # the launcher check reads it at COMMIT

    @property
    def what(self) -> str:
        return "/".join(self.parts)

    def same_file(self, request: wire.Ranges) -> bool:
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
            raise Rejected(wire.E_BUSY, f"{self.what}: another connection is sending that range")
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
            raise Rejected(wire.E_BAD_SIZE, f"range {offset}+{size} is outside the file's {self.size} bytes")
        if size < MIN_RANGE and offset + size != self.size:
            raise Rejected(wire.E_BAD_SIZE, f"ranges are at least {MIN_RANGE} bytes, but for a file's last")
        if len(self.verified) >= MAX_RANGES:
            raise Rejected(wire.E_BAD_REQUEST, "too many ranges for one file")

    def write(self, offset: int, data: memoryview) -> None:
        part = self.part
        assert part is not None and part.fd is not None
        end = offset + len(data)
        self.received += len(data)
        if offset < len(self._head):  # the part file is write-only: keep the head as it passes
            self._head[offset:min(end, len(self._head))] = data[:len(self._head) - offset]
        if end > self._claimed_through:  # re-sent bytes take no new space
            self.claim.written(end - max(offset, self._claimed_through))
            self._claimed_through = end
        try:
            while data:
                written = os.pwrite(part.fd, data, offset)
                data, offset = data[written:], offset + written
        except OSError as exc:
            raise refusal_for(exc, self.what) from None

    def verified_range(self, offset: int, size: int, digest: bytes) -> None:
        """Record a range whose SHA-256 matched (begin_range forgot what it overlaps)."""
        if offset not in self.verified:
            bisect.insort(self._starts, offset)
        self.verified[offset] = (size, digest)
        self.last_activity = time.monotonic()

    def commit(self, digest: str) -> str:
        """Check coverage and the digest of digests, then give the file its final name."""
        if self.in_flight:
            raise Rejected(wire.E_BUSY, f"{self.what}: ranges are still arriving")
        position, combined = 0, hashlib.sha256()
        for offset, (length, range_digest) in sorted(self.verified.items()):
            if offset != position:
                break
            position += length
            combined.update(range_digest)
        if position != self.size:
            raise Rejected(wire.E_SHORT, f"{self.what}: ranges cover {position} of {self.size} bytes")
        if combined.hexdigest() != digest:
            raise Rejected(wire.E_CHECKSUM, f"{self.what}: the ranges are not the file the client sent")
        part = self.part
        assert part is not None and part.fd is not None
        part.size = self.size
        part.finish(self.mtime, drop_execute=is_launcher(bytes(self._head)))
        final = part.place(self.parts[-1], self.overwrite)
        self.part = None
        return self.tree.path(self.parts[:-1] + (final,))

    def discard(self) -> None:
        if self.part is not None:
            self.part.discard()
            self.part = None
        self.claim.close()
        self.tree.close()


class RangedFiles:
    """The ranged files being received or kept for resumption, by key."""

    def __init__(self, save_dir: str, space: Space, umask: int) -> None:
        self.save_dir = save_dir
        self.space = space
        self.umask = umask
        self._files: Dict[str, RangedFile] = {}

    def open(self, request: wire.Ranges) -> RangedFile:
        """Start a ranged file, or with ``resume`` find the one kept under the same key."""
        self.expire()
        if request.join:
            found = self._files.get(request.key)
            if found is None or not found.same_file(request):
                raise Rejected(wire.E_BAD_REQUEST, "no such ranged transfer to join")
            return self._attach(found)
        kept = self._files.get(request.key)
        if kept is not None:
            if request.resume and kept.same_file(request) and kept.users == 0:
                log.info("resuming %s: %d ranges kept", ascii(kept.what)[1:-1], len(kept.verified))
                kept.connections = kept.received = 0
                return self._attach(kept)
            if kept.users:
                raise Rejected(wire.E_BUSY, "this file is being received on other connections")
            self._drop(kept)
        if len(self._files) >= MAX_FILES:
            now = time.monotonic()
            unused = [f for f in self._files.values()
                      if not f.users or (not f.in_flight and now - f.last_activity > STALE_SECONDS)]
            if not unused:
                raise Rejected(wire.E_BUSY, "too many large files being received: try again later")
            self._drop(min(unused, key=lambda f: (f.users, f.last_activity)))
        try:
            tree = Tree(self.save_dir, self.umask)
        except OSError as exc:
            raise refusal_for(exc, "the save directory") from None
        try:
            # The size must fit now; the space is then paid for as data arrives, so a file that
            # waits for its resumption holds only what it has written.
            self.space.claim(request.size)
            self.space.settle(request.size)
            claim = Claim(self.space, 0)
        except BaseException:
            tree.close()
            raise
        try:
            ranged = RangedFile(request, tree, claim, self.umask)
        except BaseException:
            claim.close()
            tree.close()
            raise
        self._files[request.key] = ranged
        return self._attach(ranged)

    def _attach(self, ranged: RangedFile) -> RangedFile:
        ranged.users += 1
        ranged.connections += 1
        return ranged

    def detach(self, ranged: RangedFile) -> None:
        """A connection is done with the file (it ended, or the file was committed)."""
        ranged.users -= 1
        if not ranged.users:
            ranged.idle_since = time.monotonic()
            ranged.claim.close()  # what is written stays on the disk; the rest is not held

    def commit(self, ranged: RangedFile, digest: str) -> str:
        try:
            path = ranged.commit(digest)
        except Rejected:
            raise
        self._files.pop(ranged.key, None)
        ranged.discard()  # the part file is placed; this closes the tree and settles the claim
        return path

    def expire(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        for ranged in [f for f in self._files.values() if not f.users and now - f.idle_since > KEEP_SECONDS]:
            log.info("dropping the kept part of %s: not resumed in time", ascii(ranged.what)[1:-1])
            self._drop(ranged)

    def _drop(self, ranged: RangedFile) -> None:
        self._files.pop(ranged.key, None)
        ranged.discard()

    def close(self) -> None:
        for ranged in list(self._files.values()):
            self._drop(ranged)
