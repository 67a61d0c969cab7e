"""commands/basic.py end to end through a real ssh -R forward, for what tests/test_client.py and
tests/test_json.py leave out: `rtun shutdown` against our own daemon (with and without the
diagnostics setting) and `rtun echo`'s joining of its words."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from support.rtun import RtunDaemon, run_rtun
from support.sshd import Forward, SshServer
from support.wait import wait_until


@pytest.fixture
def reach(
    sshd: SshServer, local_home: Path, save_dir: Path, remote_home: Path
) -> Iterator[Callable[[bool], RtunDaemon]]:
    """``reach(diagnostics)``: a daemon, and the remote socket forwarded to it."""
    made = []

    def start(diagnostics: bool) -> RtunDaemon:
        daemon = RtunDaemon(local_home, save_dir, diagnostics=diagnostics).start()
        made.append((daemon, Forward(sshd, remote_home / ".rtun" / "rtun.sock", daemon.socket).wait_up()))
        return daemon

    yield start
    for daemon, forward in made:
        forward.close()
        if daemon.alive():
            daemon.stop()


def test_shutdown_stops_a_daemon_that_allows_it(reach, remote_home: Path) -> None:
    daemon = reach(True)
    result = run_rtun(["shutdown"], remote_home)
    assert (result.returncode, result.stdout) == (0, b"OK Shutting down server...\n"), result.stderr
    wait_until(lambda: not daemon.alive(), timeout=15, what="the daemon to exit")
    assert daemon.process is not None and daemon.process.returncode == 0
    assert not daemon.socket.exists()
    assert "shutdown requested by a client" in daemon.log_text()


def test_shutdown_is_refused_and_harmless_without_diagnostics(reach, remote_home: Path) -> None:
    daemon = reach(False)
    result = run_rtun(["shutdown"], remote_home)
    assert result.returncode != 0 and result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and "diagnostics = true" in lines[0], lines
    assert daemon.alive() and run_rtun(["ping"], remote_home).stdout == b"OK PONG\n"


@pytest.mark.parametrize("words, said", [([], ""), (["a", " b ", "c"], "a  b  c"), (["ünï", "✓"], "ünï ✓")])
def test_echo_joins_its_words_with_one_space(reach, remote_home: Path, words, said: str) -> None:
    reach(False)
    result = run_rtun(["echo", *words], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == f"OK {said}\n"
