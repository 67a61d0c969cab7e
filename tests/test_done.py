"""`rtun done`: the command's exit code passes through, and the notification arrives, end to end
(the real client on the remote side of a real ssh -R forward, the daemon, and a recording
org.freedesktop.Notifications service on a private session bus)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from rtun.commands.done import duration_text, message, shorten, status_text
from support.rtun import RTUN, RtunDaemon, clean_env, run_rtun
from support.terminal import in_a_terminal, read_until

HOST = socket.gethostname()


@pytest.fixture
def daemon(notifying_daemon: RtunDaemon) -> RtunDaemon:
    return notifying_daemon  # overrides tests/conftest.py's: notifications on the test's bus


def _only_warning(result: subprocess.CompletedProcess) -> str:
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rtun done: warning: no notification: "), lines
    return lines[0]


@pytest.mark.parametrize(
    "command, code, title",
    [
        (["true"], 0, "true finished"),
        (["sh", "-c", "exit 1"], 1, "sh -c 'exit 1' failed with status 1"),
        (["sh", "-c", "exit 7"], 7, "sh -c 'exit 7' failed with status 7"),
        (["sh", "-c", "kill -TERM $$"], 143, "sh -c 'kill -TERM $$' failed with status 143 (SIGTERM)"),
    ],
)
def test_done_passes_the_exit_code_through_and_notifies_its_status(
    forward, remote_home, notifications, command, code, title
):
    result = run_rtun(["done", "--"] + command, remote_home)

    assert result.returncode == code, result.stderr
    assert result.stderr == b""
    [got] = notifications.shown()
    assert got["summary"] == title
    assert got["body"].startswith(f"on {HOST} after ") and got["body"].endswith(" s"), got["body"]


def test_done_passes_130_through_when_ctrl_c_interrupts_the_command(forward, remote_home, notifications):
    process, master = in_a_terminal(
        RTUN + ["done", "--", "sh", "-c", "echo started; exec sleep 30"], clean_env(remote_home)
    )
    try:
        read_until(master, b"started")
        os.write(master, b"\x03")  # Ctrl-C: the terminal signals its whole foreground group
        assert process.wait(timeout=15) == 130
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    [got] = notifications.shown()  # rtun itself survived the Ctrl-C, and said so
    assert got["summary"] == "sh -c 'echo started; exec sleep 30' interrupted"


def test_done_status_notifies_about_the_previous_command_and_exits_with_it(
    forward, remote_home, notifications
):
    result = run_rtun(["done", "--status", "2", "--seconds", "75", "--command", "make test"], remote_home)

    assert result.returncode == 2, result.stderr
    [got] = notifications.shown()
    assert (got["summary"], got["body"]) == ("make test failed with status 2", f"on {HOST} after 1 min 15 s")


def test_done_command_text_replaces_what_the_notification_shows(forward, remote_home, notifications):
    result = run_rtun(
        ["done", "--command", "deploy", "--", "sh", "-c", "exit 0", "--token=s3cret"], remote_home
    )

    assert result.returncode == 0, result.stderr
    [got] = notifications.shown()
    assert got["summary"] == "deploy finished" and "s3cret" not in got["summary"] + got["body"]


def test_done_status_since_an_epoch_says_how_long_ago_it_started(forward, remote_home, notifications):
    started = time.time() - 3 * 3600 - 5 * 60
    result = run_rtun(["done", "--status", "0", "--since", str(started)], remote_home)

    assert result.returncode == 0, result.stderr
    [got] = notifications.shown()
    assert (got["summary"], got["body"]) == ("Command finished", f"on {HOST} after 3 h 05 min")


def test_done_min_seconds_stays_quiet_for_a_short_run(forward, remote_home, notifications):
    assert run_rtun(["done", "--min-seconds", "60", "--", "true"], remote_home).returncode == 0
    assert (
        run_rtun(["done", "--status", "1", "--seconds", "3", "--min-seconds", "5"], remote_home).returncode
        == 1
    )
    # A notification after them: had either of them notified, theirs would have arrived first.
    assert run_rtun(["notify", "-t", "marker", "after"], remote_home).returncode == 0
    assert [n["summary"] for n in notifications.shown()] == ["marker"]


def test_done_without_a_daemon_still_runs_the_command_and_passes_its_code(remote_home):
    ran = remote_home / "ran"
    result = run_rtun(["done", "--", "sh", "-c", f"echo yes > {ran}; exit 3"], remote_home)

    assert result.returncode == 3
    assert ran.read_text() == "yes\n"
    assert "no rtun socket found" in _only_warning(result)


def test_done_when_the_daemon_refuses_the_notification_warns_once(forward, remote_home):
    result = run_rtun(["done", "--", "false"], remote_home)  # no notification service on the bus

    assert result.returncode == 1
    assert "no notification service" in _only_warning(result)


def test_the_command_gets_rtuns_standard_input_and_output(remote_home):
    result = run_rtun(["done", "--", "cat"], remote_home, input=b"through\n")

    assert (result.returncode, result.stdout) == (0, b"through\n")


def test_a_command_that_cannot_run_exits_127_or_126_in_one_line(remote_home, short_tmp):
    missing = run_rtun(["done", "--", "no-such-command-here"], remote_home)
    assert missing.returncode == 127
    assert missing.stderr.decode() == "rtun done: no-such-command-here: command not found\n"
    plain = short_tmp / "not-executable"
    plain.write_text("echo hi\n")
    refused = run_rtun(["done", "--", str(plain)], remote_home)
    assert refused.returncode == 126
    assert refused.stderr.decode() == f"rtun done: cannot run {plain}: Permission denied\n"


def test_sigterm_to_rtun_reaches_the_command(remote_home):
    process = subprocess.Popen(
        RTUN + ["done", "--", "sh", "-c", "echo started; exec sleep 30"],
        env=clean_env(remote_home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stdout.readline() == b"started\n"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 143  # the command's death, not rtun's (that is -15)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.parametrize(
    "argv, said",
    [
        (["done"], "name the command to run"),
        (["done", "--status", "0", "--", "true"], "--status or a command to run, not both"),
        (["done", "--seconds", "3", "--", "true"], "--seconds and --since go with --status"),
        (["done", "--status", "0", "--min-seconds", "5"], "needs --seconds or --since"),
        (["done", "--status", "256"], "invalid exit status (0 to 255) value"),
        (["done", "--status", "0", "--seconds", "1", "--since", "5"], "not allowed with argument"),
        (["done", "--min-seconds", "-1", "--", "true"], "invalid number of seconds value"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(remote_home, argv, said):
    result = run_rtun(argv, remote_home)
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and said in lines[0], lines


# ---- the notification's text on its own ------------------------------------------------------


def test_status_text_names_the_outcome():
    assert status_text(0) == "finished"
    assert status_text(130) == "interrupted"
    assert status_text(1) == "failed with status 1"
    assert status_text(137) == "failed with status 137 (SIGKILL)"
    assert status_text(128 + 100) == "failed with status 228"  # no such signal


def test_duration_text_reads_like_a_person_would_say_it():
    assert [duration_text(s) for s in (0.04, 9.94, 10.2, 59.4, 60, 3599, 3600, 90061)] == [
        "0.0 s",
        "9.9 s",
        "10 s",
        "59 s",
        "1 min 00 s",
        "59 min 59 s",
        "1 h 00 min",
        "25 h 01 min",
    ]


def test_a_long_command_is_cut_in_the_title_and_kept_longer_in_the_body():
    command = "python train.py " + " ".join(f"--option-{n} value" for n in range(200))
    title, body = message(command, 0, 12.0, "box")
    assert len(title) == 60 + len(" finished") and title.endswith("\u2026 finished")
    first, second = body.split("\n")
    assert len(first) == 300 and first.startswith("python train.py --option-0 value")
    assert second == "on box after 12 s"


def test_the_command_text_is_one_line_and_bounded_whatever_it_holds():
    assert shorten("make\n\t test  \r\n", 60) == "make test"
    assert len(shorten("x " * 10_000_000, 60)) == 60  # --command TEXT of any size
    title, body = message("   ", 1, None, "box")
    assert (title, body) == ("Command failed with status 1", "on box")
