"""Large files in ranges over several connections, and their resumption, against the real
daemon: end to end through the real sshd and `ssh -R` forward, and byte by byte where a peer
misbehaves."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from rtun.client import parallel, upload
from rtun.client.options import SendOptions
from rtun.protocol import limits, messages, wire
from support.raw import RawClient
from support.rtun import RTUN, RtunDaemon, clean_env, run_rtun
from support.turns import TurnCounter
from support.wait import wait_until

MIB = 1024 * 1024


def _random_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def _ranges_line(log: str) -> str:
    lines = [line for line in log.splitlines() if "in ranges over" in line]
    assert len(lines) == 1, log
    return lines[0]


def _parts(directory: Path) -> list:
    return [p.name for p in directory.rglob("*") if p.name.startswith(".rtun-")]


def test_a_large_file_goes_over_several_channels_through_ssh(
    forward, remote_home: Path, save_dir: Path, daemon: RtunDaemon
) -> None:
    source = _random_file(remote_home / "big.bin", parallel.RANGED_MIN + 12345)
    result = run_rtun(["send", "--channels", "4", str(source)], remote_home)
    assert result.returncode == 0, result.stderr
    assert (save_dir / "big.bin").read_bytes() == source.read_bytes()
    assert re.search(r"over 4 connections, %d bytes" % source.stat().st_size, _ranges_line(daemon.log_text()))
    assert _parts(save_dir) == []


@pytest.mark.parametrize("channels", [1, 4, 16])
def test_whole_ranges_are_written_past_the_page_cache(
    forward, remote_home: Path, save_dir: Path, daemon: RtunDaemon, channels: int
) -> None:
    """Through the real forward, each range reaches storage whole and block-aligned, so nearly
    all of a file is written directly (O_DIRECT), however many channels carry it; only where
    the save directory's file system has no direct I/O does it all take the page cache."""
    from rtun.daemon.storage.direct import on_disk

    size = 32 * MIB + 12345
    source = _random_file(remote_home / "big.bin", size)
    result = run_rtun(["send", "--channels", str(channels), str(source)], remote_home)
    assert result.returncode == 0, result.stderr
    assert (save_dir / "big.bin").read_bytes() == source.read_bytes()
    direct = int(re.search(r"(\d+) written past the page cache", _ranges_line(daemon.log_text())).group(1))
    if on_disk(str(save_dir)):
        assert direct >= 0.9 * size, f"{direct} of {size} bytes written directly"
    else:
        assert direct == 0


def test_a_tree_with_large_files_arrives_whole_through_ssh(
    forward, remote_home: Path, save_dir: Path
) -> None:
    tree = remote_home / "tree"
    (tree / "sub").mkdir(parents=True)
    big = _random_file(tree / "sub" / "big.bin", parallel.RANGED_MIN + 5)
    small = _random_file(tree / "small.bin", 1000)
    os.chmod(big, 0o640)
    result = run_rtun(["send", "--channels", "3", str(tree)], remote_home)
    assert result.returncode == 0, result.stderr
    assert (save_dir / "tree" / "sub" / "big.bin").read_bytes() == big.read_bytes()
    assert (save_dir / "tree" / "small.bin").read_bytes() == small.read_bytes()
    assert (save_dir / "tree" / "sub" / "big.bin").stat().st_mode & 0o777 == 0o640
    assert (save_dir / "tree" / "sub" / "big.bin").stat().st_mtime == big.stat().st_mtime


def _open_ranges(raw: RawClient, size: int, key: str = "ab" * 16, name: str = "r.bin") -> None:
    request = messages.Ranges("", name, size, 0o644, 1.0, key, False, True, False)
    assert raw.command(wire.encode_request(request).decode().strip()) == b'OK {"have":[]}\r\n'


def _range(raw: RawClient, offset: int, data: bytes, digest: bytes = b"") -> bytes:
    raw.send(
        wire.encode_request(messages.Range(offset, len(data)))
        + data
        + (digest or hashlib.sha256(data).hexdigest().encode())
        + b"\r\n"
    )
    return raw.line()


K = limits.MIN_RANGE
A, B, C = b"a" * K, b"b" * K, b"c" * K


def test_a_corrupted_range_is_refused_and_nothing_gets_the_final_name(
    daemon: RtunDaemon, save_dir: Path
) -> None:
    with RawClient(daemon.socket) as raw:
        _open_ranges(raw, 2 * K)
        assert _range(raw, 0, A) == b"OK\r\n"
        assert _range(raw, K, B, hashlib.sha256(C).hexdigest().encode()).startswith(b"ERROR 107")
    assert not (save_dir / "r.bin").exists()


def test_a_lost_range_fails_the_commit_and_nothing_gets_the_final_name(
    daemon: RtunDaemon, save_dir: Path
) -> None:
    with RawClient(daemon.socket) as raw:
        _open_ranges(raw, 3 * K)
        digests = [hashlib.sha256(A).digest(), hashlib.sha256(C).digest()]
        assert _range(raw, 0, A) == b"OK\r\n"
        assert _range(raw, 2 * K, C) == b"OK\r\n"  # the middle one never sent
        reply = raw.command("COMMIT " + wire.dumps({"digest": hashlib.sha256(b"".join(digests)).hexdigest()}))
        assert reply.startswith(b"ERROR 106") and b"cover %d of %d" % (K, 3 * K) in reply
    assert not (save_dir / "r.bin").exists()


def test_ranges_that_are_not_the_file_the_client_meant_fail_the_commit(
    daemon: RtunDaemon, save_dir: Path
) -> None:
    with RawClient(daemon.socket) as raw:
        _open_ranges(raw, 4)
        assert _range(raw, 0, b"abcd") == b"OK\r\n"  # a file's last range may be short
        reply = raw.command("COMMIT " + wire.dumps({"digest": "00" * 32}))
        assert reply.startswith(b"ERROR 107")
    assert not (save_dir / "r.bin").exists()


@pytest.mark.parametrize("offset,size", [(2 * K + 1, 1), (0, 2 * K + 1), (2**62, 1), (0, K - 1)])
def test_a_range_outside_the_file_or_too_small_is_refused(daemon: RtunDaemon, offset: int, size: int) -> None:
    with RawClient(daemon.socket) as raw:
        _open_ranges(raw, 2 * K)
        assert _range(raw, offset, b"x" * size).startswith(b"ERROR 101")


def test_range_before_ranges_is_refused(daemon: RtunDaemon) -> None:
    with RawClient(daemon.socket) as raw:
        assert _range(raw, 0, b"abcd").startswith(b"ERROR 113")


@pytest.fixture
def big_source(short_tmp: Path) -> Path:
    return _random_file(short_tmp / "resume.bin", 64 * parallel.RANGE_SIZE)  # one range lost is 1.6 %


def test_a_killed_send_resumes_and_moves_only_the_rest(
    daemon: RtunDaemon, save_dir: Path, big_source: Path, short_tmp: Path, local_home: Path, monkeypatch
) -> None:
    monkeypatch.setenv("HOME", str(local_home))  # the same user sends again: the same resume secret
    size = big_source.stat().st_size
    first = TurnCounter(short_tmp / "first.sock", daemon.socket, stall_after=size // 2)
    client = subprocess.Popen(
        RTUN + ["send", "-s", str(first.listen), "--channels", "1", str(big_source)],
        env=clean_env(local_home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        first.stalled.wait(30)
        # Half of the ranges are verified on the daemon before the client dies.
        wait_until(lambda: len(_parts(save_dir)) == 1, timeout=10, what="the part file")
        client.kill()
    finally:
        client.wait(10)
        first.close()
    assert not (save_dir / "resume.bin").exists() and len(_parts(save_dir)) == 1

    second = TurnCounter(short_tmp / "second.sock", daemon.socket)
    result = upload.send(
        [str(big_source)], None, options=SendOptions(socket=str(second.listen), channels=1), quiet=True
    )
    second.close()
    assert (save_dir / "resume.bin").read_bytes() == big_source.read_bytes() and result.saved
    assert second.client_bytes <= 0.55 * size, second.client_bytes
    assert _parts(save_dir) == []


def test_no_resume_sends_everything_again(
    daemon: RtunDaemon, save_dir: Path, big_source: Path, short_tmp: Path
) -> None:
    import threading

    from rtun.errors import ConnectionLostError

    size = big_source.stat().st_size
    first = TurnCounter(short_tmp / "first.sock", daemon.socket, stall_after=size // 2)

    def cut_at_half_way() -> None:  # the link stalls, then dies under the client
        first.stalled.wait(30)
        wait_until(lambda: len(_parts(save_dir)) == 1, timeout=10, what="the part file")
        first.close()

    cutter = threading.Thread(target=cut_at_half_way)
    cutter.start()
    try:
        with pytest.raises(ConnectionLostError):
            upload.send(
                [str(big_source)], None, options=SendOptions(socket=str(first.listen), channels=1), quiet=True
            )
    finally:
        cutter.join()
    second = TurnCounter(short_tmp / "second.sock", daemon.socket)
    upload.send(
        [str(big_source)],
        None,
        options=SendOptions(socket=str(second.listen), channels=1, resume=False),
        quiet=True,
    )
    second.close()
    assert (save_dir / "resume.bin").read_bytes() == big_source.read_bytes()
    assert second.client_bytes >= size
    assert _parts(save_dir) == []


def test_a_tree_is_shared_among_connections_with_its_metadata(
    daemon: RtunDaemon, save_dir: Path, short_tmp: Path
) -> None:
    tree = short_tmp / "photos"
    for d in ("a", "b", "a/deep"):
        (tree / d).mkdir(parents=True)
    files = {}
    for i in range(24):
        path = tree / ("a", "b", "a/deep")[i % 3] / f"p{i}.jpg"
        files[path] = _random_file(path, 512 * 1024).read_bytes()
    os.chmod(tree / "b", 0o750)
    for d in ("a/deep", "a", "b", ""):
        os.utime(tree / d, (1_600_000_000, 1_600_000_000))
    relay = TurnCounter(short_tmp / "tree.sock", daemon.socket)
    result = upload.send(
        [str(tree)], None, options=SendOptions(socket=str(relay.listen), channels=3), quiet=True
    )
    relay.close()
    # the directories, a PUT of files and the directories' mtimes on the first connection, and
    # two more connections with a PUT of files each
    assert relay.connections == 3
    assert len(result.saved) == 24
    for path, content in files.items():
        assert (save_dir / path.relative_to(short_tmp)).read_bytes() == content
    assert (save_dir / "photos" / "b").stat().st_mode & 0o777 == 0o750
    for d in ("a/deep", "a", "b", ""):
        assert (save_dir / "photos" / d).stat().st_mtime == 1_600_000_000, d
    assert _parts(save_dir) == []


def test_a_shared_tree_leaves_the_mtimes_of_directories_it_did_not_make(
    daemon: RtunDaemon, save_dir: Path, short_tmp: Path
) -> None:
    tree = short_tmp / "proj"
    (tree / "new").mkdir(parents=True)
    for i in range(4):
        _random_file(tree / ("new" if i % 2 else "") / f"f{i}", 3 * 1024 * 1024)
    for d in ("new", ""):
        os.utime(tree / d, (1_600_000_000, 1_600_000_000))
    (save_dir / "proj").mkdir(parents=True)  # the user's own, from before
    os.utime(save_dir / "proj", (1_700_000_000, 1_700_000_000))
    upload.send([str(tree)], None, options=SendOptions(socket=str(daemon.socket), channels=2), quiet=True)
    assert (save_dir / "proj" / "new").stat().st_mtime == 1_600_000_000  # made by the send: restored
    assert (save_dir / "proj").stat().st_mtime != 1_600_000_000  # not made by it: not set to the sender's


def test_an_mtimes_token_touches_only_what_its_put_made(daemon: RtunDaemon, save_dir: Path) -> None:
    """A raw PUT with a made-up token, or another PUT's, sets no directory's mtime."""
    (save_dir / "Photos").mkdir(parents=True)
    os.utime(save_dir / "Photos", (1_700_000_000, 1_700_000_000))
    from rtun.protocol import framing

    for token in ("ab" * 16, ""):
        request = messages.Put("", False, 0, 0, token)
        with RawClient(daemon.socket) as raw:
            raw.send(wire.encode_request(request))
            assert raw.line() == b"READY\r\n"
            raw.send(
                framing.encode_entry(framing.DirEntry("Photos", 0o755, 0.0))
                + framing.encode_entry(framing.EndEntry())
            )
            assert raw.line().startswith(b"OK")
    assert (save_dir / "Photos").stat().st_mtime == 1_700_000_000


def test_when_every_ranged_slot_is_held_a_large_file_goes_in_a_put(
    daemon: RtunDaemon, save_dir: Path, short_tmp: Path
) -> None:
    from rtun.daemon.actions import ranges

    holders = [RawClient(daemon.socket) for _ in range(ranges.MAX_FILES)]
    try:
        for i, raw in enumerate(holders):
            _open_ranges(raw, 0, key=f"{i:032x}", name=f"held{i}")
        source = _random_file(short_tmp / "big.bin", parallel.RANGED_MIN + 1)
        result = upload.send([str(source)], None, options=SendOptions(socket=str(daemon.socket)), quiet=True)
        assert (save_dir / "big.bin").read_bytes() == source.read_bytes() and result.saved
        assert "in ranges over" not in daemon.log_text()
    finally:
        for raw in holders:
            raw.close()
