"""The pure parts of ports on demand: the server side's port specs and durations, which URLs
`rtun open` forwards, the kernel's table of listeners, and FORWARD/DIAL in both protocol cores."""

from __future__ import annotations

import socket

import pytest

from rtun.client import forward
from rtun.commands import loopback
from rtun.commands.forward import duration
from rtun.protocol import messages, wire
from rtun.protocol.messages import NEED_DATA, Rejected
from rtun.protocol.receiver import CLOSED, Receiver
from rtun.protocol.sender import Sender

TOKEN = "ab" * 16


@pytest.mark.parametrize(
    "text, expected",
    [("8888", (8888, 0)), ("8888:9999", (8888, 9999)), ("80:0", (80, 0)), ("1:65535", (1, 65535))],
)
def test_port_specs(text: str, expected: tuple) -> None:
    assert forward.parse_spec(text) == expected


@pytest.mark.parametrize("text", ["", "x", "0", "65536", "8888:65536", "8888:-1", "8888:x", "-5"])
def test_bad_port_specs(text: str) -> None:
    with pytest.raises(ValueError):
        forward.parse_spec(text)


def test_ports_below_1024_map_to_8000_more() -> None:
    assert [forward.local_for(p) for p in (80, 443, 1023, 1024, 8888)] == [8080, 8443, 9023, 1024, 8888]


@pytest.mark.parametrize(
    "text, seconds", [("90", 90), ("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("0.5", 0.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "0", "-1m", "inf", "nan", "10x", "1e400"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        duration(text)


def test_listening_reads_the_kernels_table_without_connecting() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        assert forward.listening(port) is True
        server.settimeout(0.2)
        with pytest.raises(socket.timeout):
            server.accept()  # nothing connected to find out
    assert forward.listening(port) is False
    with socket.create_server(("::1", 0), family=socket.AF_INET6) as six:
        assert forward.listening(six.getsockname()[1]) is True


@pytest.mark.parametrize(
    "url, port",
    [
        ("http://localhost:8888/?token=x", 8888),
        ("http://127.0.0.1:6006", 6006),
        ("http://[::1]:3000/a", 3000),
        ("http://0.0.0.0:5000/", 5000),
        ("https://localhost/", 443),
        ("http://LOCALHOST:81/", 81),
        ("http://localhost.example.org:8888/", None),
        ("http://127.0.0.2:8888/", None),
        ("http://example.org:8888/", None),
        ("mailto:a@localhost", None),
        ("http://localhost:99999/", None),
    ],
)
def test_which_pages_are_on_the_servers_loopback(url: str, port: object) -> None:
    assert loopback.loopback_port(url) == port


@pytest.mark.parametrize(
    "url, ports",
    [
        ("https://p.example/auth?redirect_uri=http%3A%2F%2Flocalhost%3A5555%2Fcb&x=1", [5555]),
        ("https://p.example/auth?redirect_uri=http://127.0.0.1:5555/cb", [5555]),
        ("https://p.example/auth?redirect_url=http%253A%252F%252Flocalhost%253A7777", [7777]),  # twice
        (
            "https://p.example/auth?callback=http://[::1]:4444/&Redirect_URI=http://localhost:4445",
            [4444, 4445],
        ),
        ("https://p.example/auth#redirect_uri=http://localhost:6666/", [6666]),
        ("https://p.example/auth?redirect_uri=https://app.example/cb", []),
        ("https://p.example/auth?next=http://localhost:5555/", []),
        (
            "https://p.example/auth?redirect_uri=http://localhost:5555&redirect_uri=http://localhost:5555",
            [5555],
        ),
    ],
)
def test_login_redirects_to_the_servers_loopback(url: str, ports: list) -> None:
    assert loopback.redirect_ports(url) == ports


@pytest.mark.parametrize(
    "url, port, expected",
    [
        ("http://localhost:8888/tree?token=a#x", 8889, "http://localhost:8889/tree?token=a#x"),
        ("http://0.0.0.0:5000/", 5000, "http://127.0.0.1:5000/"),
        ("http://[::1]:3000/", 3001, "http://[::1]:3001/"),
        ("http://user:pw@localhost/", 8080, "http://user:pw@localhost:8080/"),
    ],
)
def test_the_page_opens_at_the_port_it_got(url: str, port: int, expected: str) -> None:
    assert loopback.with_port(url, port) == expected


def test_a_url_of_no_loopback_is_opened_as_it_is_with_nothing_started() -> None:
    url = "https://example.org/?redirect_uri=https://example.org/cb"
    assert loopback.forwarded(None, url) == url  # no daemon needed: nothing to forward


# ---- the protocol cores -------------------------------------------------------------------------


def test_forward_and_dial_lines() -> None:
    assert wire.encode_request(messages.Forward(8888)) == b'FORWARD {"port":8888}\r\n'
    assert (
        wire.encode_request(messages.Forward(80, 8080, True))
        == b'FORWARD {"port":80,"local":8080,"exact":true}\r\n'
    )
    assert wire.parse_request(b'DIAL {"token":"%s","id":3}' % TOKEN.encode()) == messages.Dial(TOKEN, 3)
    for bad in (
        b'FORWARD {"port":70000}',
        b'FORWARD {"port":"80"}',
        b'DIAL {"token":"XY","id":1}',
        b'DIAL {"token":"%s","id":-1}' % TOKEN.encode(),
    ):
        with pytest.raises(Rejected):
            wire.parse_request(bad)


def test_the_receiver_holds_a_forward_and_refuses_bytes_on_it() -> None:
    receiver = Receiver()
    receiver.receive_data(b'FORWARD {"port":8888}\r\n')
    assert receiver.next_event() == messages.Forward(8888)
    assert (
        receiver.hold({"port": 8888, "token": TOKEN}) == b'OK {"port":8888,"token":"%s"}\r\n' % TOKEN.encode()
    )
    assert receiver.long_lived and receiver.in_request
    assert receiver.next_event() is NEED_DATA
    assert receiver.announce(1) == b'OK {"connect":1}\r\n'
    receiver.receive_data(b"PING\r\n")
    with pytest.raises(Rejected):
        receiver.next_event()


def test_the_receiver_holding_a_forward_sees_its_end() -> None:
    receiver = Receiver()
    receiver.receive_data(b'FORWARD {"port":8888}\r\n')
    receiver.next_event()
    receiver.hold({})
    receiver.receive_eof()
    assert receiver.next_event() is CLOSED


def test_the_receiver_hands_over_a_dialled_connection_with_what_came_behind() -> None:
    receiver = Receiver()
    receiver.receive_data(b'DIAL {"token":"%s","id":7}\r\nGET / HTTP/1.1\r\n' % TOKEN.encode())
    assert receiver.next_event() == messages.Dial(TOKEN, 7)
    assert receiver.splice() == (b"OK\r\n", b"GET / HTTP/1.1\r\n")
    assert receiver.long_lived and receiver.next_event() is CLOSED


def test_the_sender_reads_announcements_then_a_dials_bytes() -> None:
    sender = Sender()
    sender.send(messages.Forward(8888))
    sender.receive_data(b'OK {"port":8888,"token":"t"}\r\nOK {"connect":1}\r\nOK {"connect":2}\r\n')
    assert sender.next_event().data == {"port": 8888, "token": "t"}
    assert [sender.next_event().data["connect"] for _ in range(2)] == [1, 2]
    sender.receive_data(b"OK PONG\r\n")
    with pytest.raises(Rejected):
        sender.next_event()  # a held forward carries announcements only

    dialled = Sender()
    dialled.send(messages.Dial(TOKEN, 1))
    dialled.receive_data(b"OK\r\nHTTP/1.0 200 OK\r\n")
    assert dialled.next_event().ok
    assert dialled.unread() == b"HTTP/1.0 200 OK\r\n"
