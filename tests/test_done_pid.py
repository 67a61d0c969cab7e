"""`rtun done --pid`: processes rtun did not start are watched to their end, and each end is
notified through a real ssh -R forward to the daemon and a recording notification service on a
private session bus (as in tests/test_done.py)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

from rtun.commands.done import message
from support.rtun import RTUN, RtunDaemon, clean_env, run_rtun
from support.terminal import in_a_terminal
from support.wait import wait_until

HOST = socket.gethostname()
HELD = 0.5  # how long each process runs while watched, where a test measures it


@pytest.fixture
def daemon(notifying_daemon: RtunDaemon) -> RtunDaemon:
    return notifying_daemon  # overrides tests/conftest.py's: notifications on the test's bus


def _watch(pids: List[int], home: Path, *options: str) -> subprocess.Popen:
    argv = RTUN + ["done"] + [a for pid in pids for a in ("--pid", str(pid))] + list(options)
    rtun = subprocess.Popen(
        argv, env=clean_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _until_watching(rtun, len(pids))
    return rtun


def _until_watching(rtun: subprocess.Popen, count: int) -> None:
    """Until ``rtun`` holds a pidfd for each process: from then on it cannot miss their ends."""

    def pidfds() -> bool:
        held = 0
        for fd in Path(f"/proc/{rtun.pid}/fd").iterdir():
            try:
                held += "pidfd" in os.readlink(fd)  # anon_inode:[pidfd], or pidfd:[N] since Linux 6.9
            except OSError:
                pass
        assert rtun.poll() is None, rtun.communicate()
        return held >= count

    wait_until(pidfds, what="rtun to watch the processes")


def _held(argv: List[str]) -> subprocess.Popen:
    """The test's child, not rtun's, ended by a line on its stdin; never reaped until the test
    waits for it, so it stays a zombie whose status can be read."""
    return subprocess.Popen(["sh", "-c", "read line; " + " ".join(argv)], stdin=subprocess.PIPE)


def _end(process: subprocess.Popen) -> None:
    assert process.stdin is not None
    process.stdin.write(b"go\n")
    process.stdin.close()


def _watched_for(body: str) -> float:
    found = re.search(r", watched for (\d+\.\d) s", body)
    assert found, body
    return float(found.group(1))


def test_a_process_rtun_did_not_start_is_notified_with_its_status_and_time_watched(
    forward, remote_home, notifications
):
    job = _held(["exit 7"])
    try:
        rtun = _watch([job.pid], remote_home)
        time.sleep(HELD)  # the run being measured, not a wait for a condition
        _end(job)
        [got] = notifications.shown()
        assert got["summary"] == "sh -c 'read line; exit 7' failed with status 7"
        assert got["body"].startswith(f"PID {job.pid} on {HOST}, watched for ")
        assert HELD / 2 <= _watched_for(got["body"]) < 5  # / 2: rtun may start its clock a little late
        assert b") Z " in Path(f"/proc/{job.pid}/stat").read_bytes()  # the test's zombie still
        out, err = rtun.communicate(timeout=15)
        assert (rtun.returncode, out, err) == (0, b"", b"")
    finally:
        job.kill()
        job.wait()


def test_a_process_in_a_session_of_its_own_is_watched_too(forward, remote_home, notifications, short_tmp):
    fifo, pidfile = short_tmp / "go", short_tmp / "pid"
    os.mkfifo(fifo)
    script = f"echo $$ > {pidfile}; read line < {fifo}; exit 5"
    subprocess.run(["setsid", "-f", "sh", "-c", script], check=True, timeout=15)  # its parent exits
    pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="its PID"))
    rtun = _watch([pid], remote_home, "--command", "detached job")
    time.sleep(HELD)
    with open(fifo, "w") as go:
        go.write("go\n")
    [got] = notifications.shown()
    # Its parent now is whichever process reaps orphans here: its status is known if that has
    # not reaped it yet.
    assert got["summary"] in ("detached job failed with status 5", "detached job ended"), got
    assert HELD / 2 <= _watched_for(got["body"]) < 5
    assert rtun.wait(timeout=15) == 0


AUTOREAPING_PARENT = """
import os, signal, sys, time
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # its children are reaped the moment they end
child = os.fork()
if child == 0:
    sys.stdin.readline()
    os._exit(3)
print(child, flush=True)
time.sleep(60)
"""


def test_a_process_reaped_at_once_is_notified_with_its_status_not_known(forward, remote_home, notifications):
    parent = subprocess.Popen(
        [sys.executable, "-c", AUTOREAPING_PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        pid = int(parent.stdout.readline())
        rtun = _watch([pid], remote_home, "--command", "job")
        _end(parent)  # its child reads the line
        [got] = notifications.shown()
        assert got["summary"] == "job ended"
        assert re.fullmatch(
            rf"PID {pid} on {re.escape(HOST)}, watched for \d+\.\d s; its exit status is not known",
            got["body"],
        ), got["body"]
        assert rtun.wait(timeout=15) == 0
    finally:
        parent.kill()
        parent.wait()


def test_each_process_is_notified_as_it_ends_and_rtun_returns_after_the_last(
    forward, remote_home, notifications
):
    first, second = _held(["exit 0"]), _held(["kill -TERM $$"])
    try:
        rtun = _watch([first.pid, second.pid], remote_home)
        _end(first)
        [one] = notifications.shown()
        assert (one["summary"], one["body"].split(",")[0]) == (
            "sh -c 'read line; exit 0' finished",
            f"PID {first.pid} on {HOST}",
        )
        assert rtun.poll() is None  # the second still runs
        _end(second)
        one, two = notifications.shown(2)
        assert (two["summary"], two["body"].split(",")[0]) == (
            "sh -c 'read line; kill -TERM $$' failed with status 143 (SIGTERM)",
            f"PID {second.pid} on {HOST}",
        )
        assert rtun.wait(timeout=15) == 0
    finally:
        for job in (first, second):
            job.kill()
            job.wait()


def test_a_pid_no_process_has_is_one_error_line_and_nothing_is_watched(remote_home):
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        result = run_rtun(["done", "--pid", str(alive.pid), "--pid", str(gone.pid)], remote_home, timeout=15)
        assert result.returncode == 1
        assert result.stderr.decode() == f"rtun done: no process {gone.pid}\n"
        assert alive.poll() is None
    finally:
        alive.kill()
        alive.wait()


def test_min_seconds_stays_quiet_about_a_process_that_ended_sooner(forward, remote_home, notifications):
    job = _held(["exit 0"])
    try:
        rtun = _watch([job.pid], remote_home, "--min-seconds", "60")
        _end(job)
        assert rtun.wait(timeout=15) == 0
        assert run_rtun(["notify", "-t", "marker", "after"], remote_home).returncode == 0
        assert [n["summary"] for n in notifications.shown()] == ["marker"]
    finally:
        job.kill()
        job.wait()


def _free_pid(pid: int) -> None:
    """Hand ``pid`` to the next process the system starts (root only)."""
    Path("/proc/sys/kernel/ns_last_pid").write_text(str(pid - 1))


def test_a_reused_pid_is_never_taken_for_the_process_watched(forward, remote_home, notifications):
    if os.geteuid() != 0 or not os.access("/proc/sys/kernel/ns_last_pid", os.W_OK):
        pytest.skip("needs root to choose the PID of a new process")
    first = subprocess.Popen(["sleep", "60"])
    rtun = _watch([first.pid], remote_home, "--command", "first")
    successor = None
    os.kill(rtun.pid, signal.SIGSTOP)  # it must not see the end before the PID is another's
    try:
        first.kill()
        first.wait()
        for _ in range(20):  # another process on the machine may take the PID first
            _free_pid(first.pid)
            successor = subprocess.Popen(["sleep", "60"])
            if successor.pid == first.pid:
                break
            successor.kill()
            successor.wait()
        assert successor is not None and successor.pid == first.pid, "could not reuse the PID"
        os.kill(rtun.pid, signal.SIGCONT)
        [got] = notifications.shown()
        assert got["summary"] == "first ended"  # reaped by the test before rtun looked
        assert rtun.wait(timeout=15) == 0
        assert successor.poll() is None
    finally:
        if rtun.poll() is None:
            os.kill(rtun.pid, signal.SIGCONT)
            rtun.kill()
            rtun.wait()
        if successor is not None:
            successor.kill()
            successor.wait()


def test_ctrl_c_while_watching_exits_130_and_notifies_nothing(forward, remote_home, notifications):
    job = subprocess.Popen(["sleep", "60"])
    rtun, master = in_a_terminal(RTUN + ["done", "--pid", str(job.pid)], clean_env(remote_home))
    try:
        _until_watching(rtun, 1)
        os.write(master, b"\x03")
        assert rtun.wait(timeout=15) == 130
        assert job.poll() is None  # in no terminal of rtun's: the Ctrl-C was rtun's alone
        job.kill()
        job.wait()
        assert run_rtun(["notify", "-t", "marker", "after"], remote_home).returncode == 0
        assert [n["summary"] for n in notifications.shown()] == ["marker"]
    finally:
        if rtun.poll() is None:
            rtun.kill()
        os.close(master)
        job.kill()
        job.wait()


@pytest.mark.parametrize(
    "argv, said",
    [
        (["done", "--pid", "1", "--", "true"], "give --pid, --status or a command to run, one of them"),
        (["done", "--pid", "1", "--status", "0"], "give --pid, --status or a command to run, one of them"),
        (["done", "--pid", "1", "--seconds", "3"], "--seconds and --since go with --status"),
        (["done", "--pid", "0"], "invalid process ID value"),
        (["done", "--pid", "4x"], "invalid process ID value"),
    ],
)
def test_usage_errors_with_pid_are_one_line_and_exit_2(remote_home, argv, said):
    result = run_rtun(argv, remote_home, timeout=15)
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and said in lines[0], lines


def test_the_notification_of_a_watched_process_names_it_its_pid_and_the_time_watched():
    assert message("make test", 2, 75.0, "box", pid=42) == [
        "make test failed with status 2",
        "PID 42 on box, watched for 1 min 15 s",
    ]
    assert message(None, None, 3.0, "box", pid=42) == [
        "Process 42 ended",
        "PID 42 on box, watched for 3.0 s; its exit status is not known",
    ]
    assert message("make", 0, 1.0, "box") == ["make finished", "on box after 1.0 s"]  # as before
