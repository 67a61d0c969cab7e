"""The reconnect schedule of a fleet: many supervisors, one simulated clock and relay.

A relay restart drops every machine's connection at the same moment; these walk hundreds of
real Supervisors (supervisor.py with backoff.py) through it, the runner and relay simulated, and
count the connection attempts each second, which is what sshd's MaxStartups sees.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from typing import List, Set, Tuple

from rtun.tunnel.backoff import RECONNECT_SPREAD
from rtun.tunnel.messages import (
    CloseSsh,
    Connected,
    ConnectFailed,
    EntryWritten,
    Forward,
    Forwarded,
    Log,
    Plan,
    Probe,
    ProbeOk,
    Register,
    SshExited,
    Started,
    StartSsh,
    TimePassed,
    Wait,
)
from rtun.tunnel.settings import Settings
from rtun.tunnel.supervisor import Supervisor

LOST_AT = 1000.0  # every connection up since 0: longer than --stable-after
# What a runner does while reconnecting. Only StartSsh opens a connection to the relay: the
# forward, the registry write and the probe are requests over that one ssh connection.
RECONNECTING = {Log, CloseSsh, Wait, StartSsh, Forward, Register, Probe}


class Fleet:
    def __init__(self, n: int, seed: int, **changes: object) -> None:
        self.now = 0.0
        rnd = random.Random(seed)
        self.sups = []
        for i in range(n):
            fields = dict(server="relay", name=f"m{i}", machine_id=f"{i:032x}", login_user="me", port=20000)
            fields.update(changes)
            settings = Settings(**fields)  # type: ignore[arg-type]
            self.sups.append(Supervisor(settings, lambda: self.now, rng=rnd.random))
        self.kinds: Set[type] = set()
        for sup in self.sups:
            sup.handle(Started())
            self._up(sup)

    def _up(self, sup: Supervisor) -> Plan:
        plan: Plan = []
        for event in (Connected(), Forwarded(20000), EntryWritten(), ProbeOk()):
            plan = sup.handle(event)
        assert sup.state == "up"
        return plan

    def restart(self, down_for: float, per_second: int) -> Tuple[List[float], int]:
        """The relay restarts at LOST_AT, answers nothing for ``down_for`` s, then completes at
        most ``per_second`` connections a second and drops the rest (MaxStartups); the time of
        every connection attempt and how many were dropped past the relay's rate."""
        self.now = LOST_AT
        waits: List[Tuple[float, int]] = []
        for i, sup in enumerate(self.sups):
            plan = sup.handle(SshExited("ssh exited 255: Connection reset by peer"))
            waits.append((self._wait(plan), i))
        heapq.heapify(waits)
        attempts: List[float] = []
        taken: Counter = Counter()
        dropped = 0
        while waits:
            until, i = heapq.heappop(waits)
            self.now = until
            sup = self.sups[i]
            plan = sup.handle(TimePassed())
            self.kinds |= {type(a) for a in plan}
            assert plan[-1] == StartSsh()
            attempts.append(self.now)
            second = int(self.now - LOST_AT)
            if self.now >= LOST_AT + down_for and taken[second] < per_second:
                taken[second] += 1
                self._up(sup)
                continue
            dropped += self.now >= LOST_AT + down_for
            heapq.heappush(waits, (self._wait(sup.handle(ConnectFailed("ssh exited 255"))), i))
        return attempts, dropped

    def _wait(self, plan: Plan) -> float:
        self.kinds |= {type(a) for a in plan}
        wait = plan[-1]
        assert isinstance(wait, Wait), plan
        return wait.until


def per_second(times: List[float]) -> Counter:
    return Counter(int(t - LOST_AT) for t in times)


def test_500_machines_that_lose_their_relay_come_back_spread_over_the_reconnect_spread() -> None:
    fleet = Fleet(500, seed=19)
    attempts, dropped = fleet.restart(down_for=0.0, per_second=10_000)
    assert len(attempts) == 500 and dropped == 0  # the relay took each: one attempt a machine
    assert all(LOST_AT <= t < LOST_AT + RECONNECT_SPREAD for t in attempts)
    histogram = per_second(attempts)
    # 25 a second on average (500 over 20 s); no second past 40. The old "equal jitter"
    # schedule sent all 500 within the same second.
    assert max(histogram.values()) <= 40, sorted(histogram.items())
    assert len(histogram) == RECONNECT_SPREAD
    assert fleet.kinds <= RECONNECTING, fleet.kinds - RECONNECTING


def test_a_relay_restart_with_a_slow_relay_gets_everyone_back_without_a_flood() -> None:
    # Down 1 s (sshd restarting); then it completes 30 handshakes a second (a small relay on
    # two cores) and drops the rest. Those that tried too early back off within the spread.
    fleet = Fleet(500, seed=7)
    attempts, dropped = fleet.restart(down_for=1.0, per_second=30)
    histogram = per_second(attempts)
    assert max(attempts) - LOST_AT <= 30  # all back within 30 s of the restart
    assert max(histogram.values()) <= 45, sorted(histogram.items())
    assert dropped <= 50, dropped  # (retrying from 1 s after a failure: 46 dropped)
    assert fleet.kinds <= RECONNECTING


def test_a_relay_down_for_long_gets_everyone_back_with_few_attempts_each() -> None:
    fleet = Fleet(500, seed=5)
    attempts, dropped = fleet.restart(down_for=20.0, per_second=30)
    assert max(attempts) - LOST_AT <= 20 + 60  # down, then at most one --max-backoff wait more
    assert len(attempts) <= 4 * 500 and dropped <= 150, (len(attempts), dropped)


def test_a_larger_spread_for_a_larger_fleet_keeps_the_rate() -> None:
    fleet = Fleet(2000, seed=3, reconnect_spread=80.0)
    attempts, _ = fleet.restart(down_for=0.0, per_second=10_000)
    assert max(per_second(attempts).values()) <= 40  # 2,000 over 80 s: 25 a second again
