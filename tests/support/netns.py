"""A network namespace joined to the host by a veth pair: a second machine's network on this
one, with a loopback of its own. Needs root and `ip` (iproute2)."""

from __future__ import annotations

import random
import subprocess
import uuid
from typing import List, Optional


def sh(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, **kwargs)


class Namespace:
    """``host_ip`` is the host's end of the veth, ``ns_ip`` the namespace's; ``firewall``, an
    nftables ruleset, is loaded inside."""

    def __init__(self, firewall: Optional[str] = None) -> None:
        tag = uuid.uuid4().hex[:6]
        self.name = f"rtun-{tag}"
        self.host_if, self.ns_if = f"rth{tag}", f"rtn{tag}"
        subnet = random.randrange(1, 250)  # namespaces of one run never share an address
        self.host_ip, self.ns_ip = f"10.251.{subnet}.1", f"10.251.{subnet}.2"
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
            if done.returncode != 0:
                self.close()
                raise RuntimeError(f"{step}: {done.stderr}")
        if firewall is not None:
            done = sh(*self.exec_argv("nft", "-f", "-"), input=firewall)
            assert done.returncode == 0, done.stderr

    def exec_argv(self, *argv: str) -> List[str]:
        return ["ip", "netns", "exec", self.name] + list(argv)

    def close(self) -> None:
        sh("ip", "link", "del", self.host_if)
        sh("ip", "netns", "del", self.name)
