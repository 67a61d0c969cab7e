"""The asyncio pump around the receiver, in process, over a real socketpair: bytes land in the
receiver's own buffer, reading pauses when it is full, silence and trickles are ended."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import List, Tuple

from rtun.daemon.connection import Connection, PeerGone
from rtun.protocol import limits, messages
from rtun.protocol.events import Data, Upload


async def _pair(timeout: float = 60.0, min_rate: float = 0.0) -> Tuple[Connection, socket.socket]:
    ours, theirs = socket.socketpair()
    made: List[Connection] = []
    await asyncio.get_running_loop().connect_accepted_socket(
        lambda: Connection(timeout, made.append, min_rate), ours
    )
    theirs.setblocking(False)
    return made[0], theirs


def test_requests_and_replies_pass_through_the_core() -> None:
    async def run() -> None:
        conn, peer = await _pair()
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(peer, b"PING\r\n")
        assert await conn.next_event() == messages.Ping()
        await conn.send(conn.receiver.reply("PONG"))
        assert await loop.sock_recv(peer, 100) == b"OK PONG\r\n"
        peer.close()
        assert repr(await conn.next_event()) == "CLOSED"

    asyncio.run(run())


def test_upload_data_is_read_into_the_receivers_buffer_and_reading_pauses_when_full() -> None:
    async def run() -> None:
        conn, peer = await _pair()
        loop = asyncio.get_running_loop()
        size = 3 * limits.RECEIVE_BUFFER
        await loop.sock_sendall(peer, b"SEND %d big.bin\r\n" % size)
        assert isinstance(await conn.next_event(), Upload)
        ready, _ = conn.accept()
        await conn.send(ready)
        writer = loop.create_task(loop.sock_sendall(peer, b"z" * size))
        while not conn.receiver.buffer_full:  # nobody consumes: the buffer fills, then stops
            await asyncio.sleep(0.01)
        assert conn._reading_paused
        received = 0
        while received < size:
            event = await conn.next_event()
            assert isinstance(event, Data) and event.data.obj is conn.receiver.get_buffer().obj
            received += len(event.data)
        await writer
        peer.close()

    asyncio.run(run())


def test_a_trickle_is_ended_with_a_reason_and_silence_without() -> None:
    async def run() -> None:
        conn, peer = await _pair(timeout=8.0, min_rate=1024)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(peer, b"SEND 100000 slow.bin\r\n")
        await conn.next_event()
        ready, _ = conn.accept()
        await conn.send(ready)
        waiting = loop.create_task(conn.next_event())
        await asyncio.sleep(0)  # the wait begins
        conn.expire_if_silent(time.monotonic() + 1.0)  # within the 2 s grace: kept
        await asyncio.sleep(0)
        assert not waiting.done()
        conn.expire_if_silent(time.monotonic() + 3.0)  # past it with no data: too slow
        try:
            await waiting
            raise AssertionError("the trickle was not ended")
        except PeerGone as exc:
            assert "slower than 1024 bytes/s" in str(exc)
        reply = await loop.sock_recv(peer, 200)
        assert reply.startswith(b"READY\r\nERROR 114 upload slower")

    asyncio.run(run())


def test_part_of_a_chunk_is_handed_on_in_whole_blocks_once_no_more_comes() -> None:
    """The pump waits for the rest of a chunk, but not for ever: after a pause its whole blocks
    are handed on (block-aligned, for direct writes), and the rest once more comes."""

    async def run() -> None:
        conn, peer = await _pair()
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(peer, b"SEND 1000000 f.bin\r\n")
        await conn.next_event()
        ready, _ = conn.accept()
        await conn.send(ready)
        await loop.sock_sendall(peer, b"x" * 10_000)  # far less than the chunk, and no more
        event = await asyncio.wait_for(conn.next_event(), timeout=5.0)
        assert isinstance(event, Data) and bytes(event.data) == b"x" * 8192
        waiting = loop.create_task(conn.next_event())
        await asyncio.sleep(0.2)
        assert not waiting.done()  # 1808 bytes, less than a block: they wait for more
        await loop.sock_sendall(peer, b"y" * 4000)
        event = await asyncio.wait_for(waiting, timeout=5.0)
        assert isinstance(event, Data) and bytes(event.data) == b"x" * 1808 + b"y" * (4096 - 1808)
        peer.close()

    asyncio.run(run())


def test_file_data_waiting_for_more_is_not_silence(monkeypatch) -> None:
    """Bytes that did not wake the wait (too few for a write) still count against the idle
    timeout: a slow but steady upload is not silent."""
    from rtun.daemon import connection

    monkeypatch.setattr(connection, "COALESCE_DELAY", 60.0)  # no early wake during the test

    async def run() -> None:
        conn, peer = await _pair(timeout=2.0)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(peer, b"SEND 1000000 slow.bin\r\n")
        await conn.next_event()
        ready, _ = conn.accept()
        await conn.send(ready)
        waiting = loop.create_task(conn.next_event())
        await asyncio.sleep(0.5)  # the wait has lasted a while before the bytes come
        await loop.sock_sendall(peer, b"x" * 1000)
        while not conn._received_at:
            await asyncio.sleep(0.01)  # until the pump has read them (without a wake-up)
        assert not waiting.done()
        conn.expire_if_silent(conn._received_at + 1.9)  # 2.4 s into the wait, 1.9 s after data
        await asyncio.sleep(0)
        assert not waiting.done()
        conn.expire_if_silent(conn._received_at + 2.1)  # silent for longer than the timeout
        try:
            event = await waiting  # the bytes already in, then the end
            assert isinstance(event, Data)
            await conn.next_event()
            raise AssertionError("the silent connection was not ended")
        except PeerGone:
            pass

    asyncio.run(run())


def test_a_chunk_arriving_in_pieces_comes_out_as_one_data_event(monkeypatch) -> None:
    """The handler is woken once the chunk is whole, not per socket read: storage writes a
    range with one write, from the front of the (page-aligned) buffer."""
    from rtun.daemon import connection

    monkeypatch.setattr(connection, "COALESCE_DELAY", 30.0)  # only the chunk's end wakes it

    async def run() -> None:
        conn, peer = await _pair(timeout=30.0)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(peer, b"SEND 900000 f.bin\r\n")
        await conn.next_event()
        ready, _ = conn.accept()
        await conn.send(ready)
        waiting = loop.create_task(conn.next_event())
        for _ in range(3):
            await loop.sock_sendall(peer, b"x" * 300_000)
            await asyncio.sleep(0.05)  # each piece is read on its own
            assert not waiting.done() or _ == 2
        event = await asyncio.wait_for(waiting, timeout=5.0)
        assert isinstance(event, Data) and len(event.data) == 900_000
        assert event.data.obj is conn.receiver.get_buffer().obj  # a view of the buffer, uncopied
        peer.close()

    asyncio.run(run())
