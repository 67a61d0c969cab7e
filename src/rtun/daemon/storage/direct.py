"""Large files written past the page cache (O_DIRECT, Linux), in aligned blocks from two
page-aligned buffers: a helper thread writes one while the receive path fills the other.

Through the page cache, every GiB received costs the daemon a GiB of freshly allocated cache
pages and a copy into them: on the machine the benchmarks ran on (a VM whose free memory goes
back to the host) that was 1.5 to 2.8 CPU-seconds per GiB, more than both SHA-256 passes
together; direct writes cost 0.1 to 0.2 s. The data is hashed from the receive buffer before it
gets here, so nothing else changes. Where the file system refuses direct I/O (at the start or at
a write), writes go on through the page cache.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
from concurrent.futures import Future
from typing import Dict, List, Optional

from rtun.daemon.storage.writing import Workers, write_all

DIRECT_MIN = 64 * 1024 * 1024  # files declared at least this large are written this way
BLOCK = 4 * 1024 * 1024  # one write: a multiple of any logical block size (512 or 4096 bytes)
ALIGN = 4096  # where direct writes may start: the largest logical block size in use
_O_DIRECT = getattr(os, "O_DIRECT", 0)

# File systems in memory: "direct" writes there are copies into the same memory, with the extra
# copy and hand-over of this module on top (measured on tmpfs: 0.3 CPU-s per GiB more).
_IN_MEMORY = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"})
_disk_cache: Dict[str, bool] = {}


def on_disk(directory: str) -> bool:
    """Whether ``directory`` is on a file system that direct writes help: not one in memory
    (Linux: the type of its mount in /proc/self/mounts; elsewhere there are no direct writes)."""
    if not _O_DIRECT:
        return False
    known = _disk_cache.get(directory)
    if known is not None:
        return known
    best, kind, real = "", "", os.path.realpath(directory)
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        pass
    result = kind not in _IN_MEMORY
    if len(_disk_cache) < 64:  # a daemon has one save directory (and a few in tests)
        _disk_cache[directory] = result
    return result


def _set_direct(fd: int) -> "Optional[int]":
    """O_DIRECT set on ``fd``; its flags without it (to turn it off again), or None where the
    system or the file system has no direct I/O (tmpfs before Linux 6.6, FUSE, ...)."""
    if not _O_DIRECT:
        return None
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT)
    except OSError:
        return None
    return flags & ~_O_DIRECT


class DirectWrites:
    """Consecutive writes to one open file from ``offset`` on (pwrite: the file position is not
    used). ``write`` copies into the current block and hands each full block to a helper thread;
    ``close`` writes the rest. An error of the helper's surfaces at the next ``write`` or at
    ``close``. The descriptor is this writer's alone: O_DIRECT is a flag of the open file."""

    @classmethod
    def open(cls, fd: int, workers: Workers, offset: int = 0) -> Optional["DirectWrites"]:
        """Direct writes to ``fd``, or None where the system has none."""
        if offset % ALIGN:
            return None
        plain = _set_direct(fd)
        return None if plain is None else cls(fd, plain, offset, workers)

    def __init__(self, fd: int, plain_flags: int, offset: int, workers: Workers) -> None:
        self.fd = fd
        self._workers = workers
        self._plain_flags = plain_flags
        self._offset = offset  # where the current block goes
        self.direct = True
        self._buffers = [mmap.mmap(-1, BLOCK), mmap.mmap(-1, BLOCK)]  # page-aligned
        self._views: List[memoryview] = [memoryview(b) for b in self._buffers]
        self._current = 0
        self._fill = 0
        self._pending: Optional["Future[None]"] = None

    def write(self, data: memoryview) -> None:
        while data:
            view = self._views[self._current]
            n = min(len(data), BLOCK - self._fill)
            view[self._fill : self._fill + n] = data[:n]
            self._fill += n
            data = data[n:]
            if self._fill == BLOCK:
                self._wait()  # the other buffer is free again once its write is done
                self._pending = self._workers.submit(self._write_block, view, self._offset)
                self._offset += BLOCK
                self._current ^= 1
                self._fill = 0

    def _write_block(self, view: memoryview, offset: int) -> None:
        """In a helper thread: the one write of this file in flight."""
        try:
            write_all(self.fd, view, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not self.direct:
                raise
            self._plain()  # the file system refused direct I/O after all (or a short write
            write_all(self.fd, view, offset)  # left the rest unaligned): the page cache then

    def _plain(self) -> None:
        fcntl.fcntl(self.fd, fcntl.F_SETFL, self._plain_flags)
        self.direct = False

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            exc = pending.exception()
            if isinstance(exc, OSError):  # raised afresh: its traceback holds a view of a buffer
                raise OSError(exc.errno, exc.strerror or str(exc)) from None
            if exc is not None:
                raise exc

    def close(self) -> None:
        """Every byte written (the last partial block through the page cache); raises the
        first error."""
        try:
            self._wait()
            if self._fill:
                if self.direct:
                    self._plain()
                write_all(self.fd, self._views[self._current][: self._fill], self._offset)
                self._offset += self._fill
                self._fill = 0
        finally:
            self._release()

    def abandon(self) -> None:
        """Before the descriptor is closed after a failure: the write in flight is waited for,
        so no helper writes to a closed (perhaps reused) descriptor; its error is moot."""
        try:
            self._wait()
        except OSError:
            pass
        finally:
            self._release()

    def _release(self) -> None:
        for view in self._views:
            view.release()
        for buffer in self._buffers:
            try:
                buffer.close()
            except BufferError:  # a slice still in use somewhere: freed with its last reference
                pass
        self._views, self._buffers = [], []


REFUSALS = 8  # aligned writes refused in a row before a file's writes all take the page cache


class DirectAt:
    """Writes at any offsets to one open file (a ranged file's), one at a time (they come from
    helper threads, and O_DIRECT is a flag of the open file): past the page cache when the
    offset and length are block-aligned and the memory is page-aligned (a range whole at the
    front of the receive buffer: Receiver._to_front), through it otherwise (a range's head or
    tail, a file's last range), with the flag turned off around the write."""

    def __init__(self, fd: int, directory: str) -> None:
        self.fd = fd
        plain = _set_direct(fd) if on_disk(directory) else None
        self.direct = plain is not None
        self._flags = plain if plain is not None else fcntl.fcntl(fd, fcntl.F_GETFL)
        self.direct_bytes = 0  # written past the page cache
        self._refused = 0  # aligned writes refused in a row (EINVAL)
        self._lock = threading.Lock()

    def write(self, data: memoryview, offset: int) -> None:
        with self._lock:
            self._write(data, offset)

    def _write(self, data: memoryview, offset: int) -> None:
        if self.direct and not (offset | len(data)) % ALIGN:
            try:
                write_all(self.fd, data, offset)
                self.direct_bytes += len(data)
                self._refused = 0
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: memory not aligned, or no direct I/O now
                    raise
                self._refused += 1
                if self._refused >= REFUSALS:  # the file system takes the flag, not the writes
                    fcntl.fcntl(self.fd, fcntl.F_SETFL, self._flags)
                    self.direct = False
        if not self.direct:
            write_all(self.fd, data, offset)
            return
        fcntl.fcntl(self.fd, fcntl.F_SETFL, self._flags)
        try:
            write_all(self.fd, data, offset)
        finally:
            fcntl.fcntl(self.fd, fcntl.F_SETFL, self._flags | _O_DIRECT)
