"""`rtun ssh` end to end: the real command, the real OpenSSH client and a real sshd."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from rtun.session import remote
from session.harness import RTUN_REMOTE, Laptop, sockets, sweeps_running
from support.rtun import run_rtun
from support.wait import wait_until

DAY = 86400


def _lines(result: subprocess.CompletedProcess) -> list:
    return result.stdout.decode().splitlines()


def _daemon_pid(text: str) -> int:
    found = re.search(r"OK PID (\d+),", text)
    assert found, text
    return int(found.group(1))


def test_a_command_runs_with_rtun_sock_set_and_reaches_this_laptops_daemon(
    laptop, laptop_daemon, server_home
):
    result = laptop.rtun(["ssh", "srv", f'echo "$RTUN_SOCK"; {RTUN_REMOTE} pid'])
    assert result.returncode == 0, result.stderr
    sock, pid_line = _lines(result)
    tag = remote.host_tag(socket.gethostname())
    assert re.fullmatch(rf"{server_home}/\.rtun/rtun\.sock\.{laptop.laptop_id}\.{tag}\.[0-9a-f]{{8}}", sock)
    assert _daemon_pid(pid_line) == laptop_daemon.process.pid
    assert not os.path.lexists(sock)  # removed when the session ended
    assert (server_home / ".rtun").stat().st_mode & 0o777 == 0o700  # made, private
    assert b"Traceback" not in result.stderr


def test_exit_codes_output_and_command_words_are_those_of_plain_ssh(laptop, laptop_daemon, server):
    for words in (["echo", "a", "  b", "$HOME"], ["exit 7"], ["echo out; echo err >&2; exit 3"]):
        plain = subprocess.run(server.ssh_command + ["srv"] + words, capture_output=True, timeout=60)
        ours = laptop.rtun(["ssh", "srv"] + words)
        assert (ours.returncode, ours.stdout) == (plain.returncode, plain.stdout), ours.stderr
        assert plain.stderr in ours.stderr
    assert ours.returncode == 3


def test_rtun_dir_is_made_private_and_ssh_options_after_the_host_pass_through(
    laptop, laptop_daemon, server, server_home
):
    (server_home / ".rtun").mkdir(mode=0o755)
    os.chmod(server_home / ".rtun", 0o755)
    result = laptop.rtun(
        [
            "ssh",
            "srv",
            "-l",
            server.user,
            "-o",
            "LogLevel=QUIET",
            "-T",
            "--",
            "tty",
            "-s",
            "||",
            "echo",
            "no-tty",
        ]
    )
    assert result.returncode == 0, result.stderr
    assert _lines(result) == ["no-tty"]
    assert (server_home / ".rtun").stat().st_mode & 0o777 == 0o700


def _config(laptop: Laptop, server, text: str) -> Path:
    """The server's ssh_config plus ``text``, as RTUN_SSH_COMMAND for the laptop."""
    path = laptop.home / "ssh_config"
    path.write_text(server.client_config.read_text() + text)
    laptop.extra_env["RTUN_SSH_COMMAND"] = f"ssh -F {path}"
    return path


def _host(server, name: str, *lines: str) -> str:
    return "\n".join(
        [
            f"Host {name}",
            "    HostName 127.0.0.1",
            f"    Port {server.port}",
            f"    User {server.user}",
            f"    IdentityFile {server.keys.user_key}",
            f"    UserKnownHostsFile {server.known_hosts}",
            "    BatchMode yes",
            "    LogLevel ERROR",
            *[f"    {line}" for line in lines],
            "",
        ]
    )


def test_proxyjump_from_ssh_config_works(laptop, laptop_daemon, server):
    _config(laptop, server, _host(server, "jumped", "ProxyJump srv"))
    result = laptop.rtun(["ssh", "jumped", f"{RTUN_REMOTE} pid"])
    assert result.returncode == 0, result.stderr
    assert _daemon_pid(result.stdout.decode()) == laptop_daemon.process.pid
    assert server.log.read_text().count("Accepted publickey") == 2  # the jump, then the login through it


def test_a_users_own_control_master_keeps_working_and_keeps_no_forward_of_ours(
    laptop, laptop_daemon, server, short_tmp
):
    config = _config(
        laptop,
        server,
        _host(server, "cm", "ControlMaster auto", f"ControlPath {short_tmp}/cm-%C", "ControlPersist 60"),
    )
    theirs = subprocess.run(["ssh", "-F", str(config), "-fN", "cm"], timeout=60, capture_output=True)
    assert theirs.returncode == 0, theirs.stderr
    try:
        for _ in range(2):
            result = laptop.rtun(["ssh", "cm", f'{RTUN_REMOTE} pid; echo "$RTUN_SOCK"'])
            assert result.returncode == 0, result.stderr
            pid_line, sock = _lines(result)
            assert _daemon_pid(pid_line) == laptop_daemon.process.pid and not os.path.lexists(sock)
        check = subprocess.run(
            ["ssh", "-F", str(config), "-O", "check", "cm"], capture_output=True, timeout=30
        )
        assert check.returncode == 0, check.stderr  # their master is still there
        plain = subprocess.run(
            ["ssh", "-F", str(config), "cm", "echo", "$RTUN_SOCK."], capture_output=True, timeout=30
        )
        assert plain.stdout == b".\n"  # their sessions get nothing of ours
    finally:
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", "cm"], capture_output=True, timeout=30)


def test_remote_command_from_ssh_config_runs_when_no_command_is_given(laptop, laptop_daemon, server):
    _config(laptop, server, _host(server, "rc", 'RemoteCommand echo "from config: $RTUN_SOCK"'))
    result = laptop.rtun(["ssh", "rc"])
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"from config: /\S+/\.rtun/rtun\.sock\.\S+", result.stdout.decode().strip())
    given = laptop.rtun(["ssh", "rc", "echo", "given"])  # plain ssh refuses this one
    assert (given.returncode, given.stdout) == (0, b"given\n"), given.stderr


def test_a_login_session_without_a_terminal_reads_its_commands_from_stdin(laptop, laptop_daemon):
    result = laptop.rtun(
        ["ssh", "srv"], input=f'echo "sock=$RTUN_SOCK"\n{RTUN_REMOTE} ping\nexit 3\n'.encode()
    )
    assert result.returncode == 3, result.stderr
    out = _lines(result)
    assert out[0].startswith("sock=/") and out[-1] == "OK PONG"


def test_the_daemon_is_started_once_when_two_logins_start_at_once(laptop):
    first = laptop.popen(["ssh", "srv", f"{RTUN_REMOTE} ping"])
    second = laptop.popen(["ssh", "srv", f"{RTUN_REMOTE} ping"])
    results = [p.communicate(timeout=60) + (p.returncode,) for p in (first, second)]
    for out, err, code in results:
        assert (code, out) == (0, b"OK PONG\n"), err
    started = laptop.started_daemons()
    assert len(started) == 1, started
    said = [err.decode() for _, err, _ in results if b"started the rtun daemon" in err]
    assert len(said) == 1 and f"PID {started[0]}" in said[0]
    again = laptop.rtun(["ssh", "srv", "true"])
    assert again.returncode == 0 and b"started" not in again.stderr


def test_failures_are_one_line_with_the_documented_exit_codes(laptop, laptop_daemon, short_tmp):
    missing = laptop.rtun(["ssh", "srv", "true"], RTUN_SSH_COMMAND=str(short_tmp / "no-ssh"))
    assert missing.returncode == 127 and missing.stderr.decode().count("\n") == 1, missing.stderr
    assert missing.stderr.startswith(b"rtun ssh: ")
    nohost = laptop.rtun(["ssh", "no-such-host.invalid", "true"])
    assert nohost.returncode == 255
    assert (
        nohost.stderr.decode().splitlines()[-1].startswith("rtun ssh: cannot log in to no-such-host.invalid")
    )
    refused = laptop.rtun(["ssh", "-f", "srv", "true"])
    assert refused.returncode == 2 and b"plain ssh" in refused.stderr


def _dead_socket(path: Path, age: float) -> Path:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    os.utime(path, (time.time() - age,) * 2)
    return path


def test_sockets_left_by_sessions_that_ended_long_ago_are_swept_by_the_next_login(
    laptop, laptop_daemon, server_home
):
    directory = server_home / ".rtun"
    directory.mkdir(mode=0o700)
    tag = remote.host_tag(socket.gethostname())
    old = _dead_socket(directory / f"rtun.sock.{'a' * 12}.{tag}.00000001", 2 * DAY)
    kept = [
        _dead_socket(directory / f"rtun.sock.{'a' * 12}.{tag}.00000002", DAY / 2),  # young
        _dead_socket(directory / f"rtun.sock.{'a' * 12}.othernode.00000003", 2 * DAY),
    ]  # NFS neighbour
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live_path = directory / f"rtun.sock.{'b' * 12}.{tag}.00000004"
    live.bind(str(live_path))
    live.listen(8)
    os.utime(live_path, (time.time() - 2 * DAY,) * 2)
    kept.append(live_path)
    try:
        result = laptop.rtun(["ssh", "srv", "true"])
        assert result.returncode == 0, result.stderr
        wait_until(lambda: not old.exists(), timeout=20, what="the sweep to remove the old socket")
        wait_until(lambda: not sweeps_running(server_home), timeout=20, what="the sweep to end")
    finally:
        live.close()
    for path in kept:
        assert os.path.lexists(path), path


def test_forward_only_keeps_the_socket_until_interrupted_then_removes_it(laptop, laptop_daemon, server_home):
    process = laptop.popen(["ssh", "-N", "srv"])
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    assert line.startswith("RTUN_SOCK="), process.stderr.read() if process.poll() is not None else line
    sock = line[len("RTUN_SOCK=") :]
    ping = run_rtun(["ping", "-s", sock], server_home)
    assert ping.stdout == b"OK PONG\n", ping.stderr
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 130
    wait_until(lambda: not os.path.lexists(sock), timeout=30, what="the control session to remove it")
    assert sockets(server_home) == []


def test_a_login_on_a_terminal_gets_a_terminal_on_the_server_and_its_exit_code(laptop, laptop_daemon):
    import pty
    import select

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        laptop.rtun_argv(["ssh", "srv"]),
        env=laptop.env(TERM="dumb"),
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    os.write(controller, b'echo "sock=$RTUN_SOCK tty=$(tty)"; exit 4\n')
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed: the login ended
                break
            if not chunk:
                break
            seen += chunk
    os.close(controller)
    assert process.wait(timeout=30) == 4, seen
    found = re.search(rb"sock=(/\S+/\.rtun/rtun\.sock\.\S+) tty=(/dev/\S+)", seen)
    assert found, seen
    assert not os.path.lexists(found.group(1).decode())


def test_within_an_rtun_session_a_further_login_leads_on_to_the_same_daemon(
    short_tmp, server, laptops, laptop_daemon
):
    hop = Laptop(short_tmp / "first-server", server)  # no daemon here, but a forward to one
    laptops.append(hop)
    result = hop.rtun(["ssh", "srv", f"{RTUN_REMOTE} pid"], RTUN_SOCK=str(laptop_daemon.socket))
    assert result.returncode == 0, result.stderr
    assert _daemon_pid(result.stdout.decode()) == laptop_daemon.process.pid
    assert hop.started_daemons() == [] and not (hop.home / ".rtun" / "rtun.sock").exists()
