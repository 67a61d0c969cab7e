"""The daemon's side of the protocol core, fed bytes in memory: order, limits, verification.

These are the hostile-stream cases that need no daemon: every one would pass through the real
daemon the same way, since the daemon's pump only moves bytes into this object.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
from typing import Any, List, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtun.protocol import limits, messages, wire
from rtun.protocol.events import Data, Directory, FileEnd, FileStart, Link, Upload, UploadEnd, WholeFile
from rtun.protocol.limits import RECEIVE_BUFFER
from rtun.protocol.messages import Rejected
from rtun.protocol.receiver import CLOSED, NEED_DATA, Receiver, Truncated

RANGE = 1024 * 1024


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode() + b"\r\n"


def line(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


def file_entry(path: str, data: bytes, **extra: Any) -> bytes:
    obj = {"type": "file", "path": path, "mode": 0o640, "mtime": 1700000000, "size": len(data), **extra}
    chunks = b"".join(b"%d\r\n%s" % (len(data[i : i + 3]), data[i : i + 3]) for i in range(0, len(data), 3))
    return line(obj) + chunks + b"0\r\n" + sha(data)


END = line({"type": "end"})


def spread(event: Any) -> List[Any]:
    """An event as the tests compare it: Data copied (views die on the next call), a whole file
    as the FileStart, data and FileEnd it stands for."""
    if isinstance(event, Data):
        return [bytes(event.data)]
    if isinstance(event, WholeFile):
        data = [bytes(event.data)] if event.size else []
        return [
            FileStart(event.parts, event.mode, event.mtime, event.size),
            *data,
            FileEnd(event.size, event.digest),
        ]
    return [event]


def drain(receiver: Receiver) -> List[Any]:
    """Every event until the receiver needs more, with Data copied (views die on the next call)."""
    events: List[Any] = []
    while True:
        event = receiver.next_event()
        if event is NEED_DATA or event is CLOSED:
            return events
        events += spread(event)
        if isinstance(event, Upload):
            receiver.accept()
        if isinstance(event, UploadEnd) or not isinstance(
            event, (Upload, Data, FileStart, FileEnd, Directory, Link, WholeFile)
        ):
            receiver.reply()


def feed(chunks: Sequence[bytes], buffer_size: int = limits.RECEIVE_BUFFER) -> List[Any]:
    receiver = Receiver(buffer_size)
    events: List[Any] = []
    for chunk in chunks:
        receiver.receive_data(chunk)
        events += drain(receiver)
    return events


def put_stream() -> bytes:
    return (
        b'PUT {"dest":"in","bytes":11,"files":2}\r\n'
        + line({"type": "dir", "path": "d", "mode": 0o750, "mtime": 1})
        + file_entry("d/a.txt", b"hello world")
        + line({"type": "link", "path": "d/l", "target": "a.txt"})
        + file_entry("d/empty", b"")
        + END
    )


def test_a_put_becomes_events_in_order_with_verified_files() -> None:
    events = feed([put_stream()])
    kinds = [type(e).__name__ if not isinstance(e, bytes) else "data" for e in events]
    assert kinds == [
        "Upload",
        "Directory",
        "FileStart",
        "data",
        "data",
        "data",
        "data",
        "FileEnd",
        "Link",
        "FileStart",
        "FileEnd",
        "UploadEnd",
    ]
    assert events[0].parts == ("in",)
    assert events[1].parts == ("in", "d") and events[1].mode == 0o750
    assert events[2].parts == ("in", "d", "a.txt") and events[2].size == 11
    assert b"".join(e for e in events if isinstance(e, bytes)) == b"hello world"
    assert events[7].size == 11 and events[8].target == "a.txt"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=40))
def test_any_split_of_the_bytes_gives_the_same_events(cuts: List[int]) -> None:
    stream = put_stream() + b"PING\r\n"
    chunks, at = [], 0
    for cut in cuts:
        chunks.append(stream[at : at + cut])
        at += cut
    chunks.append(stream[at:])

    def normal(events: List[Any]) -> List[Any]:  # data may arrive in other pieces
        out: List[Any] = []
        for e in events:
            if isinstance(e, bytes) and out and isinstance(out[-1], bytes):
                out[-1] += e
            else:
                out.append(e if isinstance(e, bytes) else repr(e))
        return out

    assert normal(feed([c for c in chunks if c])) == normal(feed([stream]))


def test_file_data_is_a_view_of_the_receive_buffer_not_a_copy() -> None:
    receiver = Receiver()
    payload = b"x" * 100_000
    receiver.receive_data(b"SEND %d f.bin\r\n" % len(payload))
    assert isinstance(receiver.next_event(), Upload)
    ready, start = receiver.accept()
    assert ready == b"READY\r\n" and start is not None and start.parts == ("f.bin",)
    receiver.receive_data(payload)
    event = receiver.next_event()
    assert isinstance(event, Data) and isinstance(event.data, memoryview)
    assert event.data.obj is receiver.get_buffer().obj  # the same bytearray the kernel fills
    assert len(event.data) == len(payload)


def test_a_pump_is_told_to_wait_for_more_only_inside_a_files_data() -> None:
    """wants_more: part of a chunk's data in, more of it due, and room for it in the buffer."""
    receiver = Receiver()
    size = RECEIVE_BUFFER + 100
    receiver.receive_data(b"SEND %d f.bin\r\n" % size)
    assert not receiver.wants_more  # a request is waiting to be read
    assert isinstance(receiver.next_event(), Upload)
    receiver.accept()
    receiver.receive_data(b"x" * (RECEIVE_BUFFER - 1))
    assert receiver.wants_more
    receiver.receive_data(b"x")
    assert not receiver.wants_more  # the buffer is full: one write of it
    assert len(receiver.next_event().data) == RECEIVE_BUFFER  # type: ignore[union-attr]
    assert receiver.next_event() is NEED_DATA
    receiver.receive_data(b"x" * 99)
    assert receiver.wants_more  # one byte of the file still to come
    receiver.receive_eof()
    assert not receiver.wants_more


def test_a_chunks_data_comes_out_whole_from_the_front_of_a_page_aligned_buffer() -> None:
    """Behind a RANGE's line (or a PUT chunk's header) the data moves to the front of the
    upload buffer, an mmap (page-aligned), so a whole range is one Data event that storage can
    write past the page cache as it is."""
    receiver = Receiver()
    data = os.urandom(RANGE)
    digest = hashlib.sha256(data).hexdigest().encode()
    line = wire.encode_request(messages.Range(RANGE, RANGE))
    receiver.receive_data(line + data[:1000])
    assert isinstance(receiver.next_event(), Upload)
    receiver.accept()
    buffer = receiver.get_buffer().obj
    assert isinstance(buffer, mmap.mmap)
    assert receiver.wants_more  # the rest of the range first
    receiver.receive_data(data[1000:])
    assert not receiver.wants_more
    event = receiver.next_event()
    assert isinstance(event, Data) and event.data.obj is buffer and bytes(event.data) == data
    assert event.data.tobytes() == buffer[:RANGE]  # at offset 0 of the mmap
    # The next range, pipelined behind this one's digest: its data, too, starts at the front
    # of the same buffer (which an upload of ranges keeps), not behind the line.
    second = os.urandom(RANGE)
    line = wire.encode_request(messages.Range(2 * RANGE, RANGE))
    receiver.receive_data(digest + b"\r\n" + line + second[:5000])
    assert isinstance(receiver.next_event(), FileEnd)
    assert isinstance(receiver.next_event(), UploadEnd)
    receiver.reply()
    assert isinstance(receiver.next_event(), Upload)
    receiver.accept()
    assert receiver.get_buffer().obj is buffer
    receiver.receive_data(second[5000:])
    event = receiver.next_event()
    assert isinstance(event, Data) and event.data.tobytes() == second == buffer[:RANGE]


def _put_events(pieces: Sequence[bytes]) -> List[Any]:
    receiver = Receiver()
    receiver.receive_data(b"PUT {}\r\n")
    assert isinstance(receiver.next_event(), Upload)
    receiver.accept()
    out: List[Any] = []
    for piece in pieces:
        receiver.receive_data(piece)
        while True:
            event = receiver.next_event()
            if event is NEED_DATA:
                break
            out += spread(event)
            if isinstance(event, UploadEnd):
                return out
    return out


def test_a_small_file_whose_bytes_are_all_in_gives_the_same_events_at_once() -> None:
    """A whole file in the buffer is verified and handed out at once (the fast path); the same
    bytes a byte at a time give the same events, the data in pieces."""
    files = [(f"d/f{i}", os.urandom(size)) for i, size in enumerate((0, 1, 1000, 70_000))]
    stream = b"".join(
        line({"type": "file", "path": p, "mode": 420, "mtime": 1, "size": len(d)})
        + (b"%d\r\n" % len(d) + d if d else b"")
        + b"0\r\n"
        + sha(d)
        for p, d in files
    )
    stream += line({"type": "end"})
    at_once = _put_events([stream])
    byte_by_byte = _put_events([stream[i : i + 1] for i in range(len(stream))])

    def merged(events: List[Any]) -> List[Any]:
        out: List[Any] = []
        for e in events:
            if isinstance(e, bytes) and out and isinstance(out[-1], bytes):
                out[-1] += e
            else:
                out.append(e if isinstance(e, bytes) else repr(e))
        return out

    assert merged(at_once) == merged(byte_by_byte)
    assert [e for e in merged(at_once) if isinstance(e, bytes)] == [d for _, d in files if d]


def test_a_wrong_digest_of_a_whole_small_file_is_rejected_before_its_file_starts() -> None:
    data = b"payload"
    stream = (
        line({"type": "file", "path": "f", "size": len(data)})
        + b"7\r\n"
        + data
        + b"0\r\n"
        + b"0" * 64
        + b"\r\n"
    )
    with pytest.raises(Rejected) as info:
        _put_events([stream])
    assert info.value.code == messages.E_CHECKSUM


def test_a_v1_send_is_ready_data_digest_then_reply() -> None:
    receiver = Receiver()
    receiver.receive_data(b"SEND 3 dir/x.bin\r\n")
    upload = receiver.next_event()
    assert isinstance(upload, Upload) and upload.parts == ("dir", "x.bin")
    receiver.accept()
    receiver.receive_data(b"abc" + sha(b"abc"))
    assert bytes(receiver.next_event().data) == b"abc"  # type: ignore[union-attr]
    assert isinstance(receiver.next_event(), FileEnd)
    assert isinstance(receiver.next_event(), UploadEnd)
    assert receiver.reply() == b"OK\r\n"
    receiver.receive_data(b"PING\r\n")
    assert receiver.next_event() == messages.Ping()


def test_a_wrong_digest_is_rejected_with_107() -> None:
    receiver = Receiver()
    receiver.receive_data(b"SEND 3 x\r\n")
    receiver.next_event()
    receiver.accept()
    receiver.receive_data(b"abc" + sha(b"abd"))
    receiver.next_event()
    with pytest.raises(Rejected) as info:
        receiver.next_event()
    assert info.value.code == messages.E_CHECKSUM


@pytest.mark.parametrize(
    "entry, code, text",
    [
        (line({"type": "file", "path": "f", "size": 2}) + b"3\r\nabc", messages.E_BAD_SIZE, "more data than"),
        (
            line({"type": "file", "path": "f", "size": 5}) + b"3\r\nabc0\r\n" + sha(b"abc"),
            messages.E_SHORT,
            "expected 5",
        ),
        (
            line({"type": "file", "path": "f"}) + b"%d\r\n" % (limits.MAX_CHUNK + 1),
            messages.E_BAD_SIZE,
            "too large",
        ),
        (line({"type": "file", "path": "f"}) + b"-1\r\n", messages.E_BAD_SIZE, "chunk length"),
        (line({"type": "file", "path": "../f"}), messages.E_BAD_PATH, "'..'"),
        (line({"type": "file", "path": ".rtun-1-ab.part"}), messages.E_BAD_PATH, "temporary"),
        (line({"type": "dir", "path": "/".join(["d"] * 64)}), messages.E_BAD_PATH, "nested too deeply"),
        (line({"type": "socket", "path": "s"}), messages.E_BAD_REQUEST, "unknown entry type"),
        (line({"type": "file", "path": "f", "mode": 99999}), messages.E_BAD_REQUEST, "mode"),
        (b"[" * 100_000 + b"\r\n", messages.E_LINE_TOO_LONG, "line longer"),
        (b"\xff\xfe garbage\r\n", messages.E_BAD_REQUEST, "UTF-8"),
        (line({"type": "device", "path": "f"}), messages.E_BAD_REQUEST, "unknown entry type"),
    ],
)
def test_bad_put_streams_are_rejected_with_their_code(entry: bytes, code: int, text: str) -> None:
    with pytest.raises(Rejected) as info:
        feed([b'PUT {"dest":"in"}\r\n' + entry])
    assert info.value.code == code and text in info.value.text


@pytest.mark.parametrize(
    "header, code",
    [
        (b"PUT {not json}", messages.E_BAD_REQUEST),
        (b"PUT []", messages.E_BAD_REQUEST),
        (b'PUT {"bytes": -1}', messages.E_BAD_SIZE),
        (b'PUT {"bytes": "1"}', messages.E_BAD_REQUEST),
        (b'PUT {"overwrite": 1}', messages.E_BAD_REQUEST),
        (b'PUT {"dest": "/tmp"}', messages.E_BAD_PATH),
        (b'PUT {"dest": "a/../.."}', messages.E_BAD_PATH),
    ],
)
def test_bad_put_headers_are_rejected_before_ready(header: bytes, code: int) -> None:
    with pytest.raises(Rejected) as info:
        feed([header + b"\r\n"])
    assert info.value.code == code


def test_entries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rtun.protocol.receiver.MAX_ENTRIES", 3)
    dirs = b"".join(line({"type": "dir", "path": f"d{i}"}) for i in range(3))
    assert isinstance(feed([b"PUT {}\r\n" + dirs + END])[-1], UploadEnd)
    with pytest.raises(Rejected, match="too many entries"):
        feed([b"PUT {}\r\n" + dirs + line({"type": "dir", "path": "d3"})])


# The inputs that each used to start a daemon, an sshd and a forward (tests/daemon/test_hostile.py
# keeps a few of them end to end).
@pytest.mark.parametrize(
    "data, code",
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 100),
        (b"HELO there\r\n", 100),
        (b"\r\n", 100),
        (b"PING PING PING\r\n", 100),
        (b"\x00\x00\x00\x00\n", 100),
        (b"SEND lots of\r\n", 101),
        (b"SEND 10 ../../../etc/passwd\r\n", 108),
        (b"SEND 10 /etc/passwd\r\n", 108),
        (b"SEND 10 a/./b\r\n", 108),
        (b"SEND " + b"7" * 30000 + b" x\r\n", 101),
        (b"PUT {not json\r\n", 113),
        (b"NOTIFY2 []\r\n", 113),
        (b"\xff\xfe\xfd\xfc\n", 113),
        (b"ECHO \xc3\x28 invalid utf-8\r\n", 113),
        (bytes(range(256)).replace(b"\n", b"") + b"\n", 113),
        (b"\x80PING\r\n", 113),
        (b"A" * (limits.MAX_LINE + 1), 112),
    ],
)
def test_garbage_is_rejected_with_its_code(data: bytes, code: int) -> None:
    receiver = Receiver()
    receiver.receive_data(data)
    with pytest.raises(Rejected) as info:
        receiver.next_event()
    assert info.value.code == code
    assert receiver.reject(info.value.code, info.value.text).startswith(b"ERROR %d " % code)
    assert receiver.next_event() is CLOSED  # nothing more is read after an error


def test_a_long_line_fails_as_soon_as_it_passes_the_limit() -> None:
    receiver = Receiver()
    for _ in range(limits.MAX_LINE // 4096):
        receiver.receive_data(b"A" * 4096)
        assert receiver.next_event() is NEED_DATA
    receiver.receive_data(b"A" * 4096)
    with pytest.raises(Rejected):
        receiver.next_event()


def test_a_partial_line_is_moved_to_the_front_when_the_buffer_fills() -> None:
    size = limits.MAX_LINE + 100
    receiver = Receiver(size)
    receiver.receive_data(b"PING\r\n" * ((size - 50) // 6))
    while receiver.next_event() is not NEED_DATA:
        receiver.reply("PONG")
    receiver.receive_data(b"ECHO " + b"e" * 60)  # crosses the end of the buffer
    assert receiver.next_event() is NEED_DATA
    receiver.receive_data(b"\r\n")
    assert receiver.next_event() == messages.Echo("e" * 60)


@pytest.mark.parametrize(
    "stream", [b"PIN", b"SEND 3 x\r\nab", b"PUT {}\r\n" + line({"type": "file", "path": "f"})]
)
def test_the_end_of_the_stream_midway_is_truncated(stream: bytes) -> None:
    receiver = Receiver()
    receiver.receive_data(stream)
    receiver.receive_eof()
    with pytest.raises(Truncated):
        drain(receiver)


def test_a_clean_end_between_requests_is_closed() -> None:
    receiver = Receiver()
    receiver.receive_data(b"PING\r\n")
    assert receiver.next_event() == messages.Ping()
    assert receiver.in_request
    receiver.reply("PONG")
    assert not receiver.in_request
    receiver.receive_eof()
    assert receiver.next_event() is CLOSED


def test_the_daemon_must_answer_before_the_next_request_is_read() -> None:
    receiver = Receiver()
    receiver.receive_data(b"PING\r\nPING\r\n")
    receiver.next_event()
    with pytest.raises(RuntimeError):
        receiver.next_event()
    receiver.receive_data(b"SEND 1 x\r\n")
    receiver.reply("PONG")
    assert receiver.next_event() == messages.Ping()
    receiver.reply("PONG")
    assert isinstance(receiver.next_event(), Upload)
    with pytest.raises(RuntimeError):
        receiver.reply()  # an upload is answered with accept() or reject()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=97))
def test_no_input_raises_anything_but_a_rejection_or_truncation(data: bytes, step: int) -> None:
    receiver = Receiver(limits.MAX_LINE + 1024)
    try:
        for i in range(0, len(data), step):
            receiver.receive_data(data[i : i + step])
            drain(receiver)
        receiver.receive_eof()
        drain(receiver)
    except (Rejected, Truncated):
        pass


def test_the_buffer_is_small_between_uploads_and_large_during_one() -> None:
    receiver = Receiver()
    assert len(receiver.get_buffer()) == limits.IDLE_BUFFER
    receiver.receive_data(b"SEND 3 x\r\nab")  # the start of the data came with the request
    receiver.next_event()
    receiver.accept()
    assert len(receiver.get_buffer()) == limits.RECEIVE_BUFFER - 2
    receiver.receive_data(b"c" + sha(b"abc") + b"PING\r\n")
    assert bytes(receiver.next_event().data) == b"abc"  # type: ignore[union-attr]
    receiver.next_event()
    receiver.next_event()
    receiver.reply()
    assert len(receiver.get_buffer()) == limits.IDLE_BUFFER - len(b"PING\r\n")
    assert receiver.next_event() == messages.Ping()


def test_lone_surrogates_from_json_escapes_are_rejected_not_crashed_on() -> None:
    for entry in (
        b'{"type":"link","path":"l","target":"\\ud800x"}\r\n',
        b'{"type":"dir","path":"\\udc80"}\r\n',
    ):
        with pytest.raises(Rejected):
            feed([b"PUT {}\r\n" + entry])


def test_back_to_back_ranges_keep_one_receive_buffer() -> None:
    """Each RANGE's data needs the large buffer; the connection keeps it between ranges instead
    of allocating (and zero-filling) it again for every one, and other uploads still give it up."""
    receiver = Receiver()
    buffers = []
    for offset in (0, 5, 10):
        receiver.receive_data(wire.encode_request(messages.Range(offset, 5)))
        assert isinstance(receiver.next_event(), Upload)
        receiver.accept()
        buffers.append(receiver._buffer)
        receiver.receive_data(b"abcde" + sha(b"abcde"))
        events = [receiver.next_event() for _ in range(3)]
        assert isinstance(events[-1], UploadEnd)
        receiver.reply()
    assert buffers[0] is buffers[1] is buffers[2] and len(buffers[0]) == limits.RECEIVE_BUFFER
    receiver.receive_data(b"SEND 1 f\r\n")
    receiver.next_event()
    receiver.accept()
    receiver.receive_data(b"x" + sha(b"x"))
    while not isinstance(receiver.next_event(), UploadEnd):
        pass
    receiver.reply()
    assert len(receiver._buffer) == limits.IDLE_BUFFER  # a single upload gives it back


def test_a_small_file_whose_bytes_are_all_in_is_one_event_with_a_view_of_its_data() -> None:
    """The fast path hands each whole file over as one event (not FileStart, Data, FileEnd):
    verified, its data a view of the receive buffer, not a copy."""
    files = [(f"f{i}", os.urandom(i * 100)) for i in range(3)]
    stream = b"".join(
        line({"type": "file", "path": p, "mode": 0o600, "mtime": 7, "size": len(d)})
        + (b"%d\r\n" % len(d) + d if d else b"")
        + b"0\r\n"
        + sha(d)
        for p, d in files
    )
    receiver = Receiver()
    receiver.receive_data(b"PUT {}\r\n")
    receiver.next_event()
    receiver.accept()
    receiver.receive_data(stream + line({"type": "end"}))
    for name, data in files:
        event = receiver.next_event()
        assert isinstance(event, WholeFile), event
        assert (event.parts, event.mode, event.mtime, event.size) == ((name,), 0o600, 7, len(data))
        assert isinstance(event.data, memoryview) and bytes(event.data) == data
        assert event.digest == hashlib.sha256(data).hexdigest()
    assert isinstance(receiver.next_event(), UploadEnd)
