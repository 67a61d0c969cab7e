"""Unit tests of the wire module: exact bytes of every v1 and rtun/2 message, malformed input, the
table of verbs (every row round-trips) and the one line-length rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtun.protocol import messages, wire
from rtun.protocol.limits import MAX_LINE, MAX_MTIME
from rtun.protocol.messages import CLOSED, NEED_DATA
from rtun.protocol.receiver import Receiver
from rtun.protocol.sender import Sender

# ---- v1 requests -----------------------------------------------------------------------------

V1_REQUESTS = [
    (messages.Ping(), b"PING\r\n"),
    (messages.Pid(), b"PID\r\n"),
    (messages.Echo("hello world"), b"ECHO hello world\r\n"),
    (messages.Shutdown(), b"SHUTDOWN\r\n"),
    (messages.Notify("host1", "build finished ok"), b"NOTIFY host1 build finished ok\r\n"),
    (messages.Send(12, "dir/sub/file.txt"), b"SEND 12 dir/sub/file.txt\r\n"),
    (messages.Send(0, "name with spaces.txt"), b"SEND 0 name with spaces.txt\r\n"),
    (messages.View(2048, "report.pdf"), b"VIEW 2048 report.pdf\r\n"),
]


@pytest.mark.parametrize("request_, raw", V1_REQUESTS)
def test_v1_request_encodes_to_exact_bytes_with_crlf(request_, raw):
    assert wire.encode_request(request_) == raw


@pytest.mark.parametrize("request_, raw", V1_REQUESTS)
def test_v1_request_parses_with_crlf_bare_lf_and_no_line_ending(request_, raw):
    assert wire.parse_request(raw) == request_
    assert wire.parse_request(raw[:-2] + b"\n") == request_
    assert wire.parse_request(raw[:-2]) == request_


def test_send_path_is_everything_after_the_second_space():
    assert wire.parse_request(b"SEND 5 a b  c\r\n") == messages.Send(5, "a b  c")


def test_notify_first_word_is_title_rest_is_body():
    assert wire.parse_request(b"NOTIFY myhost\r\n") == messages.Notify("myhost", "")
    assert wire.parse_request(b"NOTIFY h one  two\r\n") == messages.Notify("h", "one  two")


def test_echo_without_text_is_empty_echo():
    assert wire.parse_request(b"ECHO\r\n") == messages.Echo("")
    assert wire.parse_request(b"ECHO \r\n") == messages.Echo("")


def test_strip_eol_removes_one_line_ending_only():
    assert wire.strip_eol(b"PING\r\n") == b"PING"
    assert wire.strip_eol(b"PING\n") == b"PING"
    assert wire.strip_eol(b"PING") == b"PING"
    assert wire.strip_eol(b"X\n\n") == b"X\n"


def test_request_line_with_a_line_break_cannot_be_encoded():
    with pytest.raises(ValueError):
        wire.encode_request(messages.Echo("two\nlines"))
    with pytest.raises(ValueError):
        wire.encode_request(messages.Notify("h", "a\rb"))


def test_encode_request_rejects_non_requests():
    with pytest.raises(TypeError):
        wire.encode_request("PING")  # type: ignore[arg-type]


# ---- malformed requests ----------------------------------------------------------------------

MALFORMED = [
    (b"FOO\r\n", messages.E_UNKNOWN),
    (b"ping\r\n", messages.E_UNKNOWN),
    (b"PING extra\r\n", messages.E_UNKNOWN),
    (b"PID 1\r\n", messages.E_UNKNOWN),
    (b"SHUTDOWN now\r\n", messages.E_UNKNOWN),
    (b"\r\n", messages.E_UNKNOWN),
    (b"\x00\x01\x02\r\n", messages.E_UNKNOWN),
    (b"\xff\xfe garbage\r\n", messages.E_BAD_REQUEST),
    (b"ECHO \xc3\x28\r\n", messages.E_BAD_REQUEST),
    (b"SEND abc file\r\n", messages.E_BAD_SIZE),
    (b"SEND -5 file\r\n", messages.E_BAD_SIZE),
    (b"SEND +5 file\r\n", messages.E_BAD_SIZE),
    (b"SEND 1e3 file\r\n", messages.E_BAD_SIZE),
    (b"SEND \xd9\xa3 file\r\n", messages.E_BAD_SIZE),  # an Arabic-Indic digit is not a size
    (b"SEND  file\r\n", messages.E_BAD_SIZE),
    (b"SEND\r\n", messages.E_BAD_SIZE),
    (b"VIEW x name\r\n", messages.E_BAD_SIZE),
    (b"SEND 10\r\n", messages.E_BAD_PATH),
    (b"SEND 10 \r\n", messages.E_BAD_PATH),
    (b"VIEW 10\r\n", messages.E_BAD_PATH),
    (b"SEND " + b"9" * 5000 + b" f\r\n", messages.E_BAD_SIZE),  # longer than int() accepts
    (b"NOTIFY2 not json\r\n", messages.E_BAD_REQUEST),
    (b"NOTIFY2 [1,2]\r\n", messages.E_BAD_REQUEST),
    (b'NOTIFY2 {"title":5}\r\n', messages.E_BAD_REQUEST),
    (b"PUT\r\n", messages.E_BAD_REQUEST),
    (b'PUT {"bytes":-1}\r\n', messages.E_BAD_SIZE),
    (b'PUT {"bytes":true}\r\n', messages.E_BAD_REQUEST),
    (b'PUT {"files":"3"}\r\n', messages.E_BAD_REQUEST),
    (b'PUT {"overwrite":1}\r\n', messages.E_BAD_REQUEST),
    (b'PUT {"dest":null}\r\n', messages.E_BAD_REQUEST),
    (b'PUT {"bytes":' + b"9" * 5000 + b"}\r\n", messages.E_BAD_REQUEST),
    (b'PUT {"bytes":1e400}\r\n', messages.E_BAD_REQUEST),
]


@pytest.mark.parametrize("raw, code", MALFORMED)
def test_malformed_request_raises_protocol_error_with_code(raw, code):
    with pytest.raises(messages.Rejected) as info:
        wire.parse_request(raw)
    assert info.value.code == code
    assert info.value.text
    # Whatever it says, the error reply to it is exactly one line with its line ending.
    reply = wire.error(info.value.code, info.value.text)
    assert reply.endswith(b"\r\n") and reply.count(b"\n") == 1
    assert reply.startswith(b"ERROR %d " % code)


# ---- HELLO (rtun/2 negotiation carried in a v1 SEND) -----------------------------------------


def test_hello_is_a_send_whose_size_is_not_a_number():
    raw = wire.encode_request(messages.Hello(("notify2", "put")))
    assert raw == b"SEND RTUN/2 notify2 put\r\n"
    assert wire.parse_request(raw) == messages.Hello(("notify2", "put"))
    # What a v1 daemon does with it: the size field is not a number, so a bad-size error.
    size_token = raw.split(b" ")[1]
    assert not size_token.isdigit()


def test_hello_without_features():
    assert wire.encode_request(messages.Hello(())) == b"SEND RTUN/2\r\n"
    assert wire.parse_request(b"SEND RTUN/2\r\n") == messages.Hello(())


def test_view_rtun2_token_is_not_a_hello():
    with pytest.raises(messages.Rejected) as info:
        wire.parse_request(b"VIEW RTUN/2 put\r\n")
    assert info.value.code == messages.E_BAD_SIZE


def test_hello_reply_and_its_parse():
    raw = wire.ok(wire.hello_reply(("notify2", "put"), "0.2.0"))
    assert raw == b"OK RTUN/2 notify2 put version=0.2.0\r\n"
    features = wire.parse_hello_reply(wire.parse_reply(raw))
    assert features == ("notify2", "put", "version=0.2.0")
    assert wire.daemon_version(features) == "0.2.0"


def test_a_hello_reply_without_a_version_word_is_an_older_daemon():
    features = wire.parse_hello_reply(wire.parse_reply(b"OK RTUN/2 notify2 put\r\n"))
    assert features == ("notify2", "put") and wire.daemon_version(features) is None


@pytest.mark.parametrize(
    "request_",
    [
        messages.OpenUrl("https://example.org/a?b=c"),
        messages.Copy(12),
        messages.Copy(12, "image/png"),
        messages.Paste(),
        messages.Paste("image/jpeg"),
        messages.Paste("", True),
        messages.Edit(0, "notes.txt"),
        messages.EditWait("", ""),
        messages.EditWait("conflict", "changed on the server"),
    ],
)
def test_action_requests_round_trip(request_):
    line = wire.encode_request(request_)
    assert line.endswith(b"\r\n") and line.count(b"\n") == 1
    assert wire.parse_request(line) == request_


@pytest.mark.parametrize(
    "line",
    [
        b"OPEN {}",
        b'OPEN {"url": 5}',
        b"COPY {}",
        b'COPY {"bytes": -1}',
        b'COPY {"bytes": true}',
        b"PASTE now",
        b'EDIT {"bytes": 3}',
        b'EDIT {"name": "", "bytes": 3}',
        b'EDITWAIT {"result": "rm -rf"}',
    ],
)
def test_malformed_action_requests_are_rejected(line):
    with pytest.raises(messages.Rejected):
        wire.parse_request(line + b"\r\n")


def test_v1_answers_to_hello_mean_v1():
    assert wire.parse_hello_reply(wire.parse_reply(b"ERROR 101 bad size\r\n")) is None
    assert wire.parse_hello_reply(wire.parse_reply(b"READY\r\n")) is None
    assert wire.parse_hello_reply(wire.parse_reply(b"OK\r\n")) is None
    assert wire.parse_hello_reply(wire.parse_reply(b"OK RTUN/3 x\r\n")) is None


# ---- NOTIFY2 and PUT -------------------------------------------------------------------------


def test_notify2_exact_bytes_and_round_trip():
    request = messages.Notify2("Build done", "line one\nline two \u00e9")
    raw = wire.encode_request(request)
    assert raw == b'NOTIFY2 {"title":"Build done","body":"line one\\nline two \\u00e9"}\r\n'
    assert raw.count(b"\n") == 1
    assert wire.parse_request(raw) == request
    assert wire.parse_request(raw[:-2] + b"\n") == request


def test_notify2_missing_fields_default_to_empty():
    assert wire.parse_request(b"NOTIFY2 {}\r\n") == messages.Notify2("", "")


def test_put_exact_bytes_and_round_trip():
    request = messages.Put("photos/2024", True, 1234, 3)
    raw = wire.encode_request(request)
    assert raw == b'PUT {"dest":"photos/2024","overwrite":true,"bytes":1234,"files":3}\r\n'
    assert wire.parse_request(raw) == request


def test_put_defaults():
    assert wire.parse_request(b"PUT {}\n") == messages.Put("", False, 0, 0)


# ---- replies ---------------------------------------------------------------------------------


def test_v1_reply_bytes():
    assert wire.ok("PONG") == b"OK PONG\r\n"
    assert wire.ok("hello") == b"OK hello\r\n"
    assert wire.ok() == b"OK\r\n"
    assert wire.ok("Shutting down server...") == b"OK Shutting down server...\r\n"
    assert wire.READY == b"READY\r\n"
    assert wire.error(107, "expected a, got b") == b"ERROR 107 expected a, got b\r\n"


def test_error_reply_is_one_line_whatever_the_text():
    assert wire.error(100, "bad\r\nthing\n  here") == b"ERROR 100 bad thing here\r\n"


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_parse_replies(eol):
    assert wire.parse_reply(b"OK PONG" + eol) == messages.Reply(True, "PONG", None)
    assert wire.parse_reply(b"OK" + eol) == messages.Reply(True, "", None)
    assert wire.parse_reply(b"READY" + eol) == messages.Reply(True, "READY", None)
    assert wire.parse_reply(b"OK PID 7, saveDir /x" + eol) == messages.Reply(True, "PID 7, saveDir /x", None)
    assert wire.parse_reply(b"ERROR 106 expected 5 bytes, got 3 bytes" + eol) == messages.Reply(
        False, "expected 5 bytes, got 3 bytes", 106
    )


def test_parse_error_reply_without_code_or_line_ending():
    # The v1 daemon's unknown-command reply has no line ending; its text is still usable.
    reply = wire.parse_reply(b"ERROR 100 unknown command")
    assert reply == messages.Reply(False, "unknown command", 100)
    reply = wire.parse_reply(b"ERROR something odd\r\n")
    assert not reply.ok and reply.code is None and reply.text == "something odd"


def test_parse_reply_rejects_anything_else():
    for raw in (b"PONG\r\n", b"\r\n", b"ok\r\n", b"\xff\xfe\r\n"):
        with pytest.raises(messages.Rejected):
            wire.parse_reply(raw)


def test_ok_data_round_trip_and_saved_paths():
    raw = wire.ok_data({"saved": ["/d/a.txt", "/d/b c.txt"], "skipped": []})
    assert raw == b'OK {"saved":["/d/a.txt","/d/b c.txt"],"skipped":[]}\r\n'
    reply = wire.parse_reply(raw)
    assert reply.data == {"saved": ["/d/a.txt", "/d/b c.txt"], "skipped": []}
    assert wire.saved_paths(reply) == ["/d/a.txt", "/d/b c.txt"]


def test_reply_data_is_empty_for_v1_or_broken_json():
    assert wire.parse_reply(b"OK PONG\r\n").data == {}
    assert wire.parse_reply(b"OK {broken\r\n").data == {}
    assert wire.parse_reply(b'OK {"saved": "x"}\r\n').data == {"saved": "x"}
    assert wire.saved_paths(wire.parse_reply(b'OK {"saved": "x"}\r\n')) == []
    assert wire.saved_paths(wire.parse_reply(b'OK {"saved": ["a", 3]}\r\n')) == ["a"]


# ---- the table: every verb reads back what it writes -----------------------------------------

_one_line = st.text().filter(lambda s: "\r" not in s and "\n" not in s)
_word = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1)
_size = st.integers(0, 10**20 - 1)
_hex = st.text("0123456789abcdef", min_size=16, max_size=64)
_name = st.text(min_size=1)

# One strategy per request class; the test below fails for a row that has none.
STRATEGIES = {
    messages.Ping: st.just(messages.Ping()),
    messages.Pid: st.just(messages.Pid()),
    messages.Echo: st.builds(messages.Echo, _one_line),
    messages.Shutdown: st.just(messages.Shutdown()),
    messages.Notify: st.builds(messages.Notify, _one_line.filter(lambda s: " " not in s), _one_line),
    messages.Send: st.builds(messages.Send, _size, _one_line.filter(bool)),
    messages.View: st.builds(messages.View, _size, _one_line.filter(bool)),
    messages.Hello: st.builds(messages.Hello, st.tuples(_word, _word).map(tuple) | st.just(())),
    messages.Notify2: st.builds(messages.Notify2, st.text(), st.text()),
    messages.Put: st.builds(messages.Put, st.text(), st.booleans(), _size, _size, st.text(), st.booleans()),
    messages.OpenUrl: st.builds(messages.OpenUrl, st.text()),
    messages.Copy: st.builds(messages.Copy, _size, st.sampled_from(messages.CLIPBOARD_TYPES)),
    messages.Paste: st.builds(messages.Paste, st.sampled_from(messages.CLIPBOARD_TYPES), st.booleans()),
    messages.Edit: st.builds(messages.Edit, _size, _name),
    messages.EditWait: st.builds(messages.EditWait, st.sampled_from(messages.EDIT_RESULTS), st.text()),
    messages.Ranges: st.builds(
        messages.Ranges,
        st.text(),
        _name,
        _size,
        st.integers(0, 0o7777),
        st.floats(0, MAX_MTIME) | st.integers(0, 10**9).map(float),
        _hex,
        st.booleans(),
        st.booleans(),
        st.booleans(),
    ),
    messages.Range: st.builds(messages.Range, _size, _size),
    messages.Commit: st.builds(messages.Commit, _hex),
    messages.Forward: st.builds(
        messages.Forward, st.integers(0, 65535), st.integers(0, 65535), st.booleans()
    ),
    messages.Dial: st.builds(messages.Dial, _hex, st.integers(0, 2**63 - 1)),
}


def test_every_request_class_has_one_row_and_one_strategy():
    defined = {
        cls
        for cls in vars(messages).values()
        if isinstance(cls, type)
        and issubclass(cls, messages.Message)
        and cls not in (messages.Message, messages.Reply)
    }
    kinds = [row.kind for row in wire.TABLE]
    assert sorted(kinds, key=str) == sorted(defined, key=str)  # each class once
    assert set(STRATEGIES) == defined


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_every_verb_in_the_table_round_trips(data):
    for row in wire.TABLE:
        request = data.draw(STRATEGIES[row.kind], label=row.kind.__name__)
        line = wire.encode_request(request)
        assert line.endswith(b"\r\n") and line.count(b"\n") == 1
        assert line.startswith(row.verb.encode() + b" ") or line == row.verb.encode() + b"\r\n"
        assert wire.parse_request(line) == request


def test_a_header_field_left_out_at_its_default_reads_back_as_that_default():
    plain = messages.Put("d", False, 1, 1)
    assert b"mtimes" not in wire.encode_request(plain) and b"track" not in wire.encode_request(plain)
    assert wire.parse_request(wire.encode_request(plain)) == plain
    tracked = messages.Put("d", False, 1, 1, "ab" * 8, True)
    assert b'"mtimes":"abababababababab","track":true}' in wire.encode_request(tracked)


def test_header_fields_left_out_take_their_defaults():
    key = "0123456789abcdef"
    assert wire.parse_request(
        b'RANGES {"name":"f","bytes":7,"key":"%s"}\r\n' % key.encode()
    ) == messages.Ranges("", "f", 7, 0o644, 0.0, key, False, True, False)
    assert wire.parse_request(b"EDITWAIT {}\r\n") == messages.EditWait("", "")


def test_json_headers_keep_their_field_order_on_the_wire():
    assert wire.encode_request(messages.Edit(3, "n")) == b'EDIT {"name":"n","bytes":3}\r\n'
    assert wire.encode_request(messages.Range(5, 6)) == b'RANGE {"offset":5,"bytes":6}\r\n'


@pytest.mark.parametrize(
    "line, code",
    [
        (b'RANGE {"offset":-1,"bytes":1}', messages.E_BAD_SIZE),
        (b'RANGES {"name":"f","bytes":1,"key":"' + b"a" * 16 + b'","mode":4096}', messages.E_BAD_REQUEST),
        (b'RANGES {"name":"f","bytes":1,"key":"' + b"a" * 16 + b'","mtime":1e12}', messages.E_BAD_REQUEST),
        (b'RANGES {"name":"","bytes":1,"key":"' + b"a" * 16 + b'"}', messages.E_BAD_PATH),
        (b'RANGES {"name":"f","bytes":1,"key":"ABCDEF0123456789"}', messages.E_BAD_REQUEST),
        (b'COMMIT {"digest":"abc"}', messages.E_BAD_REQUEST),
    ],
)
def test_header_fields_are_checked(line, code):
    with pytest.raises(messages.Rejected) as info:
        wire.parse_request(line + b"\r\n")
    assert info.value.code == code


# ---- the one line-length rule ------------------------------------------------------------------


def test_a_line_may_be_the_limit_long_and_not_a_byte_longer():
    longest = bytearray(b"x" * (MAX_LINE - 1) + b"\n")
    assert wire.line_end(longest, 0, len(longest)) == MAX_LINE
    assert wire.line_end(bytearray(b"ab\ncd"), 0, 5) == 3
    assert wire.line_end(bytearray(b"ab\ncd"), 3, 5) == -1  # no LF yet
    with pytest.raises(messages.Rejected) as info:
        wire.line_end(bytearray(b"y") + longest, 0, MAX_LINE + 1)
    assert info.value.code == messages.E_LINE_TOO_LONG
    unended = bytearray(b"x" * (MAX_LINE + 1))
    assert wire.line_end(unended, 0, MAX_LINE) == -1  # may still end in time
    with pytest.raises(messages.Rejected):
        wire.line_end(unended, 0, MAX_LINE + 1, scanned=MAX_LINE)


@pytest.mark.parametrize("length, refused", [(MAX_LINE, False), (MAX_LINE + 1, True)])
def test_both_sides_bound_a_line_alike(length: int, refused: bool) -> None:
    """A line of ``length`` bytes, CRLF included: the daemon reading a request and the client
    reading a reply take it or refuse it alike (one rule, wire.line_end)."""
    request = b"ECHO " + b"e" * (length - 7) + b"\r\n"
    reply = b"OK " + b"o" * (length - 5) + b"\r\n"
    assert len(request) == len(reply) == length
    daemon, client = Receiver(), Sender()
    daemon.receive_data(request)
    client.send(messages.Ping())
    client.receive_data(reply)
    for read in (daemon.next_event, client.next_event):
        if refused:
            with pytest.raises(messages.Rejected) as info:
                read()
            assert info.value.code == messages.E_LINE_TOO_LONG
        else:
            assert read() not in (NEED_DATA, CLOSED)


def test_update_is_left_out_of_plain_puts_and_ranges_and_read_back_when_given() -> None:
    from rtun.protocol import messages as m

    plain = wire.encode_request(m.Put("d", False, 1, 1))
    assert b"update" not in plain  # an older daemon never sees it on a send without --update
    assert b"update" not in wire.encode_request(m.Ranges("", "f", 1, 0, 0.0, "0" * 32, False, True, False))
    check = m.Put("d", False, 0, 0, "", False, m.UPDATE_CHECK)
    assert wire.parse_request(wire.encode_request(check)) == check
    ranged = m.Ranges("", "f", 1, 0, 0.0, "0" * 32, False, True, False, True)
    assert wire.parse_request(wire.encode_request(ranged)).update is True
    with pytest.raises(m.Rejected):
        wire.parse_request(b'PUT {"update":"everything"}\r\n')


def test_text_clipboard_requests_keep_the_form_older_daemons_know():
    # Older daemons read COPY's header without "type" and take only a bare PASTE.
    assert wire.encode_request(messages.Copy(3)) == b'COPY {"bytes":3}\r\n'
    assert wire.encode_request(messages.Paste()) == b"PASTE\r\n"
    assert wire.parse_request(b"PASTE\r\n") == messages.Paste("", False)
    assert wire.encode_request(messages.Copy(3, "image/png")) == b'COPY {"bytes":3,"type":"image/png"}\r\n'
    assert wire.encode_request(messages.Paste("", True)) == b'PASTE {"list":true}\r\n'
    assert wire.encode_request(messages.Paste("image/gif")) == b'PASTE {"type":"image/gif"}\r\n'


@pytest.mark.parametrize(
    "line",
    [
        b'COPY {"bytes":3,"type":"image/svg+xml"}',
        b'COPY {"bytes":3,"type":"image/png; x=$(reboot)"}',
        b'COPY {"bytes":3,"type":"-o"}',
        b'COPY {"bytes":3,"type":5}',
        b'PASTE {"type":"TARGETS"}',
        b'PASTE {"type":"application/octet-stream"}',
        b'PASTE {"list":"yes"}',
        b"PASTE []",
    ],
)
def test_a_clipboard_type_outside_the_fixed_list_is_refused(line):
    with pytest.raises(messages.Rejected) as caught:
        wire.parse_request(line)
    assert caught.value.code == messages.E_BAD_REQUEST


def test_the_daemon_advertises_clipboard_types():
    assert "clipboard-types" in wire.FEATURES
