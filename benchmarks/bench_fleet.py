"""A fleet on one relay: N real `rtun tunnel` agents (default 500), each with its own tunnel key
authorized by the line `rtun tunnel authorize` prints (the forced-command relay script), against
one relay sshd on this machine with OpenSSH's default MaxStartups (10:30:100).

Measured: the time until all are registered; the relay sshd's memory per tunnel (PSS of the
sshd processes that serve the tunnels); `rtun hosts --via` listing all N; then the relay's sshd
restarts (every session dropped, a new sshd on the same port at once) and: the time until all
are registered again, the connections sshd dropped past MaxStartups on the way (its log), the
agents' failed attempts (their logs), and the CPU the whole machine spent on it per machine.

The machines' own sshds are not the relay's cost and would be 500 hosts in a real fleet: here
one small process stands in for all of them (MACHINE below: it answers with an SSH banner, as
the agents' end-to-end probes and the listing's need), so that 500 sshd forks per probe round
on this one machine do not take the relay's CPU.

Settings (environment): RTUN_BENCH_FLEET_N (500), RTUN_BENCH_FLEET_START_RATE (agents started
per second, 25: a fleet booting over 20 s, not in one instant), RTUN_BENCH_FLEET_TIMEOUT (300 s
per phase), RTUN_BENCH_FLEET_STARTUPS (the relay's MaxStartups, 10:30:100), RTUN_BENCH_FLEET_KEEP (keep the logs and registry in /tmp/rf*).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from common import Result, busy_seconds
from rtun.tunnel import identity, registry, relay
from support.rtun import RTUN
from support.sshd import SshKeys, SshServer
from support.tunnel import RelayAccount, World
from support.wait import wait_until

N = int(os.environ.get("RTUN_BENCH_FLEET_N", "500"))
START_RATE = float(os.environ.get("RTUN_BENCH_FLEET_START_RATE", "25"))
TIMEOUT = float(os.environ.get("RTUN_BENCH_FLEET_TIMEOUT", "300"))
# OpenSSH's default; RTUN_BENCH_FLEET_STARTUPS="100:30:300" measures docs/relay.md's large fleets.
STARTUPS = "MaxStartups " + os.environ.get("RTUN_BENCH_FLEET_STARTUPS", "10:30:100")
DROPPED = re.compile(r"past MaxStartups")
MACHINE = r"""
import socket, sys, threading
server = socket.create_server(("127.0.0.1", 0))
print(server.getsockname()[1], flush=True)
def hold(conn):
    with conn:
        conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 machine\r\n")
        while conn.recv(4096):
            pass
while True:
    threading.Thread(target=hold, args=(server.accept()[0],), daemon=True).start()
"""


def _relay_config(server: SshServer) -> None:
    """OpenSSH's defaults where the test sshd raises them: the relay as a real one is."""
    text = server.config.read_text()
    server.config.write_text(text.replace("MaxStartups 200", STARTUPS).replace("MaxSessions 100\n", ""))


def _unique_ids(count: int) -> List[Tuple[str, str, int]]:
    """Machine ids (as given to the agent, and as the registry has them, hashed) whose derived
    ports differ: each key may listen on its own port only."""
    found: Dict[int, Tuple[str, str]] = {}
    while len(found) < count:
        raw = os.urandom(16).hex()
        machine_id = identity.machine_id(raw)
        port = identity.preferred_port(machine_id)
        if _free(port):  # a port something here holds would make that machine's key useless
            found.setdefault(port, (raw, machine_id))
    return [(raw, mid, port) for port, (raw, mid) in found.items()]


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys = SshKeys(root / "keys")
        self.machine = subprocess.Popen([sys.executable, "-c", MACHINE], stdout=subprocess.PIPE, text=True)
        assert self.machine.stdout is not None
        self.machine_port = int(self.machine.stdout.readline())
        self.world_machine = SshServer(self.keys, root / "machine", alias="machine")  # World wants one
        relay_keys = root / "relay_authorized_keys"
        relay_keys.write_text(self.keys.authorized_keys.read_text())  # the admin's own key
        self.world = World(self.keys, root / "world", self.world_machine, authorized_keys=relay_keys)
        _relay_config(self.world.server)
        self.world.start()
        self.account = RelayAccount(self.world)
        self.agents: List[subprocess.Popen] = []
        self.logs: List[Path] = []
        self.machines = _unique_ids(N)
        self._authorize(relay_keys)

    def _authorize(self, relay_keys: Path) -> None:
        lines = []
        self.configs: List[Path] = []
        for n, (_, machine_id, port) in enumerate(self.machines):
            key = self.root / "tk" / f"m{n}"
            key.parent.mkdir(exist_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
            key_type, blob = Path(f"{key}.pub").read_text().split()[:2]
            lines.append(
                relay.authorized_line(
                    key_type,
                    blob,
                    machine_id,
                    f"m{n}",
                    port,
                    str(self.account.script),
                    str(self.world.registry),
                )
            )
            self.configs.append(self.world.client_config(key, self.root / "tk" / f"m{n}.ssh_config"))
        with open(relay_keys, "a") as f:
            f.write("".join(line + "\n" for line in lines))

    def start_agents(self) -> float:
        began = time.monotonic()
        for n, (raw, _, _) in enumerate(self.machines):
            log = self.root / "logs" / f"m{n}.log"
            log.parent.mkdir(exist_ok=True)
            self.logs.append(log)
            env = self.world.env(RTUN_SSH_COMMAND=f"ssh -F {self.configs[n]}")
            with open(log, "ab") as out:
                self.agents.append(
                    subprocess.Popen(
                        RTUN
                        + ["tunnel", "pub", "--name", f"m{n}", "--local-port", str(self.machine_port)]
                        + ["--registry", str(self.world.registry), "--machine-id", raw],
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=out,
                    )
                )
            pause = began + (n + 1) / START_RATE - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # pacing the start, not waiting for a condition
        return began

    def registered_since(self, since: float) -> int:
        count = 0
        for path in self.world.registry.glob("*.json"):
            try:
                entry = registry.parse_entry(path.read_bytes())
            except (OSError, ValueError):
                continue
            if (
                registry.parse_iso(entry.last_seen) >= int(since) and entry.status == "online"
            ):  # whole seconds
                count += 1
        return count

    def wait_registered(self, since: float) -> float:
        wait_until(
            lambda: self.registered_since(since) >= N, timeout=TIMEOUT, interval=0.5, what=f"{N} entries"
        )
        return time.time() - since

    def relay_pss_kib(self) -> int:
        """PSS of every sshd process under the relay's listener (its sessions and their children)."""
        assert self.world.server.process is not None
        root = self.world.server.process.pid
        children: Dict[int, List[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                children.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry))
        total, todo = 0, list(children.get(root, []))
        while todo:
            pid = todo.pop()
            todo += children.get(pid, [])
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    def restart_relay(self) -> float:
        """The relay's sshd and every session gone, a new one on the same port at once."""
        self.world.server.stop()
        at = time.time()
        self.world.generation += 1
        server = SshServer(
            self.keys, self.world.root / f"pub{self.world.generation}", "pub", self.world.server.port
        )
        server.config.write_text(self.world.server.config.read_text())  # the same relay
        self.world.server = server
        server.start()
        return at

    def failed_attempts(self, since_line: Dict[Path, int]) -> int:
        """Lines of lost connections and failed connects in the agents' logs after the restart,
        less the one loss each agent saw when the relay went."""
        failed = 0
        for log in self.logs:
            lines = log.read_text(errors="replace").splitlines()[since_line.get(log, 0) :]
            failed += sum(1 for line in lines if "[lost]" in line or "[waiting]" in line and "failed" in line)
        return max(failed - N, 0)

    def close(self) -> None:
        for agent in self.agents:
            agent.terminate()
        for agent in self.agents:
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
        self.world.server.stop()
        self.machine.kill()
        self.machine.wait()


def _line_counts(logs: List[Path]) -> Dict[Path, int]:
    return {log: len(log.read_text(errors="replace").splitlines()) for log in logs}


def _listing_seconds(fleet: Fleet) -> Tuple[float, int]:
    began = time.perf_counter()
    done = subprocess.run(
        RTUN + ["hosts", "--via", "pub", "--registry", str(fleet.world.registry)],
        env=fleet.world.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    seconds = time.perf_counter() - began
    live = sum(1 for line in done.stdout.splitlines() if " live" in line)
    return seconds, live


def measure() -> List[Result]:
    root = Path(tempfile.mkdtemp(prefix="rf", dir="/tmp"))
    fleet: Optional[Fleet] = None
    try:
        fleet = Fleet(root)
        began = time.time()
        fleet.start_agents()
        registered = fleet.wait_registered(began)
        pss = fleet.relay_pss_kib() / 1024 / N
        listing, live = _listing_seconds(fleet)
        before = _line_counts(fleet.logs)
        busy = busy_seconds()
        restarted = fleet.restart_relay()
        back = fleet.wait_registered(restarted)
        cpu = (busy_seconds() - busy) * 1000 / N
        assert fleet.world.server.process is not None
        dropped = len(DROPPED.findall(fleet.world.server.log.read_text(errors="replace")))
        failed = fleet.failed_attempts(before)
        return [
            Result(f"{N} agents all registered on one relay", registered, "s", "(figure)", True),
            Result("relay sshd memory per tunnel (PSS)", pss, "MiB", "(figure)", True),
            Result(
                f"rtun hosts --via listing {live} of {N} live",
                listing,
                "s",
                "<= 2 s",
                listing <= 2 and live == N,
            ),
            Result(f"after the relay restarts: all {N} back", back, "s", "<= 30 s", back <= 30),
            Result(
                "connections dropped past MaxStartups on the way back", dropped, "", "<= 50", dropped <= 50
            ),
            Result("the agents' failed attempts on the way back", failed, "", "(figure)", True),
            Result("the machine's CPU per machine brought back (all processes)", cpu, "ms", "(figure)", True),
        ]
    finally:
        if fleet is not None:
            fleet.close()
        if not os.environ.get("RTUN_BENCH_FLEET_KEEP"):
            shutil.rmtree(root, ignore_errors=True)
