"""Fixtures with real components: OpenSSH sshd on 127.0.0.1, ssh -R forwards, rtun daemons."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional

import pytest

from support.load import Tmpfs
from support.notifications import NotificationService, SessionBus
from support.rtun import RtunDaemon, write_config
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
def start_daemon(local_home: Path, save_dir: Path) -> Iterator[Callable[..., RtunDaemon]]:
    """``start_daemon(env={...}, config="toml", diagnostics=False, home=..., socket_path=...)``:
    the local daemon, stopped after the test (before any tmpfs of ``mounts`` is unmounted, when
    ``mounts`` was asked for first). A module that needs a daemon of its own kind overrides ``daemon`` with one
    call of this, so that ``forward`` (the real ssh -R) reaches it."""
    started: List[RtunDaemon] = []

    def start(
        env: Optional[Dict[str, str]] = None,
        config: str = "",
        diagnostics: bool = False,
        *,
        home: Optional[Path] = None,
        socket_path: Optional[Path] = None,
    ) -> RtunDaemon:
        home = home or local_home
        if config:
            write_config(home, config)
        running = RtunDaemon(
            home, save_dir, socket_path=socket_path, env=env or {}, diagnostics=diagnostics
        ).start()
        started.append(running)
        return running

    yield start
    for running in started:
        if running.alive():
            running.stop()


@pytest.fixture
def daemon(start_daemon: Callable[..., RtunDaemon]) -> RtunDaemon:
    return start_daemon()


@pytest.fixture
def notifying_daemon(start_daemon: Callable[..., RtunDaemon], session_bus: SessionBus) -> RtunDaemon:
    """A daemon that shows its notifications on the test's session bus."""
    return start_daemon(env={"DBUS_SESSION_BUS_ADDRESS": session_bus.address})


@pytest.fixture
def daemon_tmp(short_tmp: Path) -> Path:
    """A daemon's $TMPDIR (where it keeps viewed and edited files), of the test's own."""
    path = short_tmp / "tmp"
    path.mkdir()
    return path


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


@pytest.fixture
def mounts() -> Iterator[Callable[[Path, str], Tmpfs]]:
    """``mounts(directory, size)``: a tmpfs there (a save disk that fills), unmounted after the
    test; fixtures that start daemons on it after this one stop them first. Skipped only where
    this machine allows no mount."""
    mounted: List[Tmpfs] = []

    def mount(directory: Path, size: str) -> Tmpfs:
        try:
            fs = Tmpfs(directory, size).mount()
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc.stderr.decode(errors='replace').strip()}")
        mounted.append(fs)
        return fs

    yield mount
    for fs in reversed(mounted):
        fs.unmount()
