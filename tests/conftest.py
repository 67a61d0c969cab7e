"""Fixtures with real components: OpenSSH sshd on 127.0.0.1, ssh -R forwards, rtun daemons."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from support.notifications import NotificationService, SessionBus
from support.rtun import RtunDaemon
from support.sshd import Forward, SshKeys, SshServer


@pytest.fixture(scope="session")
def ssh_keys(tmp_path_factory: pytest.TempPathFactory) -> SshKeys:
    return SshKeys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def sshd(ssh_keys: SshKeys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = SshServer(ssh_keys, tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path: UNIX socket paths must fit in sun_path (108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def local_home(short_tmp: Path) -> Path:
    """Home of the user at their own computer, where the daemon runs."""
    home = short_tmp / "local"
    home.mkdir()
    return home


@pytest.fixture
def remote_home(short_tmp: Path) -> Path:
    """Home of the same user on the remote server, where the client runs."""
    home = short_tmp / "remote"
    (home / ".rtun").mkdir(parents=True, mode=0o700)
    return home


@pytest.fixture
def save_dir(local_home: Path) -> Path:
    return local_home / "Downloads"


@pytest.fixture
def daemon(local_home: Path, save_dir: Path) -> Iterator[RtunDaemon]:
    running = RtunDaemon(local_home, save_dir).start()
    yield running
    if running.alive():
        running.stop()


@pytest.fixture
def forward(sshd: SshServer, daemon: RtunDaemon, remote_home: Path) -> Iterator[Forward]:
    """``ssh -R ~remote/.rtun/rtun.sock:~local/.rtun/rtun.sock`` through the real sshd."""
    fwd = Forward(sshd, remote_home / ".rtun" / "rtun.sock", daemon.socket).wait_up()
    yield fwd
    fwd.close()


@pytest.fixture
def session_bus() -> Iterator[SessionBus]:
    """A private ``dbus-daemon`` with no notification service on it (yet)."""
    bus = SessionBus().start()
    yield bus
    bus.stop()


@pytest.fixture
def notifications(session_bus: SessionBus, short_tmp: Path) -> Iterator[NotificationService]:
    """The recording org.freedesktop.Notifications service, running on ``session_bus``."""
    service = NotificationService(session_bus, short_tmp / "notifications.jsonl").start()
    yield service
    service.stop()
