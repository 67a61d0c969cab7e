"""Token buckets for desktop side effects, on a fake clock."""

from __future__ import annotations

from rtun.daemon.actions.ratelimit import RateLimit, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    for _ in range(3):
        assert bucket.ready()
        bucket.take()
    assert not bucket.ready() and bucket.wait() == 0.5
    clock.now += 0.5
    assert bucket.ready()
    clock.now += 100
    bucket.take()
    assert bucket.wait() == 0.0  # refilled to the burst, never past it
    for _ in range(2):
        bucket.take()
    assert not bucket.ready()


class Source:
    """Something a rate is kept for (a connection in the daemon)."""


def test_one_source_gets_half_and_all_sources_share_the_daemons_bucket() -> None:
    clock = Clock()
    limit = RateLimit(rate=1.0, burst=4, clock=clock)
    noisy, quiet, third = Source(), Source(), Source()
    assert [limit.allow(noisy) for _ in range(3)] == [True, True, False]  # half the burst each
    assert [limit.allow(quiet) for _ in range(3)] == [True, True, False]
    assert not limit.allow(third)  # the daemon's burst is spent
    assert limit.wait(third) == 1.0
    clock.now += 1.0
    assert limit.allow(third)


def test_a_forgotten_source_takes_no_memory() -> None:
    limit = RateLimit(rate=1.0, burst=4, clock=Clock())
    source = Source()
    limit.allow(source)
    del source
    assert len(limit._sources) == 0


def test_recent_counts_what_was_let_through_while_the_bucket_could_refill() -> None:
    clock = Clock()
    limit = RateLimit(rate=0.25, burst=3, clock=clock)  # refills in 12 s
    assert limit.allow(Source(), "view")
    clock.now += 3
    assert limit.allow(Source(), "page") and limit.allow(Source(), "view")
    assert not limit.allow(Source(), "edit")  # refused: not counted
    clock.now += 2
    age, kinds = limit.recent()
    assert age == 5 and kinds == {"view": 2, "page": 1}
    clock.now += 8  # the first view is 13 s old: past what the bucket refills in
    age, kinds = limit.recent()
    assert age == 10 and kinds == {"view": 1, "page": 1}
