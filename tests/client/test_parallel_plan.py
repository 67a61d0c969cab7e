"""The client's plan of ranges: what is left to send around the ranges a daemon kept."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtun.client import parallel
from rtun.client.parallel import RANGE_SIZE, RangePlan


def _covered(plan: RangePlan, kept: dict) -> list:
    spans = sorted([(o, n) for o, n in plan.todo] + [(o, n) for o, (n, _) in kept.items()])
    return spans


@given(st.integers(0, 5 * RANGE_SIZE), st.data())
def test_the_plan_and_the_kept_ranges_tile_the_file(size: int, data: st.DataObject) -> None:
    kept = {}
    position = 0
    while position < size and data.draw(st.booleans()):
        start = data.draw(st.integers(position, size - 1))
        length = data.draw(st.integers(1, size - start))
        kept[start] = (length, b"")
        position = start + length
    plan = RangePlan(size, kept)
    spans = _covered(plan, kept)
    position = 0
    for offset, length in spans:
        assert offset == position and (length > 0 or size == 0)
        position += length
    assert position == size
    assert all(n <= parallel.range_size(size) for _, n in plan.todo)


def test_ranges_grow_with_the_file_past_4_gib() -> None:
    assert parallel.range_size(10 * RANGE_SIZE) == RANGE_SIZE
    assert parallel.range_size(100 * 2**30) * parallel.RANGES_PER_FILE >= 100 * 2**30


def test_kept_ranges_are_checked_against_the_local_file(tmp_path) -> None:
    path = tmp_path / "f"
    content = os.urandom(3000)
    path.write_bytes(content)
    good = [0, 1000, hashlib.sha256(content[:1000]).hexdigest()]
    bad = [1000, 1000, hashlib.sha256(b"other").hexdigest()]
    outside = [2500, 1000, "00" * 32]
    fd = os.open(path, os.O_RDONLY)
    try:
        kept = parallel._verify_kept(fd, [good, bad, outside, "junk", [1, 2]], len(content))
    finally:
        os.close(fd)
    assert kept == {0: (1000, hashlib.sha256(content[:1000]).digest())}


def test_the_key_holds_a_private_secret_of_the_user(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = tmp_path / "f"
    path.write_bytes(b"x")
    first = parallel.transfer_key(str(path), os.stat(path), dest="d", name="f")
    secret = tmp_path / "home" / ".rtun" / "resume-secret"
    assert secret.stat().st_mode & 0o777 == 0o600 and len(secret.read_text()) == 32
    assert parallel.transfer_key(str(path), os.stat(path), dest="d", name="f") == first  # kept: it resumes
    secret.write_text("0" * 32)  # another user's secret gives another key
    assert parallel.transfer_key(str(path), os.stat(path), dest="d", name="f") != first


def test_the_same_file_to_the_same_place_has_the_same_key(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    st1 = os.stat(path)
    first = parallel.transfer_key(str(path), st1, dest="d", name="f")
    assert parallel.transfer_key(str(path), os.stat(path), dest="d", name="f") == first
    assert parallel.transfer_key(str(path), st1, dest="e", name="f") != first
    os.utime(path, ns=(1, 1))
    assert parallel.transfer_key(str(path), os.stat(path), dest="d", name="f") != first


def test_ranges_are_whole_mib_so_each_starts_on_a_block_boundary() -> None:
    """The daemon writes a whole range past the page cache only at a block-aligned offset."""
    for size in (10 * RANGE_SIZE, 5 * 2**30 + 12_345, 100 * 2**30 + 1):
        assert parallel.range_size(size) % RANGE_SIZE == 0
        assert parallel.range_size(size) * parallel.RANGES_PER_FILE >= size


@pytest.mark.parametrize(
    "round_trip, size, channels",
    [
        (0.0005, 2**30, 1),  # loopback: one channel's window per round trip is far more than a link
        (0.001, 2**30, 1),  # a LAN
        (0.005, 2**30, 3),  # 5 MiB in flight
        (0.020, 2**30, 11),  # 1 GiB/s at 20 ms is 20 MiB in flight: 10 windows
        (0.100, 2**30, parallel.MAX_CHANNELS),  # 100 ms: more than 16 windows, capped
        (0.100, 16 * 2**20, 2),  # ... but a small file keeps only a few busy
        (0.100, 1, 1),
    ],
)
def test_channels_start_from_the_round_trip(round_trip: float, size: int, channels: int) -> None:
    assert parallel.initial_channels(size, round_trip) == channels
