"""The machine in a network namespace that drops every inbound connection: the tunnel is the only
way in; and the namespace's network cut (every packet dropped, silently) and restored, twice.
Needs root, `ip` (iproute2) and `nft` (nftables): `apt-get install iproute2 nftables`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterator, List

import pytest

from rtun.tunnel import identity
from support.netns import Namespace, sh
from support.rtun import RTUN
from support.sshd import SSHD, SshKeys, SshServer, banner
from support.tunnel import FAST, UP, World, relay_sshd_config
from support.wait import wait_until

MISSING = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or bool(MISSING),
    reason=f"needs root and iproute2 + nftables (missing: {MISSING or 'root'})",
)

CUTS = 2

FIREWALL = """
table inet rtun_test {
  chain input {
    type filter hook input priority 0; policy drop;
    iif lo accept
    ct state established,related accept
  }
}
"""


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    ns = Namespace(firewall=FIREWALL)
    yield ns
    ns.close()


class Caged:
    """The machine inside the namespace: its sshd and its agent, reaching the relay (the host
    end of the veth) through the relay's own sshd_config of docs/relay.md."""

    def __init__(self, world: World, namespace: Namespace, keys: SshKeys, root: Path) -> None:
        self.world, self.namespace = world, namespace
        self.processes: List[subprocess.Popen] = []
        # The machine's own sshd, inside the namespace, listening on every address.
        self.inside = SshServer(keys, root / "inside", alias="inside")
        self.inside.config.write_text(
            self.inside.config.read_text().replace("ListenAddress 127.0.0.1", "ListenAddress 0.0.0.0")
        )
        self.processes.append(
            subprocess.Popen(
                namespace.exec_argv(SSHD, "-D", "-e", "-f", str(self.inside.config)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        # The agent, inside the namespace, reaching the relay at the veth address.
        agent_config = root / "agent_ssh_config"
        known = root / "agent_known_hosts"
        known.write_text(f"[{namespace.host_ip}]:{world.server.port} {' '.join(keys.host_public)}\n")
        agent_config.write_text(
            f"Host pub\n  HostName {namespace.host_ip}\n  Port {world.server.port}\n"
            f"  IdentityFile {keys.user_key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
            "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n"
        )
        self.log = root / "agent.log"
        env = world.env(RTUN_SSH_COMMAND=f"ssh -F {agent_config}")
        with open(self.log, "wb") as out:
            self.processes.append(
                subprocess.Popen(
                    namespace.exec_argv(
                        *RTUN,
                        "tunnel",
                        "pub",
                        "--name",
                        "caged",
                        "--local-port",
                        str(self.inside.port),
                        "--registry",
                        str(world.registry),
                        *FAST,
                    ),
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                )
            )

    def count(self, marker: str) -> int:
        return self.log.read_text(errors="replace").count(marker)

    def wait_for(self, marker: str, times: int = 1, timeout: float = 30) -> None:
        wait_until(
            lambda: self.count(marker) >= times,
            timeout=timeout,
            interval=0.05,
            what=f"{marker!r} x{times} in {self.log}",
        )

    def connect(self, *command: str) -> subprocess.CompletedProcess:
        return self.world.rtun(
            ["connect", "caged", "--via", "pub", "--registry", str(self.world.registry), "--", *command]
        )

    def close(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
            process.wait(timeout=20)


@pytest.fixture
def caged(
    ssh_keys: SshKeys, machine_sshd: SshServer, short_tmp: Path, namespace: Namespace
) -> Iterator[Caged]:
    # The relay drops a silent session within seconds (ClientAlive*), as docs/relay.md sets it.
    world = World(ssh_keys, short_tmp, machine_sshd, sshd_extra=relay_sshd_config(machine_sshd.user))
    # The relay also listens on the host's end of the veth, where the machine reaches it.
    config = world.server.config.read_text()
    world.server.config.write_text(config.replace("Match ", f"ListenAddress {namespace.host_ip}\nMatch ", 1))
    world.start()
    machine = Caged(world, namespace, ssh_keys, short_tmp)
    try:
        machine.wait_for(UP)
        yield machine
    finally:
        machine.close()
        world.server.stop()


def test_machine_behind_a_dropping_firewall_is_reachable_only_through_the_tunnel(caged: Caged) -> None:
    namespace = caged.namespace
    # Directly, the machine's sshd is out of reach: the namespace drops the connection.
    direct = sh(
        "ssh",
        "-F",
        str(caged.world.ssh_config),
        "-o",
        "ConnectTimeout=2",
        "-p",
        str(caged.inside.port),
        namespace.ns_ip,
        "true",
    )
    assert direct.returncode == 255 and "timed out" in direct.stderr, direct.stderr
    # Through the tunnel, a command runs inside the namespace.
    netns_inode = os.stat(f"/run/netns/{namespace.name}").st_ino
    done = caged.connect("stat", "-L", "-c", "%i", "/proc/self/ns/net")
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == netns_inode


CUT = """
table inet rtun_cut {
  chain output {
    type filter hook output priority 0; policy drop;
    oif lo accept
  }
  chain input {
    type filter hook input priority -10; policy drop;
    iif lo accept
  }
}
"""


def test_after_each_network_cut_the_tunnel_and_the_registry_are_right_again(caged: Caged) -> None:
    world, namespace = caged.world, caged.namespace
    entry = world.entry("caged")
    preferred = identity.preferred_port(entry["machine_id"])
    assert entry["port"] == preferred
    for n in range(1, CUTS + 1):
        lost, ups, before = caged.count("[lost]"), caged.count(UP), world.entry("caged")
        done = sh(*namespace.exec_argv("nft", "-f", "-"), input=CUT)  # silence: no RST, no FIN
        assert done.returncode == 0, done.stderr
        caged.wait_for("[lost]", times=lost + 1, timeout=20)  # keepalives: about 3 s
        wait_until(lambda: not banner(preferred), timeout=20, what="the relay to drop the stale session")
        done = sh(*namespace.exec_argv("nft", "delete", "table", "inet", "rtun_cut"))
        assert done.returncode == 0, done.stderr
        caged.wait_for(UP, times=ups + 1, timeout=30)

        def right_again() -> bool:
            now = world.entry("caged")
            return bool(
                now
                and now["port"] == preferred
                and now["status"] == "online"
                and now["last_seen"] > before["last_seen"]
            )

        wait_until(right_again, timeout=15, what=f"the registry right after cut {n}")
        done = caged.connect("echo", f"back-{n}")
        assert (done.returncode, done.stdout) == (0, f"back-{n}\n"), done.stderr
    assert len(world.entries()) == 1
