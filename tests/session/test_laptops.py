"""Several laptops on one server account, and shells that outlive the login (tmux, screen).

Two laptops, each with its own daemon (and its own notification service), log in to the same
account at the same time with `rtun ssh`; what each session sends lands on its own laptop.
A shell started by an earlier login keeps an old RTUN_SOCK: the client finds the live socket of
the same laptop before any other.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from session.harness import RTUN_REMOTE, Laptop, sockets
from support.notifications import NotificationService, SessionBus
from support.rtun import RtunDaemon, run_rtun
from support.wait import wait_until


class Desk:
    """A laptop with its daemon and a recording notification service on a bus of its own."""

    def __init__(self, name: str, laptop: Laptop) -> None:
        self.name = name
        self.laptop = laptop
        self.bus = SessionBus().start()
        self.notifications = NotificationService(self.bus, laptop.home / "notifications.jsonl").start()
        self.save_dir = laptop.home / "Downloads"
        self.daemon = RtunDaemon(
            laptop.home, self.save_dir, diagnostics=True, env={"DBUS_SESSION_BUS_ADDRESS": self.bus.address}
        ).start()

    def close(self) -> None:
        self.daemon.stop()
        self.notifications.stop()
        self.bus.stop()


@pytest.fixture
def desks(short_tmp: Path, server, laptops: List[Laptop]) -> Iterator[Tuple[Desk, Desk]]:
    made = []
    for name in ("a", "b"):
        laptop = Laptop(short_tmp / f"laptop-{name}", server)
        laptops.append(laptop)
        made.append(Desk(name, laptop))
    yield made[0], made[1]
    for desk in made:
        desk.close()


def _waiting_session(desk: Desk, home: Path, tag: str, then: str = "") -> "os.PathLike[str]":
    """A login that writes its RTUN_SOCK to a file, waits for the test, then runs ``then``."""
    fifo = home / f"go-{tag}"
    os.mkfifo(fifo)
    line = f'echo "$RTUN_SOCK" > {home}/sock-{tag}; read go < {fifo}; {then}'
    return desk.laptop.popen(["ssh", "srv", line])


def _release(home: Path, tag: str) -> None:
    with open(home / f"go-{tag}", "w") as fifo:
        fifo.write("go\n")


def _sock(home: Path, tag: str) -> str:
    path = home / f"sock-{tag}"
    wait_until(lambda: path.exists() and path.read_text().strip(), timeout=30, what=f"login {tag}")
    return path.read_text().strip()


def test_two_laptops_logged_in_at_once_each_reach_their_own_daemon(desks, server_home):
    a, b = desks
    for desk in desks:
        (server_home / f"file-{desk.name}").write_text(f"made for {desk.name}\n")
    work = {
        desk.name: (
            f"{RTUN_REMOTE} pid && {RTUN_REMOTE} notify -t 'from {desk.name}' 'hello {desk.name}' "
            f"&& {RTUN_REMOTE} send {server_home}/file-{desk.name} --to got.txt"
        )
        for desk in desks
    }
    sessions = {desk.name: _waiting_session(desk, server_home, desk.name, work[desk.name]) for desk in desks}
    socks = {name: _sock(server_home, name) for name in sessions}
    # Both logins are up at once, each with a socket of its own laptop.
    assert socks["a"] != socks["b"]
    assert all(os.path.exists(s) for s in socks.values())
    assert a.laptop.laptop_id != b.laptop.laptop_id
    for desk in desks:
        assert f".{desk.laptop.laptop_id}." in socks[desk.name]
    for name in sessions:
        _release(server_home, name)
    for desk in desks:
        out, err = sessions[desk.name].communicate(timeout=60)
        assert sessions[desk.name].returncode == 0, err
        pid_line, saved = out.decode().splitlines()
        assert re.match(rf"OK PID {desk.daemon.process.pid},", pid_line)
        assert saved == str(desk.save_dir / "got.txt")
        assert (desk.save_dir / "got.txt").read_text() == f"made for {desk.name}\n"
        shown = [(n["summary"], n["body"]) for n in desk.notifications.notifications()]
        assert shown == [(f"from {desk.name}", f"hello {desk.name}")]
    # Removed by each login's control session, just after rtun has returned the exit status.
    wait_until(lambda: sockets(server_home) == [], timeout=30, what="the sockets to be removed")


def _pid_of(home: Path, **env: str) -> Tuple[int, str]:
    result = run_rtun(["pid"], home, RTUN_VERBOSE="1", **env)
    assert result.returncode == 0, result.stderr
    return int(result.stdout.decode().split()[2].rstrip(",")), result.stderr.decode()


def test_an_old_shell_finds_the_new_socket_of_its_own_laptop_before_any_other(desks, server_home):
    a, b = desks
    first = a.laptop.rtun(["ssh", "srv", 'echo "$RTUN_SOCK"'])  # the login that started tmux
    assert first.returncode == 0, first.stderr
    old = first.stdout.decode().strip()
    wait_until(lambda: not os.path.exists(old), timeout=30, what="the ended session's socket to go")
    again = _waiting_session(a, server_home, "a2")  # a new login from the same laptop...
    new = _sock(server_home, "a2")
    other = _waiting_session(b, server_home, "b")  # ... then another laptop's, the newest socket
    _sock(server_home, "b")
    try:
        # The shell in tmux still has the old RTUN_SOCK: gone, or left behind dead.
        pid, said = _pid_of(server_home, RTUN_SOCK=old)
        assert pid == a.daemon.process.pid
        assert new in said and "same laptop" in said and a.laptop.laptop_id in said
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(old)
        s.close()
        assert _pid_of(server_home, RTUN_SOCK=old)[0] == a.daemon.process.pid
        # A stale RTUN_SOCK of no known laptop: the newest live socket, whoever's it is.
        pid, said = _pid_of(server_home, RTUN_SOCK=str(server_home / "gone.sock"))
        assert pid == b.daemon.process.pid and "newest live socket" in said
    finally:
        for tag in ("a2", "b"):
            _release(server_home, tag)
        for process in (again, other):
            process.communicate(timeout=60)
    os.unlink(old)
    assert sockets(server_home) == []
