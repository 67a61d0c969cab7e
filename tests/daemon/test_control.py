"""`rtun server status`, `stop`, `restart`, `reload` and SIGHUP, and `rtun doctor`'s view of a
running daemon's settings: real daemons, real signals, real status files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List

import pytest

from rtun.daemon import status
from support.raw import RawClient
from support.rtun import RtunDaemon, run_rtun, write_config
from support.wait import wait_until

# A clipboard that needs no display: paste prints this.
PASTE_OFF = '[clipboard]\npaste = ["printf", "from the clipboard"]\n'
PASTE_ON = PASTE_OFF + "[actions]\npaste = true\n"


def _server(daemon: RtunDaemon, *args: str) -> subprocess.CompletedProcess:
    return run_rtun(["server", *args, "-s", str(daemon.socket)], daemon.home)


def _status(daemon: RtunDaemon) -> Dict[str, object]:
    done = _server(daemon, "status", "--json")
    document = json.loads(done.stdout)
    assert done.returncode == (0 if document["running"] else 3), done.stderr
    return document


def _status_file(daemon: RtunDaemon) -> Path:
    return daemon.home / ".rtun" / Path(status.status_path(str(daemon.socket))).name


def _paste(daemon: RtunDaemon) -> subprocess.CompletedProcess:
    return run_rtun(["paste", "-s", str(daemon.socket)], daemon.home)


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen]:
    """A live process that is not rtun: a status file naming its PID must never signal it."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield process
    process.kill()
    process.wait()


def test_status_of_a_running_daemon_names_its_files_and_exits_0(daemon: RtunDaemon, save_dir: Path) -> None:
    document = _status(daemon)
    assert document["pid"] == daemon.process.pid and document["socket"] == str(daemon.socket)
    assert document["save_dir"] == str(save_dir)
    assert document["config_file"] == str(daemon.home / ".config" / "rtun" / "config.toml")
    assert document["connections"] == 0 and document["transfers"] == 0
    assert document["uptime_seconds"] >= 0
    text = _server(daemon, "status")
    assert text.returncode == 0 and f"running (PID {daemon.process.pid})" in text.stdout.decode()
    mode = _status_file(daemon).stat().st_mode & 0o777
    assert mode == 0o600


def test_status_counts_a_transfer_in_flight(daemon: RtunDaemon) -> None:
    raw = RawClient(daemon.socket)
    assert raw.request(b"SEND 10 half.bin\r\n") == b"READY\r\n"
    raw.send(b"12345")
    try:
        wait_until(lambda: _status(daemon)["transfers"] == 1, timeout=15, what="the transfer counted")
        assert _status(daemon)["connections"] == 1
    finally:
        raw.close()


def test_status_when_no_daemon_runs_exits_3(local_home: Path) -> None:
    done = run_rtun(["server", "status"], local_home)
    assert done.returncode == 3 and b"not running" in done.stdout
    stop = run_rtun(["server", "stop"], local_home)
    assert stop.returncode == 3 and b"no rtun daemon is running" in stop.stderr


def test_a_stale_status_file_is_not_a_running_daemon(daemon: RtunDaemon, unrelated: subprocess.Popen) -> None:
    path = _status_file(daemon)
    document = json.loads(path.read_text())
    daemon.stop()
    dead = subprocess.Popen(["true"])
    dead.wait()
    for pid in (dead.pid, unrelated.pid):  # a PID gone, then a PID of another program
        path.write_text(json.dumps(dict(document, pid=pid)))
        assert _status(daemon)["running"] is False
        for form in ("stop", "reload"):
            done = _server(daemon, form)
            assert done.returncode == 3, done.stderr
    assert unrelated.poll() is None  # never signalled


def test_stop_ends_the_daemon_and_its_status_file(daemon: RtunDaemon) -> None:
    done = _server(daemon, "stop")
    assert done.returncode == 0, done.stderr
    assert b"stopped the rtun daemon" in done.stdout
    assert daemon.process.wait(timeout=5) == 0
    assert not _status_file(daemon).exists() and not daemon.socket.exists()


def test_restart_keeps_the_options_it_was_started_with(
    daemon: RtunDaemon, save_dir: Path, detached: List[int]
) -> None:
    old = daemon.process.pid
    done = _server(daemon, "restart")
    assert done.returncode == 0, done.stderr
    new = int(done.stdout.decode().strip())
    detached.append(new)
    assert daemon.process.wait(timeout=5) == 0
    document = _status(daemon)
    assert document["pid"] == new != old and document["save_dir"] == str(save_dir)
    assert document["log"] == str(daemon.home / ".rtun" / "rtun.log")  # detached now


def _upload_in_flight(daemon: RtunDaemon, data: bytes) -> RawClient:
    raw = RawClient(daemon.socket)
    assert raw.request(b"SEND %d kept.bin\r\n" % len(data)) == b"READY\r\n"
    raw.send(data[:1000])
    return raw


@pytest.mark.parametrize("how", ["rtun server reload", "SIGHUP"])
def test_reload_applies_the_config_and_the_transfer_in_flight_completes(
    how: str, start_daemon: Callable[..., RtunDaemon], save_dir: Path
) -> None:
    """Paste off, then on: a real PASTE succeeds after the reload. A transfer begun before it,
    under `[actions] send = true`, completes although the new file turns send off."""
    daemon = start_daemon(config=PASTE_OFF)
    refused = _paste(daemon)
    assert refused.returncode == 4 and b"[actions] paste = true" in refused.stderr
    data = os.urandom(300_000)
    raw = _upload_in_flight(daemon, data)
    write_config(daemon.home, PASTE_ON + "send = false\n")
    if how == "SIGHUP":
        os.kill(daemon.process.pid, signal.SIGHUP)
        wait_until(lambda: "reloaded" in daemon.log_text(), timeout=10, what="the reload logged")
    else:
        done = _server(daemon, "reload")
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().splitlines() == ["reloaded: actions.paste, actions.send changed"]
    pasted = _paste(daemon)
    assert pasted.returncode == 0 and pasted.stdout == b"from the clipboard", pasted.stderr
    raw.send(data[1000:] + hashlib.sha256(data).hexdigest().encode() + b"\r\n")
    assert raw.line().startswith(b"OK")
    raw.close()
    assert (save_dir / "kept.bin").read_bytes() == data
    late = RawClient(daemon.socket)
    assert late.request(b"SEND 3 late.bin\r\n").startswith(b"ERROR 116")
    late.close()
    assert daemon.alive() and daemon.process.pid == _status(daemon)["pid"]


def test_reload_names_what_needs_a_restart(daemon: RtunDaemon, local_home: Path) -> None:
    write_config(local_home, f'[server]\nlog = "{local_home / "other.log"}"\n[notify]\nburst = 3\n')
    done = _server(daemon, "reload")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines == ["reloaded: notify.burst changed", "not applied until `rtun server restart`: server.log"]
    assert "not applied until a restart (`rtun server restart`): server.log" in daemon.log_text()
    assert not (local_home / "other.log").exists()


def test_a_broken_config_file_is_not_reloaded(daemon: RtunDaemon, local_home: Path) -> None:
    write_config(local_home, "[actions]\npaste = maybe\n")
    done = _server(daemon, "reload")
    assert done.returncode == 1 and b"keeps its settings" in done.stdout
    assert daemon.alive() and _status(daemon)["running"]


def test_doctor_says_the_running_daemon_has_other_settings_until_reload(
    start_daemon: Callable[..., RtunDaemon],
) -> None:
    daemon = start_daemon(config=PASTE_OFF)

    def drift() -> List[Dict[str, str]]:
        done = run_rtun(["doctor", "--json"], daemon.home)
        checks = json.loads(done.stdout)["checks"]
        return [c for c in checks if c["name"] == "running config"]

    assert drift() == []
    write_config(daemon.home, PASTE_ON)
    [check] = drift()
    assert check["status"] == "warn" and "actions.paste" in check["detail"]
    assert "`rtun server reload`" in check["fix"]
    assert _server(daemon, "reload").returncode == 0
    assert drift() == []


def test_several_daemons_keep_status_files_of_their_own(
    daemon: RtunDaemon, local_home: Path, save_dir: Path
) -> None:
    other = RtunDaemon(local_home, save_dir, socket_path=local_home / ".rtun" / "other.sock").start()
    try:
        assert _status(other)["pid"] == other.process.pid
        assert _status(daemon)["pid"] == daemon.process.pid
        assert _server(other, "stop").returncode == 0
        assert _status(daemon)["running"] is True
    finally:
        if other.alive():
            other.stop()


def test_the_socket_still_tells_no_pid_or_path(daemon: RtunDaemon) -> None:
    """What status shows is for this user alone: the file is in the 0700 ~/.rtun, and the socket,
    which servers reach, answers PID and SHUTDOWN no more than before."""
    assert (daemon.home / ".rtun").stat().st_mode & 0o777 == 0o700
    for request in (b"PID\r\n", b"SHUTDOWN\r\n"):
        with RawClient(daemon.socket) as raw:
            assert raw.request(request).startswith(b"ERROR")
    assert daemon.alive()
