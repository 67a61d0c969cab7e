"""benchmarks/delayline.py, the link benchmark's delay line: run as ssh runs its ProxyCommand
(stdin and stdout pipes, a TCP peer on 127.0.0.1), with a small round trip to keep tests fast."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Tuple

import pytest

from support.wait import wait_until

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "delayline.py"
RTT = 0.040
KIB = 1024


def _load_module():
    spec = importlib.util.spec_from_file_location("delayline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Peer:
    """The far end: a TCP server on 127.0.0.1 that runs ``serve(conn)`` on its one connection and
    notes when each piece of data arrived."""

    def __init__(self, serve: Callable[["Peer", socket.socket], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.arrivals: List[Tuple[float, bytes]] = []
        self.error: List[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(serve,), daemon=True)
        self.thread.start()

    def _run(self, serve: Callable[["Peer", socket.socket], None]) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                serve(self, conn)
        except BaseException as exc:  # surfaced by join()
            self.error.append(exc)

    def receive_all(self, conn: socket.socket) -> None:
        while True:
            data = conn.recv(64 * KIB)
            if not data:
                return
            self.arrivals.append((time.monotonic(), data))

    def received(self) -> bytes:
        return b"".join(data for _, data in self.arrivals)

    def join(self) -> None:
        self.thread.join(timeout=30)
        self.listener.close()
        assert not self.thread.is_alive(), "the peer did not finish"
        if self.error:
            raise self.error[0]


@pytest.fixture
def count_file(tmp_path: Path) -> Path:
    return tmp_path / "counts.json"


def _start(peer: Peer, count_file: Path, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *options, "--count", str(count_file), "127.0.0.1", str(peer.port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _counts(count_file: Path) -> dict:
    return json.loads(count_file.read_text())


def test_relays_both_ways_byte_identical_and_counts_every_byte(count_file: Path) -> None:
    upstream = os.urandom(3 * 1024 * KIB + 17)
    downstream = os.urandom(2 * 1024 * KIB + 5)

    def serve(peer: Peer, conn: socket.socket) -> None:
        sender = threading.Thread(target=lambda: (conn.sendall(downstream), conn.shutdown(socket.SHUT_WR)))
        sender.start()
        peer.receive_all(conn)
        sender.join()

    peer = Peer(serve)
    relay = _start(peer, count_file, "--inflight", "256K")
    out, err = relay.communicate(upstream, timeout=30)
    peer.join()
    assert relay.returncode == 0, err
    assert out == downstream
    assert peer.received() == upstream
    counts = _counts(count_file)
    assert counts["sent"]["bytes"] == len(upstream)
    assert counts["received"]["bytes"] == len(downstream)
    assert counts["sent"]["peak_inflight"] <= 256 * KIB


def test_each_direction_waits_half_the_round_trip(count_file: Path) -> None:
    sent_back: List[float] = []

    def serve(peer: Peer, conn: socket.socket) -> None:
        data = conn.recv(16)
        peer.arrivals.append((time.monotonic(), data))
        sent_back.append(time.monotonic())
        conn.sendall(b"pong")
        peer.receive_all(conn)

    peer = Peer(serve)
    relay = _start(peer, count_file, "--rtt-ms", str(RTT * 1000))
    wait_until(count_file.exists, timeout=10, what="the relay to connect")
    began = time.monotonic()
    relay.stdin.write(b"ping")
    relay.stdin.flush()
    reply = relay.stdout.read(4)
    answered = time.monotonic()
    relay.stdin.close()
    assert relay.wait(timeout=10) == 0
    peer.join()
    assert reply == b"pong"
    arrived, data = peer.arrivals[0]
    assert data == b"ping"
    assert arrived - began >= RTT / 2
    assert answered - sent_back[0] >= RTT / 2
    assert answered - began < RTT + 0.5  # delayed, not stalled


def test_inflight_bound_limits_what_crosses_per_round_trip(count_file: Path) -> None:
    bound = 128 * KIB
    payload = os.urandom(1024 * KIB)

    def serve(peer: Peer, conn: socket.socket) -> None:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        peer.receive_all(conn)

    peer = Peer(serve)
    relay = _start(peer, count_file, "--rtt-ms", str(RTT * 1000), "--inflight", str(bound))
    relay.stdin.close()
    arrivals: List[Tuple[float, int]] = []
    received = bytearray()
    while True:
        data = relay.stdout.read1(64 * KIB)
        if not data:
            break
        arrivals.append((time.monotonic(), len(data)))
        received += data
    assert relay.wait(timeout=10) == 0
    peer.join()
    assert received == payload
    # A byte counts from the relay's read until half a round trip after its delivery, so what
    # arrives within any half round trip never exceeds the bound ...
    for at, _ in arrivals:
        window = sum(size for when, size in arrivals if at - RTT / 2 < when <= at)
        assert window <= bound, f"{window} bytes arrived within {RTT / 2}s"
    # ... and the whole payload takes at least one round trip per bound's worth.
    assert arrivals[-1][0] - arrivals[0][0] >= (len(payload) / bound - 1) * RTT
    assert _counts(count_file)["received"]["peak_inflight"] == bound


def test_bursts_count_request_reply_exchanges(count_file: Path) -> None:
    def serve(peer: Peer, conn: socket.socket) -> None:
        while True:
            data = conn.recv(64)
            if not data:
                return
            conn.sendall(data)

    peer = Peer(serve)
    relay = _start(peer, count_file, "--rtt-ms", str(RTT * 1000))
    for i in range(3):
        relay.stdin.write(b"request %d\n" % i)
        relay.stdin.flush()
        assert relay.stdout.readline() == b"request %d\n" % i
    relay.stdin.close()
    assert relay.wait(timeout=10) == 0
    peer.join()
    counts = _counts(count_file)
    assert (counts["sent"]["bursts"], counts["received"]["bursts"]) == (3, 3)
    assert counts["sent"]["bytes"] == counts["received"]["bytes"] == 3 * len(b"request 0\n")


def test_counts_on_sigusr1_and_at_sighup_as_ssh_ends_it(count_file: Path) -> None:
    peer = Peer(Peer.receive_all)
    relay = _start(peer, count_file)
    wait_until(count_file.exists, timeout=10, what="the relay's first counts")
    assert _counts(count_file)["pid"] == relay.pid
    relay.stdin.write(b"x" * 1000)
    relay.stdin.flush()
    wait_until(lambda: len(peer.received()) == 1000, timeout=10, what="the peer to get 1000 bytes")
    relay.send_signal(signal.SIGUSR1)
    wait_until(lambda: _counts(count_file)["sent"]["bytes"] == 1000, timeout=10, what="counts on SIGUSR1")
    relay.stdin.write(b"y" * 24)
    relay.stdin.flush()
    wait_until(lambda: len(peer.received()) == 1024, timeout=10, what="the peer to get 24 more")
    relay.send_signal(signal.SIGHUP)
    assert relay.wait(timeout=10) == 128 + signal.SIGHUP
    assert _counts(count_file)["sent"]["bytes"] == 1024
    relay.stdin.close()
    peer.join()


def test_cannot_connect_is_one_line_and_exit_1(count_file: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        result = subprocess.run(
            [sys.executable, str(SCRIPT), "127.0.0.1", str(port)],
            capture_output=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 1
    assert result.stderr.decode().startswith("delayline: cannot connect to 127.0.0.1:")
    assert len(result.stderr.decode().splitlines()) == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("65536", 65536),
        ("64K", 64 * KIB),
        ("2.7M", int(2.7 * 1024 * KIB)),
        ("32MiB", 32 * 1024 * KIB),
        ("1g", 1024**3),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert _load_module().parse_size(text) == expected


@pytest.mark.parametrize("text", ["0", "-1K", "lots"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        _load_module().parse_size(text)
