"""One machine on two relays, read and reached by the merging readers: two real relay sshds on
this host (each its own registry directory), the machine's sshd in a network namespace that
drops every inbound connection, and one agent per relay inside it for the same machine id. Tags,
the merged listing, `[hosts] relays`, and connect, ssh-config and the proxy failing over when a
relay's sshd is killed or stops answering. Needs root, `ip` and `nft` (as test_netns.py).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

from rtun.tunnel import identity
from support.netns import Namespace
from support.rtun import RTUN, write_config
from support.sshd import SSHD, SshKeys, SshServer, free_port
from support.tunnel import FAST, UP, RelayAccount, World, relay_sshd_config
from support.wait import wait_until

MISSING = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or bool(MISSING),
    reason=f"needs root and iproute2 + nftables (missing: {MISSING or 'root'})",
)

FIREWALL = """
table inet rtun_test {
  chain input {
    type filter hook input priority 0; policy drop;
    iif lo accept
    ct state established,related accept
  }
}
"""
RELAYS = ("rel-a", "rel-b")
GOAL = 5.0  # seconds from the command's start to its success, the failed relay included


class Fleet:
    """Two relays, the caged machine's sshd, and its two agents (one per relay)."""

    def __init__(self, keys: SshKeys, machine: SshServer, root: Path, namespace: Namespace) -> None:
        self.namespace = namespace
        self.processes: List[subprocess.Popen] = []
        self.worlds = {}
        readers = {}
        for alias in RELAYS:
            # Each relay set up as docs/relay.md says; the reader's key there is confined by the
            # relay script, whose line names that relay's own registry directory.
            authorized = root / f"{alias}_authorized_keys"
            authorized.write_text(keys.authorized_keys.read_text())  # the admin's key (the agents')
            world = World(
                keys,
                root / alias,
                machine,
                authorized_keys=authorized,
                sshd_extra=relay_sshd_config(machine.user),
            )
            config = world.server.config.read_text()  # also on the veth, where the machine is
            world.server.config.write_text(
                config.replace("Match ", f"ListenAddress {namespace.host_ip}\nMatch ", 1)
            )
            self.worlds[alias] = world.start()
            readers[alias] = RelayAccount(world).tunnel_key("reader", "--any-port").path
        # The reader's ssh_config: both relays by their aliases (each with its reader key first),
        # the machines through `Host *`.
        first = self.worlds[RELAYS[0]]
        self.home = root / "reader"
        self.home.mkdir()
        self.ssh_config = root / "reader_ssh_config"
        blocks = [
            w.server.client_config.read_text()
            .replace("Host pub\n", f"Host {a}\n")
            .replace(f"IdentityFile {keys.user_key}", f"IdentityFile {readers[a]}")
            for a, w in self.worlds.items()
        ]
        defaults = first.ssh_config.read_text()
        self.ssh_config.write_text("\n".join(blocks) + defaults[defaults.index("Host *") :])
        # The machine: its sshd inside the namespace, on every address there.
        self.inside = SshServer(keys, root / "inside", alias="inside")
        self.inside.config.write_text(
            self.inside.config.read_text().replace("ListenAddress 127.0.0.1", "ListenAddress 0.0.0.0")
        )
        self._spawn(namespace.exec_argv(SSHD, "-D", "-e", "-f", str(self.inside.config)), root / "inside.log")
        self.machine_id = f"test-{uuid.uuid4().hex}"
        self.mid = identity.machine_id(self.machine_id)
        self.ports = {alias: free_port() for alias in RELAYS}  # one loopback here: a port each
        self.agents = {alias: self.start_agent(alias, keys, root) for alias in RELAYS}

    def _spawn(self, argv: List[str], log: Path, env: dict = None) -> subprocess.Popen:
        with open(log, "ab") as out:
            process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        self.processes.append(process)
        return process

    def start_agent(self, alias: str, keys: SshKeys, root: Path) -> subprocess.Popen:
        world = self.worlds[alias]
        config, known = root / f"agent_{alias}_config", root / f"agent_{alias}_known"
        known.write_text(f"[{self.namespace.host_ip}]:{world.server.port} {' '.join(keys.host_public)}\n")
        config.write_text(
            f"Host pub\n  HostName {self.namespace.host_ip}\n  Port {world.server.port}\n"
            f"  IdentityFile {keys.user_key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
            "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
        )
        argv = [*RTUN, "tunnel", "pub", "--name", "caged", "--local-port", str(self.inside.port)]
        argv += [
            "--registry",
            str(world.registry),
            "--port",
            str(self.ports[alias]),
            "--machine-id",
            self.machine_id,
        ]
        argv += ["--tag", "gpu", "--tag", "lab", *FAST]
        log = root / f"agent_{alias}.log"
        process = self._spawn(
            self.namespace.exec_argv(*argv), log, world.env(RTUN_SSH_COMMAND=f"ssh -F {config}")
        )
        before = log.read_text().count(UP) if log.exists() else 0
        wait_until(
            lambda: log.read_text(errors="replace").count(UP) > before, timeout=30, what=f"{alias}'s agent up"
        )
        return process

    def rtun(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = self.worlds[RELAYS[0]].env(RTUN_SSH_COMMAND=f"ssh -F {self.ssh_config}")
        env["HOME"] = str(self.home)
        env["XDG_CONFIG_HOME"] = str(self.home / ".config")
        return subprocess.run(
            RTUN + list(args),
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def hosts(self, *args: str) -> dict:
        done = self.rtun("hosts", "--json", "--timeout", "2", *args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=20)
        for world in self.worlds.values():
            world.server.stop()


@pytest.fixture
def fleet(ssh_keys: SshKeys, machine_sshd: SshServer, short_tmp: Path) -> Iterator[Fleet]:
    namespace = Namespace(firewall=FIREWALL)
    try:
        built = Fleet(ssh_keys, machine_sshd, short_tmp, namespace)
        try:
            yield built
        finally:
            built.close()
    finally:
        namespace.close()


VIAS = ["--via", RELAYS[0], "--via", RELAYS[1]]


def test_one_machine_on_two_relays_is_listed_once_live_on_both_with_its_tags(fleet: Fleet) -> None:
    # Each relay's registry holds the machine, at its own port there.
    for alias, world in fleet.worlds.items():
        [entry] = world.entries().values()
        assert (entry["machine_id"], entry["port"], entry["tags"]) == (
            fleet.mid,
            fleet.ports[alias],
            ["gpu", "lab"],
        )
    document = fleet.hosts(*VIAS)
    [machine] = document["machines"]
    assert (machine["name"], machine["machine_id"], machine["tags"]) == ("caged", fleet.mid, ["gpu", "lab"])
    assert sorted(machine["relays_live"]) == sorted(RELAYS) and machine["live"]
    assert fleet.hosts(*VIAS, "--tag", "gpu", "--tag", "lab")["machines"]
    assert fleet.hosts(*VIAS, "--tag", "gpu", "--tag", "other")["machines"] == []
    # `[hosts] relays` in the config file: `rtun hosts` alone reads both.
    write_config(fleet.home, f"[hosts]\nrelays = {json.dumps(list(RELAYS))}\n")
    table = fleet.rtun("hosts", "--timeout", "2")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert "LIVE ON" in header and "TAGS" in header
    assert sorted(row.split()[6].split(",")) == sorted(RELAYS) and "gpu,lab" in row.split()
    # Through the tunnels, a command runs inside the namespace.
    done = fleet.rtun("connect", "caged", "--", "stat", "-L", "-c", "%i", "/proc/self/ns/net")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == os.stat(f"/run/netns/{fleet.namespace.name}").st_ino


def test_connect_and_ssh_config_fail_over_when_a_relay_dies_and_list_it_not_live_once_back(
    fleet: Fleet,
) -> None:
    config = fleet.rtun("ssh-config", *VIAS)
    assert config.returncode == 0, config.stderr
    assert "ProxyCommand" in config.stdout and "connect --proxy caged" in config.stdout
    generated = fleet.home / "rtun_ssh_config"
    generated.write_text(config.stdout + "\n" + fleet.ssh_config.read_text())

    dead = fleet.worlds[RELAYS[0]]
    dead.server.stop()  # the listener and every session: the tunnel on it is gone
    started = time.monotonic()
    done = fleet.rtun("connect", "caged", *VIAS, "--", "echo", "through-b")
    took = time.monotonic() - started
    assert (done.returncode, done.stdout) == (0, "through-b\n"), done.stderr
    assert took < GOAL, f"rtun connect took {took:.2f} s with {RELAYS[0]} dead"
    assert f"cannot reach {RELAYS[0]}" in done.stderr  # one line for the dead relay
    print(f"rtun connect with the first relay dead: {took:.2f} s")

    # The generated ssh_config: its ProxyCommand reads the registries when ssh connects.
    started = time.monotonic()
    done = subprocess.run(
        ["ssh", "-F", str(generated), "caged.rtun", "echo", "via-config"],
        env=fleet_env(fleet),
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert (done.returncode, done.stdout) == (0, "via-config\n"), done.stderr
    assert took < GOAL, f"ssh through the generated config took {took:.2f} s"

    # The relay comes back, its agent stopped meanwhile: its entry there is stale, not live.
    agent = fleet.agents[RELAYS[0]]
    agent.terminate()
    agent.wait(timeout=30)
    dead.server.start()
    [machine] = fleet.hosts(*VIAS)["machines"]
    assert machine["relays"] == [RELAYS[1], RELAYS[0]]  # the live relay's entry is the freshest
    assert machine["relays_live"] == [RELAYS[1]]
    # Its agent back: live there too.
    fleet.agents[RELAYS[0]] = fleet.start_agent(RELAYS[0], dead.keys, dead.root.parent)
    wait_until(
        lambda: sorted(fleet.hosts(*VIAS)["machines"][0]["relays_live"]) == sorted(RELAYS),
        timeout=30,
        what="live on both relays again",
    )


def fleet_env(fleet: Fleet) -> dict:
    env = fleet.worlds[RELAYS[0]].env(RTUN_SSH_COMMAND=f"ssh -F {fleet.ssh_config}")
    env.update(HOME=str(fleet.home), XDG_CONFIG_HOME=str(fleet.home / ".config"))
    return env


def test_the_proxy_moves_on_when_a_relay_does_not_answer(fleet: Fleet) -> None:
    """The first relay accepts connections but says nothing (its sshd stopped): the proxy gives
    it ConnectTimeout (3 s) and carries the session through the next one."""
    silent = fleet.worlds[RELAYS[0]].server.process
    os.kill(silent.pid, signal.SIGSTOP)
    try:
        hops = [w for alias in RELAYS for w in ("--proxy-to", f"{alias}={fleet.ports[alias]}")]
        proxy = " ".join([*RTUN, "connect", "--proxy", "caged", *hops])
        started = time.monotonic()
        done = subprocess.run(
            [
                "ssh",
                "-F",
                str(fleet.ssh_config),
                "-o",
                f"ProxyCommand={proxy}",
                "-o",
                "HostKeyAlias=rtun-fleet-test",
            ]
            + ["-p", "22", "127.0.0.1", "echo", "moved-on"],
            env=fleet_env(fleet),
            capture_output=True,
            text=True,
            timeout=60,
        )
        took = time.monotonic() - started
        # rtun connect itself: the silent relay's listing gives up after its ConnectTimeout.
        started = time.monotonic()
        direct = fleet.rtun("connect", "caged", *VIAS, "--", "echo", "listed-past")
        direct_took = time.monotonic() - started
    finally:
        os.kill(silent.pid, signal.SIGCONT)
    assert (direct.returncode, direct.stdout) == (0, "listed-past\n"), direct.stderr
    assert f"cannot reach {RELAYS[0]}" in direct.stderr
    assert direct_took < GOAL, f"rtun connect past a silent relay took {direct_took:.2f} s"
    print(f"rtun connect past a silent relay: {direct_took:.2f} s")
    assert (done.returncode, done.stdout) == (0, "moved-on\n"), done.stderr
    assert f"{RELAYS[0]}: " in done.stderr and "trying the next relay" in done.stderr
    assert 3 <= took < GOAL + 1, f"{took:.2f} s"
    print(f"proxy past a silent relay: {took:.2f} s")
