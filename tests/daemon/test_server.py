"""`rtun server` end to end: real daemon processes, real sockets, the real client through ssh -R."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

from support.raw import RawClient
from support.rtun import RTUN, RtunDaemon, answers_ping, clean_env, run_rtun, write_config
from support.sshd import Forward
from support.wait import wait_until


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _one_line(stderr: bytes) -> str:
    text = stderr.decode()
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def _parts(directory: Path):
    return sorted(directory.rglob(".rtun-*.part")) if directory.exists() else []


def _wait_part(directory: Path, size: int) -> Path:
    def found():
        for p in _parts(directory):
            try:
                if p.stat().st_size >= size:
                    return p
            except OSError:
                pass
        return None

    return wait_until(found, timeout=10, what=f"{size} bytes of a partial upload in {directory}")


def _dead_socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


def _start_upload(path: Path, name: str, data: bytes, first: int) -> RawClient:
    """A raw v1 SEND that has sent ``first`` bytes of ``data`` and holds the rest."""
    raw = RawClient(path)
    assert raw.request(b"PING\r\n") == b"OK PONG\r\n"
    assert raw.request(b"SEND %d %s\r\n" % (len(data), name.encode())) == b"READY\r\n"
    raw.send(data[:first])
    return raw


def _finish_upload(raw: RawClient, data: bytes, first: int) -> bytes:
    raw.send(data[first:] + hashlib.sha256(data).hexdigest().encode() + b"\r\n")
    return raw.line()


# ---- one daemon per socket -------------------------------------------------------------------


def test_second_server_on_live_socket_exits_1_and_leaves_first_working(
    forward, daemon, remote_home, spawn, save_dir
):
    second = spawn(["-s", str(daemon.socket), "-D", str(save_dir)])
    assert second.wait(timeout=15) == 1
    line = _one_line(second.stderr.read())
    assert "already in use" in line and str(daemon.socket) in line
    assert daemon.alive()
    assert daemon.socket.is_socket()
    result = run_rtun(["ping"], remote_home)
    assert result.returncode == 0 and result.stdout == b"OK PONG\n", result.stderr


def test_stale_socket_file_is_replaced(local_home, save_dir):
    sock_path = local_home / ".rtun" / "rtun.sock"
    sock_path.parent.mkdir(mode=0o700)
    _dead_socket(sock_path)
    stale_inode = sock_path.stat().st_ino
    running = RtunDaemon(local_home, save_dir).start()
    try:
        assert answers_ping(sock_path)
        assert sock_path.stat().st_ino != stale_inode
        assert "replacing stale socket" in running.log_text()
    finally:
        assert running.stop() == 0


def test_regular_file_at_the_socket_path_is_not_replaced(local_home, spawn, save_dir):
    sock_path = local_home / ".rtun" / "rtun.sock"
    sock_path.parent.mkdir(mode=0o700)
    sock_path.write_text("precious\n")
    process = spawn(["-s", str(sock_path), "-D", str(save_dir)])
    assert process.wait(timeout=15) == 1
    assert "not a socket" in _one_line(process.stderr.read())
    assert sock_path.read_text() == "precious\n"


def test_rtun_dir_is_created_0700_and_socket_is_0600(local_home, save_dir):
    rtun_dir = local_home / ".rtun"
    assert not rtun_dir.exists()
    running = RtunDaemon(local_home, save_dir).start()
    try:
        assert stat.S_IMODE(rtun_dir.stat().st_mode) == 0o700
        st = os.lstat(running.socket)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        # No temporary socket left beside it; the status file (0600) is the only other.
        names = sorted(p.name for p in rtun_dir.iterdir())
        assert names[0] == "rtun.sock" and len(names) == 2 and names[1].startswith("server.")
        assert stat.S_IMODE((rtun_dir / names[1]).stat().st_mode) == 0o600
    finally:
        running.stop()


def test_refuses_to_start_when_socket_directory_is_group_or_other_writable(short_tmp, spawn, save_dir):
    for mode in (0o770, 0o707, 0o1777):
        directory = short_tmp / f"d{mode:o}"
        directory.mkdir()
        directory.chmod(mode)
        sock_path = directory / "rtun.sock"
        process = spawn(["-s", str(sock_path), "-D", str(save_dir)])
        assert process.wait(timeout=15) == 1
        line = _one_line(process.stderr.read())
        assert "writable by other users" in line and str(directory) in line
        assert not sock_path.exists()


# ---- -d ----------------------------------------------------------------------------------------


def test_daemon_mode_prints_pid_returns_once_ping_works_and_logs_to_rtun_log(local_home, save_dir, detached):
    write_config(local_home, "[server]\ndiagnostics = true\n")
    result = run_rtun(["server", "-d", "-D", str(save_dir)], local_home, timeout=30)
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout.decode().strip())
    detached.append(pid)
    sock_path = local_home / ".rtun" / "rtun.sock"
    # No wait: the socket answers the moment the command returns.
    assert answers_ping(sock_path)
    with RawClient(sock_path) as raw:
        reply = raw.request(b"PID\r\n")
    assert reply == f"OK PID {pid}, saveDir {save_dir}\r\n".encode()
    assert _pid_alive(pid)
    log = local_home / ".rtun" / "rtun.log"
    wait_until(lambda: "listening on" in log.read_text(), timeout=5, what="the log line")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600

    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not _pid_alive(pid), timeout=15, what="the detached daemon to exit")
    assert not os.path.lexists(sock_path)
    assert "stopped" in log.read_text()


def test_daemon_mode_keeps_the_mode_bits_of_sent_files(sshd, local_home, remote_home, save_dir, detached):
    # A detached daemon runs with umask 077: modes must come from the sender all the same.
    result = run_rtun(["server", "-d", "-D", str(save_dir)], local_home, timeout=30)
    assert result.returncode == 0, result.stderr
    detached.append(int(result.stdout.decode().strip()))
    sources = remote_home / "modes"
    sources.mkdir()
    modes = {"rw-r--r--.txt": 0o644, "rwxr-xr-x.sh": 0o755, "rw-r-----.txt": 0o640}
    for name, mode in modes.items():
        (sources / name).write_text(name)
        (sources / name).chmod(mode)
    forward = Forward(sshd, remote_home / ".rtun" / "rtun.sock", local_home / ".rtun" / "rtun.sock").wait_up()
    try:
        sent = run_rtun(["send", "-q", str(sources)], remote_home)
    finally:
        forward.close()
    assert sent.returncode == 0, sent.stderr
    for name, mode in modes.items():
        assert stat.S_IMODE((save_dir / "modes" / name).stat().st_mode) == mode, name


def test_daemon_mode_on_a_live_socket_fails_in_the_foreground(daemon, local_home, save_dir):
    result = run_rtun(["server", "-d", "-s", str(daemon.socket), "-D", str(save_dir)], local_home)
    assert result.returncode == 1
    assert "already in use" in _one_line(result.stderr)
    assert result.stdout == b""
    assert answers_ping(daemon.socket)


def test_daemon_mode_keeps_a_relative_save_dir_relative_to_where_it_was_started(local_home, detached):
    # run_rtun has no cwd argument: the same command, started in local_home.
    write_config(local_home, "[server]\ndiagnostics = true\n")
    result = subprocess.run(
        RTUN + ["server", "-d", "-D", "rel-downloads"],
        env=clean_env(local_home),
        cwd=str(local_home),
        capture_output=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    pid = int(result.stdout.decode().strip())
    detached.append(pid)
    with RawClient(local_home / ".rtun" / "rtun.sock") as raw:
        reply = raw.request(b"PID\r\n")
    assert reply == f"OK PID {pid}, saveDir {local_home / 'rel-downloads'}\r\n".encode()


# ---- SIGTERM ---------------------------------------------------------------------------------


def test_sigterm_removes_the_socket_and_exits_0(daemon):
    assert daemon.socket.is_socket()
    assert daemon.stop(signal.SIGTERM) == 0
    assert not os.path.lexists(daemon.socket)


def test_sigint_also_stops_cleanly(daemon):
    assert daemon.stop(signal.SIGINT) == 0
    assert not os.path.lexists(daemon.socket)


def test_sigterm_keeps_a_socket_another_daemon_has_since_replaced(local_home, short_tmp):
    first = RtunDaemon(local_home, local_home / "Downloads").start()
    moved = short_tmp / "first.sock"
    os.rename(first.socket, moved)  # first no longer answers on the path
    second = RtunDaemon(short_tmp / "second", short_tmp / "dl2", socket_path=first.socket).start()
    try:
        second_inode = first.socket.stat().st_ino
        assert first.stop(signal.SIGTERM) == 0
        assert first.socket.is_socket()
        assert first.socket.stat().st_ino == second_inode
        assert answers_ping(first.socket)
    finally:
        assert second.stop() == 0
    assert not os.path.lexists(second.socket)


def test_sigterm_lets_a_transfer_in_flight_finish(daemon, save_dir):
    data = os.urandom(300_000)
    raw = _start_upload(
        daemon.socket, "inflight.bin", data, 102_400
    )  # whole blocks: what the daemon writes before the rest comes
    try:
        _wait_part(save_dir, 102_400)
        daemon.process.send_signal(signal.SIGTERM)
        # The daemon stops accepting at once, but keeps serving the upload.
        wait_until(lambda: not answers_ping(daemon.socket), timeout=10, what="accepting to stop")
        assert daemon.alive()
        assert _finish_upload(raw, data, 102_400) == b"OK\r\n"
    finally:
        raw.close()
    assert daemon.process.wait(timeout=15) == 0
    assert (save_dir / "inflight.bin").read_bytes() == data
    assert _parts(save_dir) == []
    assert not os.path.lexists(daemon.socket)


def test_sigterm_gives_a_stalled_transfer_only_the_grace_period(local_home, short_tmp):
    config = local_home / ".config" / "rtun" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[server]\nshutdown_grace = 0.5\n")
    save = short_tmp / "dl"
    running = RtunDaemon(local_home, save).start()
    raw = _start_upload(running.socket, "stalled.bin", b"s" * 10_000, 4_096)
    try:
        _wait_part(save, 4_096)
        start = time.monotonic()
        assert running.stop(signal.SIGTERM, timeout=15) == 0
        assert time.monotonic() - start < 5
    finally:
        raw.close()
    assert not (save / "stalled.bin").exists()
    assert _parts(save) == []
    assert not os.path.lexists(running.socket)


def test_sigterm_closes_idle_connections_at_once(daemon):
    with RawClient(daemon.socket) as idle:
        assert idle.request(b"PING\r\n") == b"OK PONG\r\n"
        start = time.monotonic()
        assert daemon.stop(signal.SIGTERM, timeout=10) == 0
        assert time.monotonic() - start < 5
        assert idle.at_eof()


# ---- concurrency -----------------------------------------------------------------------------


def test_slow_upload_does_not_delay_a_ping_from_another_client(forward, daemon, remote_home, save_dir):
    data = os.urandom(200_000)
    raw = _start_upload(daemon.socket, "slow.bin", data, 49_152)
    try:
        _wait_part(save_dir, 49_152)
        for _ in range(3):
            start = time.monotonic()
            assert answers_ping(daemon.socket)
            assert time.monotonic() - start < 0.5
        result = run_rtun(["ping"], remote_home, timeout=10)
        assert result.returncode == 0 and result.stdout == b"OK PONG\n", result.stderr
        with RawClient(daemon.socket) as other:
            assert other.request(b"ECHO still here\r\n") == b"OK still here\r\n"
        assert _finish_upload(raw, data, 49_152) == b"OK\r\n"
    finally:
        raw.close()
    assert (save_dir / "slow.bin").read_bytes() == data


# ---- config file -----------------------------------------------------------------------------


def test_config_file_is_read(local_home, short_tmp, spawn):
    sock_path = short_tmp / "cfg.sock"
    config_save = short_tmp / "from-config"
    write_config(
        local_home, f'[server]\nsocket = "{sock_path}"\nsave_dir = "{config_save}"\ndiagnostics = true\n'
    )
    spawn([])
    wait_until(lambda: answers_ping(sock_path), timeout=15, what="the daemon on the configured socket")
    with RawClient(sock_path) as raw:
        reply = raw.request(b"PID\r\n")
    assert reply.endswith(f", saveDir {config_save}\r\n".encode())


def test_flags_override_the_config_file(local_home, short_tmp, spawn):
    write_config(
        local_home,
        f'[server]\nsocket = "{short_tmp / "cfg.sock"}"\nsave_dir = "{short_tmp / "cfg-dl"}"\ndiagnostics = true\n',
    )
    sock_path = short_tmp / "flag.sock"
    flag_save = short_tmp / "flag-dl"
    spawn(["-s", str(sock_path), "-D", str(flag_save)])
    wait_until(lambda: answers_ping(sock_path), timeout=15, what="the daemon on the flag's socket")
    assert not (short_tmp / "cfg.sock").exists()
    with RawClient(sock_path) as raw:
        reply = raw.request(b"PID\r\n")
    assert reply.endswith(f", saveDir {flag_save}\r\n".encode())


def test_config_flag_names_another_file(local_home, short_tmp, spawn):
    sock_path = short_tmp / "other.sock"
    config = short_tmp / "elsewhere.toml"
    config.write_text(f'[server]\nsocket = "{sock_path}"\n')
    spawn(["--config", str(config), "-D", str(short_tmp / "dl")])
    wait_until(lambda: answers_ping(sock_path), timeout=15, what="the daemon on the configured socket")


def test_config_idle_timeout_is_applied(local_home, short_tmp, spawn):
    sock_path = short_tmp / "idle.sock"
    write_config(local_home, "[server]\nidle_timeout = 0.5\n")
    spawn(["-s", str(sock_path), "-D", str(short_tmp / "dl")])
    wait_until(lambda: answers_ping(sock_path), timeout=15, what="the daemon")
    with RawClient(sock_path) as raw:
        assert raw.request(b"PING\r\n") == b"OK PONG\r\n"
        wait_until(raw.at_eof, timeout=5, what="the idle connection to be closed")


def test_bad_config_key_is_a_one_line_error(local_home, spawn, save_dir):
    path = write_config(local_home, '[server]\nsokcet = "/tmp/x.sock"\n')
    process = spawn(["-D", str(save_dir)])
    assert process.wait(timeout=15) == 1
    line = _one_line(process.stderr.read())
    assert "server.sokcet" in line and "unknown setting" in line and str(path) in line


def test_bad_config_value_and_syntax_are_one_line_errors(local_home, spawn, save_dir):
    write_config(local_home, '[server]\nidle_timeout = "soon"\n')
    process = spawn(["-D", str(save_dir)])
    assert process.wait(timeout=15) == 1
    assert "server.idle_timeout" in _one_line(process.stderr.read())

    write_config(local_home, "[server\nsocket = \n")
    process = spawn(["-D", str(save_dir)])
    assert process.wait(timeout=15) == 1
    assert "config" in _one_line(process.stderr.read())


def test_unusable_save_dir_or_log_is_a_one_line_error(local_home, short_tmp, spawn):
    blocker = short_tmp / "a-file"
    blocker.write_text("x")
    process = spawn(["-s", str(short_tmp / "s1.sock"), "-D", str(blocker / "sub")])
    assert process.wait(timeout=15) == 1
    assert "save directory" in _one_line(process.stderr.read())

    process = spawn(
        ["-s", str(short_tmp / "s2.sock"), "-D", str(short_tmp / "dl"), "-l", str(blocker / "rtun.log")]
    )
    assert process.wait(timeout=15) == 1
    assert "log file" in _one_line(process.stderr.read())
    assert not (short_tmp / "s2.sock").exists()
