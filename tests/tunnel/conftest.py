"""Fixtures of the tunnel tests: the machine's own sshd and a fresh public server per test."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List

import pytest

from support.sshd import SshKeys, SshServer
from support.tunnel import TunnelAgent, World


@pytest.fixture(scope="session")
def machine_sshd(ssh_keys: SshKeys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """The sshd of the machine behind NAT: what the tunnel leads to."""
    server = SshServer(ssh_keys, tmp_path_factory.mktemp("machine"), alias="machine").start()
    yield server
    server.stop()


@pytest.fixture
def world(ssh_keys: SshKeys, machine_sshd: SshServer, short_tmp: Path) -> Iterator[World]:
    w = World(ssh_keys, short_tmp, machine_sshd).start()
    yield w
    w.server.stop()


@pytest.fixture
def agents() -> Iterator[List[TunnelAgent]]:
    """Agents a test starts; each is stopped at the end whatever happened."""
    started: List[TunnelAgent] = []
    yield started
    for agent in started:
        agent.stop()
