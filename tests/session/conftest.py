"""Fixtures of the session tests (the world itself is in harness.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List

import pytest

from session.harness import HomeServer, Laptop
from support.rtun import RtunDaemon
from support.sshd import SshKeys


@pytest.fixture
def server_home(short_tmp: Path) -> Path:
    home = short_tmp / "srvhome"
    home.mkdir()
    return home


@pytest.fixture
def server(ssh_keys: SshKeys, short_tmp: Path, server_home: Path) -> Iterator[HomeServer]:
    srv = HomeServer(ssh_keys, short_tmp / "sshd", server_home).start()
    yield srv
    srv.stop()


@pytest.fixture
def laptops(short_tmp: Path, server: HomeServer) -> Iterator[List[Laptop]]:
    """Laptops a test makes (``laptops.append(...)``); daemons they started are stopped after."""
    made: List[Laptop] = []
    yield made
    for laptop in made:
        laptop.stop_started_daemons()


@pytest.fixture
def laptop(short_tmp: Path, server: HomeServer, laptops: List[Laptop]) -> Laptop:
    made = Laptop(short_tmp / "laptop", server)
    laptops.append(made)
    return made


@pytest.fixture
def laptop_daemon(laptop: Laptop) -> Iterator[RtunDaemon]:
    """The laptop's daemon on its default socket, answering PID (to tell daemons apart)."""
    running = RtunDaemon(laptop.home, laptop.home / "Downloads", diagnostics=True).start()
    yield running
    if running.alive():
        running.stop()
