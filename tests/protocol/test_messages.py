"""The protocol's values: the markers next_event returns are the very same objects on both sides."""

from __future__ import annotations

import copy
import pickle

from rtun.protocol import messages, receiver, sender
from rtun.protocol.receiver import Receiver
from rtun.protocol.sender import Sender


def test_sender_and_receiver_share_one_need_data_and_closed() -> None:
    assert sender.NEED_DATA is receiver.NEED_DATA is messages.NEED_DATA
    assert receiver.CLOSED is messages.CLOSED
    # ... and return them: a pump written against either module waits on the same object.
    client = Sender()
    client.send(messages.Ping())
    assert client.next_event() is messages.NEED_DATA
    daemon = Receiver()
    assert daemon.next_event() is messages.NEED_DATA
    daemon.receive_eof()
    assert daemon.next_event() is messages.CLOSED


def test_a_sentinel_is_only_itself_even_when_copied_or_pickled() -> None:
    need = messages.NEED_DATA
    assert copy.copy(need) is need and copy.deepcopy([need])[0] is need
    assert pickle.loads(pickle.dumps(need)) is need
    assert need != messages.CLOSED and repr(need) == "NEED_DATA" and repr(messages.CLOSED) == "CLOSED"
