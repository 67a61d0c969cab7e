"""Free space on one disk, shared by every transfer writing to it.

Checking ``free >= needed + reserve`` per transfer is not enough: sizes may be declared as zero
or lies, entries may be unsized, and several uploads that each pass the check can together fill
the disk. So each transfer claims space before it writes, claims more as data arrives past its
claim, and gives back what it did not use; a claim succeeds only if the disk's free space, less
what other transfers have claimed and not yet written, still leaves the reserve.
"""

from __future__ import annotations

import shutil
from typing import Callable

from rtun.protocol import messages
from rtun.protocol.messages import Rejected

CLAIM_STEP = 16 * 1024 * 1024  # data past a claim is claimed in steps this large (one statvfs each)


class Space:
    def __init__(
        self, directory: str, reserve: int, free: Callable[[str], int] = lambda d: shutil.disk_usage(d).free
    ) -> None:
        self.directory = directory
        self.reserve = reserve
        self._free = free
        self.outstanding = 0  # claimed by transfers in flight and not yet written

    def claim(self, needed: int) -> None:
        """Claim ``needed`` bytes, or refuse with the numbers."""
        try:
            free = self._free(self.directory)
        except OSError as exc:
            raise Rejected(messages.E_STAT, f"cannot check free space: {exc.strerror}") from None
        available = free - self.outstanding - self.reserve
        if needed > available:
            raise Rejected(
                messages.E_NO_SPACE,
                f"not enough space in {self.directory}: {needed} bytes needed, {max(available, 0)} available",
            )
        self.outstanding += needed

    def settle(self, claimed: int) -> None:
        """Give back a claim: its bytes are written (the disk counts them now) or unused."""
        self.outstanding -= claimed


class Claim:
    """One transfer's share of a Space: claim up front, then pay for each write."""

    def __init__(self, space: Space, initial: int) -> None:
        self.space = space
        space.claim(initial)
        self.left = initial

    def written(self, n: int, step: int = CLAIM_STEP) -> None:
        """Pay for ``n`` bytes about to be written: from the claim, or from more claimed now
        (at least ``step``, so a stream of small writes is not one claim each)."""
        if n > self.left:
            more = max(n - self.left, step)
            self.space.claim(more)
            self.left += more
        self.left -= n
        self.space.settle(n)

    def close(self) -> None:
        self.space.settle(self.left)
        self.left = 0
