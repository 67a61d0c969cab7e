"""A forward's two exchanges over the socket (docs/protocol.md, "FORWARD and DIAL").

FORWARD: the daemon listens on a loopback port here, answers with the port and a token, and
from then on announces each local connection on that connection, until the client closes it
(or the forward is turned off). DIAL: a connection from the same client, naming the token and
an announced connection, becomes that connection: the socket's bytes and the local program's
are joined and the protocol ends for it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from rtun.daemon.actions.pipe import Pipe
from rtun.daemon.connection import Connection
from rtun.protocol import messages
from rtun.protocol.messages import Rejected

if TYPE_CHECKING:
    from rtun.daemon.services import Services

log = logging.getLogger("rtun.daemon")


async def hold(services: Services, conn: Connection, request: messages.Forward) -> None:
    services.may_upload(conn)  # past the connection limit, no new forwards either
    services.forwards.check_room(request.port)
    services.may_forward(conn)
    forward = await services.forwards.open(request.port, request.local, request.exact)
    log.info("forward: port %d here leads to port %d of a server", forward.port, request.port)
    client = asyncio.ensure_future(conn.next_event())  # ends when the client closes (or misbehaves)
    try:
        await conn.send(conn.receiver.hold({"port": forward.port, "token": forward.token}))
        while True:
            announced = asyncio.ensure_future(forward.announce.get())
            await asyncio.wait({client, announced}, return_when=asyncio.FIRST_COMPLETED)
            if client.done():
                announced.cancel()
                client.result()  # a refusal (bytes the client may not send) is raised here
                return
            number = announced.result()
            if number < 0:  # closed from this side: the forward was turned off
                raise Rejected(messages.E_DENIED, "forward was turned off on your computer")
            await conn.send(conn.receiver.announce(number))
    finally:
        client.cancel()
        forward.close()
        log.info("forward of port %d ended", forward.port)


async def carry(services: Services, conn: Connection, request: messages.Dial) -> None:
    services.may_upload(conn)
    local = services.forwards.find(request.token).claim(request.id)
    ended = conn.receiver.at_eof  # the client's end of sending came with its DIAL
    ok, first = conn.receiver.splice()
    try:
        transport = conn.detach()
    except BaseException:
        local.abort()  # claimed, never to be joined: its slot goes back
        raise
    remote = Pipe()
    transport.set_protocol(remote)
    remote.connection_made(transport)
    if ended:
        remote.eof_received()  # the join passes it on
    remote.write(ok)
    remote.join(local, first)
    try:
        await asyncio.gather(remote.ended, local.ended)
    finally:
        remote.abort()
        local.abort()
        log.debug("forwarded connection ended: %d bytes in, %d out", local.moved, remote.moved)
