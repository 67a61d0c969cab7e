"""A delay line for one TCP connection, made to be ssh's ``ProxyCommand``.

    ProxyCommand python3 benchmarks/delayline.py --rtt-ms 100 --inflight 2.7M --count FILE %h %p

It connects to HOST:PORT and relays stdin to the socket and the socket to stdout. Each direction
holds what it reads for half the round trip before writing it on, and keeps at most ``--inflight``
bytes in flight, as a TCP sender's send buffer does: a byte counts from when the relay reads it
until half a round trip after it was written on (delivery, then the ack's way back). At the bound
the relay stops reading that direction's source, so the sender's own buffers fill and it blocks.

The counts (bytes each way, "bursts": times data crossed after a quiet gap, which count the
round trips of a request/reply exchange, and the peak in flight) go to ``--count`` as JSON: at
start (with this process's pid), on SIGUSR1, and at exit, each report numbered. "sent" is stdin to HOST, "received"
HOST to stdout. Stdlib only; one poll loop, reads of up to 256 KiB, no per-byte Python.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import math
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

CHUNK = 256 * 1024
# Linux's default tcp_wmem maximum (4 MiB) left about 2.7 MiB in flight in issue 11's measurements.
DEFAULT_INFLIGHT = int(2.7 * 1024 * 1024)
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)  # Linux; the constant is new in Python 3.10
GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ESHUTDOWN)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    """Bytes from ``65536``, ``64K``, ``2.7M`` or ``1G`` (binary multiples)."""
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = text[-1:] if text[-1:] in ("K", "M", "G") else ""
    value = int(float(text[: len(text) - len(unit)]) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"a size must be positive: {text!r}")
    return value


class Direction:
    """One way through the relay: what is read from ``source`` waits ``half`` seconds, is written
    to ``sink``, and counts against ``bound`` until ``half`` seconds after it was written."""

    def __init__(
        self, source: int, sink: int, half: float, bound: int, gap: float, shut_sink: Callable[[], None]
    ) -> None:
        self.source = source
        self.sink = sink
        self.half = half
        self.bound = bound
        self.gap = gap
        self.shut_sink = shut_sink
        self.pending: Deque[List[Any]] = deque()  # [due, view of what is left to write, chunk size]
        self.acks: Deque[Tuple[float, int]] = deque()  # (when the chunk stops counting, chunk size)
        self.inflight = 0
        self.peak = 0
        self.bytes = 0
        self.bursts = 0
        self.last_read: Optional[float] = None
        self.eof = False  # the source has ended (or the sink is gone)
        self.done = False  # nothing more will be written to the sink
        self.blocked = False  # the sink refused a due write: wait for it to take more

    def wants_read(self) -> bool:
        return not self.eof and self.inflight < self.bound

    def read(self, now: float) -> None:
        try:
            data = os.read(self.source, min(CHUNK, self.bound - self.inflight))
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno not in GONE:
                raise
            data = b""
        if not data:
            self.eof = True
            self.finish()
            return
        if self.last_read is None or now - self.last_read > self.gap:
            self.bursts += 1
        self.last_read = now
        self.bytes += len(data)
        self.inflight += len(data)
        self.peak = max(self.peak, self.inflight)
        self.pending.append([now + self.half, memoryview(data), len(data)])

    def release(self, now: float) -> None:
        while self.acks and self.acks[0][0] <= now:
            self.inflight -= self.acks.popleft()[1]

    def write(self, now: float) -> None:
        """Write every chunk that is due, until the sink would block."""
        self.blocked = False
        while self.pending and self.pending[0][0] <= now:
            head = self.pending[0]
            try:
                written = os.write(self.sink, head[1])
            except BlockingIOError:
                self.blocked = True
                return
            except OSError as exc:
                if exc.errno not in GONE:
                    raise
                self.pending.clear()
                self.eof = True  # the far side is gone: stop reading for it
                break
            if written < len(head[1]):
                head[1] = head[1][written:]
                continue
            self.pending.popleft()
            if self.half:
                self.acks.append((time.monotonic() + self.half, head[2]))
            else:
                self.inflight -= head[2]
        self.finish()

    def finish(self) -> None:
        if self.eof and not self.pending and not self.done:
            self.done = True
            self.shut_sink()

    def next_event(self) -> Optional[float]:
        """When this direction next has something to do without waiting for a file descriptor."""
        times = []
        if self.pending and not self.blocked:
            times.append(self.pending[0][0])
        if self.acks:
            times.append(self.acks[0][0])
        return min(times) if times else None

    def counts(self) -> Dict[str, int]:
        return {"bytes": self.bytes, "bursts": self.bursts, "peak_inflight": self.peak}


class Relay:
    def __init__(self, sock: socket.socket, rtt: float, bound: int, gap: float, count: Optional[str]) -> None:
        self.sock = sock
        self.rtt = rtt
        self.bound = bound
        self.gap = gap
        self.count = count
        for fd in (0, 1, sock.fileno()):
            os.set_blocking(fd, False)
        for fd in (0, 1):
            try:  # fewer, larger pipe reads and writes; best effort (Linux, within pipe-max-size)
                fcntl.fcntl(fd, F_SETPIPE_SZ, 1024 * 1024)
            except OSError:
                pass
        self.sent = Direction(0, sock.fileno(), rtt / 2, bound, gap, self._shut_socket)
        self.received = Direction(sock.fileno(), 1, rtt / 2, bound, gap, self._close_stdout)
        self.poller = select.poll()
        self.masks: Dict[int, int] = {}
        self.stdout_open = True
        self.reports = 0  # a reader waiting for a fresh report after SIGUSR1 watches this

    def _shut_socket(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _close_stdout(self) -> None:
        self._watch(1, 0)
        os.close(1)
        self.stdout_open = False

    def _watch(self, fd: int, mask: int) -> None:
        if self.masks.get(fd, 0) == mask:
            return
        if mask:
            if fd in self.masks:
                self.poller.modify(fd, mask)
            else:
                self.poller.register(fd, mask)
            self.masks[fd] = mask
        else:
            self.poller.unregister(fd)
            del self.masks[fd]

    def write_counts(self) -> None:
        if not self.count:
            return
        self.reports += 1
        report = {
            "pid": os.getpid(),
            "report": self.reports,
            "rtt_ms": self.rtt * 1000,
            "inflight": self.bound,
            "gap_ms": self.gap * 1000,
            "sent": self.sent.counts(),
            "received": self.received.counts(),
        }
        partial = f"{self.count}.{os.getpid()}.tmp"
        with open(partial, "w") as f:
            json.dump(report, f)
        os.replace(partial, self.count)  # a reader never sees half a report

    def run(self) -> None:
        ways = (self.sent, self.received)
        sock = self.sock.fileno()
        while True:
            now = time.monotonic()
            for way in ways:
                way.release(now)
                way.write(now)
            if all(way.done for way in ways):
                return
            masks = {0: 0, sock: 0, 1: 0}
            for way in ways:
                if way.wants_read():
                    masks[way.source] |= select.POLLIN
                if way.blocked and not way.done:
                    masks[way.sink] |= select.POLLOUT
            for fd, mask in masks.items():
                if fd != 1 or self.stdout_open:
                    self._watch(fd, mask)
            events = [t for t in (way.next_event() for way in ways) if t is not None]
            timeout = None if not events else max(0, math.ceil((min(events) - time.monotonic()) * 1000))
            ready = self.poller.poll(timeout)
            now = time.monotonic()
            for fd, event in ready:
                if not event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    continue
                for way in ways:
                    if way.source == fd and way.wants_read():
                        way.read(now)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=0.0, help="round trip to add (ms)")
    parser.add_argument(
        "--inflight",
        type=parse_size,
        default=DEFAULT_INFLIGHT,
        help="bytes in flight per direction, e.g. 2.7M, 32M (default: 2.7M)",
    )
    parser.add_argument("--count", help="file for the JSON counts")
    parser.add_argument(
        "--gap-ms", type=float, help="quiet time that ends a burst (default: rtt/4, at least 1)"
    )
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    args = parser.parse_args(argv)
    rtt = args.rtt_ms / 1000
    gap = (args.gap_ms if args.gap_ms is not None else max(1.0, args.rtt_ms / 4)) / 1000
    try:
        sock = socket.create_connection((args.host, args.port))
    except OSError as exc:
        print(f"delayline: cannot connect to {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    # The relay should add only the delay it is told to: no Nagle wait on its own writes.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    relay = Relay(sock, rtt, args.inflight, gap, args.count)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # ssh ends its ProxyCommand with SIGHUP

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    signal.signal(signal.SIGUSR1, lambda _s, _f: relay.write_counts())
    relay.write_counts()
    try:
        relay.run()
    finally:
        relay.write_counts()
    return 0


if __name__ == "__main__":
    sys.exit(main())
