"""Writing to disk, one way each: a whole buffer written by one loop, and the one pool of helper
threads storage uses (direct writes of large files, the small files of a tree), owned by the
daemon's uploads and shut down with the daemon."""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional, TypeVar

T = TypeVar("T")
THREADS = 4  # one large file's block in flight each, or a tree's batches of small files


def write_all(fd: int, data: memoryview, offset: Optional[int] = None) -> None:
    """Every byte of ``data`` written, at the file position or (pwrite) at ``offset``."""
    while data:
        written = os.write(fd, data) if offset is None else os.pwrite(fd, data, offset)
        data = data[written:]
        if offset is not None:
            offset += written


class Workers:
    """Helper threads, started on first use; ``shutdown`` waits for what they are writing."""

    def __init__(self, threads: int = THREADS) -> None:
        self.threads = threads
        self._pool: Optional[ThreadPoolExecutor] = None

    def submit(self, fn: Callable[..., T], *args: Any) -> "Future[T]":
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="rtun-write")
        return self._pool.submit(fn, *args)

    def shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
