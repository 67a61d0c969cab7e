"""The relay set up as docs/relay.md says, against the real sshd: a tunnel key authorized with
the line `rtun tunnel authorize` prints keeps its tunnel and its registry entry, and can do
nothing else: no shell, no other command, no other port, no other machine's entry."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from rtun.tunnel import identity, relay
from support.sshd import banner
from support.tunnel import RelayAccount, TunnelAgent, TunnelKey, World, relay_sshd_config
from support.wait import wait_until

REFUSED = "rtun-relay 1 refused:"


def test_the_authorized_line_has_the_documented_shape(account: RelayAccount) -> None:
    key = account.tunnel_key("pi")
    mid = identity.machine_id(key.machine_id)
    port = identity.preferred_port(mid)
    options, _, rest = key.line.rstrip("\n").rpartition('" ')
    kind, blob, comment = rest.split(" ")
    assert key.line.count("\n") == 1 and (kind, comment) == ("ssh-ed25519", "rtun-tunnel:pi")
    assert options + '"' == (
        f'restrict,port-forwarding,permitlisten="127.0.0.1:{port}",'
        f'permitopen="127.0.0.1:{port}",'
        f'command="sh {account.script} serve {mid} {account.world.registry}"'
    )
    assert blob == Path(f"{key.path}.pub").read_text().split()[1]


def test_agent_registers_and_tunnels_through_the_forced_command(account: RelayAccount, agents) -> None:
    world = account.world
    key = account.tunnel_key("pi")
    agent = TunnelAgent(
        world,
        "pi",
        machine_id=key.machine_id,
        env=key.env,
        extra=["--registry", "/the/forced/command/decides"],
    )
    agents.append(agent)
    entry = agent.wait_up()
    assert entry["port"] == identity.preferred_port(entry["machine_id"])
    assert banner(entry["port"]).startswith(b"SSH-2.0-")
    first = entry["last_seen"]
    wait_until(lambda: world.entry("pi")["last_seen"] > first, timeout=10, what="a heartbeat")
    # Listing with the tunnel key works too (its own port alone is probed: permitopen).
    done = world.rtun(["hosts", "--via", "pub", "--json"], **key.env)
    assert done.returncode == 0, done.stderr
    assert [(m["name"], m["state"]) for m in json.loads(done.stdout)["machines"]] == [("pi", "live")]
    # And the admin reaches the machine through it.
    done = world.rtun(
        ["connect", "pi", "--via", "pub", "--registry", str(world.registry), "--", "echo", "in"]
    )
    assert (done.returncode, done.stdout) == (0, "in\n"), done.stderr
    assert agent.stop() == 0 and world.entry("pi")["status"] == "offline"


HOSTILE_COMMANDS = [
    ["id"],
    ["sh -c id"],
    ["sh", "-c", "id"],
    ["exec /bin/sh -i"],
    ["rtun-relay list ../etc"],
    ["rtun-relay put x; id"],
    ["rtun-relay list 0123456789abcdef0123456789abcdef; id"],
    ["rtun-relay put 0123456789abcdef0123456789abcdef\nid"],
    ["rtun-relay  list 0123"],
    ["internal-sftp"],
    [],
]


class Master:
    """One connection with the tunnel key; each request over it is a session (or a forward) of
    its own, checked by sshd afresh."""

    def __init__(self, account: RelayAccount, key: TunnelKey) -> None:
        self.key, self.control = key, account.world.root / f"ctl-{key.path.name}"
        self.process = subprocess.Popen(
            key.ssh + ["-M", "-N", "-S", str(self.control), "pub"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.control.exists, timeout=15, what="the tunnel key's master connection")

    def run(self, *argv: str, input: str = "") -> subprocess.CompletedProcess:
        return self.key.run("-S", str(self.control), "-o", "ControlMaster=no", *argv, input=input)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def key(account: RelayAccount) -> TunnelKey:
    return account.tunnel_key("pi")


@pytest.fixture
def master(account: RelayAccount, key: TunnelKey) -> Iterator[Master]:
    connection = Master(account, key)
    yield connection
    connection.close()


def test_the_tunnel_key_runs_no_shell_and_no_other_command(account: RelayAccount, master: Master) -> None:
    for command in HOSTILE_COMMANDS:
        done = master.run("-o", "RequestTTY=no", "pub", *command)
        assert done.returncode == 2 and done.stdout.startswith(REFUSED), (command, done.stdout, done.stderr)
        assert "uid=" not in done.stdout + done.stderr, command
    assert not account.world.registry.exists()  # nothing was written


def test_the_tunnel_key_gets_no_pty_and_no_subsystem(account: RelayAccount) -> None:
    key = account.tunnel_key("pi")
    done = key.run("-tt", "pub", "id")
    assert done.returncode != 0 and "uid=" not in done.stdout
    assert "PTY allocation request failed" in done.stderr
    done = key.run("-s", "pub", "sftp")
    assert "uid=" not in done.stdout and done.returncode != 0


def test_the_tunnel_key_cannot_write_another_machines_entry(account: RelayAccount) -> None:
    world = account.world
    key = account.tunnel_key("pi")
    other = "f" * 32
    world.registry.mkdir()
    victim = world.registry / f"{other}.json"
    victim.write_text('{"the": "victim"}')
    for target in (other, "0" * 32):
        done = key.run("pub", f"rtun-relay put {target}", input='{"evil": 1}')
        assert done.returncode == 2 and "may only write the entry of machine" in done.stdout, done.stdout
    assert victim.read_text() == '{"the": "victim"}'
    assert sorted(p.name for p in world.registry.iterdir()) == [victim.name]
    # Its own entry: yes, bounded in size, written whole or not at all.
    mid = identity.machine_id(key.machine_id)
    done = key.run("pub", f"rtun-relay put {mid}", input='{"mine": 1}')
    assert (done.returncode, done.stdout) == (0, "rtun-relay 1 ok\n"), done.stderr
    done = key.run("pub", f"rtun-relay put {mid}", input="x" * 20000)
    assert done.returncode == 2 and "larger than" in done.stdout
    assert (world.registry / f"{mid}.json").read_text() == '{"mine": 1}'
    assert sorted(p.name for p in world.registry.iterdir()) == sorted([victim.name, f"{mid}.json"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_tunnel_key_forwards_only_its_own_port(
    account: RelayAccount, key: TunnelKey, master: Master
) -> None:
    world = account.world
    port = identity.preferred_port(identity.machine_id(key.machine_id))
    other = _free_port()  # free: a forward there would work, if it were allowed
    # Listening on the relay: its own port on 127.0.0.1, nothing else.
    own = f"127.0.0.1:{port}:127.0.0.1:{world.machine.port}"
    assert master.run("-O", "forward", "-R", own, "pub").returncode == 0
    for spec in (
        f"127.0.0.1:{other}:127.0.0.1:22",
        "127.0.0.1:0:127.0.0.1:22",
        f"localhost:{port}:127.0.0.1:22",
        f"0.0.0.0:{port}:127.0.0.1:22",
    ):
        done = master.run("-O", "forward", "-R", spec, "pub")
        assert done.returncode != 0 and "forwarding request failed" in done.stderr, (spec, done.stderr)
    # A UNIX socket on the relay: AllowStreamLocalForwarding no in the tunnel account's Match.
    sock = world.root / "planted.sock"
    done = master.run("-O", "forward", "-R", f"{sock}:127.0.0.1:22", "pub")
    assert done.returncode != 0 and not sock.exists(), done.stderr
    # A fresh connection asking for a forbidden -R at login is turned away too.
    done = key.run("-N", "-o", "ExitOnForwardFailure=yes", "-R", f"127.0.0.1:{other}:127.0.0.1:22", "pub")
    assert done.returncode == 255 and "remote port forwarding failed" in done.stderr, done.stderr
    # Connections from the relay: only to its own port (which leads to the machine's sshd), not
    # to anything else that listens there: the relay's sshd, another service, a UNIX socket.
    assert master.run("-W", f"127.0.0.1:{port}", "pub").stdout.startswith("SSH-2.0-")
    service = socket.socket()
    service.bind(("127.0.0.1", 0))
    service.listen(1)
    try:
        for target in (
            f"127.0.0.1:{world.server.port}",
            f"localhost:{port}",
            "127.0.0.1:%d" % service.getsockname()[1],
        ):
            done = master.run("-W", target, "pub")
            assert done.returncode == 255 and "forwarding request failed" in done.stderr, (
                target,
                done.stderr,
            )
            assert "SSH-2.0" not in done.stdout
    finally:
        service.close()
    listener = world.root / "relay-service.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(listener))
    server.listen(1)
    server.settimeout(1)
    local = world.root / "mine.sock"
    try:
        assert master.run("-O", "forward", "-L", f"{local}:{listener}", "pub").returncode == 0
        client = socket.socket(socket.AF_UNIX)
        client.connect(str(local))
        with pytest.raises(socket.timeout):
            server.accept()  # the relay never connected: permitopen covers UNIX sockets too
        client.close()
    finally:
        server.close()


def test_a_line_sshd_rejects_gives_a_hint_that_says_so(relay_world: World, agents) -> None:
    """The line docs/tunnel.md used to give: OpenSSH 9.2 rejects permitlisten port 0 and skips
    the whole line, so the key is refused; the log must not just say "add your key"."""
    key_path = relay_world.root / "old_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_path)], check=True)
    old = (
        'restrict,port-forwarding,permitlisten="127.0.0.1:29820",permitlisten="127.0.0.1:0",'
        f'permitopen="127.0.0.1:*" {Path(f"{key_path}.pub").read_text()}'
    )
    with open(relay_world.authorized_keys, "a") as f:  # type: ignore[arg-type]
        f.write(old)
    config = relay_world.client_config(key_path, relay_world.root / "old_config")
    agent = TunnelAgent(relay_world, "pi", env={"RTUN_SSH_COMMAND": f"ssh -F {config}"})
    agents.append(agent)
    agent.wait_for("[waiting]")
    log = agent.log_text()
    assert "Permission denied" in log and "skipped its line" in log and "rtun tunnel authorize" in log


def test_the_documented_set_up_is_the_tested_one() -> None:
    """docs/relay.md and docs/tunnel.md show the line `rtun tunnel authorize` prints and the
    sshd_config block these tests run with (but for the keepalives, shortened for tests)."""
    docs = Path(__file__).resolve().parents[2] / "docs"
    relay_md, tunnel_md = (docs / "relay.md").read_text(), (docs / "tunnel.md").read_text()
    mid = "4bbf2bec0322d84c7500768286a76e14"
    blob = "AAAAC3NzaC1lZDI1NTE5"
    line = relay.authorized_line("ssh-ed25519", blob, mid, "pi", identity.preferred_port(mid))
    line = line.replace(blob, "AAAA…")
    assert line in tunnel_md
    assert line.replace(",command=", ",\ncommand=") in relay_md
    block = (
        relay_sshd_config("rtun")
        .replace("Interval 1\n", "Interval 15\n")
        .replace("CountMax 2\n", "CountMax 3\n")
    )
    assert block.strip() in relay_md
    assert (
        "rtun tunnel authorize --print-script | ssh rtun@relay 'umask 022; mkdir -p .rtun && cat > .rtun/rtun-relay'"
        in relay_md
    )
