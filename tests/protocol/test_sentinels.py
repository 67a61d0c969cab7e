"""The markers next_event returns: the sender and the receiver return the very same objects."""

from __future__ import annotations

import copy
import pickle

import pytest

from rtun.protocol import limits, receiver, sender, sentinels, wire
from rtun.protocol.receiver import Receiver
from rtun.protocol.sender import Sender


def test_sender_and_receiver_share_one_need_data_and_closed() -> None:
    assert sender.NEED_DATA is receiver.NEED_DATA is sentinels.NEED_DATA
    assert receiver.CLOSED is sentinels.CLOSED
    # ... and return them: a pump written against either module waits on the same object.
    client = Sender()
    client.send(wire.Ping())
    assert client.next_event() is sentinels.NEED_DATA
    daemon = Receiver()
    assert daemon.next_event() is sentinels.NEED_DATA
    daemon.receive_eof()
    assert daemon.next_event() is sentinels.CLOSED


def test_a_sentinel_is_only_itself_even_when_copied_or_pickled() -> None:
    need = sentinels.NEED_DATA
    assert copy.copy(need) is need and copy.deepcopy([need])[0] is need
    assert pickle.loads(pickle.dumps(need)) is need
    assert need != sentinels.CLOSED and repr(need) == "NEED_DATA" and repr(sentinels.CLOSED) == "CLOSED"


@pytest.mark.parametrize("length, refused", [(limits.MAX_LINE, False), (limits.MAX_LINE + 1, True)])
def test_both_sides_bound_a_line_alike(length: int, refused: bool) -> None:
    """A line of ``length`` bytes, CRLF included: the daemon reading a request and the client
    reading a reply take it or refuse it alike (one rule, wire.line_end)."""
    request = b"ECHO " + b"e" * (length - 7) + b"\r\n"
    reply = b"OK " + b"o" * (length - 5) + b"\r\n"
    assert len(request) == len(reply) == length
    daemon, client = Receiver(), Sender()
    daemon.receive_data(request)
    client.send(wire.Ping())
    client.receive_data(reply)
    for read in (daemon.next_event, client.next_event):
        if refused:
            with pytest.raises(wire.Rejected) as info:
                read()
            assert info.value.code == wire.E_LINE_TOO_LONG
        else:
            assert read() not in (sentinels.NEED_DATA, sentinels.CLOSED)
