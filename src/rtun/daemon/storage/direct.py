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
from concurrent.futures import Future, ThreadPoolExecutor
from typing import List, Optional

DIRECT_MIN = 64 * 1024 * 1024  # files declared at least this large are written this way
BLOCK = 4 * 1024 * 1024  # one write: a multiple of any logical block size (512 or 4096 bytes)
ALIGN = 4096  # where direct writes may start: the largest logical block size in use
_O_DIRECT = getattr(os, "O_DIRECT", 0)

_pool: Optional[ThreadPoolExecutor] = None


def _writers() -> ThreadPoolExecutor:
    """The helper threads, shared by every transfer; made on the first large file."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="rtun-write")
    return _pool


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


class DirectWrites:
    """Consecutive writes to one open file from ``offset`` on (pwrite: the file position is not
    used). ``write`` copies into the current block and hands each full block to a helper thread;
    ``close`` writes the rest. An error of the helper's surfaces at the next ``write`` or at
    ``close``. The descriptor is this writer's alone: O_DIRECT is a flag of the open file."""

    @classmethod
    def open(cls, fd: int, offset: int = 0) -> Optional["DirectWrites"]:
        """Direct writes to ``fd``, or None where the system has none."""
        if not _O_DIRECT or offset % ALIGN:
            return None
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT)
        except OSError:  # tmpfs before Linux 6.6, FUSE, ...: the page cache it is
            return None
        return cls(fd, flags & ~_O_DIRECT, offset)

    def __init__(self, fd: int, plain_flags: int, offset: int) -> None:
        self.fd = fd
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
            view[self._fill:self._fill + n] = data[:n]
            self._fill += n
            data = data[n:]
            if self._fill == BLOCK:
                self._wait()  # the other buffer is free again once its write is done
                self._pending = _writers().submit(self._write_block, view, self._offset)
                self._offset += BLOCK
                self._current ^= 1
                self._fill = 0

    def _write_block(self, view: memoryview, offset: int) -> None:
        """In a helper thread: the one write of this file in flight."""
        try:
            _write_all(self.fd, view, offset)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not self.direct:
                raise
            self._plain()  # the file system refused direct I/O after all (or a short write
            _write_all(self.fd, view, offset)  # left the rest unaligned): the page cache then

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
                _write_all(self.fd, self._views[self._current][:self._fill], self._offset)
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
