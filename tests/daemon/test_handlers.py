"""The table of request handlers: every request the protocol core can emit has one."""

from __future__ import annotations

from rtun.daemon.config import Config
from rtun.daemon.handlers import Handlers
from rtun.protocol import wire


def test_every_request_type_has_a_handler(tmp_path) -> None:
    handlers = Handlers(Config(save_dir=str(tmp_path)), 0o022, lambda: None)
    requests = {row.kind for row in wire.TABLE}  # tests/protocol/test_wire.py: every request has a row
    assert requests and set(handlers.table) == requests
