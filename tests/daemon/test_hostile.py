"""The daemon treats its socket as hostile: no input crashes it or stops it answering others.

Each test feeds bad input straight to the daemon's socket, then checks with the real client,
through the real ``ssh -R`` forward, that the daemon still answers ping at once. What each
malformed input means is tested without a daemon, in tests/protocol/test_receiver.py.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path
from typing import List

import pytest

from support.rtun import RtunDaemon, answers_ping, run_rtun
from rtun.protocol import limits
from support.load import peak_rss_kib
from support.sshd import Forward
from support.v1peer import RawClient
from support.wait import wait_until

PING_DEADLINE = 1.0  # seconds for a ping answered by a healthy daemon (process start excluded)


@pytest.fixture
def check(forward, daemon: RtunDaemon, remote_home: Path):
    """Assert the daemon is alive and answers ping at once, in-process and via the real client."""

    def healthy() -> None:
        assert daemon.alive(), daemon.log_text()
        start = time.monotonic()
        assert answers_ping(daemon.socket)
        assert time.monotonic() - start < PING_DEADLINE
        result = run_rtun(["ping"], remote_home, timeout=10)
        assert result.returncode == 0 and result.stdout == b"OK PONG\n", result.stderr
        assert "Traceback" not in daemon.log_text()

    return healthy


def _error_then_close(raw: RawClient, code: int) -> bytes:
    reply = raw.line()
    assert reply.startswith(b"ERROR %d " % code), reply
    assert reply.endswith(b"\r\n"), reply
    assert reply.count(b"\n") == 1
    assert raw.at_eof()
    return reply


# Every malformed input is rejected by the protocol core, tested byte by byte in memory
# (tests/protocol/test_receiver.py); these few go through the real daemon too.
@pytest.mark.parametrize(
    "data, code",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 100),
        (b"SEND 10 ../../../etc/passwd\r\n", 108),
        (b'PUT {"bytes": 99999999999999999999999}\r\n', 109),
        (b"ECHO \xc3\x28 invalid utf-8\r\n", 113),
    ],
)
def test_garbage_gets_an_error_line_and_the_daemon_carries_on(daemon, check, data, code):
    with RawClient(daemon.socket) as raw:
        raw.send(data)
        _error_then_close(raw, code)
    check()


def test_garbage_on_one_connection_does_not_disturb_another(daemon, check):
    with RawClient(daemon.socket) as good, RawClient(daemon.socket) as bad:
        assert good.request(b"PING\r\n") == b"OK PONG\r\n"
        bad.send(os.urandom(4096).replace(b"\n", b"") + b"\n")
        assert bad.line().startswith(b"ERROR ")
        assert good.request(b"ECHO fine\r\n") == b"OK fine\r\n"
    check()


def test_ten_megabyte_line_without_newline(daemon, check):
    blob = b"A" * (10 * 1024 * 1024)
    with RawClient(daemon.socket, timeout=20) as raw:
        sent: List[BaseException] = []

        def pump() -> None:
            try:
                raw.sock.sendall(blob)
            except OSError as exc:  # the daemon gave up on the line and closed: expected
                sent.append(exc)

        writer = threading.Thread(target=pump, daemon=True)
        writer.start()
        reply = raw.line()
        assert reply.startswith(b"ERROR 112 ") and reply.endswith(b"\r\n"), reply[:200]
        assert raw.at_eof()
        writer.join(timeout=20)
        assert not writer.is_alive()
    check()


def test_half_written_command_then_disconnect(daemon, check):
    for partial in (b"PIN", b"SEND 10", b"ECHO no end", b"\xff"):
        with RawClient(daemon.socket) as raw:
            raw.send(partial)
    with RawClient(daemon.socket) as raw:  # and one that leaves in the middle of a reply
        raw.send(b"PING\r\nPID\r\nECHO x\r\n")
        raw.sock.shutdown(socket.SHUT_RDWR)
    check()


def test_send_declaring_a_huge_size_then_disconnect(daemon, check, save_dir):
    with RawClient(daemon.socket) as raw:
        assert raw.request(b"PING\r\n") == b"OK PONG\r\n"
        raw.send(b"SEND 99999999999999999999 huge.bin\r\n")
        _error_then_close(raw, 109)  # refused up front: not enough space
    check()

    # A size that fits, but the client leaves after a few bytes: nothing is kept.
    with RawClient(daemon.socket) as raw:
        assert raw.request(b"SEND 5000000 partial.bin\r\n") == b"READY\r\n"
        raw.send(b"x" * 1000)
    wait_until(lambda: not list(save_dir.rglob(".rtun-*")), timeout=10,
               what="the partial upload to be removed")
    assert not (save_dir / "partial.bin").exists()
    check()


def test_short_upload_then_checksum_is_an_error(daemon, check, save_dir):
    with RawClient(daemon.socket) as raw:
        assert raw.request(b"SEND 10 short.bin\r\n") == b"READY\r\n"
        raw.send(b"abc" + b"0" * 64 + b"\r\n")  # 10 bytes of "data", then no checksum line
        raw.sock.shutdown(socket.SHUT_WR)
        reply = raw.line()
        assert reply == b"" or (reply.startswith(b"ERROR ") and reply.endswith(b"\r\n"))
    assert not (save_dir / "short.bin").exists()
    check()


def test_300_idle_connections_held_open(daemon, check):
    idle: List[RawClient] = []
    before = _peak_rss_mib(daemon.process.pid)
    try:
        for i in range(300):
            raw = RawClient(daemon.socket, timeout=10)
            if i % 3 == 0:
                assert raw.request(b"PING\r\n") == b"OK PONG\r\n"  # then silent, like a stuck client
            idle.append(raw)
        check()
        with RawClient(daemon.socket) as fresh:
            assert fresh.request(b"PING\r\n") == b"OK PONG\r\n"
            assert fresh.request(b"ECHO after 300\r\n") == b"OK after 300\r\n"
        # The most recent idle connections are still served.
        assert idle[-1].request(b"ECHO last\r\n") == b"OK last\r\n"
        # The oldest idle ones made room, each told why with a complete error line.
        _error_then_close(idle[0], 114)
        # What every open connection costs is small and fixed (docs/security.md).
        assert _peak_rss_mib(daemon.process.pid) - before < 64
    finally:
        for raw in idle:
            raw.close()
    check()


def test_a_flood_of_connections_and_commands(daemon, check):
    errors: List[BaseException] = []

    def client(n: int) -> None:
        try:
            for _ in range(5):
                with RawClient(daemon.socket) as raw:
                    assert raw.request(b"PING\r\n") == b"OK PONG\r\n"
                    assert raw.request(b"ECHO %d\r\n" % n) == b"OK %d\r\n" % n
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    check()


def test_client_that_leaves_without_reading_its_replies(daemon, check):
    # Closing with unread replies makes the daemon's next read fail with ECONNRESET.
    for _ in range(5):
        raw = RawClient(daemon.socket)
        raw.send(b"PING\r\n")
        wait_until(lambda: _readable(raw.sock), timeout=5, what="the reply to be queued")
        raw.close()
    with RawClient(daemon.socket) as raw:
        assert raw.request(b"SEND 100000 gone.bin\r\n") == b"READY\r\n"
        raw.send(b"z" * 10)
        raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    check()


def _readable(sock: socket.socket) -> bool:
    import select

    return bool(select.select([sock], [], [], 0)[0])


def test_no_peer_can_stop_the_daemon_or_learn_its_pid_by_default(forward, daemon, check, remote_home):
    for command in ("shutdown", "pid"):
        result = run_rtun([command], remote_home)
        assert result.returncode == 4, result.stderr
        assert b"turned off" in result.stderr and result.stderr.count(b"\n") == 1
    with RawClient(daemon.socket) as raw:
        raw.send(b"SHUTDOWN\r\n")
        _error_then_close(raw, 100)
    assert str(daemon.save_dir).encode() not in result.stderr
    check()


def _peak_rss_mib(pid: int) -> float:
    return peak_rss_kib(pid) / 1024


def test_one_put_cannot_grow_the_daemon_without_bound(daemon, check):
    # 60,000 links that point outside the transfer, each with a 3.9 KB path: every one is
    # skipped and used to be listed in the reply (about 700 MB of daemon memory in all).
    import json

    component = "c" * 240
    prefix = "/".join([component] * 16)
    before = _peak_rss_mib(daemon.process.pid)
    with RawClient(daemon.socket, timeout=120) as raw:
        assert raw.request(b'PUT {"dest":"","bytes":0,"files":0}\r\n') == b"READY\r\n"
        entries = [json.dumps({"type": "dir", "path": "top"}).encode() + b"\r\n"]
        raw.send(entries[0])
        batch = []
        for i in range(60_000):
            batch.append(json.dumps({"type": "link", "path": f"top/{prefix}{i}", "target": "/etc"}).encode() + b"\r\n")
            if len(batch) == 1000:
                raw.send(b"".join(batch))
                batch = []
        raw.send(json.dumps({"type": "end"}).encode() + b"\r\n")
        reply = raw.line()
    assert reply.startswith(b"OK {"), reply[:200]
    data = json.loads(reply[3:])
    assert data["unlisted"]["skipped"] > 50_000 and len(reply) < limits.MAX_REPLY_LISTING + 64 * 1024
    assert _peak_rss_mib(daemon.process.pid) - before < 64
    check()


def _daemon_with(local_home: Path, save_dir: Path, config: str) -> RtunDaemon:
    path = local_home / "hostile.toml"
    local_home.mkdir(parents=True, exist_ok=True)
    path.write_text(config)
    return RtunDaemon(local_home, save_dir, extra_args=["--config", str(path)]).start()


def test_a_trickling_upload_is_ended_so_it_cannot_hold_a_slot(local_home, save_dir):
    # idle_timeout 8 s: the rate is held to min_rate after 2 s (a quarter of it).
    daemon = _daemon_with(local_home, save_dir, "[server]\nidle_timeout = 8\nmin_rate = 1024\n")
    try:
        with RawClient(daemon.socket, timeout=20) as raw:
            assert raw.request(b"SEND 100000 slow.bin\r\n") == b"READY\r\n"
            started = time.monotonic()
            reply = b""
            while not reply and time.monotonic() - started < 15:
                try:
                    raw.send(b"x")  # one byte every 0.2 s: 5 bytes/s
                except OSError:
                    break
                if _readable(raw.sock):
                    reply = raw.line()
                time.sleep(0.2)  # the trickle itself is what is tested
            reply = reply or raw.line()
        assert reply.startswith(b"ERROR 114 upload slower than 1024 bytes/s"), reply
        assert time.monotonic() - started < 6
        wait_until(lambda: not list(save_dir.rglob(".rtun-*")), timeout=10, what="the partial file to go")
        assert not (save_dir / "slow.bin").exists()
        assert answers_ping(daemon.socket)
    finally:
        daemon.stop()


def test_room_is_kept_for_pings_when_every_slot_is_in_a_transfer(local_home, save_dir, sshd, remote_home):
    daemon = _daemon_with(local_home, save_dir, "[server]\nmax_connections = 3\n")
    stalled: List[RawClient] = []
    try:
        for i in range(3):
            raw = RawClient(daemon.socket)
            assert raw.request(b"SEND 1000000 stall%d.bin\r\n" % i) == b"READY\r\n"
            stalled.append(raw)
        with RawClient(daemon.socket) as extra:
            assert extra.request(b"PING\r\n") == b"OK PONG\r\n"
            extra.send(b"SEND 10 more.bin\r\n")
            reply = extra.line()
            assert reply.startswith(b"ERROR 114 too many connections busy with transfers"), reply
        forward = Forward(sshd, remote_home / ".rtun" / "rtun.sock", daemon.socket).wait_up()
        try:
            result = run_rtun(["ping"], remote_home)
            assert result.returncode == 0 and result.stdout == b"OK PONG\n", result.stderr
        finally:
            forward.close()
    finally:
        for raw in stalled:
            raw.close()
        daemon.stop()
