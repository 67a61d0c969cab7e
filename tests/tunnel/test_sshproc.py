"""Running ssh: the ssh command, and the one banner check over a pipe, a socket or TCP."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Iterator, Tuple

import pytest

from rtun.tunnel import sshproc
from support.sshd import SshServer


@pytest.fixture
def pipe() -> Iterator[Tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


def later(seconds: float = 5.0) -> float:
    return time.monotonic() + seconds


def test_missing_ssh_binary_is_a_clear_error() -> None:
    assert sshproc.ssh_base({})[0] == "ssh"
    with pytest.raises(sshproc.SshNotFoundError, match="RTUN_SSH_COMMAND"):
        sshproc.ssh_base({"RTUN_SSH_COMMAND": "/nonexistent/ssh -v"})
    with pytest.raises(sshproc.SshFailedError, match="not a valid command line"):
        sshproc.ssh_base({"RTUN_SSH_COMMAND": "ssh -o 'unterminated"})


def test_banner_from_a_pipe_in_pieces(pipe) -> None:
    r, w = pipe
    os.write(w, b"SSH-2.0-Open")
    threading.Timer(0.05, lambda: os.write(w, b"SSH_9.6\r\n")).start()
    assert sshproc.read_banner(r, later())


def test_no_banner_when_the_stream_ends_or_says_something_else(pipe) -> None:
    r, w = pipe
    os.write(w, b"HTTP/1.1 400 Bad Request\r\n")
    assert not sshproc.read_banner(r, later())
    os.close(w)
    assert not sshproc.read_banner(r, later())  # end of stream, nothing read


def test_reading_stops_at_the_deadline(pipe) -> None:
    r, w = pipe
    os.write(w, b"SSH-2.0-x\n")
    ticks = iter([10.0])
    assert not sshproc.read_banner(r, deadline=10.0, clock=lambda: next(ticks))  # past: nothing read
    assert os.read(r, 64) == b"SSH-2.0-x\n"
    started = time.monotonic()
    assert not sshproc.read_banner(r, deadline=time.monotonic() + 0.1)  # silent: gives up in time
    assert time.monotonic() - started < 2


def test_reading_stops_after_a_line_of_banner_size(pipe) -> None:
    r, w = pipe
    os.write(w, b"SSH-2.0-" + b"x" * 1000)  # no newline: read at most one banner's worth
    assert sshproc.read_banner(r, later())
    assert len(os.read(r, 2000)) == 8 + 1000 - 256


def test_banner_from_a_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"SSH-2.0-test\r\n")
        assert sshproc.read_banner(b, later())


def test_tcp_banner_against_a_real_sshd_and_a_closed_port(machine_sshd: SshServer) -> None:
    assert sshproc.tcp_banner("127.0.0.1", machine_sshd.port, timeout=5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert not sshproc.tcp_banner("127.0.0.1", closed, timeout=2)


def test_tcp_banner_gives_up_on_a_silent_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel completes the handshake; nobody ever speaks
        assert not sshproc.tcp_banner("127.0.0.1", listener.getsockname()[1], timeout=0.2)
