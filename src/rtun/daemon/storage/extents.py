"""The parts of a sparse file that hold data, as the disk sees them: what a write will newly
occupy, so it is paid for before it is written.

A write into a sparse file takes whole blocks of the disk, however few of their bytes it
covers, and a block written once stays taken whatever is written over it later. So the file is
tracked as sorted, disjoint intervals of whole blocks (two lists, found by bisection: ranges
normally arrive as contiguous chunks, each of which extends the interval it follows). A
high-water mark would not do: a range written at a file's end would mark the hole below it as
paid for, and the ranges later written into the hole would take space no one claimed.
"""

from __future__ import annotations

import bisect
from array import array
from typing import Callable, Tuple

from rtun.protocol import messages
from rtun.protocol.limits import MAX_EXTENTS
from rtun.protocol.messages import Rejected

MIN_BLOCK = 4096  # the block of any common file system; a larger one is taken as it is reported
MAX_BLOCK = 1024 * 1024  # past this a reported block size is not an allocation unit


def block_size(reported: int) -> int:
    """The unit a write is rounded out to, from the file's ``st_blksize``."""
    return min(max(reported, MIN_BLOCK), MAX_BLOCK)


class Extents:
    """Disjoint intervals of whole blocks, in block units, of one file of ``size`` bytes."""

    def __init__(self, size: int, block: int = MIN_BLOCK) -> None:
        self.block = block
        self.blocks = -(-size // block)  # the file's blocks once complete
        self._starts = array("q")  # compact: up to MAX_EXTENTS of them per file
        self._ends = array("q")
        self.covered = 0  # blocks held by the intervals

    def __len__(self) -> int:
        return len(self._starts)

    @property
    def covered_bytes(self) -> int:
        return self.covered * self.block

    @property
    def left_bytes(self) -> int:
        """What the file will still take on the disk when every byte of it is written."""
        return (self.blocks - self.covered) * self.block

    def add(self, offset: int, size: int, pay: Callable[[int, int], None]) -> None:
        """Record a write of ``size`` bytes at ``offset``. First, before anything changes:
        a write that would make more than MAX_EXTENTS separate pieces is refused, and
        ``pay(bytes newly taken, pieces after it)`` is called if it takes any (it may refuse)."""
        new, first, last, start, end = self._measure(offset, size)
        if new == 0:
            return
        starts, ends = self._starts, self._ends
        if first == last:  # touches nothing: a piece of its own
            if len(starts) >= MAX_EXTENTS:
                raise Rejected(
                    messages.E_BAD_REQUEST,
                    f"the file is written in more than {MAX_EXTENTS} "
                    "separate pieces: send its ranges in order",
                )
            pay(new * self.block, len(starts) + 1)
            starts.insert(first, start)
            ends.insert(first, end)
        else:  # joins the pieces it touches into one
            pay(new * self.block, len(starts) - (last - first - 1))
            starts[first] = min(start, starts[first])
            ends[first] = max(end, ends[last - 1])
            if last - first > 1:
                del starts[first + 1 : last]
                del ends[first + 1 : last]
        self.covered += new

    def _measure(self, offset: int, size: int) -> Tuple[int, int, int, int, int]:
        """(new blocks, index of the first piece touched, one past the last, start, end)."""
        if size <= 0:
            return 0, 0, 0, 0, 0
        block = self.block
        start, end = offset // block, -(-(offset + size) // block)
        starts, ends = self._starts, self._ends
        n = len(starts)
        if n and starts[n - 1] <= start <= ends[n - 1]:  # the usual case: the last piece grows
            return max(end - ends[n - 1], 0), n - 1, n, start, end
        first = bisect.bisect_left(ends, start)  # the first piece ending at or after the start
        last = bisect.bisect_right(starts, end, first)  # one past the last starting by the end
        held = 0
        for i in range(first, last):
            held += max(min(ends[i], end) - max(starts[i], start), 0)
        return end - start - held, first, last, start, end
