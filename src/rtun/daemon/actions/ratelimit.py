"""How often desktop side effects may happen: token buckets per daemon and per connection.

Pure: the clock is passed in. A request is allowed only if both its connection's bucket and the
daemon's have a token, so neither one noisy connection nor many quiet ones can flood the desktop.
"""

from __future__ import annotations

import time
import weakref
from collections import Counter, deque
from typing import Callable, Deque, Tuple

HISTORY = 64  # grants remembered, to say what used up a limit


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now

    def ready(self) -> bool:
        self._refill()
        return self._tokens >= 1.0

    def take(self) -> None:
        self._refill()
        self._tokens -= 1.0

    def wait(self) -> float:
        """Seconds until a token is there (0 when one is)."""
        self._refill()
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / self.rate if self.rate > 0 else float("inf")


class RateLimit:
    """One bucket for the daemon and one per source (a connection), the latter half as large."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._rate, self._burst = rate, burst
        self.daemon = TokenBucket(rate, burst, clock)
        self._sources: "weakref.WeakKeyDictionary[object, TokenBucket]" = weakref.WeakKeyDictionary()
        self._granted: "Deque[Tuple[float, str]]" = deque(maxlen=HISTORY)  # (when, what kind)

    def _bucket(self, source: object) -> TokenBucket:
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = self._sources[source] = TokenBucket(
                self._rate / 2, max(self._burst // 2, 1), self._clock
            )
        return bucket

    def allow(self, source: object, kind: str = "") -> bool:
        """Take a token from both buckets if both have one; ``kind`` ("view") is remembered."""
        own = self._bucket(source)
        if not (own.ready() and self.daemon.ready()):
            return False
        own.take()
        self.daemon.take()
        self._granted.append((self._clock(), kind))
        return True

    def recent(self) -> "Tuple[float, Counter[str]]":
        """What was let through while the daemon's bucket could have refilled (burst / rate
        seconds): how long ago the first of them was, and how many of each kind."""
        now = self._clock()
        span = self._burst / self._rate if self._rate > 0 else float("inf")
        kinds: "Counter[str]" = Counter()
        first = 0.0
        for when, kind in self._granted:
            if now - when <= span:
                kinds[kind] += 1
                first = max(first, now - when)
        return first, kinds

    def wait(self, source: object) -> float:
        return max(self._bucket(source).wait(), self.daemon.wait())
