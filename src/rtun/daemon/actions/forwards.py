"""Forwards: loopback ports on this computer that lead to a port on a server.

A forward listens on 127.0.0.1 (and ::1 where the system has it) at a port of 1024 or more that
nothing else listens on. Each connection a local program makes is announced to the forward's
client on the server, which dials it back over the socket with the forward's token; the two are
then joined (pipe.py). Everything a server can make this computer do is bounded here: ports
(MAX_FORWARDS), connections (MAX_FORWARD_CONNECTIONS each, MAX_FORWARDED in all), and how long a
connection waits to be dialled (DIAL_TIMEOUT). A forward ends, its connections with it, when
its client's connection does.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import secrets
import socket
import sys
from typing import Dict, List, Optional, Tuple

from rtun.daemon.actions.pipe import Pipe
from rtun.protocol import messages
from rtun.protocol.limits import (
    DIAL_TIMEOUT,
    MAX_FORWARD_CONNECTIONS,
    MAX_FORWARDED,
    MAX_FORWARDS,
    MIN_LOCAL_PORT,
    PORT_SEARCH,
)
from rtun.protocol.messages import Rejected

log = logging.getLogger("rtun.daemon")

LOOPBACKS = ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"))
_NO_IPV6 = (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT)


def bind_loopback(port: int, exact: bool) -> Tuple[int, List[socket.socket]]:
    """Listening sockets on the loopback addresses at ``port``, or (unless ``exact``) at the
    next port of PORT_SEARCH that is free on all of them; the port and the sockets."""
    if not MIN_LOCAL_PORT <= port <= 65535:
        raise Rejected(
            messages.E_BAD_REQUEST,
            f"a forward listens on a port from {MIN_LOCAL_PORT} to 65535 on your computer, not {port}",
        )
    last = port if exact else min(port + PORT_SEARCH - 1, 65535)
    for candidate in range(port, last + 1):
        sockets = _bind(candidate)
        if sockets:
            return candidate, sockets
    if exact:
        raise Rejected(messages.E_BUSY, f"port {port} is in use on your computer")
    raise Rejected(messages.E_BUSY, f"ports {port} to {last} are all in use on your computer")


def _bind(port: int) -> Optional[List[socket.socket]]:
    bound: List[socket.socket] = []
    for family, address in LOOPBACKS:
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 here
            continue
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if sys.platform.startswith("linux"):
                # Linux never lets this share a port a listener holds; it only lets a port whose
                # last connections linger in TIME_WAIT be taken again. (BSD's would let it shadow
                # a listener on the wildcard address: not there.)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            if family == socket.AF_INET6 and exc.errno in _NO_IPV6:
                continue  # no IPv6 loopback: 127.0.0.1 alone
            for other in bound:
                other.close()
            return None
        bound.append(sock)
    return bound or None


class Forward:
    """One forward: its listeners, its connections, and the queue of those its client has yet
    to be told about."""

    def __init__(
        self, registry: "Forwards", server_port: int, port: int, sockets: List[socket.socket]
    ) -> None:
        self.registry = registry
        self.server_port = server_port
        self.port = port
        self.token = secrets.token_hex(16)  # only its client learns it: no other server can dial
        self._sockets = sockets
        self._servers: List[asyncio.AbstractServer] = []
        self.announce: "asyncio.Queue[int]" = asyncio.Queue()
        self.waiting: Dict[int, Tuple[Pipe, asyncio.TimerHandle]] = {}
        self.joined: Dict[int, Pipe] = {}
        self._next_id = 0
        self.closed = False

    async def listen(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            self._servers.append(await loop.create_server(lambda: Pipe(self._accepted), sock=sock))

    @property
    def connections(self) -> int:
        return len(self.waiting) + len(self.joined)

    def _accepted(self, local: Pipe) -> None:
        if self.closed or self.connections >= MAX_FORWARD_CONNECTIONS or self.registry.full():
            log.info("forward of port %d: a local connection refused (too many open)", self.port)
            local.abort()
            return
        self._next_id += 1
        number = self._next_id
        timer = asyncio.get_running_loop().call_later(DIAL_TIMEOUT, self._not_dialled, number)
        self.waiting[number] = (local, timer)
        local.ended.add_done_callback(lambda _: self._forget(number))
        self.announce.put_nowait(number)

    def _not_dialled(self, number: int) -> None:
        waiting = self.waiting.pop(number, None)
        if waiting is not None:
            log.info("forward of port %d: a connection was not dialled in time", self.port)
            waiting[0].abort()

    def _forget(self, number: int) -> None:
        waiting = self.waiting.pop(number, None)
        if waiting is not None:
            waiting[1].cancel()
        self.joined.pop(number, None)

    def claim(self, number: int) -> Pipe:
        """The local end of connection ``number``, now joined; refused if it is not waiting."""
        waiting = self.waiting.pop(number, None)
        if waiting is None:
            raise Rejected(messages.E_BAD_REQUEST, "no such connection waits to be dialled")
        local, timer = waiting
        timer.cancel()
        self.joined[number] = local
        return local

    def close(self) -> None:
        """Stop listening and end every connection of this forward."""
        if self.closed:
            return
        self.closed = True
        for server in self._servers:
            server.close()
        for sock in self._sockets:
            sock.close()
        for local, timer in list(self.waiting.values()):
            timer.cancel()
            local.abort()
        for local in list(self.joined.values()):
            local.abort()
            if local.peer is not None:
                local.peer.abort()
        self.waiting.clear()
        self.joined.clear()
        self.registry.forwards.pop(self.token, None)
        self.announce.put_nowait(-1)  # its FORWARD connection ends too


class Forwards:
    """Every forward of the daemon, by token."""

    def __init__(self) -> None:
        self.forwards: Dict[str, Forward] = {}

    def full(self) -> bool:
        return sum(f.connections for f in self.forwards.values()) >= MAX_FORWARDED

    def check_room(self, server_port: int) -> None:
        """Refuse a FORWARD that cannot be made, before it takes a turn of the rate limit."""
        if not 1 <= server_port <= 65535:
            raise Rejected(messages.E_BAD_REQUEST, f"port {server_port} is not a TCP port")
        if len(self.forwards) >= MAX_FORWARDS:
            raise Rejected(
                messages.E_BUSY, f"{MAX_FORWARDS} forwards are open already: end one before starting another"
            )

    async def open(self, server_port: int, local: int, exact: bool) -> Forward:
        self.check_room(server_port)
        port, sockets = bind_loopback(local or server_port, exact)
        forward = Forward(self, server_port, port, sockets)
        self.forwards[forward.token] = forward
        try:
            await forward.listen()
        except BaseException:
            forward.close()
            raise
        return forward

    def find(self, token: str) -> Forward:
        """The forward ``token`` names, compared in constant time; refused the same way whether
        or not the connection exists."""
        for known, forward in self.forwards.items():
            if hmac.compare_digest(known, token):
                return forward
        raise Rejected(messages.E_BAD_REQUEST, "no such connection waits to be dialled")

    def expire(self, now: float, timeout: float) -> None:
        """End the joined connections one of whose readers has read nothing for ``timeout``
        seconds while bytes wait for it: each holds the daemon's buffers for as long as it lasts."""
        for forward in list(self.forwards.values()):
            for local in list(forward.joined.values()):
                peer = local.peer
                if local.stalled(now, timeout) or (peer is not None and peer.stalled(now, timeout)):
                    log.info("forward of port %d: a connection whose reader stopped was ended", forward.port)
                    local.abort()
                    if peer is not None:
                        peer.abort()

    def listing(self) -> List[Dict[str, int]]:
        """For the status file: each forward's ports and open connections."""
        return [
            {"server_port": f.server_port, "port": f.port, "connections": f.connections}
            for f in self.forwards.values()
        ]

    def close(self) -> None:
        for forward in list(self.forwards.values()):
            forward.close()
