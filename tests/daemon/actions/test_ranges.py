"""The daemon's ranged files, in memory and on a real directory: coverage, resumption, expiry."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtun.daemon.actions import ranges
from rtun.daemon.actions.ranges import RangedFiles
from rtun.daemon.storage.space import Space
from rtun.protocol import wire


def _request(key: str = "ab" * 16, size: int = 8, name: str = "f.bin", resume: bool = True,
             join: bool = False, mode: int = 0o644) -> wire.Ranges:
    return wire.Ranges("", name, size, mode, 1.0, key, False, resume, join)


def _parts(directory: Path) -> list:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".rtun-"))


def _commit_digest(*pieces: bytes) -> str:
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in pieces)).hexdigest()


def test_a_file_in_two_ranges_is_placed_whole(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022)
    ranged = files.open(_request())
    for offset, piece in ((4, b"efgh"), (0, b"abcd")):  # any order
        ranged.write(offset, memoryview(piece))
        ranged.verified_range(offset, 4, hashlib.sha256(piece).digest())
    files.detach(ranged)
    path = files.commit(ranged, _commit_digest(b"abcd", b"efgh"))
    assert Path(path).read_bytes() == b"abcdefgh" and _parts(tmp_path) == []
    assert Path(path).stat().st_mtime == 1.0


def test_a_launcher_sent_in_ranges_never_arrives_executable(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022)
    content = b"[Desktop Entry]\nType=Application\nExec=sh -c id\n"
    ranged = files.open(_request(size=len(content), mode=0o755, name="run"))
    ranged.write(0, memoryview(content))
    ranged.verified_range(0, len(content), hashlib.sha256(content).digest())
    path = files.commit(ranged, _commit_digest(content))
    assert os.stat(path).st_mode & 0o111 == 0


def test_an_interrupted_file_is_resumed_by_key_then_dropped_after_its_time(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022)
    ranged = files.open(_request())
    ranged.write(0, memoryview(b"abcd"))
    ranged.verified_range(0, 4, hashlib.sha256(b"abcd").digest())
    files.detach(ranged)  # the connection went away
    again = files.open(_request())
    assert again is ranged and again.have() == [[0, 4, hashlib.sha256(b"abcd").hexdigest()]]
    files.detach(again)
    assert files.open(_request(resume=False)).have() == []  # --no-resume starts over
    files.detach(files.open(_request(key="cd" * 16)))
    files.expire(now=ranged.idle_since + ranges.KEEP_SECONDS + 1)
    assert len(_parts(tmp_path)) == 1  # the one still attached stays
    files.close()
    assert _parts(tmp_path) == []


def test_joining_needs_the_same_open_file(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022)
    with pytest.raises(wire.Rejected):
        files.open(_request(join=True))
    files.open(_request())
    with pytest.raises(wire.Rejected):
        files.open(_request(join=True, size=9))
    assert files.open(_request(join=True)).users == 2
    with pytest.raises(wire.Rejected) as info:  # another first connection: busy
        files.open(_request())
    assert info.value.code == wire.E_BUSY


def test_at_most_max_files_are_kept_the_oldest_unused_goes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ranges, "MAX_FILES", 2)
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022)
    first = files.open(_request(key="01" * 8))
    files.detach(first)
    files.open(_request(key="02" * 8, name="g"))
    files.open(_request(key="03" * 8, name="h"))  # evicts the unused first
    assert len(_parts(tmp_path)) == 2
    with pytest.raises(wire.Rejected) as info:
        files.open(_request(key="04" * 8, name="i"))  # both in use
    assert info.value.code == wire.E_BUSY


def test_a_file_must_fit_but_a_kept_one_holds_only_what_it_wrote(tmp_path: Path) -> None:
    free = {"bytes": 100}
    space = Space(str(tmp_path), 0, free=lambda d: free["bytes"])
    files = RangedFiles(str(tmp_path), space, 0o022)
    with pytest.raises(wire.Rejected) as info:
        files.open(_request(size=101))
    assert info.value.code == wire.E_NO_SPACE
    files.detach(files.open(_request(size=60)))  # a declared size, nothing written, then gone
    assert space.outstanding == 0
    files.open(_request(key="cd" * 16, size=60))  # ... blocks no one


def test_a_failed_range_over_a_verified_one_unverifies_it(tmp_path: Path) -> None:
    """A range that stops short or fails its digest has written over the file: what it
    overlaps no longer counts, so COMMIT cannot place bytes nobody verified."""
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022)
    ranged = files.open(_request())
    ranged.begin_range(0, 8)
    ranged.write(0, memoryview(b"abcdefgh"))
    ranged.verified_range(0, 8, hashlib.sha256(b"abcdefgh").digest())
    ranged.end_range(0)
    ranged.begin_range(0, 8)  # another connection's range over it ...
    ranged.write(0, memoryview(b"EVIL"))
    ranged.end_range(0)  # ... that never verified
    with pytest.raises(wire.Rejected) as info:
        files.commit(ranged, _commit_digest(b"abcdefgh"))
    assert info.value.code == wire.E_SHORT


def test_ranges_in_flight_exclude_each_other_and_the_commit(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022)
    ranged = files.open(_request())
    ranged.begin_range(0, 8)
    with pytest.raises(wire.Rejected) as info:
        ranged.begin_range(0, 8)
    assert info.value.code == wire.E_BUSY
    with pytest.raises(wire.Rejected) as info:
        files.commit(ranged, "00" * 32)
    assert info.value.code == wire.E_BUSY


UNIT = ranges.MIN_RANGE


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 31), st.integers(1, 8)), min_size=1, max_size=60))
def test_a_range_sent_again_unverifies_exactly_what_it_overlaps(tmp_path_factory, sends) -> None:
    """Whatever order and overlap ranges arrive in, the verified ones are those a plain scan of
    every range would keep (the daemon finds the overlapped ones by bisection)."""
    directory = tmp_path_factory.mktemp("ranges")
    files = RangedFiles(str(directory), Space(str(directory), 0), 0o022)
    ranged = files.open(_request(size=32 * UNIT))
    model = {}
    for start, length in sends:
        offset, size = start * UNIT, min(length, 32 - start) * UNIT
        ranged.begin_range(offset, size)
        model = {o: n for o, n in model.items() if not (o < offset + size and offset < o + n)}
        ranged.end_range(offset)
        ranged.verified_range(offset, size, b"d" * 32)
        model[offset] = size
        assert {o: n for o, (n, _) in ranged.verified.items()} == model
    ranged.discard()
