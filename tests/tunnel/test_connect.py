"""`rtun hosts`, `rtun connect` and `rtun ssh-config` against a real tunnel through a real server."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from rtun.tunnel import connect, registry
from support.tunnel import TunnelAgent, World


def _entry(name: str, mid: str, port: int, status: str = "online") -> registry.Entry:
    return registry.Entry(
        name=name,
        hostname="h",
        machine_id=mid,
        user="u",
        port=port,
        local_port=22,
        os="Linux",
        agent_version="0",
        connected_at="2024-01-01T00:00:00Z",
        last_seen="2024-01-01T00:00:00Z",
        status=status,
    )


@pytest.mark.parametrize("via", [False, True], ids=["on-server", "via-server"])
def test_hosts_lists_the_agent_as_live(world: World, running: TunnelAgent, via: bool) -> None:
    args = ["hosts", "--registry", str(world.registry), "--json"] + (["--via", "pub"] if via else [])
    done = world.rtun(args)
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert [(m["name"], m["live"], m["state"]) for m in listing["machines"]] == [("pi", True, "live")]
    assert (listing["skipped"], listing["cut"]) == ([], None)


def test_connect_runs_a_command_on_the_machine_and_passes_its_exit_code(
    world: World, running: TunnelAgent
) -> None:
    done = world.rtun(
        [
            "connect",
            "pi",
            "--via",
            "pub",
            "--registry",
            str(world.registry),
            "--",
            "echo",
            "on-$((6*7))",
            ";",
            "exit",
            "3",
        ]
    )
    assert (done.returncode, done.stdout) == (3, "on-42\n"), done.stderr
    # The machine's key is stored under its own HostKeyAlias, not [127.0.0.1]:PORT.
    known = world.machine_known_hosts.read_text()
    assert known.startswith(f"rtun-pi-{running_mid(world)[:8]} ")


def running_mid(world: World) -> str:
    return world.entry("pi")["machine_id"]


def test_connect_takes_options_after_the_name(world: World, running: TunnelAgent) -> None:
    done = world.rtun(
        [
            "connect",
            "pi",
            "--via",
            "pub",
            "-l",
            world.machine.user,
            "--registry",
            str(world.registry),
            "--",
            "id",
            "-un",
        ]
    )
    assert (done.returncode, done.stdout.strip()) == (0, world.machine.user), done.stderr


def test_connect_unknown_name_is_a_one_line_error(world: World, running: TunnelAgent) -> None:
    done = world.rtun(["connect", "nosuch", "--via", "pub", "--registry", str(world.registry), "--", "true"])
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "no machine named 'nosuch'" in done.stderr and "pi" in done.stderr


def test_ssh_config_block_reaches_the_machine(world: World, running: TunnelAgent) -> None:
    done = world.rtun(["ssh-config", "--via", "pub", "--registry", str(world.registry)])
    assert done.returncode == 0 and "Host pi.rtun\n" in done.stdout and "ProxyJump pub" in done.stdout
    config = world.root / "with_machines"
    config.write_text(done.stdout + "\n" + world.ssh_config.read_text())
    result = subprocess.run(
        ["ssh", "-F", str(config), "pi.rtun", "echo", "via-config"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (0, "via-config\n"), result.stderr


def test_hosts_skips_hostile_files_and_lists_the_rest(world: World, running: TunnelAgent) -> None:
    reg = world.registry
    (reg / ("0" * 32 + ".json")).write_bytes(b"\x00\xff not json")
    (reg / ("1" * 32 + ".json")).write_text('{"schema": 1, "name": "\\u001b[31mred"}')
    (reg / ("2" * 32 + ".json")).write_text("[" * 100000)
    (reg / ("3" * 32 + ".json")).write_bytes(b" " * (2 * registry.MAX_ENTRY_BYTES))
    os.mkfifo(reg / ("4" * 32 + ".json"))
    (reg / "evil\nname.json").write_text("{}")  # not an entry's name: not looked at
    os.symlink("/etc/passwd", reg / ("5" * 32 + ".json"))
    mine = json.loads((reg / f"{running_mid(world)}.json").read_text())
    (reg / ("6" * 32 + ".json")).write_text(json.dumps({**mine, "name": "pi\n"}))
    for via in ([], ["--via", "pub"]):
        done = world.rtun(["hosts", "--registry", str(reg)] + via, timeout=30)
        assert done.returncode == 0, done.stderr
        rows = done.stdout.splitlines()[1:]
        assert [r.split()[0] for r in rows] == ["pi"] and "live" in rows[0]
        assert done.stderr.count("skipped") == 7, done.stderr
        assert "\x1b" not in done.stdout + done.stderr


def test_table_shows_age_and_status() -> None:
    listing = connect.Listing(
        [_entry("a", "a" * 32, 10001), _entry("b", "b" * 32, 10002, "offline"), _entry("c", "c" * 32, 10003)],
        [],
        {"a" * 32: True},
    )
    now = registry.parse_iso("2024-01-01T02:00:05Z")
    lines = connect.table(listing, now).splitlines()
    assert lines[0].split()[:3] == ["NAME", "PORT", "USER"]
    assert [line.split()[4:6] for line in lines[1:]] == [["ago", "live"], ["ago", "offline"], ["ago", "down"]]
    assert lines[1].split()[3] == "2h"


def test_find_by_name_alias_or_machine_id_prefix() -> None:
    entries = [_entry("lab", "a" * 32, 1), _entry("lab", "b" * 32, 2), _entry("pi", "c" * 32, 3)]
    assert connect.find(entries, "pi").port == 3
    assert connect.find(entries, "lab-bbbbbbbb").port == 2
    assert connect.find(entries, "aaaa").port == 1
    with pytest.raises(connect.UnknownMachineError, match="several machines"):
        connect.find(entries, "lab")


def test_connect_argv_uses_proxyjump_and_host_key_alias() -> None:
    argv = connect.connect_argv(["ssh", "-F", "cfg"], _entry("pi", "c" * 32, 12345), "pub", None, ["uptime"])
    assert argv == [
        "ssh",
        "-F",
        "cfg",
        "-o",
        "HostKeyAlias=rtun-pi-cccccccc",
        "-p",
        "12345",
        "-l",
        "u",
        "-J",
        "pub",
        "--",
        "127.0.0.1",
        "uptime",
    ]
    local = connect.connect_argv(["ssh"], _entry("pi", "c" * 32, 12345), None, "me", [])
    assert "-J" not in local and local[-1] == "127.0.0.1" and "me" in local


def test_two_thousand_machines_list_whole_through_the_relay(world: World) -> None:
    reg = world.registry
    reg.mkdir()
    for n in range(2000):
        e = _entry(f"m{n}", f"{n:032x}", 40000 + n % 20000)
        (reg / e.filename).write_bytes(e.to_json())
    done = world.rtun(
        ["hosts", "--via", "pub", "--registry", str(reg), "--json", "--timeout", "1"], timeout=60
    )
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert len(listing["machines"]) == 2000 and (listing["skipped"], listing["cut"]) == ([], None)
    assert done.stderr == ""


def test_junk_cannot_push_real_entries_out_and_the_cut_is_said(world: World) -> None:
    """Junk just under the size cap, past the listing's byte budget: every real entry is listed
    (the smallest files go first), and the cut is said on stderr and in --json. (Through the
    relay, the same rules are the relay script's: test_relayscript.py.)"""
    reg = world.registry
    reg.mkdir()
    for n in range(20):
        e = _entry(f"m{n}", f"{n:032x}", 40000 + n)
        (reg / e.filename).write_bytes(e.to_json())
    for n in range(registry.MAX_LISTING_BYTES // registry.MAX_ENTRY_BYTES + 10):
        (reg / f"{0xF << 124 | n:032x}.json").write_bytes(b" " * registry.MAX_ENTRY_BYTES)
    done = world.rtun(["hosts", "--registry", str(reg), "--json", "--timeout", "0.2"], timeout=60)
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    assert len(listing["machines"]) == 20 and listing["cut"].startswith("listing cut: 11 of 1054")
    assert f"rtun hosts: {listing['cut']}\n" in done.stderr
