"""`rtun notify` end to end: the real client, a real ssh -R forward, the daemon, and a private
D-Bus session bus with a recording org.freedesktop.Notifications service on it."""

from __future__ import annotations

import socket
from typing import Dict

import pytest

from rtun.daemon.actions.notify import cap, clean_body, clean_title, escape_markup
from support.notifications import NotificationService, SessionBus, read_records
from support.rtun import run_rtun
from support.wait import wait_until

NO_SERVICE = "no notification service on your computer's desktop"


@pytest.fixture
def daemon_env(session_bus: SessionBus) -> Dict[str, str]:
    return {"DBUS_SESSION_BUS_ADDRESS": session_bus.address}


@pytest.fixture
def daemon_config() -> str:
    return ""


@pytest.fixture
def daemon(start_daemon, daemon_env, daemon_config):  # overrides tests/conftest.py's
    return start_daemon(env=daemon_env, config=daemon_config)


def shown(service: NotificationService, count: int = 1):
    return wait_until(
        lambda: len(service.notifications()) >= count and service.notifications(),
        what="the notification to arrive",
    )


def test_notify_shows_exact_title_and_body_and_logs_it(forward, remote_home, notifications, daemon):
    result = run_rtun(["notify", "-t", "Build finished", "all", "42 tests passed"], remote_home)

    assert result.returncode == 0, result.stderr
    [got] = shown(notifications)
    assert (got["app_name"], got["summary"], got["body"]) == ("rtun", "Build finished", "all 42 tests passed")
    assert "notification (title of 14 characters, body of 19)" in daemon.log_text()
    assert "42 tests" not in daemon.log_text()  # peer text never reaches the log


def test_notify_title_defaults_to_the_remote_host_name(forward, remote_home, notifications):
    result = run_rtun(["notify", "hello"], remote_home)

    assert result.returncode == 0, result.stderr
    [got] = shown(notifications)
    assert (got["summary"], got["body"]) == (socket.gethostname(), "hello")


def test_notify_reads_a_multi_line_body_from_stdin(forward, remote_home, notifications):
    result = run_rtun(["notify", "-t", "log", "-"], remote_home, input=b"line one\nline two\n")

    assert result.returncode == 0, result.stderr
    [got] = shown(notifications)
    assert got["body"] == "line one\nline two"


def test_notify_without_a_service_on_the_bus_fails_with_the_reason(forward, remote_home, daemon):
    result = run_rtun(["notify", "-t", "T", "nobody listens"], remote_home)

    assert result.returncode != 0
    assert NO_SERVICE in result.stderr.decode()
    assert "org.freedesktop.Notifications" in result.stderr.decode()
    assert run_rtun(["ping"], remote_home).returncode == 0  # the daemon keeps serving


@pytest.mark.parametrize("daemon_env", [{}])
def test_notify_without_a_session_bus_fails_with_the_reason(forward, remote_home):
    result = run_rtun(["notify", "-t", "T", "no bus at all"], remote_home)

    assert result.returncode != 0
    assert NO_SERVICE in result.stderr.decode()
    assert "DBUS_SESSION_BUS_ADDRESS" in result.stderr.decode()


def test_notify_reaches_a_service_that_the_bus_starts_on_demand(forward, remote_home, session_bus, short_tmp):
    record = short_tmp / "activated.jsonl"
    session_bus.make_activatable(record)

    result = run_rtun(["notify", "-t", "T", "wake up"], remote_home)

    assert result.returncode == 0, result.stderr
    got = wait_until(lambda: read_records(record), what="the activated service to record")
    assert [(n["summary"], n["body"]) for n in got] == [("T", "wake up")]


def test_notify_after_the_service_comes_back_works_again(forward, remote_home, session_bus, short_tmp):
    service = NotificationService(session_bus, short_tmp / "late.jsonl")
    assert run_rtun(["notify", "-t", "T", "first"], remote_home).returncode != 0
    service.start()
    try:
        result = run_rtun(["notify", "-t", "T", "second"], remote_home)
        assert result.returncode == 0, result.stderr
        assert [n["body"] for n in shown(service)] == ["second"]
    finally:
        service.stop()


def test_notify_strips_terminal_escapes_and_control_characters(forward, remote_home, notifications):
    title = "\x1b[1mBold\x1b[0m\ttitle\nsecond line\x1b]0;window title\x07"
    body = (
        "\x1b[31mred\x1b[0m plain \x1b]8;;file:///etc/passwd\x1b\\link\x1b]8;;\x1b\\"
        " bell\x07 back\x08space \u202eesrever\u202c \x1b]52;c;cGF5bG9hZA==\x07end\r\nnext"
    )
    result = run_rtun(["notify", "-t", title, "-"], remote_home, input=body.encode())

    assert result.returncode == 0, result.stderr
    [got] = shown(notifications)
    assert got["summary"] == "Bold title second line"
    assert got["body"] == "red plain link bell backspace esrever end\nnext"


@pytest.mark.parametrize("daemon_config", ["[notify]\nmax_chars = 40\n"])
def test_notify_caps_the_length_at_max_chars(forward, remote_home, notifications, daemon):
    result = run_rtun(["notify", "-t", "T" * 300, "x" * 1000], remote_home)

    assert result.returncode == 0, result.stderr
    [got] = shown(notifications)
    assert got["body"] == "x" * 39 + "\u2026"
    assert got["summary"] == "T" * 39 + "\u2026"
    assert "x" * 100 not in daemon.log_text()


def test_notify_escapes_markup_when_the_server_interprets_it(forward, remote_home, session_bus, short_tmp):
    service = NotificationService(
        session_bus, short_tmp / "markup.jsonl", capabilities=("body", "body-markup")
    ).start()
    try:
        result = run_rtun(
            ["notify", "-t", "<b>T</b>", '<a href="http://evil">x</a> & <img src=/y>'], remote_home
        )
        assert result.returncode == 0, result.stderr
        [got] = shown(service)
    finally:
        service.stop()
    assert got["summary"] == "<b>T</b>"  # the summary is never markup
    assert got["body"] == '&lt;a href="http://evil"&gt;x&lt;/a&gt; &amp; &lt;img src=/y&gt;'


def test_notify_from_a_v1_client_uses_the_host_word_as_title(forward, notifications):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(forward.remote))
        s.sendall(b"PING\r\nNOTIFY buildhost job \x1b[32mdone\x1b[0m\r\n")
        reader = s.makefile("rb")
        assert reader.readline() == b"OK PONG\r\n"
        assert reader.readline() == b"OK\r\n"

    [got] = shown(notifications)
    assert (got["summary"], got["body"]) == ("buildhost", "job done")


# ---- the text cleaning on its own ----------------------------------------------------------


def test_clean_title_is_one_line_without_escapes_and_never_empty():
    assert clean_title("  a\n b\x1b[2J\x9b1m c\x00 ", 4000) == "a b c"
    assert clean_title("\x1b[0m\x07", 4000) == "rtun"
    assert len(clean_title("t" * 1000, 4000)) == 200


def test_clean_body_removes_escapes_controls_and_bidi_but_keeps_lines():
    text = "a\x1bPq#0;2;0;0;0#0~~\x1b\\b\x1b(Bc\x7f\x85d\u2066e\u2069\n\n\n\nf\tg"
    assert clean_body(text, 4000) == "abc\nde\n\nf g"


def test_cap_marks_the_cut_and_zero_means_unlimited():
    assert cap("abcdef", 4) == "abc\u2026"
    assert cap("abcdef", 6) == "abcdef"
    assert cap("abcdef", 0) == "abcdef"


def test_escape_markup_escapes_the_three_special_characters():
    assert escape_markup("<b>&amp;</b>") == "&lt;b&gt;&amp;amp;&lt;/b&gt;"


@pytest.mark.parametrize("daemon_config", ["[notify]\nburst = 3\nrate = 0.2\n"])
def test_a_burst_of_notifications_is_coalesced_into_one(forward, remote_home, notifications, daemon):
    for i in range(8):
        result = run_rtun(["notify", "-t", "burst", f"number {i}"], remote_home)
        assert result.returncode == 0, result.stderr  # a coalesced notification is not a failure
    summaries = wait_until(
        lambda: [n for n in notifications.notifications() if "came too fast" in n["body"]],
        timeout=20,
        what="the summary of the coalesced notifications",
    )
    shown_one_by_one = [n for n in notifications.notifications() if n["summary"] == "burst"]
    coalesced = int(summaries[0]["body"].split()[0])
    assert 3 <= len(shown_one_by_one) <= 4  # the burst, and at most one token refilled meanwhile
    assert len(shown_one_by_one) + coalesced == 8 and len(summaries) == 1
    body = summaries[0]["body"]  # what was held back, and the settings that decide
    assert "(burst, burst, burst" in body and "[notify] burst = 3" in body and "[notify] rate = 0.2" in body
    assert "rtun server reload" in body
