"""The tunnel command lines: `rtun tunnel SERVER` beside `install`/`uninstall`, and their errors."""

from __future__ import annotations

import pytest

from rtun import cli
from rtun.errors import UsageError
from rtun.tunnel import commands
from rtun.tunnel import connect as machines
from support.tunnel import World


@pytest.mark.parametrize("argv, command, server, name", [
    (["tunnel", "pub"], commands.tunnel, "pub", None),
    (["tunnel", "--name", "pi", "pub"], commands.tunnel, "pub", "pi"),
    (["tunnel", "pub", "--name", "pi"], commands.tunnel, "pub", "pi"),
    (["tunnel", "install", "--dry-run", "pub", "--name", "pi"], commands.install, "pub", "pi"),
    (["tunnel", "run", "install"], commands.tunnel, "install", None),
    (["tunnel", "run", "--name", "pi", "uninstall"], commands.tunnel, "uninstall", "pi"),
])
def test_tunnel_forms_parse(argv, command, server, name) -> None:
    found, args = cli.parse(argv)
    assert (found, args.server, args.name) == (command, server, name)


def test_the_command_name_is_the_form_used() -> None:
    assert cli.parse(["tunnel", "pub"])[1].command == "tunnel"
    assert cli.parse(["tunnel", "install", "pub"])[1].command == "tunnel install"


def test_uninstall_takes_no_server() -> None:
    found, args = cli.parse(["tunnel", "uninstall", "--system", "--dry-run"])
    assert found is commands.uninstall and args.system and args.dry_run
    with pytest.raises(UsageError, match="unrecognized arguments: pub"):
        cli.parse(["tunnel", "uninstall", "pub"])


def test_install_takes_the_agent_and_service_options() -> None:
    _, args = cli.parse(["tunnel", "install", "--system", "--run-as", "pi", "--init", "launchd",
                         "--no-start", "pub", "--heartbeat", "5", "--local", "10.0.0.2:2222"])
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
    commands._late_connect_options(args)
    assert (args.name, args.login, args.via, args.remote_command) == ("pi", "me", "pub", ["uptime", "-p"])
    _, args = cli.parse(["connect", "pi", "--", "ls", "-l"])
    commands._late_connect_options(args)
    assert args.login is None and machines.split_command(args.remote_command) == ("ls", "-l")
    _, args = cli.parse(["connect", "pi", "--bogus", "--", "true"])
    with pytest.raises(UsageError, match="put the command after --"):
        commands._late_connect_options(args)


def test_hosts_and_ssh_config_options() -> None:
    _, args = cli.parse(["hosts", "--via", "pub", "--json", "--timeout", "1.5"])
    assert (args.via, args.json, args.timeout, args.registry) == ("pub", True, 1.5, None)
    _, args = cli.parse(["ssh-config", "--registry", "/r"])
    assert (args.via, args.registry, args.command) == (None, "/r", "ssh-config")


@pytest.mark.parametrize("argv, message", [
    (["tunnel", "pub", "--name", "bad name!"], "--name"),
    (["tunnel", "--dry-run", "pub"], "goes with `rtun tunnel install`"),
    (["tunnel", "pub", "--local", "nope"], "HOST:PORT"),
    (["tunnel"], "name the server"),
    (["tunnel", "install", "pub", "--probe-interval", "0"], "--probe-interval must be positive"),
])
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
