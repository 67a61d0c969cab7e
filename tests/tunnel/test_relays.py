"""One machine on two relays (issue 19, item 1): one `rtun tunnel pub pub2` process keeps a
tunnel and an entry on each, and one relay going down never disturbs the other.

Two real relay sshds set up as docs/relay.md says (the relay script as the tunnel key's forced
command, each relay with its own authorized_keys and registry directory), one tunnel key
authorized on both with the line `rtun tunnel authorize` prints.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

from support.sshd import SshKeys, SshServer
from support.tunnel import RelayAccount, TunnelAgent, World, authorize, relay_sshd_config
from support.wait import wait_until


def _relay(keys: SshKeys, machine: SshServer, root: Path, alias: str) -> World:
    root.mkdir()
    authorized = root / "relay_authorized_keys"
    authorized.write_text(keys.authorized_keys.read_text())  # the admin's key, unrestricted
    return World(
        keys,
        root,
        machine,
        authorized_keys=authorized,
        sshd_extra=relay_sshd_config(machine.user),
        alias=alias,
    ).start()


@pytest.fixture
def relays(ssh_keys: SshKeys, machine_sshd: SshServer, short_tmp: Path) -> Iterator[Tuple[World, World]]:
    a = _relay(ssh_keys, machine_sshd, short_tmp / "a", "pub")
    b = _relay(ssh_keys, machine_sshd, short_tmp / "b", "pub2")
    yield a, b
    for world in (a, b):
        world.server.stop()


class TwoRelays:
    """The tunnel key of machine "pi" on both relays, and ssh configs that reach both: the
    agent's (its tunnel key alone) and the admin's (for `rtun connect`)."""

    def __init__(self, a: World, b: World) -> None:
        self.a, self.b = a, b
        self.key = RelayAccount(a).tunnel_key("pi", "--any-port")
        account_b = RelayAccount(b)
        # Both relays are on this host, so their registries are two directories: the line
        # differs only in --registry (with the default, one line serves every relay).
        line = authorize(
            "--name",
            "pi",
            "--machine-id",
            self.key.machine_id,
            "--script",
            str(account_b.script),
            "--registry",
            str(b.registry),
            "--any-port",
            f"{self.key.path}.pub",
        )
        with open(b.authorized_keys, "a") as f:  # type: ignore[arg-type]
            f.write(line)
        self.agent_config = self._merged(self.key.config, a.root / "agent_ssh_config", self.key.path)
        self.admin_config = self._merged(a.ssh_config, a.root / "admin_ssh_config", a.keys.user_key)

    def _merged(self, base: Path, path: Path, identity: Path) -> Path:
        # pub2's Host block first: ssh takes each option's first value.
        block = self.b.server.client_config.read_text()
        block = block.replace(f"IdentityFile {self.b.keys.user_key}", f"IdentityFile {identity}")
        path.write_text(block + base.read_text())
        return path

    def start_agent(self) -> TunnelAgent:
        env = {"RTUN_SSH_COMMAND": f"ssh -F {self.agent_config}"}
        return TunnelAgent(self.a, "pi", machine_id=self.key.machine_id, env=env, relays=("pub", "pub2"))

    def login(self, relay: World) -> str:
        """`rtun connect pi --via RELAY -- echo ...` through that relay's tunnel: its output."""
        done = relay.rtun(
            [
                "connect",
                "pi",
                "--via",
                relay.alias,
                "--registry",
                str(relay.registry),
                "--",
                "echo",
                "in-$((6*7))",
            ],
            RTUN_SSH_COMMAND=f"ssh -F {self.admin_config}",
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


def test_one_agent_keeps_a_tunnel_on_each_relay_and_survives_one_going_down(
    relays: Tuple[World, World], agents: List[TunnelAgent]
) -> None:
    a, b = relays
    two = TwoRelays(a, b)
    agent = two.start_agent()
    agents.append(agent)
    agent.wait_for("rtun tunnel pub [up] 127.0.0.1:")
    agent.wait_for("rtun tunnel pub2 [up] 127.0.0.1:")
    entry_a = wait_until(lambda: a.entry("pi"), timeout=10, what="the entry on pub")
    entry_b = wait_until(lambda: b.entry("pi"), timeout=10, what="the entry on pub2")
    assert entry_a["machine_id"] == entry_b["machine_id"] and len(entry_a["machine_id"]) == 32
    assert entry_a["name"] == entry_b["name"] == "pi"
    assert entry_a["port"] != entry_b["port"]  # one host's loopback here: pub2 took a port of its own
    assert two.login(a) == two.login(b) == "in-42\n"

    a.server.stop()  # relay pub dies with every session on it
    agent.wait_for("rtun tunnel pub [waiting]")
    # pub2 does not notice: its entry keeps being refreshed, and logins through it work.
    for _ in range(2):
        seen = b.entry("pi")["last_seen"]
        wait_until(lambda: b.entry("pi")["last_seen"] > seen, timeout=10, what="pub2's entry refreshed")
    assert two.login(b) == "in-42\n"
    assert agent.count("rtun tunnel pub2 [lost]") == 0 and agent.process.poll() is None

    before = a.entry("pi")["connected_at"]
    a.restart_server()
    agent.wait_for("rtun tunnel pub [up] 127.0.0.1:", times=2)
    wait_until(lambda: a.entry("pi")["connected_at"] > before, timeout=10, what="pi re-registered on pub")
    assert two.login(a) == "in-42\n"
    assert agent.count("rtun tunnel pub2 [up] 127.0.0.1:") == 1  # pub2's tunnel stayed up throughout


def test_sigterm_marks_the_entry_offline_on_every_relay(
    relays: Tuple[World, World], agents: List[TunnelAgent]
) -> None:
    a, b = relays
    agent = TwoRelays(a, b).start_agent()
    agents.append(agent)
    agent.wait_for("rtun tunnel pub [up] 127.0.0.1:")
    agent.wait_for("rtun tunnel pub2 [up] 127.0.0.1:")
    agent.signal(signal.SIGUSR1)  # reconnects both
    agent.wait_for("rtun tunnel pub [up] 127.0.0.1:", times=2)
    agent.wait_for("rtun tunnel pub2 [up] 127.0.0.1:", times=2)
    assert agent.stop() == 0
    assert a.entry("pi")["status"] == b.entry("pi")["status"] == "offline"
