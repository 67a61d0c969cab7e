"""Fixtures of the tunnel tests: the machine's own sshd and a fresh public server per test, or a
relay set up as docs/relay.md says (its own authorized_keys and sshd_config)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, List

import pytest

from support.sshd import SshKeys, SshServer
from support.tunnel import RelayAccount, TunnelAgent, World, relay_sshd_config


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


@pytest.fixture
def running(world: World, agents: List[TunnelAgent]) -> TunnelAgent:
    """An agent called "pi", up and registered on the world's relay."""
    agent = TunnelAgent(world, "pi")
    agents.append(agent)
    agent.wait_up()
    return agent


@pytest.fixture
def relay_world(ssh_keys: SshKeys, machine_sshd: SshServer, short_tmp: Path) -> Iterator[World]:
    authorized = short_tmp / "relay_authorized_keys"
    authorized.write_text(ssh_keys.authorized_keys.read_text())  # the admin's key, unrestricted
    w = World(
        ssh_keys,
        short_tmp,
        machine_sshd,
        authorized_keys=authorized,
        sshd_extra=relay_sshd_config(machine_sshd.user),
    ).start()
    yield w
    w.server.stop()


@pytest.fixture
def account(relay_world: World) -> RelayAccount:
    return RelayAccount(relay_world)
