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

from rtun.protocol import limits
from support.load import peak_rss_kib
from support.raw import RawClient
from support.rtun import RtunDaemon, answers_ping, run_rtun
from support.sshd import Forward
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
    wait_until(
        lambda: not list(save_dir.rglob(".rtun-*")), timeout=10, what="the partial upload to be removed"
    )
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


def _used_then_idle(daemon: RtunDaemon, verb: str) -> RawClient:
    """A connection that made one request of ``verb`` (through to its OK) and then falls silent."""
    import hashlib

    raw = RawClient(daemon.socket, timeout=10)
    data = b"r" * 100_000
    digest = hashlib.sha256(data).hexdigest().encode() + b"\r\n"
    if verb == "RANGE":  # joins the ranged file opened below and sends its last, small range
        assert raw.request(
            b'RANGES {"dest":"","name":"big.bin","bytes":1048581,"mode":420,"mtime":1.7e9,'
            b'"key":"00112233445566778899aabbccddeeff","overwrite":false,"resume":false,'
            b'"join":true}\r\n'
        ).startswith(b"OK ")
        raw.send(
            b'RANGE {"offset":1048576,"bytes":5}\r\nabcde'
            + hashlib.sha256(b"abcde").hexdigest().encode()
            + b"\r\n"
        )
    elif verb == "PUT":
        raw.send(
            b'PUT {"dest":"idle","bytes":100000,"files":1}\r\n{"type":"file","path":"f%d","size":100000}\r\n'
            % raw.sock.fileno()
            + b"%d\r\n" % len(data)
            + data
            + b"0\r\n"
            + digest
            + b'{"type":"end"}\r\n'
        )
        assert raw.line() == b"READY\r\n"
    elif verb in ("EDIT", "COPY"):
        header = b'{"name":"e.txt","bytes":100000}' if verb == "EDIT" else b'{"bytes":100000}'
        assert raw.request(verb.encode() + b" " + header + b"\r\n") == b"READY\r\n"
        raw.send(data + digest)
    elif verb == "OPEN":
        raw.send(b'OPEN {"url":"https://example.org/"}\r\n')
    else:
        raw.send(b"PING\r\n")
    reply = raw.line()
    assert reply.startswith(b"OK"), (verb, reply)
    return raw


IDLE_CONFIG = """[view]
burst = 1000
rate = 1000
[edit]
editor = ["sh", "-c", "sleep 20", "editor"]
[open]
browser = ["true"]
[clipboard]
copy = ["sh", "-c", "cat > /dev/null"]
"""


def test_300_idle_connections_that_used_every_verb_stay_within_the_bound(
    local_home, save_dir, sshd, remote_home
):
    daemon = _daemon_with(local_home, save_dir, IDLE_CONFIG)
    idle: List[RawClient] = []
    opener = RawClient(daemon.socket, timeout=10)  # opens the ranged file the RANGEs join
    try:
        assert opener.request(
            b'RANGES {"dest":"","name":"big.bin","bytes":1048581,"mode":420,"mtime":1.7e9,'
            b'"key":"00112233445566778899aabbccddeeff","overwrite":false,"resume":false,'
            b'"join":false}\r\n'
        ).startswith(b"OK ")
        for verb in ("RANGE", "PUT", "EDIT", "OPEN", "COPY"):  # every module is loaded before measuring
            idle.append(_used_then_idle(daemon, verb))
        before = _peak_rss_mib(daemon.process.pid)
        verbs = ["RANGE", "PUT", "OPEN", "COPY", "PING"]
        for i in range(295):
            idle.append(_used_then_idle(daemon, "EDIT" if i % 20 == 10 else verbs[i % 5]))  # 15 edits
        forward = Forward(sshd, remote_home / ".rtun" / "rtun.sock", daemon.socket).wait_up()
        try:
            result = run_rtun(["ping"], remote_home, timeout=10)
            assert result.returncode == 0 and result.stdout == b"OK PONG\n", result.stderr
        finally:
            forward.close()
        with RawClient(daemon.socket) as fresh:
            assert fresh.request(b"ECHO after 300\r\n") == b"OK after 300\r\n"
        assert idle[-1].request(b"ECHO last\r\n") == b"OK last\r\n"  # the newest are still served
        _error_then_close(idle[1], 114)  # the oldest idle ones made room, each told why
        # What every open connection costs is small and fixed, whatever it did before
        # (docs/security.md: 128 KiB of receive buffer, 256 + 16 connections: 35 MiB; with
        # asyncio's own buffers about 55 MiB). The peak counts every moment of the run.
        growth = _peak_rss_mib(daemon.process.pid) - before
        assert growth < 55, f"the daemon grew by {growth:.0f} MiB"
        assert daemon.alive() and "Traceback" not in daemon.log_text()
    finally:
        for raw in idle:
            raw.close()
        opener.close()
        daemon.stop()


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
            batch.append(
                json.dumps({"type": "link", "path": f"top/{prefix}{i}", "target": "/etc"}).encode() + b"\r\n"
            )
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


def _put_with_a_large_reply(raw: RawClient, n: int) -> None:
    """A PUT of ``n`` links out of the transfer, each skipped and listed in the reply: about
    ``n`` KB of reply, which the caller does not read."""
    import json

    entries = [b'PUT {"dest":"","bytes":0,"files":0}\r\n']
    for i in range(n):
        path = "slow/" + "/".join(["p" * 240] * 4) + str(i)
        entries.append(json.dumps({"type": "link", "path": path, "target": "/etc"}).encode() + b"\r\n")
    entries.append(b'{"type":"end"}\r\n')
    raw.send(b"".join(entries))  # READY comes back unread: a pipelining client's order


def _trickle_until_cut(clients: List[RawClient], deadline: float) -> float:
    """One byte now and then on each connection, never reading, until the daemon ends them all;
    returns when the last was cut."""
    alive = list(clients)
    while alive and time.monotonic() < deadline:
        for raw in list(alive):
            try:
                raw.send(b"x")  # bytes of a request line that never ends: not a sign of reading
            except OSError:  # reset or broken pipe: the daemon ended it
                alive.remove(raw)
        time.sleep(0.2)  # the trickle's pace is what is tested
    assert not alive, f"{len(alive)} connections that never read their replies are still open"
    return time.monotonic()


def _send_through_forward(remote_home: Path, daemon: RtunDaemon, name: str) -> None:
    source = remote_home / name
    source.write_bytes(os.urandom(200_000))
    result = run_rtun(["send", str(source)], remote_home, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (daemon.save_dir / name).read_bytes() == source.read_bytes()


IDLE = 3  # seconds: the idle_timeout of the slow-reader tests


def _cut_for_not_reading(daemon: RtunDaemon) -> int:
    """Connections ended for a reply nobody read: past the grace, by its rate (0 bytes/s is
    below min_rate), or by the timeout, whichever the watchdog saw first; never by a trickle
    of bytes from the client, which does not count as reading."""
    text = daemon.log_text()
    return text.count(f"no byte of the reply was read for {IDLE} s") + text.count("reply read slower than")


def test_uploads_that_never_read_their_replies_hold_no_slot_and_are_cut(
    local_home, save_dir, sshd, remote_home
):
    daemon = _daemon_with(local_home, save_dir, f"[server]\nidle_timeout = {IDLE}\n")
    stuck = [RawClient(daemon.socket, timeout=30) for _ in range(8)]  # max_uploads, the default
    forward = Forward(sshd, remote_home / ".rtun" / "rtun.sock", daemon.socket).wait_up()
    try:
        for raw in stuck:
            _put_with_a_large_reply(raw, 2000)  # 2 MB of reply: far past the socket's buffers
        wait_until(
            lambda: daemon.log_text().count("skipped 2000") >= 8, timeout=20, what="the eight uploads to end"
        )
        started = time.monotonic()
        # Meanwhile every slot is free: a real send through ssh goes at once.
        _send_through_forward(remote_home, daemon, "during.bin")
        _trickle_until_cut(stuck, started + 4 * IDLE)
        assert _cut_for_not_reading(daemon) == 8
        _send_through_forward(remote_home, daemon, "after.bin")
        assert answers_ping(daemon.socket)
    finally:
        forward.close()
        for raw in stuck:
            raw.close()
        daemon.stop()


def test_pastes_that_never_read_their_replies_hold_no_slot_and_are_cut(
    local_home, save_dir, sshd, remote_home
):
    config = (
        f"[server]\nidle_timeout = {IDLE}\n[actions]\npaste = true\n"
        "[clipboard]\npaste = ['sh', '-c', 'yes a | head -c 3000000']\n"
    )
    daemon = _daemon_with(local_home, save_dir, config)
    stuck = [RawClient(daemon.socket, timeout=30) for _ in range(8)]
    forward = Forward(sshd, remote_home / ".rtun" / "rtun.sock", daemon.socket).wait_up()
    try:
        for raw in stuck:
            raw.send(b"PASTE\r\n")
        started = time.monotonic()
        _send_through_forward(remote_home, daemon, "during.bin")
        _trickle_until_cut(stuck, started + 4 * IDLE)
        assert _cut_for_not_reading(daemon) == 8
        _send_through_forward(remote_home, daemon, "after.bin")
    finally:
        forward.close()
        for raw in stuck:
            raw.close()
        daemon.stop()


def test_a_reply_read_a_byte_at_a_time_is_cut_and_one_read_at_once_is_not(local_home, save_dir):
    """Reading a large reply a little now and then (each read restarting the no-progress
    timer) would hold it in the daemon's memory for ever, on each of hundreds of connections:
    past the grace, a reply must be read at ``min_rate``."""
    config = (
        f"[server]\nidle_timeout = {IDLE}\nmin_rate = 1024\n[actions]\npaste = true\n"
        "[clipboard]\npaste = ['sh', '-c', 'yes a | head -c 3000000']\n"
    )
    daemon = _daemon_with(local_home, save_dir, config)
    try:
        with RawClient(daemon.socket, timeout=30) as slow, RawClient(daemon.socket, timeout=30) as fast:
            slow.send(b"PASTE\r\n")
            fast.send(b"PASTE\r\n")
            header = fast.line()
            assert header.startswith(b"OK "), header
            size = int(header.split(b'"bytes":')[1].split(b"}")[0])
            assert len(fast.read(size)) == size, "the daemon cut a client that read its reply at once"
            started = time.monotonic()
            # The socket's buffers keep what the daemon wrote before it cut the connection, so
            # the cut is seen in the daemon's log, while the client goes on trickling.
            while "reply read slower than 1024 bytes/s" not in daemon.log_text():
                assert time.monotonic() - started < IDLE + 2, "a reply read at 320 bytes/s was still served"
                slow.sock.recv(16)  # 16 bytes each 50 ms: 320 bytes/s
                time.sleep(0.05)
        assert "connection ended: reply read slower than 1024 bytes/s" in daemon.log_text()
        assert daemon.log_text().count("reply read slower") == 1  # the fast reader was not cut
    finally:
        daemon.stop()
