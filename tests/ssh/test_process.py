"""Running ssh: the ssh command, bounded command output, and the banner checks over a pipe, a
socket, TCP, many targets at once, and through a real master's forwards."""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Iterator, Tuple

import pytest

from rtun.ssh import argv as sshargv
from rtun.ssh import banner
from rtun.ssh import process as sshproc
from support.sshd import SshServer
from support.tunnel import World


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
    assert sshargv.ssh_base({})[0] == "ssh"
    with pytest.raises(sshargv.SshNotFoundError, match="RTUN_SSH_COMMAND"):
        sshargv.ssh_base({"RTUN_SSH_COMMAND": "/nonexistent/ssh -v"})
    assert sshargv.ssh_base({"RTUN_SSH_COMMAND": "/nonexistent/ssh -v"}, check=False)[0] == "/nonexistent/ssh"
    with pytest.raises(sshargv.SshFailedError, match="not a valid command line"):
        sshargv.ssh_base({"RTUN_SSH_COMMAND": "ssh -o 'unterminated"})


def test_banner_from_a_pipe_in_pieces(pipe) -> None:
    r, w = pipe
    os.write(w, b"SSH-2.0-Open")
    threading.Timer(0.05, lambda: os.write(w, b"SSH_9.6\r\n")).start()
    assert banner.read_banner(r, later())


def test_no_banner_when_the_stream_ends_or_says_something_else(pipe) -> None:
    r, w = pipe
    os.write(w, b"HTTP/1.1 400 Bad Request\r\n")
    assert not banner.read_banner(r, later())
    os.close(w)
    assert not banner.read_banner(r, later())  # end of stream, nothing read


def test_reading_stops_at_the_deadline(pipe) -> None:
    r, w = pipe
    os.write(w, b"SSH-2.0-x\n")
    ticks = iter([10.0])
    assert not banner.read_banner(r, deadline=10.0, clock=lambda: next(ticks))  # past: nothing read
    assert os.read(r, 64) == b"SSH-2.0-x\n"
    started = time.monotonic()
    assert not banner.read_banner(r, deadline=time.monotonic() + 0.1)  # silent: gives up in time
    assert time.monotonic() - started < 2


def test_reading_stops_after_a_line_of_banner_size(pipe) -> None:
    r, w = pipe
    os.write(w, b"SSH-2.0-" + b"x" * 1000)  # no newline: read at most one banner's worth
    assert banner.read_banner(r, later())
    assert len(os.read(r, 2000)) == 8 + 1000 - 256


def test_banner_from_a_socket() -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"SSH-2.0-test\r\n")
        assert banner.read_banner(b, later())


def test_tcp_banner_against_a_real_sshd_and_a_closed_port(machine_sshd: SshServer) -> None:
    assert banner.tcp_banner("127.0.0.1", machine_sshd.port, timeout=5)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert not banner.tcp_banner("127.0.0.1", closed, timeout=2)


def test_tcp_banner_gives_up_on_a_silent_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # the kernel completes the handshake; nobody ever speaks
        assert not banner.tcp_banner("127.0.0.1", listener.getsockname()[1], timeout=0.2)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_many_banners_at_once_with_one_deadline(machine_sshd: SshServer, tmp_path) -> None:
    silent = [socket.socket() for _ in range(3)]
    for s in silent:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(str(tmp_path / "u.sock"))
    unix.listen(1)
    try:
        targets = [
            ("127.0.0.1", machine_sshd.port),
            ("127.0.0.1", _closed_port()),
            str(tmp_path / "none.sock"),
            str(tmp_path / "u.sock"),
        ] + [s.getsockname() for s in silent]
        started = time.monotonic()
        assert banner.banners(targets, timeout=0.5) == [True] + [False] * 6
        assert time.monotonic() - started < 1.5  # silent ones share one deadline
    finally:
        for s in silent + [unix]:
            s.close()


def test_run_bounded_feeds_stdin_and_cuts_stdout_at_the_limit() -> None:
    done = sshproc.run_bounded(["sh", "-c", "cat; echo err >&2; exit 3"], b"x" * 300000, timeout=10)
    assert (done.returncode, len(done.stdout), done.stderr, done.truncated) == (3, 300000, b"err\n", False)
    done = sshproc.run_bounded(["sh", "-c", "yes"], b"", timeout=10, limit=100000)
    assert done.truncated and len(done.stdout) == 100000
    done = sshproc.run_bounded(["sh", "-c", "head -c 10 >/dev/null; echo read"], b"y" * 1000000, timeout=10)
    assert done.stdout == b"read\n"  # a reader that stops early is no error
    done = sshproc.run_bounded(["sleep", "5"], b"", timeout=0.2)
    assert done.returncode == -1 and done.stderr.endswith(b"timed out")


def test_probes_through_a_real_master_need_no_process_per_port(world: World, machine_sshd: SshServer) -> None:
    master = sshproc.Master(sshargv.ssh_base({"RTUN_SSH_COMMAND": world.ssh_command_line}), "pub", [])
    master.start()
    try:
        assert master.wait_ready(20)
        closed = [_closed_port() for _ in range(sshproc.PROBE_BATCH + 20)]  # two rounds
        found = master.probe_many(closed + [machine_sshd.port, world.server.port], timeout=3)
        assert found[machine_sshd.port] and found[world.server.port]
        assert not any(found[p] for p in closed) and len(found) == len(set(closed)) + 2
        assert os.listdir(master.directory) == ["ctl"]  # every forward's socket is gone
    finally:
        master.close()
