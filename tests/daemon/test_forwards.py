"""FORWARD and DIAL against a real daemon, spoken raw as a hostile server could: the bounds, the
token, bytes where none may come, and a fast local program with a slow server side."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from rtun.protocol.limits import DIAL_TIMEOUT, MAX_FORWARD_CONNECTIONS, MAX_FORWARDS
from support.raw import RawClient
from support.rtun import RtunDaemon, write_config
from support.sshd import free_port, refused
from support.wait import wait_until


def forward(daemon: RtunDaemon, port: int, **fields: object) -> Tuple[RawClient, dict]:
    client = RawClient(daemon.socket)
    reply = client.command("FORWARD " + json.dumps({"port": port, **fields}))
    assert reply.startswith(b"OK {"), reply
    return client, json.loads(reply[3:])


def announced(client: RawClient) -> int:
    line = client.line()
    assert line.startswith(b"OK {"), line
    return json.loads(line[3:])["connect"]


def dial(daemon: RtunDaemon, token: str, number: int) -> Tuple[RawClient, bytes]:
    client = RawClient(daemon.socket)
    return client, client.command("DIAL " + json.dumps({"token": token, "id": number}))


def closed(sock: socket.socket, timeout: float = 5) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def clients() -> Iterator[List]:
    opened: List = []
    yield opened
    for thing in opened:
        thing.close()


def test_a_dialled_connection_carries_bytes_both_ways_and_half_closes(daemon: RtunDaemon) -> None:
    held, answer = forward(daemon, free_port())
    assert set(answer) == {"port", "token"} and len(answer["token"]) == 32
    with held, socket.create_connection(("127.0.0.1", answer["port"])) as local:
        local.sendall(b"hello from the laptop")  # before the dial: it waits for it
        number = announced(held)
        server_side, reply = dial(daemon, answer["token"], number)
        with server_side:
            assert reply == b"OK\r\n"
            assert server_side.read(21) == b"hello from the laptop"
            server_side.send(b"and back")
            assert local.recv(8) == b"and back"
            local.shutdown(socket.SHUT_WR)
            assert server_side.read(1) == b""  # the laptop's end arrives as the end
            server_side.send(b"still open")  # the other direction goes on
            assert local.recv(10) == b"still open"


def test_a_token_is_needed_and_only_its_own_connections_are_dialled(
    daemon: RtunDaemon, clients: List
) -> None:
    first, a = forward(daemon, free_port())
    second, b = forward(daemon, free_port())
    clients += [first, second]
    local = socket.create_connection(("127.0.0.1", a["port"]))
    clients.append(local)
    number = announced(first)
    for token in (b["token"], "0" * 32):  # another server's forward, a guess
        intruder, reply = dial(daemon, token, number)
        intruder.close()
        assert reply.startswith(b"ERROR 113 ") and b"no such connection" in reply
    stranger, reply = dial(daemon, a["token"], number + 1)  # never announced
    stranger.close()
    assert reply.startswith(b"ERROR 113 ")
    owner, reply = dial(daemon, a["token"], number)
    clients.append(owner)
    assert reply == b"OK\r\n"
    again, reply = dial(daemon, a["token"], number)  # once dialled, taken
    again.close()
    assert reply.startswith(b"ERROR 113 ")


def test_ports_below_1024_are_never_taken(daemon: RtunDaemon) -> None:
    with RawClient(daemon.socket) as client:
        reply = client.command('FORWARD {"port":80,"local":80}')
    assert reply.startswith(b"ERROR 113 ") and b"from 1024 to 65535" in reply


def test_a_port_in_use_here_is_never_taken(daemon: RtunDaemon, clients: List) -> None:
    port = free_port()
    for address in (("127.0.0.1", port), ("0.0.0.0", port)):
        with socket.create_server(address):
            with RawClient(daemon.socket) as client:
                reply = client.command(json.dumps({"port": port, "exact": True}).join(("FORWARD ", "")))
            assert reply.startswith(b"ERROR 114 ") and f"port {port} is in use".encode() in reply
    ipv6 = socket.create_server(("::1", port), family=socket.AF_INET6)  # a listener on ::1 alone
    clients.append(ipv6)
    held, answer = forward(daemon, port)
    clients.append(held)
    assert answer["port"] != port


def test_at_most_so_many_forwards_at_once(daemon: RtunDaemon, clients: List) -> None:
    base = free_port() % 40000 + 20000
    for n in range(MAX_FORWARDS):
        held, _ = forward(daemon, base + 20 * n)
        clients.append(held)
    with RawClient(daemon.socket) as client:
        reply = client.command(f'FORWARD {{"port":{base - 100}}}')
    assert reply.startswith(b"ERROR 114 ") and f"{MAX_FORWARDS} forwards are open".encode() in reply
    clients.pop().close()  # one ends: room for one
    wait_until(lambda: forward_ok(daemon, base - 100, clients), what="a forward once one has ended")


def forward_ok(daemon: RtunDaemon, port: int, clients: List) -> bool:
    client = RawClient(daemon.socket)
    reply = client.command(f'FORWARD {{"port":{port}}}')
    clients.append(client)
    return reply.startswith(b"OK {")


def test_at_most_so_many_connections_per_forward(daemon: RtunDaemon, clients: List) -> None:
    held, answer = forward(daemon, free_port())
    clients.append(held)
    for _ in range(MAX_FORWARD_CONNECTIONS):
        clients.append(socket.create_connection(("127.0.0.1", answer["port"])))
    numbers = [announced(held) for _ in range(MAX_FORWARD_CONNECTIONS)]
    assert numbers == list(range(1, MAX_FORWARD_CONNECTIONS + 1))
    extra = socket.create_connection(("127.0.0.1", answer["port"]))
    clients.append(extra)
    assert closed(extra)  # refused at once: no announcement, no waiting


def test_a_connection_never_dialled_is_closed_after_the_dial_timeout(
    daemon: RtunDaemon, clients: List
) -> None:
    held, answer = forward(daemon, free_port())
    clients.append(held)
    local = socket.create_connection(("127.0.0.1", answer["port"]))
    clients.append(local)
    announced(held)
    began = time.monotonic()
    assert closed(local, timeout=DIAL_TIMEOUT + 5)
    assert DIAL_TIMEOUT - 1 <= time.monotonic() - began


def test_bytes_from_the_client_of_a_forward_end_it(daemon: RtunDaemon) -> None:
    held, answer = forward(daemon, free_port())
    with held:
        held.send(b"PING\r\n")
        assert held.line().startswith(b"ERROR 113 ")
        assert held.at_eof()
    wait_until(lambda: refused(answer["port"]), what="the forward's port closed")


def test_the_end_of_the_forward_connection_ends_its_connections(daemon: RtunDaemon) -> None:
    held, answer = forward(daemon, free_port())
    local = socket.create_connection(("127.0.0.1", answer["port"]))
    number = announced(held)
    server_side, reply = dial(daemon, answer["token"], number)
    assert reply == b"OK\r\n"
    held.close()
    assert closed(local) and server_side.at_eof()
    server_side.close()
    local.close()
    assert refused(answer["port"])


@pytest.fixture
def reloadable(start_daemon) -> RtunDaemon:
    return start_daemon(config="[actions]\nforward = true\n")


def test_turning_forward_off_by_a_reload_ends_the_forwards(reloadable: RtunDaemon) -> None:
    held, answer = forward(reloadable, free_port())
    with held:
        write_config(reloadable.home, "[actions]\nforward = false\n")
        assert reloadable.process is not None
        os.kill(reloadable.process.pid, signal.SIGHUP)
        line = held.line()
        assert line.startswith(b"ERROR 116 ") and b"turned off" in line
    assert refused(answer["port"])
    with RawClient(reloadable.socket) as client:
        reply = client.command(f'FORWARD {{"port":{answer["port"]}}}')
    assert reply.startswith(b"ERROR 116 ") and b"[actions] forward" in reply


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_fast_local_program_and_a_slow_server_side_keep_the_daemon_small(daemon: RtunDaemon) -> None:
    held, answer = forward(daemon, free_port())
    assert daemon.process is not None
    before = rss_kib(daemon.process.pid)
    with held, socket.create_connection(("127.0.0.1", answer["port"])) as local:
        server_side, reply = dial(daemon, answer["token"], announced(held))
        with server_side:
            assert reply == b"OK\r\n"
            local.setblocking(False)
            sent, piece = 0, b"x" * 65536
            deadline = time.monotonic() + 3  # the server side reads nothing meanwhile
            while time.monotonic() < deadline and sent < 256 * 1024 * 1024:
                try:
                    sent += local.send(piece)
                except BlockingIOError:
                    time.sleep(0.01)  # the daemon stopped reading: back-pressure reached here
            grown = rss_kib(daemon.process.pid) - before
            assert sent < 64 * 1024 * 1024, sent  # the kernel's buffers and the daemon's 1 MiB
            assert grown < 16 * 1024, f"the daemon grew by {grown} KiB"
            got = 0
            while got < sent:  # and every byte arrives, once read
                got += len(server_side.read(min(sent - got, 1 << 20)))
            assert got == sent


@pytest.fixture
def impatient(start_daemon) -> RtunDaemon:
    return start_daemon(config="[server]\nidle_timeout = 2\n")


def test_a_joined_connection_whose_reader_stopped_is_ended(impatient: RtunDaemon) -> None:
    held, answer = forward(impatient, free_port())
    with held, socket.create_connection(("127.0.0.1", answer["port"])) as local:
        server_side, reply = dial(impatient, answer["token"], announced(held))
        with server_side:
            assert reply == b"OK\r\n"
            local.setblocking(False)
            began = time.monotonic()
            with pytest.raises(BlockingIOError):
                while time.monotonic() - began < 10:
                    local.send(b"x" * 65536)  # until the daemon stops reading: buffers full
            local.setblocking(True)
            # The server side reads nothing: past the idle timeout the daemon ends the pair,
            # rather than hold its buffers for as long as the forward lasts.
            assert closed(local, timeout=15)
            assert time.monotonic() - began >= 2
        again = socket.create_connection(("127.0.0.1", answer["port"]))
        again.close()
