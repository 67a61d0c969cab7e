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
from rtun.protocol.units import size_text

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
            raise Rejected(messages.E_NO_SPACE, self.refusal(needed, free, available))
        self.outstanding += needed

    def refusal(self, needed: int, free: int, available: int) -> str:
        """Why a claim is refused, in units people read, naming the reserve: ``df`` shows
        ``free``, and the gap to what rtun lets a transfer use is this setting."""
        what = f"{size_text(needed)} needed" if needed else "no space left for this transfer"
        held = f", {size_text(self.outstanding)} held for transfers in progress" if self.outstanding else ""
        return (
            f"not enough space in {self.directory} on your computer: {what}, "
            f"{size_text(max(available, 0))} available ({size_text(max(free, 0))} free, as df shows"
            f"{held}, less the {size_text(self.reserve)} rtun keeps free: "
            "[send] min_free_bytes in your computer's rtun config)"
        )

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
            try:
                self.space.claim(more)
            except Rejected:
                if more == n - self.left:
                    raise
                more = n - self.left  # the step does not fit: a refusal names this write's need
                self.space.claim(more)
            self.left += more
        self.left -= n
        self.space.settle(n)

    def close(self) -> None:
        self.space.settle(self.left)
        self.left = 0
