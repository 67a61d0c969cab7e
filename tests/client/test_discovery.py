"""The client end to end: the real `rtun` command on the "remote" side of a real `ssh -R` forward."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import List

import pytest

from rtun import paths
from support.rtun import RtunDaemon, run_rtun
from support.sshd import Forward


def _stderr_line(result) -> str:
    text = result.stderr.decode()
    assert "Traceback" not in text
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def _plain_file(path: Path) -> Path:
    path.write_text("not a socket\n")
    return path


def _dead_socket(path: Path) -> Path:
    """A socket file nothing listens on any more, as sshd leaves behind after a session."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    return path


def _set_mtime(path: Path, when: float) -> None:
    os.utime(path, (when, when), follow_symlinks=False)


@pytest.fixture
def daemon(start_daemon) -> RtunDaemon:  # overrides tests/conftest.py's: PID tells daemons apart
    return start_daemon(diagnostics=True)


def _daemon_pid(home: Path, *args: str, **env: str) -> int:
    result = run_rtun(["pid", *args], home, **env)
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode().strip()
    assert out.startswith("OK PID ")
    return int(out[len("OK PID ") :].split(",")[0])


def test_ping_prints_ok_pong_and_exits_0(forward, remote_home):
    result = run_rtun(["ping"], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"OK PONG\n"
    assert result.stderr == b""


def test_pid_and_echo_through_the_forward(forward, remote_home, daemon, save_dir):
    result = run_rtun(["pid"], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"OK PID {daemon.process.pid}, saveDir {save_dir}\n"
    result = run_rtun(["echo", "hello", "there"], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"OK hello there\n"


def test_discovery_skips_stale_candidates_newest_first_and_never_deletes_them(forward, remote_home, daemon):
    rtun_dir = remote_home / ".rtun"
    live = rtun_dir / "rtun.sock"
    now = time.time()
    _set_mtime(live, now - 100)
    stale: List[Path] = [
        _dead_socket(rtun_dir / "rtun.sock.1"),
        _plain_file(rtun_dir / "rtun.sock.2"),
        _dead_socket(rtun_dir / "rtun.sock.3"),
        _plain_file(rtun_dir / "rtun.sock.old"),
        _dead_socket(rtun_dir / "rtun.sock.4"),
    ]
    # Three of them newer than the live one, two older.
    for age, path in zip((10, 20, 30, 500, 600), stale):
        _set_mtime(path, now - age)

    assert paths_in_order(remote_home) == [
        str(rtun_dir / n)
        for n in ("rtun.sock.1", "rtun.sock.2", "rtun.sock.3", "rtun.sock", "rtun.sock.old", "rtun.sock.4")
    ]
    result = run_rtun(["ping"], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"OK PONG\n"
    assert _daemon_pid(remote_home) == daemon.process.pid
    for path in stale:
        assert os.path.lexists(path), f"{path} was deleted"
    assert live.is_socket()


def paths_in_order(home: Path) -> List[str]:
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(home)
    try:
        return paths.socket_candidates()
    finally:
        if old is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = old


def test_candidate_too_long_for_sun_path_is_skipped(forward, remote_home):
    long_one = remote_home / ".rtun" / ("rtun.sock." + "x" * 120)
    _plain_file(long_one)
    _set_mtime(long_one, time.time() + 60)  # newest: tried first
    result = run_rtun(["ping"], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"OK PONG\n"
    assert long_one.exists()


@pytest.fixture
def other_daemon(short_tmp: Path):
    """A second daemon, on a socket outside ~/.rtun, to tell which one a client reached."""
    home = short_tmp / "other"
    running = RtunDaemon(home, home / "Downloads", diagnostics=True).start()
    yield running
    running.stop()


def test_rtun_sock_wins_over_candidates(forward, remote_home, daemon, other_daemon):
    assert _daemon_pid(remote_home) == daemon.process.pid
    pid = _daemon_pid(remote_home, RTUN_SOCK=str(other_daemon.socket))
    assert pid == other_daemon.process.pid


def test_rtun_sock_that_does_not_answer_falls_back_to_a_live_candidate_and_says_so(
    forward, remote_home, short_tmp, daemon
):
    dead = _dead_socket(short_tmp / "dead.sock")
    result = run_rtun(["pid"], remote_home, RTUN_SOCK=str(dead), RTUN_VERBOSE="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith(f"OK PID {daemon.process.pid},")
    line = _stderr_line(result)
    assert str(dead) in line and str(forward.remote) in line and "newest live socket" in line
    assert dead.exists()
    quiet = run_rtun(["ping"], remote_home, RTUN_SOCK=str(dead))
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, b"OK PONG\n", b"")


def test_rtun_sock_that_does_not_answer_and_no_live_candidate_is_one_line_and_exit_3(remote_home, short_tmp):
    dead = _dead_socket(short_tmp / "dead.sock")
    stale = _dead_socket(remote_home / ".rtun" / "rtun.sock.1")
    result = run_rtun(["ping"], remote_home, RTUN_SOCK=str(dead))
    assert result.returncode == 3
    line = _stderr_line(result)
    assert str(dead) in line and str(stale) in line and "RTUN_SOCK" in line
    assert dead.exists() and stale.exists()


LAPTOP_A, LAPTOP_B = "aaaaaaaaaaaa", "bbbbbbbbbbbb"


@pytest.fixture
def laptop_forwards(sshd, daemon, other_daemon, remote_home):
    """Laptop A's daemon behind an older socket, laptop B's behind the newest one."""
    rtun_dir = remote_home / ".rtun"
    a = Forward(sshd, rtun_dir / f"rtun.sock.{LAPTOP_A}.host.00000002", daemon.socket).wait_up()
    b = Forward(sshd, rtun_dir / f"rtun.sock.{LAPTOP_B}.host.00000003", other_daemon.socket).wait_up()
    now = time.time()
    _set_mtime(a.remote, now - 60)
    _set_mtime(b.remote, now)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("leftover", ["dead", "missing"])
def test_a_stale_rtun_sock_prefers_the_live_socket_of_the_same_laptop(
    laptop_forwards, remote_home, daemon, other_daemon, leftover
):
    a, b = laptop_forwards
    old = remote_home / ".rtun" / f"rtun.sock.{LAPTOP_A}.host.00000001"  # a tmux shell's RTUN_SOCK
    if leftover == "dead":
        _dead_socket(old)
    result = run_rtun(["pid"], remote_home, RTUN_SOCK=str(old), RTUN_VERBOSE="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().startswith(f"OK PID {daemon.process.pid},")  # A's, not the newer B's
    line = _stderr_line(result)
    assert str(a.remote) in line and f"same laptop ({LAPTOP_A})" in line
    # Without a laptop of its own in the name, the newest live socket wins.
    assert _daemon_pid(remote_home, RTUN_SOCK=str(remote_home / "gone.sock")) == other_daemon.process.pid
    # A laptop with no live socket: any live one, and -v says so.
    result = run_rtun(
        ["pid"],
        remote_home,
        RTUN_SOCK=str(remote_home / ".rtun" / "rtun.sock.cccccccccccc.h.1"),
        RTUN_VERBOSE="1",
    )
    assert result.stdout.decode().startswith(f"OK PID {other_daemon.process.pid},")
    assert "none of laptop cccccccccccc answers" in _stderr_line(result)


def test_without_rtun_verbose_discovery_says_nothing_and_with_it_one_line(forward, remote_home):
    assert run_rtun(["ping"], remote_home).stderr == b""
    line = _stderr_line(run_rtun(["ping"], remote_home, RTUN_VERBOSE="1"))
    assert line == f"rtun: using {forward.remote}, the newest live socket"
    line = _stderr_line(run_rtun(["ping"], remote_home, RTUN_VERBOSE="1", RTUN_SOCK=str(forward.remote)))
    assert line == f"rtun: using {forward.remote} ($RTUN_SOCK)"
    assert (
        _stderr_line(run_rtun(["ping", "-v"], remote_home))
        == f"rtun: using {forward.remote}, the newest live socket"
    )


def test_laptop_ids_are_read_from_session_socket_names_only():
    assert paths.laptop_of(f"/h/.rtun/rtun.sock.{LAPTOP_A}.host.cafe0123") == LAPTOP_A
    assert paths.laptop_of(f"rtun.sock.{LAPTOP_A}.new") == LAPTOP_A  # the plain-ssh incoming name
    for other in (
        "/h/.rtun/rtun.sock",
        "/h/.rtun/rtun.sock.1700000000",
        "/h/.rtun/rtun.sock.170000000000",
        f"/h/x.sock.{LAPTOP_A}.h.1",
        f"/h/rtun.sock.{LAPTOP_A.upper()}.h.1",
    ):
        assert paths.laptop_of(other) is None, other
    assert paths.same_laptop_first(
        ["n", f"rtun.sock.{LAPTOP_B}.h.1", f"rtun.sock.{LAPTOP_A}.h.1", "o"], LAPTOP_A
    ) == [f"rtun.sock.{LAPTOP_A}.h.1", "n", f"rtun.sock.{LAPTOP_B}.h.1", "o"]


def test_socket_flag_wins_over_rtun_sock_and_candidates(forward, remote_home, daemon, other_daemon):
    pid = _daemon_pid(remote_home, "-s", str(other_daemon.socket))
    assert pid == other_daemon.process.pid
    pid = _daemon_pid(remote_home, "-s", str(forward.remote), RTUN_SOCK=str(other_daemon.socket))
    assert pid == daemon.process.pid


def test_no_socket_at_all_is_one_line_with_setup_hint_and_exit_3(remote_home):
    result = run_rtun(["ping"], remote_home)
    assert result.returncode == 3
    assert result.stdout == b""
    line = _stderr_line(result)
    assert str(remote_home / ".rtun" / "rtun.sock") in line  # what was looked for
    assert "ssh -R" in line


def test_only_stale_sockets_is_one_line_naming_each_and_exit_3(remote_home):
    rtun_dir = remote_home / ".rtun"
    stale = [
        _dead_socket(rtun_dir / "rtun.sock"),
        _plain_file(rtun_dir / "rtun.sock.9"),
        _dead_socket(rtun_dir / "rtun.sock.10"),
    ]
    result = run_rtun(["ping"], remote_home)
    assert result.returncode == 3
    line = _stderr_line(result)
    for path in stale:
        assert str(path) in line
        assert path.exists()
    assert "ssh -R" in line


def test_named_socket_missing_is_one_line_and_exit_3(remote_home, short_tmp):
    missing = short_tmp / "nothing.sock"
    result = run_rtun(["ping", "-s", str(missing)], remote_home)
    assert result.returncode == 3
    line = _stderr_line(result)
    assert str(missing) in line and "ssh -R" in line


@pytest.mark.parametrize("how", ["flag", "env"])
def test_socket_path_longer_than_sun_path_is_a_clear_one_line_error(remote_home, short_tmp, how):
    long_path = str(short_tmp / ("d" * 60) / ("s" * 80))
    assert len(long_path) >= paths.SUN_PATH_MAX
    if how == "flag":
        result = run_rtun(["ping", "-s", long_path], remote_home)
    else:
        result = run_rtun(["ping"], remote_home, RTUN_SOCK=long_path)
    assert result.returncode != 0
    line = _stderr_line(result)
    assert "too long" in line and long_path in line


@pytest.mark.parametrize("how", ["discovered", "RTUN_SOCK", "flag"])
def test_daemon_down_behind_a_live_forward_says_start_it_and_the_same_session_then_works(
    forward, remote_home, daemon, start_daemon, how
):
    """The ssh session is fine and its forward listens; only the daemon on the laptop is gone.
    Logging in again would not help: starting the daemon does, and the same forward works."""
    args = ["ping", "-s", str(forward.remote)] if how == "flag" else ["ping"]
    env = {"RTUN_SOCK": str(forward.remote)} if how == "RTUN_SOCK" else {}
    daemon.stop()
    result = run_rtun(args, remote_home, **env)
    assert result.returncode == 3
    line = _stderr_line(result)
    assert "rtun server -d" in line and "your computer" in line and str(forward.remote) in line
    assert "this session works again" in line, line
    assert "rtun ssh" not in line and "log in" not in line
    start_daemon()  # on the same socket, at the far end of the same forward
    result = run_rtun(args, remote_home, **env)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"OK PONG\n", b"")


def test_sockets_of_ended_sessions_say_log_in_again_not_start_the_daemon(remote_home, short_tmp):
    stale = _dead_socket(remote_home / ".rtun" / f"rtun.sock.{LAPTOP_A}.host.00000001")
    for env in ({}, {"RTUN_SOCK": str(stale)}):
        result = run_rtun(["ping"], remote_home, **env)
        assert result.returncode == 3
        line = _stderr_line(result)
        assert str(stale) in line and "sessions that have ended" in line and "rtun ssh HOST" in line
        assert "rtun server -d" not in line
    line = _stderr_line(run_rtun(["ping"], short_tmp))  # no ~/.rtun at all
    assert "no rtun socket found" in line and "rtun ssh HOST" in line and "ended" not in line
