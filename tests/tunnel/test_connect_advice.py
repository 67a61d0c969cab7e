"""What `rtun connect` says before ssh would fail obscurely: a machine the registry marks offline
or that does not answer, and a first connect whose host key ssh cannot ask about. Real relay
sshd, real agent, real machine sshd."""

from __future__ import annotations

import socket

import pytest

from rtun.tunnel import registry
from support.tunnel import TunnelAgent, World
from support.wait import wait_until


@pytest.mark.parametrize("via", [[], ["--via", "pub"]], ids=["on-relay", "via-relay"])
def test_an_offline_machine_is_named_with_when_it_was_last_seen(
    world: World, running: TunnelAgent, via
) -> None:
    running.stop()  # a clean stop marks the entry offline
    wait_until(lambda: world.entry("pi")["status"] == "offline", what="the offline entry")
    argv = ["connect", "pi", "--registry", str(world.registry), *via, "--", "true"]

    done = world.rtun(argv)

    assert done.returncode == 1 and done.stdout == ""
    [line] = done.stderr.splitlines()
    gone = world.entry("pi")["disconnected_at"]
    assert line.startswith(
        f"rtun connect: pi is offline: its tunnel agent disconnected at {gone} (last seen "
    )
    assert f"`rtun hosts{' --via pub' if via else ''}` shows when it is back; --anyway tries" in line
    # --anyway: ssh's own failure, as before.
    anyway = world.rtun(argv[:2] + ["--anyway"] + argv[2:])
    assert anyway.returncode == 255 and "is offline" not in anyway.stderr


def test_a_machine_that_does_not_answer_is_named_too(world: World) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    world.registry.mkdir()
    entry = registry.Entry(
        name="gone",
        hostname="h",
        machine_id="d" * 32,
        user="u",
        port=port,
        local_port=22,
        os="Linux",
        agent_version="0",
        connected_at="2024-01-01T00:00:00Z",
        last_seen="2024-01-01T00:00:00Z",
    )
    (world.registry / entry.filename).write_bytes(entry.to_json())

    done = world.rtun(["connect", "gone", "--via", "pub", "--registry", str(world.registry), "--", "true"])

    assert done.returncode == 1
    assert done.stderr.startswith(
        f"rtun connect: gone does not answer on port {port} of the relay (last seen "
    )
    assert "d ago): its tunnel is down or reconnecting" in done.stderr


def test_a_first_connect_that_cannot_ask_explains_accepting_the_host_key(
    world: World, running: TunnelAgent
) -> None:
    strict = {"RTUN_SSH_COMMAND": world.ssh_command_line + " -o StrictHostKeyChecking=ask"}
    argv = ["connect", "pi", "--via", "pub", "--registry", str(world.registry), "--", "echo", "in"]

    first = world.rtun(argv, **strict)  # BatchMode (the world's ssh_config), no key known yet

    assert first.returncode == 255
    alias = f"rtun-pi-{world.entry('pi')['machine_id'][:8]}"
    assert first.stderr.startswith(
        f"rtun connect: the host key of pi (known as {alias}) is not in your known_hosts yet, and "
        "this ssh cannot ask you to accept it (BatchMode, or no terminal): run `rtun connect --via pub "
        "pi true` once in a terminal"
    )
    assert "StrictHostKeyChecking=accept-new" in first.stderr
    assert "Host key verification failed" in first.stderr  # ssh's own words follow
    # Accepted once (the world's accept-new), the same strict command works and says nothing.
    assert world.rtun(argv).returncode == 0
    again = world.rtun(argv, **strict)
    assert (again.returncode, again.stdout, again.stderr) == (0, "in\n", "")
