"""Fixtures for the desktop actions (notify, view): a private session bus, a recording
notification service, and a daemon started with extra environment and a config file.

Test modules that need a special daemon override the ``daemon`` fixture of tests/conftest.py
in their own module with ``start_daemon(env=..., config=...)``, so ``forward`` (the real ssh -R) reaches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import pytest

from support.notifications import NotificationService, SessionBus
from support.rtun import RtunDaemon


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


def write_config(home: Path, toml: str) -> Path:
    """The daemon's config file under $XDG_CONFIG_HOME (= home/.config in support.rtun)."""
    path = home / ".config" / "rtun" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml)
    return path


@pytest.fixture
def start_daemon(local_home: Path, save_dir: Path) -> Iterator[Callable[..., RtunDaemon]]:
    """``start_daemon(env={...}, config="toml")``: the local daemon, stopped after the test."""
    started = []

    def start(env: Optional[Dict[str, str]] = None, config: str = "") -> RtunDaemon:
        if config:
            write_config(local_home, config)
        running = RtunDaemon(local_home, save_dir, env=env or {}).start()
        started.append(running)
        return running

    yield start
    for running in started:
        if running.alive():
            running.stop()
