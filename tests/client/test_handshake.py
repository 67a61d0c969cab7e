"""Small requests in two round trips: the client sends HELLO, the request and (for small
uploads) the data at once, and reads the replies after. Counted on a real socket with a relay
that notes each turn of the conversation; the daemon is the real `rtun server`."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Iterator

import pytest

from rtun.client import requests, upload
from rtun.client.options import SendOptions
from rtun.errors import RemoteError
from rtun.protocol import limits
from support.raw import RawClient
from support.rtun import RtunDaemon
from support.turns import TurnCounter


@pytest.fixture
def relay(daemon: RtunDaemon, short_tmp: Path) -> Iterator[TurnCounter]:
    counter = TurnCounter(short_tmp / "relay.sock", daemon.socket)
    yield counter
    counter.close()


def _leftovers(directory: Path) -> list:
    return [p for p in directory.rglob("*")] if directory.exists() else []


@pytest.fixture
def notifying_daemon(local_home: Path, save_dir: Path, notifications) -> Iterator[RtunDaemon]:
    running = RtunDaemon(
        local_home,
        save_dir,
        socket_path=local_home / "notify.sock",
        env={"DBUS_SESSION_BUS_ADDRESS": notifications.bus.address},
    ).start()
    yield running
    running.stop()


def test_a_notification_is_one_turn_of_the_client(
    notifying_daemon: RtunDaemon, notifications, short_tmp: Path
) -> None:
    relay = TurnCounter(short_tmp / "relay-n.sock", notifying_daemon.socket)
    requests.notify(str(relay.listen), "title", "body")
    relay.close()
    assert relay.directions[:2] == ["c", "d"] and relay.client_turns == 1
    assert [(n["summary"], n["body"]) for n in notifications.notifications()] == [("title", "body")]


def test_a_small_send_is_one_turn_with_its_data(relay: TurnCounter, save_dir: Path, short_tmp: Path) -> None:
    source = short_tmp / "small.txt"
    source.write_bytes(b"x" * 1000)
    result = upload.send([str(source)], None, options=SendOptions(socket=str(relay.listen)), quiet=True)
    relay.close()
    assert relay.client_turns == 1
    assert (save_dir / "small.txt").read_bytes() == b"x" * 1000 and result.saved


def test_a_large_send_waits_for_ready_before_its_data(
    relay: TurnCounter, save_dir: Path, short_tmp: Path
) -> None:
    source = short_tmp / "large.bin"
    source.write_bytes(os.urandom(limits.MAX_EARLY_DATA + 1))
    upload.send([str(source)], None, options=SendOptions(socket=str(relay.listen)), quiet=True)
    relay.close()
    # HELLO and PUT, then (after READY) the data: the daemon decided before gigabytes moved.
    assert relay.client_turns == 2
    assert (save_dir / "large.bin").read_bytes() == source.read_bytes()


@pytest.fixture
def refusing_daemon(local_home: Path, save_dir: Path) -> Iterator[RtunDaemon]:
    config = local_home / "refuse.toml"
    local_home.mkdir(parents=True, exist_ok=True)
    config.write_text("[actions]\nsend = false\n")
    running = RtunDaemon(local_home, save_dir, extra_args=["--config", str(config)]).start()
    yield running
    running.stop()


def test_a_refused_pipelined_send_leaves_nothing_behind(
    refusing_daemon: RtunDaemon, save_dir: Path, short_tmp: Path
) -> None:
    source = short_tmp / "tree"
    source.mkdir()
    for i in range(20):
        (source / f"f{i}").write_bytes(b"y" * 10_000)
    with pytest.raises(RemoteError) as info:
        upload.send([str(source)], None, options=SendOptions(socket=str(refusing_daemon.socket)), quiet=True)
    assert "send is turned off" in info.value.message
    assert _leftovers(save_dir) == []


def test_a_refused_pipelined_upload_is_read_to_its_end_then_closed(
    daemon: RtunDaemon, save_dir: Path
) -> None:
    """A PUT whose entry is refused mid-stream: the daemon says why, reads and drops what was
    sent ahead (the client never sees a reset while writing it), then closes."""
    import hashlib

    data = b"z" * 200_000
    from rtun.protocol import framing

    entries = (
        framing.encode_entry(framing.FileEntry("ok.txt", 0o644, 1.0, 3))
        + b"3\r\nabc0\r\n"
        + hashlib.sha256(b"abc").hexdigest().encode()
        + b"\r\n"
        + framing.encode_entry(framing.FileEntry("../escape", 0o644, 1.0, len(data)))
    )
    with RawClient(daemon.socket) as raw:
        raw.send(b'SEND RTUN/2 put\r\nPUT {"dest":"","bytes":%d,"files":2}\r\n' % (len(data) + 3) + entries)
        assert raw.line().startswith(b"OK RTUN/2")
        assert raw.line() == b"READY\r\n"
        assert raw.line().startswith(b"ERROR 108")
        # The rest of what a pipelining client had queued still goes in without a reset:
        raw.send(b"%d\r\n" % len(data) + data)
        raw.sock.shutdown(socket.SHUT_WR)
        assert raw.line() == b""  # ... and then the daemon closes
    assert not (save_dir.parent / "escape").exists()
    assert [p.name for p in save_dir.iterdir()] == ["ok.txt"]  # the file before the bad entry, whole


def test_a_pipelined_send_refused_for_its_path_says_why(
    daemon: RtunDaemon, save_dir: Path, short_tmp: Path
) -> None:
    """The path is refused before READY while the early data is still going out: the daemon
    drains it, and the client reports the refusal, not a missing daemon."""
    source = short_tmp / "small.txt"
    source.write_bytes(b"s" * 900_000)
    with pytest.raises(RemoteError) as info:
        upload.send([str(source)], "./", options=SendOptions(socket=str(daemon.socket)), quiet=True)
    assert info.value.code == 108
    assert _leftovers(save_dir) == []
