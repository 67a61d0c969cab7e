"""Fixtures for the desktop actions (notify, view): a daemon started with extra environment and
a config file (the session bus and notification service fixtures are in tests/conftest.py).

Test modules that need a special daemon override the ``daemon`` fixture of tests/conftest.py
in their own module with ``start_daemon(env=..., config=...)``, so ``forward`` (the real ssh -R) reaches it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterator, Optional

import pytest

from support.rtun import RtunDaemon


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
