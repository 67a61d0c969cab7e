"""RTUN v1 compatibility both ways, from the bytes in ../shared/specs/rtun-v1-wire.md.

An old client's raw v1 bytes against our daemon, and our client against a v1 daemon written
from the spec (tests/support/v1peer.py), each through a real ``ssh -R`` forward.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

import pytest

from support.raw import RawClient
from support.rtun import RtunDaemon, run_rtun
from support.sshd import Forward
from support.v1peer import V1Peer
from support.wait import wait_until


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode()


def _no_partial_files(directory: Path) -> bool:
    return not directory.exists() or not any(directory.rglob(".rtun-*"))


# ---- an old client against our daemon ----------------------------------------------------------


@pytest.fixture
def daemon(start_daemon) -> RtunDaemon:  # overrides tests/conftest.py's
    """A daemon whose user turned PID and SHUTDOWN on, as v1 daemons always had them."""
    return start_daemon(diagnostics=True)


@pytest.fixture
def old_client(forward) -> Iterator[RawClient]:
    """A v1 client's connection: it always sends PING first and expects exactly OK PONG."""
    with RawClient(forward.remote) as raw:
        assert raw.request(b"PING\r\n") == b"OK PONG\r\n"
        yield raw


def test_v1_ping_pid_echo_on_one_connection(old_client, daemon, save_dir):
    assert old_client.request(b"PID\r\n") == f"OK PID {daemon.process.pid}, saveDir {save_dir}\r\n".encode()
    assert old_client.request(b"ECHO hello v1 world\r\n") == b"OK hello v1 world\r\n"
    assert old_client.request(b"PING\r\n") == b"OK PONG\r\n"


def test_v1_bare_lf_is_accepted_and_replies_use_crlf(old_client):
    assert old_client.request(b"PING\n") == b"OK PONG\r\n"
    assert old_client.request(b"ECHO lf\n") == b"OK lf\r\n"


def test_v1_send_with_correct_checksum_saves_the_file(old_client, save_dir):
    data = os.urandom(70_000) + b"\r\n\n end"
    assert old_client.request(b"SEND %d dir/sub/file one.bin\r\n" % len(data)) == b"READY\r\n"
    old_client.send(data + _sha(data) + b"\r\n")
    assert old_client.line() == b"OK\r\n"
    assert (save_dir / "dir" / "sub" / "file one.bin").read_bytes() == data
    # The connection goes on serving commands, as v1's does.
    assert old_client.request(b"SEND 0 empty.txt\r\n") == b"READY\r\n"
    old_client.send(_sha(b"") + b"\r\n")
    assert old_client.line() == b"OK\r\n"
    assert (save_dir / "empty.txt").read_bytes() == b""
    assert old_client.request(b"PING\r\n") == b"OK PONG\r\n"
    assert _no_partial_files(save_dir)


def test_v1_send_with_wrong_checksum_is_error_107_and_saves_nothing(old_client, save_dir):
    data = b"some bytes that will not match\n" * 100
    assert old_client.request(b"SEND %d bad.txt\r\n" % len(data)) == b"READY\r\n"
    wrong = _sha(b"something else")
    old_client.send(data + wrong + b"\r\n")
    reply = old_client.line()
    assert reply.startswith(b"ERROR 107 ") and reply.endswith(b"\r\n")
    assert wrong in reply and _sha(data) in reply  # expected <x>, got <y>
    assert old_client.at_eof()  # closed after the error, as v1 does
    assert not (save_dir / "bad.txt").exists()
    assert _no_partial_files(save_dir)


def test_v1_send_with_malformed_checksum_line_saves_nothing(old_client, save_dir):
    data = b"abc"
    assert old_client.request(b"SEND 3 bad2.txt\r\n") == b"READY\r\n"
    old_client.send(data + b"not-a-checksum\r\n")
    reply = old_client.line()
    assert reply.startswith(b"ERROR 107 ") and reply.endswith(b"\r\n")
    assert not (save_dir / "bad2.txt").exists()
    assert _no_partial_files(save_dir)


def test_v1_unknown_command_gets_error_100_with_line_ending_then_close(old_client):
    old_client.send(b"FROBNICATE now\r\n")
    reply = old_client.line()
    assert reply.startswith(b"ERROR 100 ")
    assert reply.endswith(b"\r\n")
    assert old_client.at_eof()


def test_v1_shutdown_replies_and_the_daemon_exits_0(old_client, daemon, remote_home):
    assert old_client.request(b"SHUTDOWN\r\n") == b"OK Shutting down server...\r\n"
    assert daemon.process.wait(timeout=15) == 0
    assert not os.path.lexists(daemon.socket)
    result = run_rtun(["ping"], remote_home)
    assert result.returncode == 3


def test_v1_send_of_an_existing_name_does_not_clobber_it(old_client, save_dir):
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / "keep.txt").write_bytes(b"original")
    assert old_client.request(b"SEND 3 keep.txt\r\n") == b"READY\r\n"
    old_client.send(b"new" + _sha(b"new") + b"\r\n")
    assert old_client.line() == b"OK\r\n"
    assert (save_dir / "keep.txt").read_bytes() == b"original"
    others = [p for p in save_dir.iterdir() if p.name != "keep.txt"]
    assert len(others) == 1 and others[0].read_bytes() == b"new"


# ---- our client against a v1 daemon ------------------------------------------------------------


@pytest.fixture
def v1_peer(short_tmp: Path) -> Iterator[V1Peer]:
    peer = V1Peer(short_tmp / "v1.sock", short_tmp / "v1-saved").start()
    yield peer
    peer.stop()


@pytest.fixture
def v1_forward(sshd, v1_peer: V1Peer, remote_home: Path) -> Iterator[Forward]:
    fwd = Forward(sshd, remote_home / ".rtun" / "rtun.sock", v1_peer.path).wait_up()
    yield fwd
    fwd.close()


def test_our_client_ping_against_v1(v1_forward, v1_peer, remote_home):
    result = run_rtun(["ping"], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"OK PONG\n"
    assert v1_peer.requests == ["PING"]


def test_our_client_echo_and_pid_against_v1(v1_forward, v1_peer, remote_home):
    result = run_rtun(["echo", "hi", "there"], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"OK hi there\n"
    result = run_rtun(["pid"], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"OK PID {os.getpid()}, saveDir {v1_peer.save_dir}\n"
    assert v1_peer.requests == ["PING", "ECHO hi there", "PING", "PID"]


def test_our_client_send_falls_back_to_v1_send(v1_forward, v1_peer, remote_home, short_tmp):
    source = short_tmp / "payload.bin"
    data = os.urandom(300_000)
    source.write_bytes(data)
    result = run_rtun(["send", "-q", str(source)], remote_home, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (v1_peer.save_dir / "payload.bin").read_bytes() == data
    # The HELLO was refused with a well-formed error; the client reconnected and used v1 SEND.
    sends = [r for r in v1_peer.requests if r.startswith("SEND")]
    assert sends[0].startswith("SEND RTUN/2")
    assert sends[1:] == [f"SEND {len(data)} payload.bin"]
    assert v1_peer.received == [("SEND", "payload.bin", len(data))]


def test_our_client_send_directory_to_v1_is_one_send_per_file(v1_forward, v1_peer, remote_home, short_tmp):
    top = short_tmp / "tree"
    (top / "sub").mkdir(parents=True)
    (top / "a.txt").write_bytes(b"alpha\n")
    (top / "sub" / "b.txt").write_bytes(b"beta\n")
    result = run_rtun(["send", "-q", str(top)], remote_home, timeout=30)
    assert result.returncode == 0, result.stderr
    assert (v1_peer.save_dir / "tree" / "a.txt").read_bytes() == b"alpha\n"
    assert (v1_peer.save_dir / "tree" / "sub" / "b.txt").read_bytes() == b"beta\n"


def test_our_client_shutdown_against_v1(v1_forward, v1_peer, remote_home):
    result = run_rtun(["shutdown"], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"OK Shutting down server...\n"
    wait_until(v1_peer.shutdown_requested.is_set, timeout=5, what="the v1 peer to get SHUTDOWN")


def test_v1_peer_really_omits_the_line_ending_on_error_100(v1_peer):
    # The fake peer is faithful to the old daemon's defect our client must never depend on.
    with RawClient(v1_peer.path, timeout=5) as raw:
        assert raw.request(b"PING\r\n") == b"OK PONG\r\n"
        raw.send(b"BOGUS\r\n")
        assert raw.line() == b"ERROR 100 unknown command: BOGUS"
        with RawClient(v1_peer.path, timeout=5) as second:
            assert second.request(b"SEND RTUN/2 notify2 put\r\n") == b"ERROR 101 bad size\r\n"
            assert second.at_eof()
