"""What runs on the server, run here by the real shells and Python: the control session's
script, the sweep of stale sockets, and the line that sets RTUN_SOCK in a session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rtun.session import remote

SHELLS = [
    s
    for s in (
        "/bin/sh",
        shutil.which("bash"),
        shutil.which("dash"),
        shutil.which("zsh"),
        shutil.which("ksh"),
        shutil.which("fish"),
        shutil.which("tcsh"),
    )
    if s
]
DAY = 86400


def _dead(path: Path, age: float = 0) -> Path:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    if age:
        when = time.time() - age
        os.utime(path, (when, when))
    return path


@pytest.mark.parametrize("shell", SHELLS)
def test_the_session_line_sets_rtun_sock_and_path_and_keeps_the_command_and_its_exit_code(shell, tmp_path):
    sock = str(tmp_path / "it's a socket")
    line = remote.session_command(shell, sock, "/extra/bin", 'echo "$RTUN_SOCK"; echo "$PATH"; exit 7')
    done = subprocess.run(
        [shell, "-c", line],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", "SHELL": shell, "HOME": str(tmp_path)},
    )
    assert done.returncode == 7, done.stderr
    out = done.stdout.splitlines()
    assert out == [sock, "/usr/bin:/bin:/extra/bin"]


@pytest.mark.parametrize("shell", SHELLS)
def test_a_session_that_requires_its_socket_runs_nothing_without_it(shell, short_tmp):
    sock = short_tmp / "it's a socket"
    line = remote.session_command(shell, str(sock), None, "echo ran; exit 7", require_socket=True)

    def run() -> subprocess.CompletedProcess:
        env = {"PATH": "/usr/bin:/bin", "SHELL": shell, "HOME": str(short_tmp)}
        return subprocess.run([shell, "-c", line], capture_output=True, text=True, timeout=30, env=env)

    missing = run()
    assert (missing.returncode, missing.stdout, missing.stderr) == (255, "", "")
    _dead(sock)
    there = run()
    assert (there.returncode, there.stdout) == (7, "ran\n"), there.stderr


def test_the_control_command_reads_the_same_in_every_shell(tmp_path):
    for shell in SHELLS:
        done = subprocess.run(
            [shell, "-c", remote.CONTROL_COMMAND], input=b"echo one two\n", capture_output=True, timeout=30
        )
        assert done.stdout == b"one two\n", (shell, done.stderr)


def _control(home: Path, later: bytes = b"") -> "subprocess.Popen[bytes]":
    process = subprocess.Popen(
        ["/bin/sh", "-c", remote.CONTROL_COMMAND],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={"HOME": str(home), "PATH": "/nowhere", "SHELL": "/bin/bash"},
    )
    assert process.stdin is not None
    process.stdin.write(remote.control_input() + later)
    process.stdin.flush()
    return process


def test_the_control_session_makes_rtun_private_reports_home_and_removes_the_socket_at_the_end(short_tmp):
    home = short_tmp / "home"
    home.mkdir()
    (home / ".rtun").mkdir(mode=0o755)
    os.chmod(home / ".rtun", 0o755)
    sock = _dead(home / ".rtun" / "rtun.sock.0123456789ab.host.00000000")
    process = _control(home, str(sock).encode() + b"\n")  # PATH without coreutils: it adds its own
    assert process.stdout is not None and process.stdin is not None
    report = remote.parse_prelude(process.stdout.readline().decode())
    assert report is not None
    assert report["home"] == str(home) and report["fixed"] == "1" and report["error"] == ""
    assert report["host"] == socket.gethostname()
    assert (home / ".rtun").stat().st_mode & 0o777 == 0o700
    assert sock.exists()  # until rtun closes the pipe
    process.stdin.close()
    assert process.wait(timeout=30) == 0, process.stderr.read() if process.stderr else ""
    assert not sock.exists()


def test_the_control_session_reports_a_home_it_cannot_use(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".rtun").write_text("a file, not a directory")
    process = _control(home)
    assert process.stdout is not None and process.stdin is not None
    report = remote.parse_prelude(process.stdout.readline().decode())
    process.stdin.close()
    process.wait(timeout=30)
    assert report is not None and report["error"] == "mkdir"


def test_the_sweep_removes_only_old_refusing_sockets_of_this_host(short_tmp):
    directory = short_tmp / ".rtun"
    directory.mkdir()
    tag = remote.host_tag(socket.gethostname())
    old_dead = _dead(directory / f"rtun.sock.0123456789ab.{tag}.00000001", age=2 * DAY)
    young_dead = _dead(directory / f"rtun.sock.0123456789ab.{tag}.00000002", age=DAY / 2)
    other_node = _dead(directory / "rtun.sock.0123456789ab.othernode.00000003", age=2 * DAY)
    legacy = _dead(directory / "rtun.sock.1700000000", age=2 * DAY)
    not_a_socket = directory / f"rtun.sock.0123456789ab.{tag}.00000004"
    not_a_socket.write_text("x")
    os.utime(not_a_socket, (time.time() - 2 * DAY,) * 2)
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live_path = directory / f"rtun.sock.0123456789ab.{tag}.00000005"
    live.bind(str(live_path))
    live.listen(1)
    os.utime(live_path, (time.time() - 2 * DAY,) * 2)
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", remote.sweep_line()],
            capture_output=True,
            timeout=30,
            env={"HOME": str(short_tmp), "PATH": os.environ["PATH"]},
        )
    finally:
        live.close()
    assert done.returncode == 0, done.stderr
    assert not old_dead.exists()
    for kept in (young_dead, other_node, legacy, not_a_socket, live_path):
        assert os.path.lexists(kept), kept


def test_host_tags_and_socket_names_fit_every_server():
    assert remote.host_tag("node-7.cluster.example.org") == "node-7"
    assert remote.host_tag("we!rd_name") == "we-rd-name"
    assert remote.host_tag("...") == "host"
    path = remote.session_socket(
        "/home/" + "u" * 30, "0123456789ab", "a-very-long-host-name-indeed", "cafe0123"
    )
    assert len(path) < remote.REMOTE_SUN_PATH and path.endswith(".cafe0123")
    with pytest.raises(ValueError, match="too long"):
        remote.session_socket("/" + "h" * 90, "0123456789ab", "host", "cafe0123")
