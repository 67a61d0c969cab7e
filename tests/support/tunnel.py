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
from typing import Dict, List, Optional, Sequence

from support.rtun import RTUN, clean_env
from support.sshd import SshKeys, SshServer
from support.wait import wait_until

# Short intervals for tests; the defaults stay as documented.
FAST = [
    "--probe-interval",
    "1",
    "--probe-timeout",
    "2",
    "--heartbeat",
    "1",
    "--max-backoff",
    "1",
    "--stable-after",
    "5",
    "--reconnect-spread",
    "1",
    "--alive-interval",
    "1",
    "--alive-count",
    "2",
    "--connect-timeout",
    "3",
]
UP = "[up] 127.0.0.1:"  # the line of the up state itself; ssh's words are logged as [up] too


class World:
    """The public server (alias ``pub``), the registry directory on it, and the client config."""

    def __init__(
        self,
        keys: SshKeys,
        root: Path,
        machine: SshServer,
        port: Optional[int] = None,
        authorized_keys: Optional[Path] = None,
        sshd_extra: str = "",
        alias: str = "pub",
    ) -> None:
        self.keys = keys
        self.alias = alias  # the relay's Host alias in the client config
        self.root = root
        self.machine = machine
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.registry = root / "registry"
        # The relay's own authorized_keys (default: the test run's shared one) and sshd_config
        # lines (Match blocks welcome: they go last).
        self.authorized_keys = authorized_keys
        self.sshd_extra = sshd_extra
        self.server = self._relay(root / "pub", port)
        self.machine_known_hosts = root / "known_machines"
        self.machine_known_hosts.touch()
        self.ssh_config = root / "ssh_config"
        self.ssh_config.write_text(
            self.server.client_config.read_text()
            + "\n".join(
                [
                    "Host *",
                    f"    IdentityFile {keys.user_key}",
                    "    IdentitiesOnly yes",
                    f"    UserKnownHostsFile {self.machine_known_hosts}",
                    "    GlobalKnownHostsFile /dev/null",
                    "    StrictHostKeyChecking accept-new",
                    "    BatchMode yes",
                    "    LogLevel ERROR",
                    "",
                ]
            )
        )
        self.generation = 0

    @property
    def ssh_command_line(self) -> str:
        return shlex.join(["ssh", "-F", str(self.ssh_config)])

    def env(self, **extra: str) -> Dict[str, str]:
        return clean_env(self.home, **{"RTUN_SSH_COMMAND": self.ssh_command_line, **extra})

    def _relay(self, directory: Path, port: Optional[int]) -> SshServer:
        server = SshServer(self.keys, directory, alias=self.alias, port=port)
        config = server.config.read_text()
        if self.authorized_keys is not None:
            config = config.replace(
                f"AuthorizedKeysFile {self.keys.authorized_keys}",
                f"AuthorizedKeysFile {self.authorized_keys}",
            )
        server.config.write_text(config + self.sshd_extra)
        return server

    def start(self) -> "World":
        self.server.start()
        return self

    def restart_server(self) -> None:
        """A new sshd on the same port, as after a reboot of the server."""
        self.generation += 1
        self.server = self._relay(self.root / f"pub{self.generation}", self.server.port)
        self.server.start()

    def client_config(self, identity: Path, path: Path) -> Path:
        """An ssh_config like the world's, but offering only ``identity`` to the relay."""
        text = self.ssh_config.read_text()
        path.write_text(text.replace(f"IdentityFile {self.keys.user_key}", f"IdentityFile {identity}"))
        return path

    def rtun(self, args: List[str], timeout: float = 60, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            RTUN + args,
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def entries(self) -> Dict[str, dict]:
        found = {}
        for path in sorted(self.registry.glob("*.json")):
            if path.is_symlink() or not path.is_file():  # a planted FIFO must not hang the test
                continue
            try:
                found[path.name] = json.loads(path.read_text())
            except (OSError, ValueError, RecursionError):
                continue
        return found

    def entry(self, name: str) -> Optional[dict]:
        for data in self.entries().values():
            if data.get("name") == name:
                return data
        return None


class TunnelAgent:
    """`rtun tunnel pub` as a real process, logging to a file."""

    def __init__(
        self,
        world: World,
        name: str,
        extra: Optional[List[str]] = None,
        machine_id: Optional[str] = None,
        prefix: Optional[List[str]] = None,
        env: Optional[Dict[str, str]] = None,
        relays: Sequence[str] = ("pub",),
    ) -> None:
        self.world = world
        self.name = name
        # A machine id of its own: another agent on this host (a real one, a benchmark) must not
        # hold this test's preferred port.
        machine_id = machine_id or f"test-{uuid.uuid4().hex}"
        self.log = world.root / f"agent-{name}-{machine_id}.log"
        args = (
            ["tunnel"]
            + list(relays)
            + [
                "--name",
                name,
                "--local-port",
                str(world.machine.port),
                "--registry",
                str(world.registry),
            ]
            + FAST
            + (extra or [])
        )
        args += ["--machine-id", machine_id]
        log = open(self.log, "ab")
        self.process = subprocess.Popen(
            (prefix or []) + RTUN + args,
            env=world.env(**(env or {})),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
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
        self.wait_for(UP, times, timeout)
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


def authorize(*argv: str) -> str:
    """What `rtun tunnel authorize ARGV...` prints on stdout (run in this process: the command
    is not in rtun's CLI table yet)."""
    import argparse
    import contextlib
    import io

    from rtun.tunnel import commands

    parser = argparse.ArgumentParser()
    commands.authorize.arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert commands.authorize.run(parser.parse_args(list(argv))) == 0
    return out.getvalue()


# The relay's sshd_config for its tunnel account, as docs/relay.md gives it (with the test
# user, and keepalives short enough for tests).
def relay_sshd_config(user: str) -> str:
    return "\n".join(
        [
            f"Match User {user}",
            "    AllowStreamLocalForwarding no",
            "    AllowAgentForwarding no",
            "    X11Forwarding no",
            "    PermitTunnel no",
            "    GatewayPorts no",
            "    ClientAliveInterval 1",
            "    ClientAliveCountMax 2",
            "",
        ]
    )


class RelayAccount:
    """The relay set up as docs/relay.md says: the relay script installed over ssh with the
    admin's key, and a tunnel key per machine authorized with the line `rtun tunnel authorize`
    prints. The admin key (the test run's user key) stays unrestricted."""

    def __init__(self, world: World) -> None:
        assert world.authorized_keys is not None, "World(authorized_keys=...) first"
        self.world = world
        self.script = world.root / "relay" / "rtun-relay"
        self.script.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            world.server.ssh_command + [world.alias, f"cat > {self.script}"],
            input=authorize("--print-script"),
            text=True,
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr

    def tunnel_key(self, name: str, *extra: str, machine_id: Optional[str] = None) -> "TunnelKey":
        key = TunnelKey(self, name, machine_id or f"test-{uuid.uuid4().hex}", extra)
        with open(self.world.authorized_keys, "a") as f:  # type: ignore[arg-type]
            f.write(key.line)
        return key


class TunnelKey:
    def __init__(self, account: RelayAccount, name: str, machine_id: str, extra: tuple) -> None:
        world = account.world
        self.name, self.machine_id = name, machine_id
        self.path = world.root / f"tunnel_key_{name}_{machine_id[-6:]}"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}-tunnel", "-f", str(self.path)],
            check=True,
        )
        self.line = authorize(
            "--name",
            name,
            "--machine-id",
            machine_id,
            "--script",
            str(account.script),
            "--registry",
            str(world.registry),
            *extra,
            f"{self.path}.pub",
        )
        self.config = world.client_config(self.path, world.root / f"ssh_config_{self.path.name}")

    @property
    def ssh(self) -> List[str]:
        return ["ssh", "-F", str(self.config)]

    @property
    def env(self) -> Dict[str, str]:
        return {"RTUN_SSH_COMMAND": shlex.join(self.ssh)}

    def run(self, *argv: str, input: str = "", timeout: float = 20) -> subprocess.CompletedProcess:
        """ssh to the relay with this key alone."""
        return subprocess.run(
            self.ssh + list(argv), input=input, capture_output=True, text=True, timeout=timeout
        )
