"""The tunnel command line: `rtun tunnel SERVER` beside `install`/`uninstall`, and its errors."""

from __future__ import annotations

import pytest

from rtun.cli import build_parser
from rtun.errors import UsageError
from rtun.tunnel import commands, identity
from support.tunnel import World


@pytest.mark.parametrize("argv, action, server, name", [
    (["tunnel", "pub"], "run", "pub", None),
    (["tunnel", "--name", "pi", "pub"], "run", "pub", "pi"),
    (["tunnel", "pub", "--name", "pi"], "run", "pub", "pi"),
    (["tunnel", "install", "--dry-run", "pub", "--name", "pi"], "install", "pub", "pi"),
    (["tunnel", "run", "install"], "run", "install", None),
])
def test_tunnel_forms_parse(argv, action, server, name) -> None:
    args = build_parser().parse_args(argv)
    assert (args.tunnel_action, args.server, args.name) == (action, server, name)


def test_uninstall_takes_no_server() -> None:
    args = build_parser().parse_args(["tunnel", "uninstall", "--system", "--dry-run"])
    assert args.tunnel_action == "uninstall" and args.system and args.dry_run


def test_settings_defaults_come_from_the_machine() -> None:
    s = commands.settings_from(build_parser().parse_args(["tunnel", "pub"]))
    assert s.local_host == "localhost" and s.local_port == 22 and s.registry == "~/.rtun/hosts"
    assert s.preferred_port == identity.preferred_port(s.machine_id)
    assert 10000 <= s.preferred_port < 30000 and s.probe_interval == 60


def test_local_host_port_and_bad_values() -> None:
    assert commands.parse_local("10.0.0.2:2222", None) == ("10.0.0.2", 2222)
    assert commands.parse_local("[::1]:22", None) == ("::1", 22)
    for bad in ("nohost", ":22", "h:99999"):
        with pytest.raises(UsageError):
            commands.parse_local(bad, None)


def test_machine_id_is_hashed_and_stable() -> None:
    assert identity.machine_id("abc") == identity.machine_id("abc") != identity.machine_id("abd")
    assert "abc" not in identity.machine_id("abc") and len(identity.machine_id("abc")) == 32


@pytest.mark.parametrize("argv, message", [
    (["tunnel", "pub", "--name", "bad name!"], "--name"),
    (["tunnel", "--dry-run", "pub"], "goes with `rtun tunnel install`"),
    (["tunnel", "pub", "--local", "nope"], "HOST:PORT"),
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
