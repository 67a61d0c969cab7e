"""daemon/start.py through real `rtun server` processes: where the log goes and how it is made,
the descriptor limit the daemon raises, and what a detached start that fails tells the user.
(test_server.py covers the socket, -d's PID and the one-line errors of the foreground.)"""

from __future__ import annotations

import os
import re
import resource
import signal
import stat
import subprocess
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from support.rtun import RTUN, answers_ping, clean_env, run_rtun
from support.wait import wait_until

Start = Callable[..., subprocess.Popen]


@pytest.fixture
def server(local_home: Path) -> Iterator[Start]:
    """``server(args, preexec_fn=None)``: `rtun server ARGS` in the foreground; its stderr is
    a file (read with ``stderr_of``), so nothing blocks on a full pipe. Stopped afterwards."""
    started: List[subprocess.Popen] = []

    def start(args: List[str], preexec_fn: Optional[Callable[[], None]] = None) -> subprocess.Popen:
        with open(local_home / f"stderr.{len(started)}", "wb") as err:
            process = subprocess.Popen(
                RTUN + ["server"] + args,
                env=clean_env(local_home),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                preexec_fn=preexec_fn,
            )
        process.stderr_path = err.name  # type: ignore[attr-defined]
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)


def stderr_of(process: subprocess.Popen) -> str:
    return Path(process.stderr_path).read_text(errors="replace")  # type: ignore[attr-defined]


def _ready(process: subprocess.Popen, sock: Path) -> None:
    def up() -> bool:
        assert process.poll() is None, stderr_of(process)
        return answers_ping(sock)

    wait_until(up, timeout=15, what="rtun server to answer PING")


def test_a_log_file_is_made_private_in_a_private_directory_and_appended_to(
    server: Start, short_tmp: Path
) -> None:
    log = short_tmp / "logs" / "deeper" / "rtun.log"
    sock = short_tmp / "s.sock"
    process = server(["-s", str(sock), "-D", str(short_tmp / "dl"), "-l", str(log)])
    _ready(process, sock)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    first = log.read_text()
    # Every line: a time, rtun[PID], the level, the message.
    pattern = re.compile(rf"\d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d,\d{{3}} rtun\[{process.pid}\] (INFO|WARNING) .+")
    lines = first.splitlines()
    assert lines and all(pattern.fullmatch(line) for line in lines), first
    assert "listening on" in first and lines[-1].endswith("stopped")
    assert stderr_of(process) == ""  # everything went to the file

    again = server(["-s", str(sock), "-D", str(short_tmp / "dl"), "-l", str(log)])
    _ready(again, sock)
    again.send_signal(signal.SIGTERM)
    assert again.wait(timeout=15) == 0
    text = log.read_text()
    assert text.startswith(first) and f"rtun[{again.pid}]" in text[len(first) :]


def test_without_a_log_file_the_foreground_logs_to_stderr(
    server: Start, local_home: Path, short_tmp: Path
) -> None:
    sock = short_tmp / "s.sock"
    process = server(["-s", str(sock), "-D", str(short_tmp / "dl")])
    _ready(process, sock)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert f"rtun[{process.pid}] INFO" in stderr_of(process) and "listening on" in stderr_of(process)
    assert not (local_home / ".rtun" / "rtun.log").exists()


def _low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def _soft_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open files limit in /proc")


@pytest.mark.skipif(not os.path.exists("/proc/self/limits"), reason="reads /proc/PID/limits")
def test_a_low_descriptor_limit_is_raised(server: Start, short_tmp: Path) -> None:
    # macOS starts processes with 256; each connection holds a descriptor.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    sock = short_tmp / "s.sock"
    process = server(["-s", str(sock), "-D", str(short_tmp / "dl")], preexec_fn=_low_descriptor_limit)
    _ready(process, sock)
    assert _soft_limit(process.pid) == max(wanted, 256)


def test_a_detached_start_with_an_unusable_log_is_one_line_and_leaves_no_socket(
    local_home: Path, short_tmp: Path
) -> None:
    blocker = short_tmp / "a-file"
    blocker.write_text("x")
    sock = short_tmp / "s.sock"
    result = run_rtun(
        ["server", "-d", "-s", str(sock), "-D", str(short_tmp / "dl"), "-l", str(blocker / "rtun.log")],
        local_home,
        timeout=30,
    )
    assert result.returncode == 1 and result.stdout == b""
    lines = [line for line in result.stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1 and "log file" in lines[0], lines
    assert not os.path.lexists(sock)
