"""The tunnel command lines: `rtun tunnel SERVER` beside `install`/`uninstall`/`authorize`, and
their errors."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rtun import cli
from rtun.errors import UsageError
from rtun.tunnel import commands, identity, readers, relayscript
from rtun.tunnel import connect as machines
from support.tunnel import World


@pytest.mark.parametrize(
    "argv, command, relays, name",
    [
        (["tunnel", "pub"], commands.tunnel, ["pub"], None),
        (["tunnel", "--name", "pi", "pub"], commands.tunnel, ["pub"], "pi"),
        (["tunnel", "pub", "--name", "pi"], commands.tunnel, ["pub"], "pi"),
        (["tunnel", "pub", "pub2", "--name", "pi"], commands.tunnel, ["pub", "pub2"], "pi"),
        (["tunnel", "install", "--dry-run", "pub", "--name", "pi"], commands.install, ["pub"], "pi"),
        (["tunnel", "install", "pub", "pub2"], commands.install, ["pub", "pub2"], None),
        (["tunnel", "run", "install"], commands.tunnel, ["install"], None),
        (["tunnel", "run", "--name", "pi", "uninstall"], commands.tunnel, ["uninstall"], "pi"),
    ],
)
def test_tunnel_forms_parse(argv, command, relays, name) -> None:
    found, args = cli.parse(argv)
    assert (found, args.relays, args.name) == (command, relays, name)


def test_the_command_name_is_the_form_used() -> None:
    assert cli.parse(["tunnel", "pub"])[1].command == "tunnel"
    assert cli.parse(["tunnel", "install", "pub"])[1].command == "tunnel install"


def test_uninstall_takes_no_server() -> None:
    found, args = cli.parse(["tunnel", "uninstall", "--system", "--dry-run"])
    assert found is commands.uninstall and args.system and args.dry_run
    with pytest.raises(UsageError, match="unrecognized arguments: pub"):
        cli.parse(["tunnel", "uninstall", "pub"])


def test_install_takes_the_agent_and_service_options() -> None:
    _, args = cli.parse(
        [
            "tunnel",
            "install",
            "--system",
            "--run-as",
            "pi",
            "--init",
            "launchd",
            "--no-start",
            "pub",
            "--heartbeat",
            "5",
            "--local",
            "10.0.0.2:2222",
        ]
    )
    assert (args.system, args.run_as, args.init, args.no_start) == (True, "pi", "launchd", True)
    assert (args.heartbeat, args.local) == (5.0, "10.0.0.2:2222")


@pytest.mark.parametrize("flag", ["--system", "--dry-run", "--no-start", "--run-as=pi", "--init=systemd"])
def test_service_options_are_refused_without_install(flag: str) -> None:
    command, args = cli.parse(["tunnel", flag, "pub"])
    with pytest.raises(UsageError, match=f"^{flag.split('=')[0]} goes with `rtun tunnel install`"):
        command.run(args)


def test_local_and_local_port_exclude_each_other() -> None:
    with pytest.raises(UsageError, match="not allowed with argument"):
        cli.parse(["tunnel", "pub", "--local", "h:22", "--local-port", "22"])


def test_options_after_the_connect_name_are_taken_back_from_the_command() -> None:
    _, args = cli.parse(["connect", "pi", "-l", "me", "--via", "pub", "--", "uptime", "-p"])
    readers._late_connect_options(args)
    assert (args.name, args.login, args.via, args.remote_command) == ("pi", "me", ["pub"], ["uptime", "-p"])
    _, args = cli.parse(["connect", "pi", "--", "ls", "-l"])
    readers._late_connect_options(args)
    assert args.login is None and machines.split_command(args.remote_command) == ("ls", "-l")
    _, args = cli.parse(["connect", "pi", "--bogus", "--", "true"])
    with pytest.raises(UsageError, match="put the command after --"):
        readers._late_connect_options(args)


def test_hosts_and_ssh_config_options() -> None:
    _, args = cli.parse(["hosts", "--via", "pub", "--json", "--timeout", "1.5"])
    assert (args.via, args.json, args.timeout, args.registry) == (["pub"], True, 1.5, None)
    # Several relays are several --via; A,B stays one jump chain.
    _, args = cli.parse(["hosts", "--via", "r1", "--via", "j1,r2", "--tag", "gpu", "--tag", "lab"])
    assert (args.via, args.tag) == (["r1", "j1,r2"], ["gpu", "lab"])
    _, args = cli.parse(["ssh-config", "--registry", "/r"])
    assert (args.via, args.registry, args.command) == (None, "/r", "ssh-config")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tunnel", "pub", "--name", "bad name!"], "--name"),
        (["tunnel", "--dry-run", "pub"], "goes with `rtun tunnel install`"),
        (["tunnel", "pub", "--local", "nope"], "HOST:PORT"),
        (["tunnel"], "name the relay"),
        (["tunnel", "install", "pub", "--probe-interval", "0"], "--probe-interval must be positive"),
    ],
)
def test_bad_tunnel_arguments_are_one_line_usage_errors(world: World, argv, message) -> None:
    done = world.rtun(argv)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1


def test_missing_ssh_is_a_one_line_error(world: World) -> None:
    done = world.rtun(["hosts", "--via", "pub"], RTUN_SSH_COMMAND="/nonexistent/ssh")
    assert done.returncode == 127 and "not found" in done.stderr and done.stderr.count("\n") == 1


def test_unreachable_via_server_is_a_one_line_error(world: World) -> None:
    world.server.stop()
    done = world.rtun(["hosts", "--via", "pub"])
    assert done.returncode == 1 and "cannot reach pub" in done.stderr and done.stderr.count("\n") == 1


# -- rtun tunnel authorize (not in cli.py's table yet: driven through its Command) ----------


def _authorize(*argv: str) -> str:
    parser = argparse.ArgumentParser()
    commands.authorize.arguments(parser)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert commands.authorize.run(parser.parse_args(list(argv))) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "k"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "a comment", "-f", str(path)], check=True
    )
    return Path(f"{path}.pub")


def test_authorize_binds_the_key_to_this_machine_and_its_port(public_key: Path) -> None:
    mid = identity.machine_id("raw-id")
    port = identity.preferred_port(mid)
    kind, blob = public_key.read_text().split()[:2]
    line = _authorize("--machine-id", "raw-id", "--name", "pi", str(public_key))
    assert line == (
        f'restrict,port-forwarding,permitlisten="127.0.0.1:{port}",permitopen="127.0.0.1:{port}",'
        f'command="sh .rtun/rtun-relay serve {mid} .rtun/hosts" {kind} {blob} rtun-tunnel:pi\n'
    )
    # The same from the key's text, or from stdin.
    assert _authorize("--machine-id", "raw-id", "--name", "pi", public_key.read_text().strip()) == line
    stdin, sys.stdin = sys.stdin, io.StringIO(public_key.read_text())
    try:
        assert _authorize("--machine-id", "raw-id", "--name", "pi", "-") == line
    finally:
        sys.stdin = stdin


def test_authorize_options(public_key: Path) -> None:
    base = ["--machine-id", "m", "--name", "pi"]
    assert 'permitlisten="127.0.0.1:2222",permitopen="127.0.0.1:2222"' in _authorize(
        *base, "--port", "2222", str(public_key)
    )
    assert 'permitlisten="127.0.0.1:*",permitopen="127.0.0.1:*"' in _authorize(
        *base, "--any-port", str(public_key)
    )
    line = _authorize(*base, "--script", "/opt/rtun/relay", "--registry", "~/srv/hosts", str(public_key))
    assert f'command="sh /opt/rtun/relay serve {identity.machine_id("m")} srv/hosts"' in line
    assert _authorize("--print-script") == relayscript.SCRIPT


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--script", "a b"], "--script"),
        (["--script", 'x"y'], "--script"),
        (["--registry", "../x"], "--registry"),
        (["--registry=-rf"], "--registry"),
        (["--registry", "x\n"], "--registry"),
        (["--name", "a\n"], "--name"),
        (["--port", "0"], "not a TCP port"),
    ],
)
def test_authorize_refuses_what_would_break_the_line(public_key: Path, argv, message: str) -> None:
    parser = argparse.ArgumentParser()
    commands.authorize.arguments(parser)
    with pytest.raises(UsageError, match=re.escape(message)):
        commands.authorize.run(parser.parse_args(argv + [str(public_key)]))


@pytest.mark.parametrize(
    "key",
    [
        "ssh-ed25519",
        "ssh-ed25519 !!!!",
        "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAABAQ",
        "ssh-dss AAAA",
        'command="id" ssh-ed25519 AAAA',
        "-----BEGIN OPENSSH PRIVATE KEY-----",
    ],
)
def test_authorize_takes_only_a_public_key(key: str) -> None:
    parser = argparse.ArgumentParser()
    commands.authorize.arguments(parser)
    with pytest.raises(UsageError):
        commands.authorize.run(parser.parse_args([key]))
