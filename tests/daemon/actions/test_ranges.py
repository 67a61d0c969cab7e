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
from rtun.daemon.storage.writing import Workers
from rtun.protocol import messages

UNIT = ranges.MIN_RANGE
WORKERS = Workers()


def _write(ranged: ranges.RangedFile, offset: int, data: "bytes | memoryview") -> None:
    """As the RANGE handler writes: in a helper thread, waited for."""
    ranged.write(offset, memoryview(data)).result()


def _request(
    key: str = "ab" * 16,
    size: int = 8,
    name: str = "f.bin",
    resume: bool = True,
    join: bool = False,
    mode: int = 0o644,
) -> messages.Ranges:
    return messages.Ranges("", name, size, mode, 1.0, key, False, resume, join)


def _parts(directory: Path) -> list:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".rtun-"))


def _commit_digest(*pieces: bytes) -> str:
    return hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in pieces)).hexdigest()


def test_a_file_in_two_ranges_is_placed_whole(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022, WORKERS)
    ranged = files.open(_request())
    for offset, piece in ((4, b"efgh"), (0, b"abcd")):  # any order
        _write(ranged, offset, memoryview(piece))
        ranged.verified_range(offset, 4, hashlib.sha256(piece).digest())
    files.detach(ranged)
    path = files.commit(ranged, _commit_digest(b"abcd", b"efgh"))
    assert Path(path).read_bytes() == b"abcdefgh" and _parts(tmp_path) == []
    assert Path(path).stat().st_mtime == 1.0


def test_a_launcher_sent_in_ranges_never_arrives_executable(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022, WORKERS)
    content = b"[Desktop Entry]\nType=Application\nExec=sh -c id\n"
    ranged = files.open(_request(size=len(content), mode=0o755, name="run"))
    _write(ranged, 0, memoryview(content))
    ranged.verified_range(0, len(content), hashlib.sha256(content).digest())
    path = files.commit(ranged, _commit_digest(content))
    assert os.stat(path).st_mode & 0o111 == 0


def test_an_interrupted_file_is_resumed_by_key_then_dropped_after_its_time(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022, WORKERS)
    ranged = files.open(_request())
    _write(ranged, 0, memoryview(b"abcd"))
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
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022, WORKERS)
    with pytest.raises(messages.Rejected):
        files.open(_request(join=True))
    files.open(_request())
    with pytest.raises(messages.Rejected):
        files.open(_request(join=True, size=9))
    assert files.open(_request(join=True)).users == 2
    with pytest.raises(messages.Rejected) as info:  # another first connection: busy
        files.open(_request())
    assert info.value.code == messages.E_BUSY


def test_at_most_max_files_are_kept_the_oldest_unused_goes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ranges, "MAX_FILES", 2)
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022, WORKERS)
    first = files.open(_request(key="01" * 8))
    files.detach(first)
    files.open(_request(key="02" * 8, name="g"))
    files.open(_request(key="03" * 8, name="h"))  # evicts the unused first
    assert len(_parts(tmp_path)) == 2
    with pytest.raises(messages.Rejected) as info:
        files.open(_request(key="04" * 8, name="i"))  # both in use
    assert info.value.code == messages.E_BUSY


class CountedDisk:
    """A disk of ``capacity`` bytes whose use is what the files below ``root`` really take
    (st_blocks), for Space's ``free``: the reserve is checked against real allocations."""

    def __init__(self, root: Path, capacity: int) -> None:
        self.root = root
        self.capacity = capacity

    def used(self) -> int:
        return sum(p.lstat().st_blocks * 512 for p in self.root.rglob("*") if p.is_file())

    def free(self, directory: str) -> int:
        return self.capacity - self.used()


MIB = 1024 * 1024


def test_a_file_must_fit_and_holds_what_is_to_come_while_attached(tmp_path: Path) -> None:
    disk = CountedDisk(tmp_path, 4 * MIB)
    space = Space(str(tmp_path), MIB, free=disk.free)
    files = RangedFiles(str(tmp_path), space, 0o022, WORKERS)
    with pytest.raises(messages.Rejected) as info:
        files.open(_request(size=3 * MIB + 1))
    assert info.value.code == messages.E_NO_SPACE
    first = files.open(_request(size=2 * MIB))
    with pytest.raises(messages.Rejected) as info:  # the first one's claim is held: no room for both
        files.open(_request(key="cd" * 16, size=2 * MIB, name="g"))
    assert info.value.code == messages.E_NO_SPACE
    files.detach(first)  # nothing written, then gone: it blocks no one
    assert space.outstanding == 0
    second = files.open(_request(key="cd" * 16, size=2 * MIB, name="g"))
    with pytest.raises(messages.Rejected) as info:  # ... but its resumption waits for room again
        files.open(_request(size=2 * MIB))
    assert info.value.code == messages.E_NO_SPACE
    files.detach(second)
    assert files.open(_request(size=2 * MIB)) is first


def test_sparse_end_first_writes_of_several_files_never_cross_the_reserve(tmp_path: Path) -> None:
    """Issue 15's attack, scaled down: files written end-first took the disk to 0 bytes free
    when a range at the end paid for the hole below it."""
    disk = CountedDisk(tmp_path, 6 * MIB)
    space = Space(str(tmp_path), 2 * MIB, free=disk.free)
    files = RangedFiles(str(tmp_path), space, 0o022, WORKERS)
    size = 3 * MIB // 2
    opened = []
    for i in range(3):
        try:
            opened.append(files.open(_request(key=f"{i:02d}" * 8, size=size, name=f"f{i}")))
        except messages.Rejected as exc:
            assert exc.code == messages.E_NO_SPACE
    assert len(opened) == 2  # 4 MiB above the reserve: room for two files of 1.5 MiB
    piece = memoryview(b"x" * UNIT)
    for offset in reversed(range(0, size, UNIT)):  # end first, every file in turn
        for ranged in opened:
            _write(ranged, offset, piece)
            assert disk.free("") >= space.reserve
    for ranged in opened:
        part = ranged.part
        assert part is not None
        assert os.fstat(part.fd).st_blocks * 512 <= ranged.paid


def test_a_part_file_never_has_execute_bits_until_its_commit(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022, WORKERS)
    ranged = files.open(_request(mode=0o4777))
    (part,) = [p for p in tmp_path.iterdir() if p.name.startswith(".rtun-")]
    assert part.stat().st_mode & 0o7777 == 0o644  # no setuid, no execute, the umask applied
    for offset, piece in ((0, b"abcd"), (4, b"efgh")):
        _write(ranged, offset, memoryview(piece))
        ranged.verified_range(offset, 4, hashlib.sha256(piece).digest())
    path = files.commit(ranged, _commit_digest(b"abcd", b"efgh"))
    assert os.stat(path).st_mode & 0o7777 == 0o755


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_ranged_file_holds_one_descriptor_and_is_found_again(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022, WORKERS)
    deep = "/".join(f"d{i}" for i in range(40))
    before = _open_fds()
    kept = []
    for i in range(8):
        ranged = files.open(messages.Ranges(deep, f"f{i}", 8, 0o644, 1.0, f"{i:02d}" * 8, False, True, False))
        files.detach(ranged)
        kept.append(ranged)
    assert _open_fds() - before == 8  # the part files; no directories
    again = files.open(messages.Ranges(deep, "f0", 8, 0o644, 1.0, "00" * 8, False, True, False))
    assert again is kept[0]
    for offset, piece in ((0, b"abcd"), (4, b"efgh")):
        _write(again, offset, memoryview(piece))
        again.verified_range(offset, 4, hashlib.sha256(piece).digest())
    path = files.commit(again, _commit_digest(b"abcd", b"efgh"))
    assert Path(path).read_bytes() == b"abcdefgh"
    files.close()
    assert _open_fds() == before
    assert not [p for p in tmp_path.rglob(".rtun-*")]


def test_a_kept_file_whose_directory_was_replaced_starts_over(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022, WORKERS)
    request = messages.Ranges("d", "f", 8, 0o644, 1.0, "ab" * 8, False, True, False)
    ranged = files.open(request)
    _write(ranged, 0, memoryview(b"abcd"))
    ranged.verified_range(0, 4, hashlib.sha256(b"abcd").digest())
    files.detach(ranged)
    (tmp_path / "d").rename(tmp_path / "elsewhere")
    (tmp_path / "outside").mkdir()
    (tmp_path / "d").symlink_to("outside")  # a link where the directory was: never followed
    with pytest.raises(messages.Rejected):
        files.open(request)
    assert list((tmp_path / "outside").iterdir()) == []
    files.close()


def test_a_failed_range_over_a_verified_one_unverifies_it(tmp_path: Path) -> None:
    """A range that stops short or fails its digest has written over the file: what it
    overlaps no longer counts, so COMMIT cannot place bytes nobody verified."""
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022, WORKERS)
    ranged = files.open(_request())
    ranged.begin_range(0, 8)
    _write(ranged, 0, memoryview(b"abcdefgh"))
    ranged.verified_range(0, 8, hashlib.sha256(b"abcdefgh").digest())
    ranged.end_range(0)
    ranged.begin_range(0, 8)  # another connection's range over it ...
    _write(ranged, 0, memoryview(b"EVIL"))
    ranged.end_range(0)  # ... that never verified
    with pytest.raises(messages.Rejected) as info:
        files.commit(ranged, _commit_digest(b"abcdefgh"))
    assert info.value.code == messages.E_SHORT


def test_ranges_in_flight_exclude_each_other_and_the_commit(tmp_path: Path) -> None:
    files = RangedFiles(str(tmp_path), Space(str(tmp_path), 0), 0o022, WORKERS)
    ranged = files.open(_request())
    ranged.begin_range(0, 8)
    with pytest.raises(messages.Rejected) as info:
        ranged.begin_range(0, 8)
    assert info.value.code == messages.E_BUSY
    with pytest.raises(messages.Rejected) as info:
        files.commit(ranged, "00" * 32)
    assert info.value.code == messages.E_BUSY


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 31), st.integers(1, 8)), min_size=1, max_size=60))
def test_a_range_sent_again_unverifies_exactly_what_it_overlaps(tmp_path_factory, sends) -> None:
    """Whatever order and overlap ranges arrive in, the verified ones are those a plain scan of
    every range would keep (the daemon finds the overlapped ones by bisection)."""
    directory = tmp_path_factory.mktemp("ranges")
    files = RangedFiles(str(directory), Space(str(directory), 0), 0o022, WORKERS)
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
    files.close()


# One step of a peer's ranged transfer: (file, offset in units, length in units or bytes, what)
steps = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(0, 23),
        st.integers(1, 6),
        st.sampled_from(["range", "range", "range", "short", "detach", "resume", "commit", "join"]),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(steps)
def test_any_sequence_of_ranges_keeps_the_disk_account(tmp_path_factory, sequence) -> None:
    """Whatever order, overlap and size ranges arrive in, over several files, joins,
    resumptions and commits: no part file takes more of the disk (st_blocks) than it paid
    for, and the disk never goes past the reserve."""
    directory = tmp_path_factory.mktemp("account")
    disk = CountedDisk(directory, 4 * MIB)
    space = Space(str(directory), MIB, free=disk.free)
    files = RangedFiles(str(directory), space, 0o022, WORKERS)
    size = 24 * UNIT - 1000
    users = {}
    for which, start, length, what in sequence:
        key = f"{which:02d}" * 8
        request = _request(key=key, size=size, name=f"f{which}", join=what == "join")
        try:
            if what in ("resume", "join") or key not in users:
                users.setdefault(key, []).append(files.open(request))
            ranged = users[key][-1]
            if what == "detach":
                files.detach(users[key].pop())
            elif what == "commit":
                files.commit(ranged, "00" * 32)
            elif what in ("range", "short") and ranged.part is not None:
                offset = min(start * UNIT, size - 1)
                n = min(length * UNIT if what == "range" else length * 1000, size - offset)
                ranged.begin_range(offset, min(max(n, UNIT), size - offset))
                try:
                    _write(ranged, offset, memoryview(b"y" * n))
                finally:
                    ranged.end_range(offset)
        except messages.Rejected:
            pass
        except IndexError:  # a detach with nothing attached
            pass
        assert disk.free("") >= space.reserve
        assert space.outstanding >= 0
        for ranged in files._files.values():
            if ranged.part is not None and ranged.part.fd is not None:
                assert os.fstat(ranged.part.fd).st_blocks * 512 <= ranged.paid
    files.close()
    assert space.outstanding == 0
