"""Shared control masters (rtun.session.shared): a second `rtun ssh` to a host rides on the
connection the first one holds. End to end with the real OpenSSH client and sshd; the key and
the linger setting as pure functions."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from typing import List, Optional

from rtun.session import shared, sshopts
from rtun.ssh import mux
from session.harness import RTUN_REMOTE, Laptop
from support.sshd import free_port
from support.wait import wait_until


def _logins(server) -> int:
    """Connections sshd has authenticated so far (its VERBOSE log's "Accepted publickey")."""
    return server.log.read_text(errors="replace").count("Accepted publickey")


def _masters(laptop: Laptop) -> List[Path]:
    directory = laptop.home / ".rtun" / shared.DIR_NAME
    return (
        [p for p in directory.iterdir() if not p.name.endswith((".lock", ".config"))]
        if directory.exists()
        else []
    )


def _master_pid(laptop: Laptop) -> Optional[int]:
    found = _masters(laptop)
    return mux.alive(str(found[0])) if len(found) == 1 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _held(laptop: Laptop, **env: str) -> "tuple[subprocess.Popen, str]":
    """`rtun ssh -N srv` held open: the process and its RTUN_SOCK."""
    process = laptop.popen(["ssh", "-N", "srv"], **env)
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    assert line.startswith("RTUN_SOCK="), process.stderr.read() if process.poll() is not None else line
    return process, line[len("RTUN_SOCK=") :]


def _end(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    process.stdout.close()
    process.stderr.close()


def test_a_second_login_rides_on_the_first_ones_connection(laptop, laptop_daemon, server):
    first, first_sock = _held(laptop)
    try:
        master = _master_pid(laptop)
        assert master is not None
        logins = _logins(server)
        result = laptop.rtun(["ssh", "-v", "srv", f'echo "$RTUN_SOCK"; {RTUN_REMOTE} pid'])
        assert result.returncode == 0, result.stderr
        sock, pid_line = result.stdout.decode().splitlines()
        assert sock != first_sock  # a forward of its own
        assert f"OK PID {laptop_daemon.process.pid}," in pid_line
        assert f"sharing the connection of the open master (PID {master})".encode() in result.stderr
        assert _logins(server) == logins  # no second TCP connection, key exchange or auth
        assert _master_pid(laptop) == master
        assert not os.path.lexists(sock) and os.path.lexists(first_sock)
    finally:
        _end(first)


def test_the_first_login_can_end_while_the_second_goes_on(laptop, laptop_daemon, server):
    first, first_sock = _held(laptop)
    second = subprocess.Popen(
        laptop.rtun_argv(["ssh", "srv", f'echo "$RTUN_SOCK"; read x; {RTUN_REMOTE} pid; echo "$x"']),
        env=laptop.env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert second.stdout is not None and second.stdin is not None
    try:
        sock = second.stdout.readline().decode().strip()
        assert sock.startswith("/"), second.stderr.read() if second.poll() is not None else sock
        logins = _logins(server)
        _end(first)  # the login that started the master logs out
        assert not os.path.lexists(first_sock)
        out, err = second.communicate(b"still here\n", timeout=60)
        assert second.returncode == 0, err
        pid_line, echoed = out.decode().splitlines()
        assert f"OK PID {laptop_daemon.process.pid}," in pid_line  # through its own forward
        assert echoed == "still here"
        assert not os.path.lexists(sock)
        assert _logins(server) == logins
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()


def test_the_master_ends_after_the_last_login_and_the_linger(laptop, laptop_daemon):
    result = laptop.rtun(["ssh", "srv", "true"], RTUN_SSH_LINGER="1")
    assert result.returncode == 0, result.stderr
    master = _master_pid(laptop)
    assert master is not None  # lingers after the login
    wait_until(lambda: not _alive(master), timeout=15, what="the master to end after its linger")
    assert _masters(laptop) == []  # ssh removed its socket


def test_a_dead_masters_socket_gives_way_to_a_fresh_master(laptop, laptop_daemon, server):
    assert laptop.rtun(["ssh", "srv", "true"]).returncode == 0
    old = _master_pid(laptop)
    assert old is not None
    (control,) = _masters(laptop)
    os.kill(old, signal.SIGKILL)  # no chance to remove its socket
    wait_until(lambda: not _alive(old), timeout=15, what="the master to die")
    assert control.exists()
    logins = _logins(server)
    result = laptop.rtun(["ssh", "srv", f"{RTUN_REMOTE} pid"])
    assert result.returncode == 0, result.stderr
    assert f"OK PID {laptop_daemon.process.pid},".encode() in result.stdout
    assert _logins(server) == logins + 1
    new = _master_pid(laptop)
    assert new is not None and new != old


def test_logins_with_forwards_of_their_own_or_sharing_off_get_a_private_master(laptop, laptop_daemon, server):
    for args, env in (
        (["-L", f"{free_port()}:127.0.0.1:9"], {}),
        (["-o", f"DynamicForward={free_port()}"], {}),
        ([], {"RTUN_SSH_LINGER": "0"}),
    ):
        result = laptop.rtun(["ssh", *args, "srv", "true"], **env)
        assert result.returncode == 0, result.stderr
        assert _masters(laptop) == []
    assert not any(p.name.startswith("ssh-") for p in (laptop.home / ".rtun").iterdir())  # removed


# ---- pure -------------------------------------------------------------------------------------


def test_the_key_is_the_command_line_the_options_and_the_destination():
    one = shared.key(["ssh"], ["-p", "22"], "srv")
    assert re.fullmatch(r"[0-9a-f]{32}", one)
    assert one == shared.key(["ssh"], ["-p", "22"], "srv")
    others = {
        shared.key(["ssh", "-F", "x"], ["-p", "22"], "srv"),
        shared.key(["ssh"], ["-p", "23"], "srv"),
        shared.key(["ssh"], ["-p", "22"], "srv2"),
        shared.key(["ssh"], ["-p"], "22 srv"),  # words are not run together
    }
    assert one not in others and len(others) == 4


def test_the_signature_is_the_config_and_the_directory_where_it_names_files_relative_to_it(
    tmp_path, monkeypatch
):
    """``-F cfg`` with ``IdentityFile key`` from two project directories: the same words, other
    files, perhaps other servers."""
    relative = "hostname srv\nidentityfile key\n"
    absolute = "hostname srv\nidentityfile /home/me/.ssh/key\n"
    assert shared.signature(absolute) != shared.signature(absolute.replace("srv", "other"))
    found = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        monkeypatch.chdir(tmp_path / name)
        found.append((shared.signature(relative), shared.signature(absolute)))
    assert found[0][0] != found[1][0]
    assert found[0][1] == found[1][1]


def test_forwards_from_ssh_config_make_a_login_unshareable():
    """ssh -G's lines: a forward from the config would outlive the login in a shared master."""
    for line in (
        "localforward [localhost]:8080 [localhost]:80",
        "remoteforward 9 h:9",
        "dynamicforward 1080",
        "tunnel point-to-point",
    ):
        assert shared.forwards_in(f"hostname srv\nuser me\n{line}\n"), line
    assert not shared.forwards_in("hostname srv\ntunnel false\nuser me\n")


def test_linger_reads_its_setting(monkeypatch):
    for value, expected in (("", shared.LINGER), ("3", 3), ("0", 0), ("-5", 0), ("x", shared.LINGER)):
        monkeypatch.setenv(shared.LINGER_ENV, value)
        assert shared.linger() == expected
    monkeypatch.setenv(shared.LINGER_ENV, "0")
    assert shared.control_path(["ssh"], [], "srv") is None


def test_a_directory_others_may_use_is_not_shared(monkeypatch, short_tmp):
    tmp_path = short_tmp
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(shared.LINGER_ENV, raising=False)
    path = shared.control_path(["ssh"], [], "srv")
    assert path is not None and os.path.dirname(path) == str(tmp_path / ".rtun" / "masters")
    os.chmod(tmp_path / ".rtun" / "masters", 0o770)
    assert shared.control_path(["ssh"], [], "srv") is None
    os.chmod(tmp_path / ".rtun" / "masters", 0o700)
    os.rename(tmp_path / ".rtun" / "masters", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", tmp_path / ".rtun" / "masters")
    assert shared.control_path(["ssh"], [], "srv") is None


def test_forwards_make_a_login_unshareable():
    def inv(*words: str) -> sshopts.Invocation:
        return sshopts.split("srv", list(words) + ["true"], [])

    assert inv("-p", "22", "-A", "-o", "User=me").shareable
    for words in (["-L", "1:h:2"], ["-R1:h:2"], ["-D", "0"], ["-w", "any"], ["-o", "LocalForward 1 h:2"]):
        assert not inv(*words).shareable, words
    assert not inv("-o", "remoteforward=/a:/b").shareable


def test_what_ssh_config_makes_of_a_login_decides_whom_it_shares_with(
    laptop, laptop_daemon, server, short_tmp, monkeypatch
):
    """The same words, ``-F cfg``, from two directories whose cfg files say different things:
    the second login does not join the first's connection (it would reach what the first's
    config says); from the first directory again, it does."""
    config = server.client_config.read_text()
    for name, extra in (("a", ""), ("b", "    ServerAliveCountMax 7\n")):
        (short_tmp / name).mkdir()
        (short_tmp / name / "cfg").write_text(config.rstrip("\n") + "\n" + extra)
    monkeypatch.chdir(short_tmp / "a")
    first, _ = _held(laptop, RTUN_SSH_COMMAND="ssh -F cfg")
    try:
        logins = _logins(server)
        monkeypatch.chdir(short_tmp / "b")
        assert laptop.rtun(["ssh", "srv", "true"], RTUN_SSH_COMMAND="ssh -F cfg").returncode == 0
        assert _logins(server) == logins + 1  # a connection of its own
        monkeypatch.chdir(short_tmp / "a")
        assert laptop.rtun(["ssh", "srv", "true"], RTUN_SSH_COMMAND="ssh -F cfg").returncode == 0
        assert _logins(server) == logins + 1  # shared
    finally:
        _end(first)


def test_a_forward_from_ssh_config_ends_with_the_login(laptop, laptop_daemon, server):
    """A LocalForward that ssh_config (here: the ssh command line rtun is given) adds makes the
    login's master private: the port closes when the login ends, nothing lingers."""
    import socket

    port = free_port()
    command = f"{server.ssh_command_line} -o 'LocalForward={port} 127.0.0.1:9'"
    result = laptop.rtun(["ssh", "srv", "true"], RTUN_SSH_COMMAND=command)
    assert result.returncode == 0, result.stderr
    assert _masters(laptop) == []
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # no one listens there any more
