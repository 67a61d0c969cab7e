"""The tunnel's world for tests: a public server, the machine's own sshd, and `rtun tunnel` itself.

Both sshds are real OpenSSH servers on 127.0.0.1 (support.sshd). One ssh_config reaches both:
the public server by its alias, and the machine (always 127.0.0.1:PORT on the server, named by a
per-machine HostKeyAlias) through the ``Host *`` defaults, whose known_hosts starts empty and
accepts a new machine key once.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import uuid
from pathlib import Path
from typing import Dict, List, Optional

from support.rtun import RTUN, clean_env
from support.sshd import SshKeys, SshServer
from support.wait import wait_until

# Short intervals for tests; the defaults stay as documented.
FAST = ["--probe-interval", "1", "--probe-timeout", "2", "--heartbeat", "1", "--max-backoff", "1",
        "--stable-after", "5", "--alive-interval", "1", "--alive-count", "2", "--connect-timeout", "3"]


class World:
    """The public server (alias ``pub``), the registry directory on it, and the client config."""

    def __init__(self, keys: SshKeys, root: Path, machine: SshServer, port: Optional[int] = None) -> None:
        self.keys = keys
        self.root = root
        self.machine = machine
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.registry = root / "registry"
        self.server = SshServer(keys, root / "pub", alias="pub", port=port)
        self.machine_known_hosts = root / "known_machines"
        self.machine_known_hosts.touch()
        self.ssh_config = root / "ssh_config"
        self.ssh_config.write_text(
            self.server.client_config.read_text()
            + "\n".join([
                "Host *",
                f"    IdentityFile {keys.user_key}",
                "    IdentitiesOnly yes",
                f"    UserKnownHostsFile {self.machine_known_hosts}",
                "    GlobalKnownHostsFile /dev/null",
                "    StrictHostKeyChecking accept-new",
                "    BatchMode yes",
                "    LogLevel ERROR",
                "",
            ])
        )
        self.generation = 0

    @property
    def ssh_command_line(self) -> str:
        return shlex.join(["ssh", "-F", str(self.ssh_config)])

    def env(self, **extra: str) -> Dict[str, str]:
        return clean_env(self.home, **{"RTUN_SSH_COMMAND": self.ssh_command_line, **extra})

    def start(self) -> "World":
        self.server.start()
        return self

    def restart_server(self) -> None:
        """A new sshd on the same port, as after a reboot of the server."""
        self.generation += 1
        port = self.server.port
        self.server = SshServer(self.keys, self.root / f"pub{self.generation}", alias="pub", port=port)
        self.server.start()

    def rtun(self, args: List[str], timeout: float = 60, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(RTUN + args, env=self.env(**extra), capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def entries(self) -> Dict[str, dict]:
        found = {}
        for path in sorted(self.registry.glob("*.json")):
            try:
                found[path.name] = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
        return found

    def entry(self, name: str) -> Optional[dict]:
        for data in self.entries().values():
            if data.get("name") == name:
                return data
        return None


class TunnelAgent:
    """`rtun tunnel pub` as a real process, logging to a file."""

    def __init__(self, world: World, name: str, extra: Optional[List[str]] = None,
                 machine_id: Optional[str] = None, prefix: Optional[List[str]] = None) -> None:
        self.world = world
        self.name = name
        # A machine id of its own: another agent on this host (a real one, a benchmark) must not
        # hold this test's preferred port.
        machine_id = machine_id or f"test-{uuid.uuid4().hex}"
        self.log = world.root / f"agent-{name}-{machine_id}.log"
        args = ["tunnel", "pub", "--name", name, "--local-port", str(world.machine.port),
                "--registry", str(world.registry)] + FAST + (extra or [])
        args += ["--machine-id", machine_id]
        log = open(self.log, "ab")
        self.process = subprocess.Popen((prefix or []) + RTUN + args, env=world.env(),
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def count(self, marker: str) -> int:
        return self.log_text().count(marker)

    def wait_for(self, marker: str, times: int = 1, timeout: float = 30) -> None:
        def seen() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"agent exited {self.process.returncode}:\n{self.log_text()}")
            return self.count(marker) >= times

        try:
            wait_until(seen, timeout=timeout, interval=0.05, what=f"{marker!r} x{times} in the agent log")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- agent log ---\n{self.log_text()}") from None

    def wait_up(self, times: int = 1, timeout: float = 30) -> dict:
        self.wait_for("[up]", times, timeout)
        entry = wait_until(lambda: self.world.entry(self.name), timeout=10, what="registry entry")
        return entry

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
