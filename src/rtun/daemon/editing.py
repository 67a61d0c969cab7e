"""EDIT: one edit session on its connection (skeleton)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtun.daemon.connection import Connection
from rtun.protocol import wire
from rtun.protocol.receiver import Upload
from rtun.protocol.wire import Rejected

if TYPE_CHECKING:
    from rtun.daemon.handlers import Handlers


async def edit_session(handlers: "Handlers", conn: Connection, upload: Upload) -> None:
    raise Rejected(wire.E_UNKNOWN, "edit is not implemented yet")
