"""Sending one large file as ranges over several connections to the socket, resumably.

One SSH channel carries at most its window (about 2 MiB) per round trip, whatever the link;
each connection to the forwarded socket is a channel of its own. So the file is cut into
ranges that the connections take from one queue, and more connections are opened while the
throughput grows with them (``channels=0``), up to ``MAX_CHANNELS``; a fixed number may be
asked for. The daemon verifies each range's SHA-256 as it arrives and keeps an interrupted
transfer's ranges; sent again, the file's kept ranges are checked here by digest and only the
rest moves. See RANGES in docs/protocol.md.
"""

from __future__ import annotations

import hashlib
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

from rtun.client import Connection, pipelined
from rtun.errors import RtunError
from rtun.protocol import wire

RANGE_SIZE = 4 * 1024 * 1024  # a unit of work, of verification and of resumption
RANGED_MIN = 8 * 1024 * 1024  # smaller files go in the PUT stream: they gain nothing from ranges
MAX_CHANNELS = 8
GROWTH = 1.15  # another channel is opened while the last one raised throughput this much
READ_SIZE = 1024 * 1024


def transfer_key(source: str, st: "os.stat_result", dest: str, name: str) -> str:
    """The same file (path, size, mtime) to the same place gives the same key: it resumes."""
    text = "\0".join((os.path.abspath(source), str(st.st_size), str(st.st_mtime_ns), dest, name))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class Plan:
    """The ranges still to send, the digests of those kept, and what the workers share."""

    def __init__(self, size: int, kept: "Dict[int, Tuple[int, bytes]]") -> None:
        import threading

        self.size = size
        self.digests: Dict[int, bytes] = {offset: digest for offset, (_, digest) in kept.items()}
        self.todo: List[Tuple[int, int]] = []
        position = 0
        for offset, (length, _) in sorted(kept.items()) + [(size, (0, b""))]:
            while position < offset:
                step = min(RANGE_SIZE, offset - position)
                self.todo.append((position, step))
                position += step
            position = max(position, offset + length)
        if not size and not kept:
            self.todo.append((0, 0))
        self.todo.reverse()  # popped from the end: in order of offset
        self.lock = threading.Lock()
        self.sent = 0  # bytes of ranges sent so far
        self.failure: Optional[BaseException] = None

    def take(self) -> "Optional[Tuple[int, int]]":
        with self.lock:
            if self.failure is not None or not self.todo:
                return None
            return self.todo.pop()

    def commit_digest(self) -> str:
        combined = hashlib.sha256()
        for offset in sorted(self.digests):
            combined.update(self.digests[offset])
        return combined.hexdigest()


def _verify_kept(fd: int, have: object, size: int) -> "Dict[int, Tuple[int, bytes]]":
    """The daemon's kept ranges whose data is this file's (read and hashed here)."""
    kept: Dict[int, Tuple[int, bytes]] = {}
    if not isinstance(have, list):
        return kept
    for item in have:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], int)
                and isinstance(item[1], int) and isinstance(item[2], str)):
            continue
        offset, length, hexdigest = item
        if offset < 0 or length <= 0 or offset + length > size:
            continue
        digest = hashlib.sha256()
        position = offset
        while position < offset + length:
            data = os.pread(fd, min(READ_SIZE, offset + length - position), position)
            if not data:
                break
            digest.update(data)
            position += len(data)
        if digest.hexdigest() == hexdigest:
            kept[offset] = (length, digest.digest())
    # Overlapping kept ranges cannot both count: keep them in order, skipping overlaps.
    result: Dict[int, Tuple[int, bytes]] = {}
    end = 0
    for offset in sorted(kept):
        if offset >= end:
            result[offset] = kept[offset]
            end = offset + kept[offset][0]
    return result


def _send_ranges(conn: Connection, fd: int, plan: Plan, count: "Callable[[int], None]") -> None:
    """Take ranges from the plan and send them back to back on ``conn``; then read their OKs."""
    sender = conn.sender
    buffer = memoryview(bytearray(READ_SIZE))
    try:
        while True:
            job = plan.take()
            if job is None:
                break
            offset, size = job
            conn.write(sender.send(wire.Range(offset, size)))
            position = offset
            while position < offset + size:
                length = os.preadv(fd, [buffer[:min(READ_SIZE, offset + size - position)]], position)
                if not length:
                    raise RtunError("the file got shorter while it was being sent; nothing was saved")
                data = buffer[:length]
                conn.write(sender.data(data))
                conn.write(data)
                position += length
                count(length)
            conn.write(sender.end_file())
            with plan.lock:
                plan.digests[offset] = sender.last_digest
        while sender.oks_due:
            conn.expect_ok()
    except BaseException as exc:
        with plan.lock:
            if plan.failure is None:
                plan.failure = exc
        raise


def _open_channel(socket_path: "Optional[str]", request: wire.Ranges) -> "Tuple[Connection, wire.Reply]":
    conn = pipelined(socket_path, lambda c: c.write(c.sender.send(request)))
    if not conn.features or "ranges" not in conn.features:
        conn.close()
        raise RtunError("the daemon cannot take ranges")
    return conn, conn.expect_ok()


def send_file(socket_path: "Optional[str]", source: str, st: "os.stat_result", dest: str, name: str,
              overwrite: bool, channels: int, resume: bool, report: "Callable[[int], None]") -> "List[str]":
    """Send one large file; returns the saved path as the daemon gives it. ``channels`` 0 means
    as many as raise the throughput."""
    import threading

    key = transfer_key(source, st, dest, name)
    mode = st.st_mode & 0o7777
    first = wire.Ranges(dest, name, st.st_size, mode, st.st_mtime, key, overwrite, resume, False)
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise RtunError(f"cannot read {source}: {exc.strerror}") from None
    try:
        started = time.monotonic()
        conn, reply = _open_channel(socket_path, first)
        round_trip = (time.monotonic() - started) / 2  # the channel's opening, then the request
        try:
            plan = Plan(st.st_size, _verify_kept(fd, reply.data.get("have"), st.st_size))
            kept = st.st_size - sum(n for _, n in plan.todo)
            if kept:
                report(kept)
            lock = threading.Lock()

            def count(n: int) -> None:
                with lock:
                    plan.sent += n
                report(n)

            workers: List[threading.Thread] = []
            extra: List[Connection] = []

            def start(channel: "Optional[Connection]") -> None:
                def work() -> None:
                    mine = channel
                    try:
                        if mine is None:
                            mine, _ = _open_channel(socket_path, wire.Ranges(
                                dest, name, st.st_size, mode, st.st_mtime, key, overwrite, True, True))
                            extra.append(mine)
                        _send_ranges(mine, fd, plan, count)
                    except BaseException as exc:
                        with plan.lock:
                            if plan.failure is None:
                                plan.failure = exc

                thread = threading.Thread(target=work, daemon=True)
                thread.start()
                workers.append(thread)

            start(conn)
            _grow(plan, channels, round_trip, lambda: start(None), lambda: len(workers))
            for thread in workers:
                thread.join()
            for other in extra:
                other.close()
            if plan.failure is not None:
                raise plan.failure
            final = conn.request(wire.Commit(plan.commit_digest()))
            return wire.saved_paths(final)
        finally:
            conn.close()
    finally:
        os.close(fd)


def _grow(plan: Plan, channels: int, round_trip: float, add: "Callable[[], None]",
          running: "Callable[[], int]") -> None:
    """Open more channels: all at once when a number is given, else one at a time for as long
    as each raised the throughput by GROWTH."""
    if channels > 0:
        for _ in range(min(channels, MAX_CHANNELS) - 1):
            add()
        return
    interval = max(0.25, 6 * round_trip)  # several round trips: windows fill, rates settle
    before = None
    last = (time.monotonic(), 0)
    while running() < MAX_CHANNELS:
        time.sleep(interval)  # a control loop sampling the rate, not a wait for a condition
        now, sent = time.monotonic(), plan.sent
        rate = (sent - last[1]) / (now - last[0])
        last = (now, sent)
        with plan.lock:
            left = len(plan.todo)
            failed = plan.failure is not None
        if failed or left < 2:
            return
        if before is not None and rate < before * GROWTH:
            return  # the last channel did not pay: the link, not the window, is the limit
        before = rate
        add()
