"""The small files of a tree, written by helper threads once each is complete and verified.

In a tree of small files, making each file (an inode and a directory entry) is most of what
the daemon spends: 12 to 300 us a file on the benchmark machine's ext4, against some 15 us of
parsing. The kernel makes files for several threads at once, so the event loop goes on reading
the stream while helpers write what it has verified, in batches (larger while they are busy);
where files are made fast, helpers cost more than they save, and the loop makes them itself.
A file's data waits in memory (it is small, and the batches in flight are bounded) until its
SHA-256 has matched: until then nothing of it is on disk, and after that it is placed exactly
as before, with link(), never replacing anything unless --overwrite. A transfer that fails
still gets the files it had verified.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future
from typing import Deque, List, Optional, Tuple, Union

from rtun.daemon.storage.tree import (
    NO_UNNAMED,
    UNNAMED_FLAGS,
    NoUnnamed,
    PartFile,
    Tree,
    place_unnamed,
    refusal_for,
)
from rtun.daemon.storage.writing import write_all
from rtun.protocol.messages import Rejected

SMALL_MAX = 64 * 1024  # files up to this size are held until verified, then written by a helper
# Files handed to a free helper at once: one hand-over per file (a queue, a wake-up, the GIL
# passed back and forth) cost 15-20 us of CPU a file, more than making it on tmpfs; from 16 on it
# costs about nothing (issue 20). A stream that stalls keeps fewer than this many verified files
# in memory until its next entry, its end or its failure, each of which writes them.
MIN_BATCH = 16
BATCH_FILES = 32  # one helper's job: this many files ...
BATCH_BYTES = 256 * 1024  # ... or this many bytes of them
IN_FLIGHT = 2  # batches per transfer being written at once (one with --overwrite: in order)
# Seconds. A file takes 12-20 us to make on a quiet ext4 of the benchmark machine, 60-300 us
# where freed inodes are being skipped (bench_send.py), 5-8 us on tmpfs. At 15 us (was 50) the
# loop parses while the kernel makes files on the other core: 14 % more files/s and 7 us less
# daemon CPU a file in one round on /tmp, no difference beyond the noise on a journaled ext4
# (issue 20, docs/benchmarks.md).
SLOW_FILE = 15e-6  # files that take longer to make go to the helpers ...
FAST_FILE = 10e-6  # ... until they take less than this again
PROBE_EVERY = 256  # files handed to helpers between two made (and timed) on the loop

# (name, mode, mtime, data, drop_execute): one verified file
Job = Tuple[str, int, Optional[float], Union[bytes, bytearray], bool]
# What helpers placed, in order: (the file's parts with the name it got, its size)
Placed = List[Tuple[Tuple[str, ...], int]]


def _write_batch(
    dir_fd: int, parent: Tuple[str, ...], jobs: List[Job], umask: int, unnamed: bool, overwrite: int
) -> Tuple[List[str], Optional[Rejected]]:
    """In a helper thread (or on the loop): each file created, written, given its mtime and
    placed; the names they got, up to the first refusal (returned, with it). Unnamed files
    (Linux) take five system calls a file (open, write, utime, link, close), made with their
    final mode: a launcher's execute bits are taken away before it is made, not after."""
    names: List[str] = []
    for name, mode, mtime, data, drop_execute in jobs:
        if drop_execute:
            mode &= ~0o111
        try:
            if unnamed:
                try:
                    names.append(_write_unnamed(dir_fd, name, mode & 0o777 & ~umask, mtime, data, overwrite))
                    continue
                except NoUnnamed:
                    unnamed = False
            names.append(
                _write_named(dir_fd, "/".join(parent + (name,)), name, mode, umask, mtime, data, overwrite)
            )
        except OSError as exc:
            return names, refusal_for(exc, "/".join(parent + (name,)))
        except Rejected as exc:
            return names, exc
    return names, None


def _write_unnamed(
    dir_fd: int, name: str, mode: int, mtime: Optional[float], data: Union[bytes, bytearray], overwrite: int
) -> str:
    """One small file with no name until it is complete: the system calls alone, no object
    per file (the helpers share the interpreter with the loop). Raises NoUnnamed where the
    file system cannot, OSError otherwise."""
    try:
        fd = os.open(".", UNNAMED_FLAGS, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in NO_UNNAMED:
            raise NoUnnamed() from None
        raise
    try:
        if data:
            write_all(fd, memoryview(data))
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        return place_unnamed(dir_fd, fd, name, overwrite)
    finally:
        os.close(fd)


def _write_named(
    dir_fd: int,
    what: str,
    name: str,
    mode: int,
    umask: int,
    mtime: Optional[float],
    data: Union[bytes, bytearray],
    overwrite: int,
) -> str:
    """One small file under a temporary name until it is complete (no unnamed files here)."""
    file = PartFile(dir_fd, what, mode, umask)
    try:
        file.write(memoryview(data))
        file.finish(mtime)
        return file.place(name, overwrite)
    except BaseException:
        file.discard()
        raise


class SmallFiles:
    """The small files of one transfer on their way to disk. Every call that may return files
    placed by then (in the order they were added) also raises the first helper's refusal; until
    ``flush`` returns, the tree's descriptors of their directory must stay open."""

    def __init__(self, tree: Tree, overwrite: int) -> None:
        self.tree = tree
        self.overwrite = overwrite
        self._in_flight = 1 if overwrite else IN_FLIGHT  # replacing: strictly in order
        self._parent: Optional[Tuple[str, ...]] = None  # the directory of the files queued
        self._batch: List[Job] = []
        self._batch_bytes = 0
        self._pending: Deque[
            Tuple[Tuple[str, ...], List[Job], "Future[Tuple[List[str], Optional[Rejected]]]"]
        ] = deque()
        # Helpers pay where making a file is slow (a disk, a busy file system); where it is fast
        # (tmpfs, a quiet disk) the hand-over and the lock they share with the loop cost more
        # than they save. So files are made on the loop, timed, until they turn slow; then by
        # helpers, with one timed on the loop now and then to see whether they still are.
        self._helping = False
        self._cost = 0.0  # seconds a file took on the loop, smoothed
        self._by_helpers = 0  # files handed to helpers since the last one timed

    @property
    def busy(self) -> bool:
        return bool(self._batch or self._pending)

    def add(
        self,
        parts: Tuple[str, ...],
        mode: int,
        mtime: Optional[float],
        data: Union[bytes, bytearray],
        drop_execute: bool,
    ) -> Placed:
        """Queue a verified file (its directory made already)."""
        placed: Placed = []
        if parts[:-1] != self._parent:
            placed += self.flush()  # another directory: the tree may close this one's descriptor
            self._parent = parts[:-1]
        job = (parts[-1], mode, mtime, data, drop_execute)
        if not self._helping or self._by_helpers >= PROBE_EVERY or self.tree.workers is None:
            placed += self.flush()  # in order: the files handed out before this one first
            started = time.perf_counter()
            placed += self._write_here(job)
            cost = time.perf_counter() - started
            self._cost = cost if not self._cost else 0.8 * self._cost + 0.2 * cost
            self._helping = self._cost > (FAST_FILE if self._helping else SLOW_FILE)
            self._by_helpers = 0
            return placed
        self._by_helpers += 1
        self._batch.append(job)
        self._batch_bytes += len(data)
        while self._pending and self._pending[0][2].done():
            placed += self._collect()
        # A helper free: the batch goes once it has MIN_BATCH files (one hand-over per file cost
        # more CPU than making the file); all busy: it grows until it is worth a job.
        if (
            len(self._pending) < self._in_flight
            and (len(self._batch) >= MIN_BATCH or self._batch_bytes >= BATCH_BYTES)
            or len(self._batch) >= BATCH_FILES
            or self._batch_bytes >= BATCH_BYTES
        ):
            placed += self._submit()
        return placed

    def _submit(self) -> Placed:
        assert self._parent is not None
        dir_fd = self.tree.directory(self._parent)
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        workers = self.tree.workers
        assert workers is not None  # _helping only with workers
        future = workers.submit(
            _write_batch, dir_fd, self._parent, batch, self.tree.umask, self.tree.unnamed, self.overwrite
        )
        self._pending.append((self._parent, batch, future))
        placed: Placed = []
        while len(self._pending) > self._in_flight or (self._pending and self._pending[0][2].done()):
            placed += self._collect()
        return placed

    def _write_here(self, job: Job) -> Placed:
        assert self._parent is not None
        names, refusal = _write_batch(
            self.tree.directory(self._parent),
            self._parent,
            [job],
            self.tree.umask,
            self.tree.unnamed,
            self.overwrite,
        )
        if refusal is not None:
            raise refusal
        return [(self._parent + (names[0],), len(job[3]))]

    def _collect(self) -> Placed:
        """The oldest batch's outcome (waited for)."""
        parent, batch, future = self._pending.popleft()
        names, refusal = future.result()
        if refusal is not None:
            raise refusal
        return [(parent + (name,), len(job[3])) for name, job in zip(names, batch)]

    def flush(self) -> Placed:
        """Everything queued written and placed."""
        placed: Placed = []
        if self._batch:
            placed += self._submit()
        while self._pending:
            placed += self._collect()
        return placed

    def abandon(self) -> None:
        """After a failure of the transfer: the files verified so far are written all the same
        (as they would have been one by one), errors now ignored; when this returns no helper
        uses the tree's descriptors any more."""
        try:
            self.flush()
        except Rejected:
            pass
        finally:
            self._batch, self._batch_bytes = [], 0
            while self._pending:
                self._pending.popleft()[2].exception()
