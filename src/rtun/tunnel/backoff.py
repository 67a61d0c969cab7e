"""The tunnel agent's reconnect schedule: how long to wait before the next attempt.

Two cases, both random so that machines never move in step (a relay sees them all):

- A connection that had been up for ``stable`` seconds or more was lost. That is what a relay
  restart does to every machine on it at the same moment, so the first attempt is "full jitter"
  over the reconnect spread: a uniform point in [0, spread). N machines then reach the relay at
  about N / spread a second, instead of all at once past sshd's MaxStartups.
- Anything else (a connection that failed, or one that did not stay up): "decorrelated jitter",
  each wait a uniform point between ``base`` and three times the last one, capped. A failure
  after the spread wait (the relay still down, or too busy) waits a point in [base, spread]
  and grows from there: retrying from ``base`` would crowd the relay just when it is busiest
  (tests/tunnel/test_backoff.py simulates 500 machines both ways).

(AWS's "Exponential Backoff And Jitter" compares these: both spread a crowd's retries, where
"equal jitter", the agent's earlier schedule, kept every machine within half a step of the others.)
"""

from __future__ import annotations

import random
from typing import Callable, Optional

RECONNECT_SPREAD = 20.0  # seconds; 500 machines arrive at 25 a second (docs/relay.md, large fleets)


class Backoff:
    def __init__(
        self,
        base: float = 1.0,
        cap: float = 60.0,
        stable: float = 60.0,
        spread: float = RECONNECT_SPREAD,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.stable, self.spread, self.rng = base, cap, stable, spread, rng
        self._last = 0.0  # the last decorrelated wait; 0: none since the last reset
        self.spread_out = False  # the last delay was the spread one (for the log line)

    def next_delay(self, connected_for: Optional[float] = None) -> float:
        """The wait before the next attempt, after a connection that had been up ``connected_for``
        seconds (None: one that never came up)."""
        if connected_for is not None and connected_for >= self.stable:
            self.reset()
            self.spread_out = True
            self._last = self.spread / 3  # if this attempt fails: the next within [base, spread]
            return self.rng() * self.spread
        self.spread_out = False
        cap = self.cap
        low = min(self.base, cap)
        high = min(cap, 3 * max(self._last, low))
        self._last = low + self.rng() * (high - low)
        return self._last

    def reset(self) -> None:
        self._last = 0.0
