"""`--identity KEY`: the tunnel key named on the command line (no RTUN_SSH_COMMAND), through a
relay set up as docs/relay.md says, whose ssh_config offers only a key the relay refuses."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rtun.ssh import argv as sshargv
from rtun.ssh import hints
from rtun.tunnel import hostnames, registry
from support.tunnel import RelayAccount, TunnelAgent, TunnelKey, World


def _refused_config(world: World) -> Path:
    """ssh_config whose own key is in no authorized_keys: only --identity can get in."""
    stranger = world.root / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    return world.client_config(stranger, world.root / "stranger_config")


@pytest.fixture
def key(account: RelayAccount) -> TunnelKey:
    return account.tunnel_key("pi")


def test_the_agent_hosts_and_connect_use_the_named_key(account: RelayAccount, key: TunnelKey, agents) -> None:
    world = account.world
    env = {"RTUN_SSH_COMMAND": f"ssh -F {_refused_config(world)}"}
    refused = TunnelAgent(world, "pi", machine_id=key.machine_id, env=env)
    agents.append(refused)
    refused.wait_for("[waiting]")
    # Without it: refused, and the hint names the option.
    assert "Permission denied" in refused.log_text() and "--identity KEY" in refused.log_text()
    refused.stop()

    agent = TunnelAgent(world, "pi", machine_id=key.machine_id, env=env, extra=["--identity", str(key.path)])
    agents.append(agent)
    agent.wait_up()

    listed = world.rtun(["hosts", "--via", "pub", "--json", "--identity", str(key.path)], **env)
    assert listed.returncode == 0, listed.stderr
    assert [(m["name"], m["state"]) for m in json.loads(listed.stdout)["machines"]] == [("pi", "live")]
    without = world.rtun(["hosts", "--via", "pub"], **env)
    assert without.returncode == 1 and "--identity KEY" in without.stderr


def test_connect_logs_in_on_the_machine_with_the_named_key(world: World, agents, ssh_keys) -> None:
    agent = TunnelAgent(world, "pi")
    agents.append(agent)
    agent.wait_up()
    env = {"RTUN_SSH_COMMAND": f"ssh -F {_refused_config(world)}"}  # the machine refuses it too

    argv = ["connect", "pi", "--registry", str(world.registry), "--", "echo", "in"]
    refused = world.rtun(argv, **env)
    assert refused.returncode == 255 and "Permission denied" in refused.stderr
    # After NAME too, as connect's other options.
    done = world.rtun(argv[:2] + ["--identity", str(ssh_keys.user_key)] + argv[2:], **env)
    assert (done.returncode, done.stdout) == (0, "in\n"), done.stderr


def test_ssh_config_and_the_boot_service_carry_it(world: World, key_file: Path) -> None:
    world.registry.mkdir()
    entry = _entry()
    (world.registry / entry.filename).write_bytes(entry.to_json())
    done = world.rtun(["ssh-config", "--registry", str(world.registry), "--identity", str(key_file)])
    assert done.returncode == 0, done.stderr
    assert f'    IdentityFile "{str(key_file).replace("%", "%%")}"\n    IdentitiesOnly yes' in done.stdout

    unit = world.rtun(["tunnel", "install", "--dry-run", "pub", "--identity", "~/keys/tunnel"])
    assert unit.returncode == 2 and "no such file" in unit.stderr
    (world.home / "keys").mkdir()
    (world.home / "keys" / "tunnel").write_text("private\n")
    unit = world.rtun(["tunnel", "install", "--dry-run", "pub", "--identity", "~/keys/tunnel"])
    assert unit.returncode == 0, unit.stderr
    # An absolute path: the service does not start in this directory or with this $HOME known.
    assert f"--identity {world.home}/keys/tunnel" in unit.stdout


@pytest.fixture
def key_file(world: World) -> Path:
    path = world.root / "id_with space%d"
    path.write_text("private\n")
    return path


def test_the_key_is_offered_alone_and_read_literally() -> None:
    assert sshargv.ssh_base({"RTUN_SSH_COMMAND": "ssh -F c"}, check=False, identity="/k/a%h") == [
        "ssh",
        "-F",
        "c",
        "-i",
        "/k/a%%h",
        "-o",
        "IdentitiesOnly=yes",
    ]
    assert sshargv.ssh_base({}, check=False) == ["ssh"]
    assert "--identity KEY" in hints.hint(255, "user@relay: Permission denied (publickey).")


def _entry() -> registry.Entry:
    return registry.Entry(
        name="pi",
        hostname="h",
        machine_id="c" * 32,
        user="u",
        port=2222,
        local_port=22,
        os="Linux",
        agent_version="0",
        connected_at="2024-01-01T00:00:00Z",
        last_seen="2024-01-01T00:00:00Z",
    )


def test_ssh_config_writes_identityfile_for_each_machine() -> None:
    text, _ = hostnames.ssh_config([_entry()], "pub", "/k/id with space%d")
    assert '    IdentityFile "/k/id with space%%d"\n    IdentitiesOnly yes' in text


@pytest.mark.parametrize("pub", [True, False])
def test_authorize_given_the_private_key_points_to_the_public_one(world: World, pub: bool) -> None:
    path = world.root / "id_tunnel"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    if not pub:
        Path(f"{path}.pub").unlink()
    done = world.rtun(["tunnel", "authorize", str(path)])
    assert done.returncode == 2 and done.stdout == ""
    if pub:
        assert done.stderr == (
            f"rtun tunnel authorize: '{path}' is a private key: give its public half, "
            f"rtun tunnel authorize '{path}.pub'\n"
        )
    else:
        assert f"ssh-keygen -y -f '{path}' > '{path}.pub'" in done.stderr
    assert "PRIVATE" not in done.stderr  # never echoes the key
