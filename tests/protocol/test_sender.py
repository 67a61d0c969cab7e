"""The client's side of the protocol core, in memory: framing, turns, size checks, reply limits.

The sender's bytes are fed to the daemon's receiver, so each test also checks that the two
halves of the core agree.
"""

from __future__ import annotations

import hashlib

import pytest

from rtun.protocol import framing, limits, messages, wire
from rtun.protocol.events import Data, FileEnd, FileStart, Upload, UploadEnd, WholeFile
from rtun.protocol.messages import Rejected
from rtun.protocol.receiver import Receiver
from rtun.protocol.sender import NEED_DATA, Sender, SizeChanged, Truncated


def ready(sender: Sender) -> None:
    sender.receive_data(b"READY\r\n")
    reply = sender.next_event()
    assert isinstance(reply, messages.Reply) and reply.text == "READY"


def test_a_put_the_receiver_understands() -> None:
    sender, receiver = Sender(), Receiver()
    out = sender.send(messages.Put("dest", False, 5, 1))
    ready(sender)
    out += sender.entry(framing.FileEntry("a.txt", 0o600, 1.0, 5))
    for piece in (b"he", b"llo"):
        out += sender.data(piece) + piece
    out += sender.end_file() + sender.end()
    receiver.receive_data(out)
    events = [receiver.next_event()]
    receiver.accept()
    while not isinstance(events[-1], UploadEnd):
        event = receiver.next_event()
        events.append(bytes(event.data) if isinstance(event, Data) else event)
    assert isinstance(events[0], Upload) and events[0].parts == ("dest",)
    assert isinstance(events[1], FileStart) and events[1].parts == ("dest", "a.txt")
    assert events[2:4] == [b"he", b"llo"] and isinstance(events[4], FileEnd)


def test_a_v1_send_is_raw_bytes_then_the_digest() -> None:
    sender = Sender()
    assert sender.send(messages.Send(3, "x")) == b"SEND 3 x\r\n"
    ready(sender)
    assert sender.data(b"abc") == b""  # v1 has no chunk framing
    assert sender.end_file() == hashlib.sha256(b"abc").hexdigest().encode() + b"\r\n"
    sender.receive_data(b"OK\r\n")
    assert sender.next_event() == messages.Reply(True, "", None)
    assert sender.state == "idle"


def test_data_before_ready_is_a_local_error() -> None:
    sender = Sender()
    sender.send(messages.Send(3, "x"))
    with pytest.raises(RuntimeError):
        sender.data(b"abc")


@pytest.mark.parametrize("pieces", [[b"abcd"], [b"ab"]])
def test_a_file_that_changed_size_is_caught_before_the_stream_breaks(pieces) -> None:
    sender = Sender()
    sender.send(messages.Send(3, "x"))
    ready(sender)
    with pytest.raises(SizeChanged):
        for piece in pieces:
            sender.data(piece)
        sender.end_file()


def test_an_error_may_come_at_any_time_and_ends_the_exchange() -> None:
    sender = Sender()
    sender.send(messages.Put("", False, 0, 0))
    ready(sender)
    sender.entry(framing.FileEntry("f", 0o644, 0.0, None))
    sender.receive_data(b"ERROR 109 no space left for f\r\n")
    reply = sender.next_event()
    assert isinstance(reply, messages.Reply) and not reply.ok and reply.code == 109
    assert sender.state == "closed"


def test_replies_are_bounded_and_put_replies_may_be_long() -> None:
    sender = Sender()
    sender.send(messages.Ping())
    sender.receive_data(b"OK " + b"x" * limits.MAX_LINE)
    with pytest.raises(Rejected):
        sender.next_event()
    sender = Sender()
    sender.send(messages.Put("", False, 0, 0))
    ready(sender)
    sender.end()
    sender.receive_data(b"OK " + b"x" * limits.MAX_LINE)
    assert sender.next_event() is NEED_DATA
    sender.receive_data(b"\r\n")
    assert isinstance(sender.next_event(), messages.Reply)


def test_a_daemon_that_closes_without_a_reply_is_truncated() -> None:
    sender = Sender()
    sender.send(messages.Ping())
    sender.receive_data(b"OK PO")
    assert sender.next_event() is NEED_DATA
    sender.receive_data(b"")
    with pytest.raises(Truncated):
        sender.next_event()


def test_an_upload_expects_ready_and_nothing_else() -> None:
    sender = Sender()
    sender.send(messages.View(1, "x.png"))
    sender.receive_data(b"OK PONG\r\n")
    with pytest.raises(Rejected, match="expected READY"):
        sender.next_event()


def test_one_request_at_a_time() -> None:
    sender = Sender()
    sender.send(messages.Ping())
    with pytest.raises(RuntimeError):
        sender.send(messages.Ping())


def test_text_that_cannot_be_one_line_is_refused() -> None:
    with pytest.raises(ValueError):
        Sender().send(messages.Echo("two\nlines"))


def _payload_events(sender: Sender, incoming: bytes, piece: int) -> list:
    events: list = []
    for i in range(0, len(incoming), piece):
        sender.receive_data(incoming[i : i + piece])
        while True:
            event = sender.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
    return events


@pytest.mark.parametrize("piece", [1, 7, 1 << 20])
def test_a_payload_reply_comes_out_as_reply_pieces_and_a_verified_end(piece: int) -> None:
    from rtun.protocol.sender import Payload, PayloadEnd

    sender, receiver = Sender(), Receiver()
    receiver.receive_data(sender.send(messages.Paste()))
    assert receiver.next_event() == messages.Paste()
    header, payload, digest = receiver.reply_payload({}, b"clipboard text\n")
    events = _payload_events(sender, header + payload + digest, piece)
    assert isinstance(events[0], messages.Reply) and events[0].data == {"bytes": 15}
    assert b"".join(e.data for e in events[1:-1] if isinstance(e, Payload)) == b"clipboard text\n"
    assert isinstance(events[-1], PayloadEnd) and sender.state == "idle"
    sender.send(messages.Ping())  # the connection is ready for the next request


def test_a_corrupted_payload_is_caught_at_its_digest() -> None:
    sender = Sender()
    sender.send(messages.Paste())
    wrong = framing.encode_checksum(hashlib.sha256(b"other").hexdigest())
    with pytest.raises(Rejected) as info:
        _payload_events(sender, b'OK {"bytes":4}\r\ntext' + wrong, 100)
    assert info.value.code == messages.E_CHECKSUM


def test_a_payload_cut_short_is_truncated() -> None:
    sender = Sender()
    sender.send(messages.EditWait("", ""))
    sender.receive_data(b'OK {"event":"save","bytes":10}\r\nabc')
    sender.receive_data(b"")
    with pytest.raises(Truncated):
        while sender.next_event() is not NEED_DATA:
            pass


def test_a_payload_past_the_limit_is_refused_before_any_data() -> None:
    sender = Sender()
    sender.send(messages.Paste())
    sender.receive_data(b'OK {"bytes":%d}\r\n' % (limits.MAX_PAYLOAD + 1))
    with pytest.raises(Rejected) as info:
        sender.next_event()
    assert info.value.code == messages.E_BAD_SIZE


def test_only_payload_requests_read_a_bytes_field_as_a_payload() -> None:
    sender = Sender()
    sender.send(messages.OpenUrl("https://example.org/"))
    sender.receive_data(b'OK {"bytes":3}\r\n')
    reply = sender.next_event()
    assert isinstance(reply, messages.Reply) and sender.state == "idle"


def test_a_copy_goes_as_a_v1_file_the_receiver_verifies() -> None:
    sender, receiver = Sender(), Receiver()
    receiver.receive_data(sender.send(messages.Copy(5)))
    upload = receiver.next_event()
    assert isinstance(upload, Upload) and upload.request == messages.Copy(5) and upload.parts == ()
    ready_line, first = receiver.accept()
    assert isinstance(first, FileStart) and first.size == 5
    sender.receive_data(ready_line)
    assert sender.next_event().text == "READY"
    receiver.receive_data(sender.data(b"hello") + b"hello" + sender.end_file())
    assert bytes(receiver.next_event().data) == b"hello"
    assert isinstance(receiver.next_event(), FileEnd)
    assert isinstance(receiver.next_event(), UploadEnd)


def test_ranges_stream_back_to_back_and_their_oks_are_read_after() -> None:
    sender, receiver = Sender(), Receiver()
    out = b""
    for offset, piece in ((0, b"abcd"), (4, b"ef")):
        out += sender.send(messages.Range(offset, len(piece)))
        out += sender.data(piece) + piece + sender.end_file()
        assert sender.state == "idle" and sender.last_digest == hashlib.sha256(piece).digest()
    assert sender.oks_due == 2
    receiver.receive_data(out)
    seen = []
    for _ in range(2):
        upload = receiver.next_event()
        assert isinstance(upload, Upload) and isinstance(upload.request, messages.Range)
        receiver.accept()  # no READY goes out for a range
        while True:
            event = receiver.next_event()
            if isinstance(event, Data):
                seen.append(bytes(event.data))
            elif isinstance(event, FileEnd):
                assert event.digest == hashlib.sha256(seen[-1]).hexdigest()
            elif isinstance(event, UploadEnd):
                break
        sender.receive_data(receiver.reply())
    assert seen == [b"abcd", b"ef"]
    assert sender.next_event().ok and sender.next_event().ok and sender.oks_due == 0


def test_a_ranges_reply_may_list_thousands_of_kept_ranges() -> None:
    sender = Sender()
    sender.send(messages.Ranges("", "big.iso", 1 << 40, 0o644, 1.0, "ab" * 16, False, True, False))
    have = [[i << 20, 1 << 20, "ab" * 32] for i in range(16384)]  # the daemon's bound
    sender.receive_data(wire.ok_data({"have": have}))
    reply = sender.next_event()
    assert isinstance(reply, messages.Reply) and len(reply.data["have"]) == 16384
    assert len(wire.ok_data({"have": have})) < limits.MAX_RANGES_REPLY


@pytest.mark.parametrize("data", [b"", b"x", b"hello world" * 100])
def test_a_whole_file_is_what_entry_data_and_end_file_give(data: bytes) -> None:
    entry = framing.FileEntry("d/f.txt", 0o644, 1.5, len(data))
    one, pieces = Sender(), Sender()
    for sender in (one, pieces):
        sender.send(messages.Put("", False, len(data), 1))
        ready(sender)
    whole = one.whole_file(entry, memoryview(data))
    stepwise = pieces.entry(entry) + (pieces.data(data) + data if data else b"") + pieces.end_file()
    assert whole == stepwise
    receiver = Receiver()
    receiver.receive_data(b"PUT {}\r\n")
    receiver.next_event()
    receiver.accept()
    receiver.receive_data(whole + one.end())
    event = receiver.next_event()  # the receiver takes it whole too: one event
    assert isinstance(event, WholeFile) and event.parts == ("d", "f.txt") and event.size == len(data)
    assert bytes(event.data) == data and event.digest == hashlib.sha256(data).hexdigest()
    assert isinstance(receiver.next_event(), UploadEnd)


def test_a_whole_file_of_another_size_than_listed_is_caught_before_anything_is_written() -> None:
    sender = Sender()
    sender.send(messages.Put("", False, 3, 1))
    ready(sender)
    for data in (b"ab", b"abcd"):
        with pytest.raises(SizeChanged):
            sender.whole_file(framing.FileEntry("f", 0o644, 0.0, 3), data)
    assert sender.whole_file(framing.FileEntry("f", 0o644, 0.0, 3), b"abc").endswith(b"\r\n")
