"""The table of request handlers: every request the protocol core can emit has one."""

from __future__ import annotations

from rtun.daemon.config import Config
from rtun.daemon.handlers import Handlers
from rtun.protocol import framing, wire


def test_every_request_type_has_a_handler(tmp_path) -> None:
    handlers = Handlers(Config(save_dir=str(tmp_path)), 0o022, lambda: None)
    requests = {cls for cls in vars(wire).values()
                if isinstance(cls, type) and issubclass(cls, wire.Message) and cls.__module__ == wire.__name__
                and cls not in (wire.Message, wire.Reply, framing.DirEntry, framing.FileEntry, framing.LinkEntry,
                                framing.EndEntry)}
    assert requests and set(handlers.table) == requests
