"""The table of request handlers: every request the protocol core can emit has one entry, which
carries its handler and the [actions] setting it needs; the handlers share one Services."""

from __future__ import annotations

import asyncio
import re

import pytest

from rtun.daemon.config import Config
from rtun.daemon.handlers import Handlers
from rtun.daemon.services import Services
from rtun.protocol import messages, wire
from rtun.protocol.messages import Rejected


def _handlers(tmp_path, **settings: object) -> Handlers:
    return Handlers(Services(Config(save_dir=str(tmp_path), **settings), 0o022), lambda: None)


def test_every_request_type_has_a_handler(tmp_path) -> None:
    handlers = _handlers(tmp_path)
    requests = {row.kind for row in wire.TABLE}  # tests/protocol/test_wire.py: every request has a row
    assert requests and set(handlers.table) == requests


def test_each_setting_of_actions_guards_the_requests_of_its_action(tmp_path) -> None:
    handlers = _handlers(tmp_path)
    guarded = {key: route.action for key, route in handlers.table.items() if route.action}
    assert guarded == {
        messages.Notify: "notify",
        messages.Notify2: "notify",
        messages.Send: "send",
        messages.Put: "send",
        messages.View: "view",
        messages.OpenUrl: "open",
        messages.Copy: "copy",
        messages.Paste: "paste",
        messages.Edit: "edit",
        messages.Ranges: "send",
        messages.Range: "send",
        messages.Commit: "send",
        messages.Forward: "forward",
        messages.Dial: "forward",
    }
    for action in set(guarded.values()):
        assert hasattr(handlers.config, f"allow_{action}")


@pytest.mark.parametrize("action", ["notify", "send", "view", "open", "copy", "paste", "edit", "forward"])
def test_an_action_turned_off_is_refused_naming_its_setting(tmp_path, action: str) -> None:
    services = Services(Config(save_dir=str(tmp_path), **{f"allow_{action}": False}), 0o022)
    with pytest.raises(Rejected) as refused:
        services.check_allowed(action)
    assert refused.value.code == messages.E_DENIED and f"[actions] {action} = true" in refused.value.text


class Peer:
    """Stands for a connection: the rate limit keys its buckets on it."""


def test_view_open_and_edit_word_their_shared_rate_limit_the_same_way(tmp_path) -> None:
    services = Services(Config(save_dir=str(tmp_path), view_burst=1, view_rate=0.001), 0o022)
    texts = []
    for conn, kind in ((Peer(), "view"), (Peer(), "page"), (Peer(), "edit")):
        with pytest.raises(Rejected) as refused:
            services.opens_program(conn, kind)  # the first took the daemon's one token
            services.opens_program(conn, kind)
        texts.append(re.sub(r"again in \d+ s", "again in N s", refused.value.text))
    assert texts[0] == texts[1] == texts[2]
    assert texts[0].startswith("too many files opened in a short time") and "try again in N s. " in texts[0]
    assert "[view] burst = 1" in texts[0] and "rtun server reload" in texts[0]


def test_the_upload_slots_bound_transfers_and_time_out_when_all_are_held(tmp_path) -> None:
    async def run() -> None:  # made inside the loop: Python 3.9 binds asyncio objects at creation
        services = Services(Config(save_dir=str(tmp_path), max_uploads=2, idle_timeout=0.2), 0o022)
        async with services.slot(), services.slot():
            with pytest.raises(Rejected) as busy:
                async with services.slot():
                    pass
            assert busy.value.code == messages.E_BUSY
        async with services.slot():  # released: free again
            pass

    asyncio.run(run())
