"""The machine in a network namespace that drops every inbound connection: the tunnel is the only
way in. Needs root, `ip` (iproute2) and `nft` (nftables): `apt-get install iproute2 nftables`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from support.rtun import RTUN
from support.sshd import SSHD, SshKeys, SshServer
from support.tunnel import FAST, World
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


def sh(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, **kwargs)


class Namespace:
    """A network namespace joined to the host by a veth pair, inbound traffic dropped inside."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"rtun-{tag}"
        self.host_if, self.ns_if = f"rth{tag}", f"rtn{tag}"
        self.host_ip, self.ns_ip = "10.251.7.1", "10.251.7.2"
        steps = [
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if],
            ["ip", "link", "set", self.ns_if, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if],
            ["ip", "link", "set", self.host_if, "up"],
            self.exec_argv("ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if),
            self.exec_argv("ip", "link", "set", self.ns_if, "up"),
            self.exec_argv("ip", "link", "set", "lo", "up"),
        ]
        for step in steps:
            done = sh(*step)
            assert done.returncode == 0, f"{step}: {done.stderr}"
        done = sh(*self.exec_argv("nft", "-f", "-"), input=FIREWALL)
        assert done.returncode == 0, done.stderr

    def exec_argv(self, *argv: str) -> list:
        return ["ip", "netns", "exec", self.name] + list(argv)

    def close(self) -> None:
        sh("ip", "link", "del", self.host_if)
        sh("ip", "netns", "del", self.name)


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    ns = Namespace()
    yield ns
    ns.close()


def test_machine_behind_a_dropping_firewall_is_reachable_only_through_the_tunnel(
        ssh_keys: SshKeys, machine_sshd: SshServer, short_tmp: Path, namespace: Namespace) -> None:
    world = World(ssh_keys, short_tmp, machine_sshd)
    # The public server also listens on the host's end of the veth, where the machine reaches it.
    with open(world.server.config, "a") as f:
        f.write(f"ListenAddress {namespace.host_ip}\n")
    world.start()
    processes = []
    try:
        # The machine's own sshd, inside the namespace, listening on every address.
        inside = SshServer(ssh_keys, short_tmp / "inside", alias="inside")
        inside.config.write_text(inside.config.read_text().replace("ListenAddress 127.0.0.1",
                                                                     "ListenAddress 0.0.0.0"))
        processes.append(subprocess.Popen(namespace.exec_argv(SSHD, "-D", "-e", "-f", str(inside.config)),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # The agent, inside the namespace, reaching the server at the veth address.
        agent_config = short_tmp / "agent_ssh_config"
        known = short_tmp / "agent_known_hosts"
        known.write_text(f"[{namespace.host_ip}]:{world.server.port} {' '.join(ssh_keys.host_public)}\n")
        agent_config.write_text(
            f"Host pub\n  HostName {namespace.host_ip}\n  Port {world.server.port}\n"
            f"  IdentityFile {ssh_keys.user_key}\n  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
            "  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n")
        log = short_tmp / "agent.log"
        env = world.env(RTUN_SSH_COMMAND=f"ssh -F {agent_config}")
        with open(log, "wb") as out:
            processes.append(subprocess.Popen(
                namespace.exec_argv(*RTUN, "tunnel", "pub", "--name", "caged", "--local-port",
                                    str(inside.port), "--registry", str(world.registry), *FAST),
                env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out))
        wait_until(lambda: "[up]" in log.read_text(), timeout=30, what=f"agent up: {log}")

        # Directly, the machine's sshd is out of reach: the namespace drops the connection.
        direct = sh("ssh", "-F", str(world.ssh_config), "-o", "ConnectTimeout=2", "-p", str(inside.port),
                    namespace.ns_ip, "true")
        assert direct.returncode == 255 and "timed out" in direct.stderr, direct.stderr

        # Through the tunnel, a command runs inside the namespace.
        netns_inode = os.stat(f"/run/netns/{namespace.name}").st_ino
        done = world.rtun(["connect", "caged", "--via", "pub", "--registry", str(world.registry), "--",
                           "stat", "-L", "-c", "%i", "/proc/self/ns/net"])
        assert done.returncode == 0, done.stderr
        assert int(done.stdout) == netns_inode
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=20)
        world.server.stop()
