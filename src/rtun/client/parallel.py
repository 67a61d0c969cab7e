"""Sending one large file as ranges over several connections to the socket, resumably.

One SSH channel carries at most its window (about 2 MiB) per round trip, whatever the link;
each connection to the forwarded socket is a channel of its own. So the file is cut into
ranges that the connections take from one queue. How many connections (``channels=0``): the
first request's round trip says how many windows a fast link holds in flight, and that many
open at once (one on loopback or a LAN, 16 at 100 ms); more are opened while the throughput
still grows with them, up to ``MAX_CHANNELS``. A fixed number may be asked for. The daemon
verifies each range's SHA-256 as it arrives and keeps an interrupted transfer's ranges; sent
again, the file's kept ranges are checked here by digest and only the rest moves. See RANGES
in docs/protocol.md.
"""

from __future__ import annotations

import hashlib
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, List, Optional, Tuple

    from rtun.client.options import SendOptions
    from rtun.client.pump import ClientConnection

from rtun.client.handshake import pipelined
from rtun.errors import RtunError
from rtun.protocol import messages, wire

RANGE_SIZE = 1024 * 1024  # a unit of work, of verification and of resumption: an interruption
# loses at most one range in flight per connection
RANGES_PER_FILE = 4096  # per file: past RANGE_SIZE * MAX_RANGES (4 GiB), ranges grow with the file
RANGED_MIN = 8 * 1024 * 1024  # smaller files go in the PUT stream: they gain nothing from ranges
MAX_CHANNELS = 16
WINDOW = 2 * 1024 * 1024  # what one SSH channel carries per round trip: OpenSSH's channel window
LINK_RATE = 1024**3  # bytes/s a link may carry: channels enough for it open at once. (More than
# ssh's cipher does on one core: past it, channels cost CPU and cannot raise the rate.)
WINDOW_BOUND = 0.6  # channels carrying this share of a window per round trip are held by it
GROWTH = 1.15  # another channel is opened while the last one raised throughput this much
READ_SIZE = 1024 * 1024


def initial_channels(size: int, round_trip: float) -> int:
    """Connections to start with: as many as keep LINK_RATE in flight at this round trip, each
    carrying a window per round trip, but only as many as the transfer keeps busy for a few
    round trips each. (Ramping up from fewer spent a large part of a transfer at 100 ms; more
    than are needed cost CPU: 16 on loopback measured 10-30 % slower than one.)"""
    in_flight = round_trip * LINK_RATE
    return max(1, min(MAX_CHANNELS, -(-int(in_flight) // WINDOW), size // (4 * WINDOW)))


def range_size(size: int) -> int:
    """Whole MiBs: every range then starts on a block boundary, which the daemon's direct
    writes need."""
    return max(RANGE_SIZE, -(-size // (RANGES_PER_FILE * RANGE_SIZE)) * RANGE_SIZE)


def transfer_key(source: str, st: "os.stat_result", *, dest: str, name: str) -> str:
    """The same file (path, size, mtime) to the same place gives the same key: it resumes.
    A secret of this user's, kept in ~/.rtun, goes into it: another user of the server who can
    stat the file cannot compute the key, so cannot join or resume the transfer."""
    text = "\0".join((_secret(), os.path.abspath(source), str(st.st_size), str(st.st_mtime_ns), dest, name))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _secret() -> str:
    from rtun import paths

    path = os.path.join(paths.rtun_dir(), "resume-secret")
    try:
        with open(path, encoding="ascii") as f:
            return f.read(64)
    except OSError:
        pass
    secret = os.urandom(16).hex()
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secret)
    except FileExistsError:  # another send made it just now
        try:
            with open(path, encoding="ascii") as f:
                return f.read(64)
        except OSError:
            return ""
    except OSError:
        return ""  # no private place to keep it: keys still work, only guessable
    return secret


class RangePlan:
    """The ranges still to send, the digests of those kept, and what the workers share."""

    def __init__(self, size: int, kept: "Dict[int, Tuple[int, bytes]]") -> None:
        import threading

        step_size = range_size(size)
        self.size = size
        self.digests: Dict[int, bytes] = {offset: digest for offset, (_, digest) in kept.items()}
        self.todo: List[Tuple[int, int]] = []
        position = 0
        for offset, (length, _) in sorted(kept.items()) + [(size, (0, b""))]:
            while position < offset:
                step = min(step_size, offset - position)
                self.todo.append((position, step))
                position += step
            position = max(position, offset + length)
        if not size and not kept:
            self.todo.append((0, 0))
        self.todo.reverse()  # popped from the end: in order of offset
        self.lock = threading.Lock()
        self.pool: Optional[Pool] = None

    def take(self) -> "Optional[Tuple[int, int]]":
        with self.lock:
            if (self.pool is not None and self.pool.failure is not None) or not self.todo:
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
        if not (
            isinstance(item, list)
            and len(item) == 3
            and isinstance(item[0], int)
            and isinstance(item[1], int)
            and isinstance(item[2], str)
        ):
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


def _send_ranges(conn: ClientConnection, fd: int, plan: RangePlan, *, count: "Callable[[int], None]") -> None:
    """Take ranges from the plan and send them back to back on ``conn``; then read their OKs."""
    sender = conn.sender
    buffer = memoryview(bytearray(READ_SIZE))
    try:
        while True:
            job = plan.take()
            if job is None:
                break
            offset, size = job
            conn.write(sender.send(messages.Range(offset, size)))
            position = offset
            while position < offset + size:
                length = os.preadv(fd, [buffer[: min(READ_SIZE, offset + size - position)]], position)
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
        if plan.pool is not None:
            plan.pool.fail(exc)  # the other channels stop taking ranges
        raise


def _open_channel(
    socket_path: "Optional[str]", request: messages.Ranges
) -> "Tuple[ClientConnection, messages.Reply]":
    conn = pipelined(socket_path, lambda c: c.write(c.sender.send(request)))
    if not conn.features or "ranges" not in conn.features:
        conn.close()
        raise RtunError("the daemon cannot take ranges")
    return conn, conn.expect_ok()


def abandon(conn: ClientConnection) -> None:
    """Stop the connection at once (Ctrl-C): another thread may be blocked writing to it, and
    holds its buffer's lock, which close() would wait for; a shut down socket wakes it."""
    import socket

    try:
        conn.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Pool:
    """Worker threads, one connection each, taking work from one queue; more of them are
    started while each new one raises the throughput."""

    def __init__(self, report: "Callable[[int], None]") -> None:
        import threading

        self.lock = threading.Lock()
        self.sent = 0
        self.failure: Optional[BaseException] = None
        self._report = report
        self._threads: List[threading.Thread] = []

    def count(self, n: int) -> None:
        with self.lock:
            self.sent += n
        self._report(n)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = exc

    @property
    def running(self) -> int:
        return len(self._threads)

    def start(self, work: "Callable[[], None]") -> None:
        import threading

        def run() -> None:
            try:
                work()
            except BaseException as exc:  # the first failure ends the transfer, and is raised
                self.fail(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def grow(
        self,
        channels: int,
        *,
        round_trip: float,
        add: "Callable[[], None]",
        left: "Callable[[], int]",
        start: int = 1,
    ) -> None:
        """All channels at once when a number is given; else ``start``, then twice as many
        each time for as long as the channels are bound by their windows (they carry near a
        window per round trip each: the link has room for more) and doubling raised the
        throughput by GROWTH. Each step waits for the new channels to open (two round trips),
        then measures over several round trips."""
        if channels > 0:
            for _ in range(min(channels, MAX_CHANNELS) - 1):
                add()
            return
        for _ in range(min(start, MAX_CHANNELS) - self.running):
            add()
        warm_up = 2.5 * round_trip
        interval = max(0.2, 3 * round_trip)
        before = None
        while self.running < MAX_CHANNELS:
            time.sleep(warm_up)  # a control loop sampling the rate, not a wait for a condition
            began, sent = time.monotonic(), self.sent
            time.sleep(interval)
            rate = (self.sent - sent) / (time.monotonic() - began)
            if self.failure is not None or left() < 2 * self.running:
                return
            if rate < WINDOW_BOUND * self.running * WINDOW / max(round_trip, 1e-6):
                return  # the link or the CPU is the limit, not the windows
            if before is not None and rate < before * GROWTH:
                return  # the last step did not pay: the link, not the window, is the limit
            before = rate
            for _ in range(min(self.running, MAX_CHANNELS - self.running)):
                add()

    def join(self) -> None:
        for thread in self._threads:
            thread.join()
        if self.failure is not None:
            raise self.failure


def send_file(
    options: SendOptions,
    source: str,
    st: "os.stat_result",
    *,
    name: str,
    report: "Callable[[int], None]",
    main: "Optional[ClientConnection]" = None,
    resumed: "Callable[[int], None]" = lambda kept: None,
) -> "List[str]":
    """Send one large file as ``options.dest``/``name``; returns the saved path as the daemon
    gives it. ``options.channels`` 0 means as many as raise the throughput. ``main``: an open
    connection to use first (it stays open, the caller's), else one is opened. ``resumed`` is
    told how many bytes an interrupted send left on the daemon, when it resumes one."""
    dest = options.dest
    key = transfer_key(source, st, dest=dest, name=name)
    mode = st.st_mode & 0o7777

    def ranges(*, resume: bool, join: bool) -> messages.Ranges:
        return messages.Ranges(
            dest, name, st.st_size, mode, st.st_mtime, key, options.overwrite, resume, join, options.update
        )

    first = ranges(resume=options.resume, join=False)
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise RtunError(f"cannot read {source}: {exc.strerror}") from None
    try:
        started = time.monotonic()
        if main is not None:
            conn, reply = main, main.request(first)
            round_trip = time.monotonic() - started
        else:
            conn, reply = _open_channel(options.socket, first)
            round_trip = (time.monotonic() - started) / 2  # the channel's opening, then the request
        try:
            plan = RangePlan(st.st_size, _verify_kept(fd, reply.data.get("have"), st.st_size))
            kept = st.st_size - sum(n for _, n in plan.todo)
            if kept:
                resumed(kept)
                report(kept)
            pool = Pool(report)
            plan.pool = pool
            join = ranges(resume=True, join=True)

            def more() -> None:
                def work() -> None:
                    other, _ = _open_channel(options.socket, join)
                    with other:
                        _send_ranges(other, fd, plan, count=pool.count)

                pool.start(work)

            pool.start(lambda: _send_ranges(conn, fd, plan, count=pool.count))
            pool.grow(
                options.channels,
                round_trip=round_trip,
                add=more,
                left=lambda: len(plan.todo),
                start=initial_channels(st.st_size - kept, round_trip),
            )
            pool.join()
            final = conn.request(messages.Commit(plan.commit_digest()))
            return wire.saved_paths(final)
        except BaseException:
            abandon(conn)
            raise
        finally:
            if conn is not main:
                conn.close()
    finally:
        os.close(fd)
