"""Is an sshd there? The banner check: one stream, one TCP port, or many targets at once."""

from __future__ import annotations

import errno
import os
import re
import select
import selectors
import socket
import time
from typing import IO, Callable, Dict, List, Sequence, Tuple, Union

BANNER_RE = re.compile(rb"^SSH-(2\.0|1\.99)-")
BANNER_MAX = 256  # an sshd banner line is at most 255 bytes (RFC 4253)


def is_banner(data: bytes) -> bool:
    """``data`` starts with an sshd identification string."""
    return bool(BANNER_RE.match(data))


def read_banner(
    stream: Union[int, IO[bytes], socket.socket], deadline: float, clock: Callable[[], float] = time.monotonic
) -> bool:
    """Read from ``stream`` (a descriptor, a pipe or a socket) until a line ends, the stream
    ends or ``deadline`` (on ``clock``) passes; True if what came is an sshd banner."""
    fd = stream if isinstance(stream, int) else stream.fileno()
    data = b""
    while b"\n" not in data and len(data) < BANNER_MAX:
        remaining = deadline - clock()
        if remaining <= 0:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            break
        try:
            chunk = os.read(fd, BANNER_MAX)
        except BlockingIOError:
            continue
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    return is_banner(data)


Target = Union[str, Tuple[str, int]]  # a UNIX socket path, or (host, port)


def banners(
    targets: Sequence[Target], timeout: float, clock: Callable[[], float] = time.monotonic
) -> List[bool]:
    """Connect to every target at once; True for each that answers with an sshd banner within
    ``timeout`` (one deadline for all, so silent targets cost no more than one)."""
    results = [False] * len(targets)
    sockets: Dict[int, socket.socket] = {}
    received: Dict[int, bytes] = {}
    pending = list(range(len(targets)))  # not connected yet (a full listen backlog says EAGAIN)
    deadline = clock() + timeout
    with selectors.DefaultSelector() as selector:
        try:
            while True:
                retry = []
                for i in pending:
                    target = targets[i]
                    sock = socket.socket(socket.AF_UNIX if isinstance(target, str) else socket.AF_INET)
                    sock.setblocking(False)
                    code = sock.connect_ex(target)
                    if code in (0, errno.EINPROGRESS):
                        sockets[i], received[i] = sock, b""
                        selector.register(sock, selectors.EVENT_READ, i)
                    else:
                        sock.close()
                        if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                            retry.append(i)
                pending = retry
                remaining = deadline - clock()
                if remaining <= 0 or not (pending or sockets):
                    break
                for key, _ in selector.select(min(remaining, 0.01) if pending else remaining):
                    i = key.data
                    try:
                        chunk = sockets[i].recv(BANNER_MAX)
                    except BlockingIOError:
                        continue
                    except OSError:  # refused, reset: nothing there
                        chunk = b""
                    received[i] += chunk
                    if not chunk or b"\n" in received[i] or len(received[i]) >= BANNER_MAX:
                        selector.unregister(sockets[i])
                        sockets.pop(i).close()
                        results[i] = is_banner(received.pop(i))
        finally:
            for i, sock in sockets.items():
                sock.close()
                results[i] = is_banner(received.get(i, b""))
    return results


def tcp_banner(host: str, port: int, timeout: float) -> bool:
    """A direct TCP connection to ``host:port`` answers with an sshd banner within ``timeout``."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return read_banner(sock, deadline)
    except OSError:
        return False
