"""Names of registered machines: unique aliases, the ``.rtun`` Host namespace, and ssh_config text
that the real ssh parses (``ssh -G``) whatever the registry holds."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Dict, List

import pytest

from rtun.errors import UsageError
from rtun.tunnel import connect, hostnames, registry
from support.rtun import run_rtun


def entry(name: str, mid: str, port: int = 10001, user: str = "u") -> registry.Entry:
    return registry.Entry(
        name=name,
        hostname="h",
        machine_id=mid,
        user=user,
        port=port,
        local_port=22,
        os="Linux",
        agent_version="0",
        connected_at="2024-01-01T00:00:00Z",
        last_seen="2024-01-01T00:00:00Z",
    )


def ssh_g(config: Path, host: str) -> Dict[str, str]:
    done = subprocess.run(
        ["ssh", "-G", "-F", str(config), host],
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"ssh -G {host}: {done.stderr}"
    return {k: v for k, _, v in (line.partition(" ") for line in done.stdout.splitlines())}


def host_lines(text: str) -> List[str]:
    return [line.split(" ", 1)[1] for line in text.splitlines() if line.startswith("Host ")]


def test_aliases_are_the_names_unless_they_clash_ignoring_case() -> None:
    a, b, c, d = ("a" * 32, "b" * 32, "c" * 32, "d" * 32)
    names = hostnames.aliases([entry("pi", a), entry("lab", b), entry("Lab", c), entry("x", d)])
    assert names == {a: "pi", b: f"lab-{b[:8]}", c: f"Lab-{c[:8]}", d: "x"}


def test_a_shared_id_prefix_takes_the_whole_machine_id() -> None:
    one, two = "1234abcd" + "0" * 24, "1234abcd" + "f" * 24
    names = hostnames.aliases([entry("lab", one), entry("lab", two)])
    assert names == {one: f"lab-{one}", two: f"lab-{two}"}


def test_a_name_spelling_out_another_machines_alias_is_the_one_that_moves() -> None:
    victim, twin, spoof = "a" * 32, "b" * 32, "c" * 32
    entries = [entry("pi", victim), entry("pi", twin), entry(f"pi-{victim[:8]}", spoof)]
    names = hostnames.aliases(entries)
    assert names[victim] == f"pi-{victim[:8]}" and names[spoof] == f"pi-{victim[:8]}-{spoof}"
    assert connect.find(entries, f"pi-{victim[:8]}").machine_id == victim
    assert connect.find(entries, f"PI-{victim[:8]}.rtun").machine_id == victim


def test_ssh_config_hosts_live_in_their_own_namespace(tmp_path: Path) -> None:
    entries = [
        entry("github.com", "a" * 32, 10001),
        entry("pub", "b" * 32, 10002),
        entry("Pi", "c" * 32, 10003),
    ]
    text, problems = hostnames.ssh_config(entries, "pub")
    assert problems == [] and host_lines(text) == ["github.com.rtun", "pi.rtun", "pub.rtun"]
    config = tmp_path / "config"
    config.write_text(text + "\nHost pub\n    HostName 192.0.2.7\n")
    assert ssh_g(config, "github.com")["hostname"] == "github.com"  # the real host is untouched
    assert ssh_g(config, "pub")["hostname"] == "192.0.2.7"  # and so is the relay
    seen = ssh_g(config, "pi.rtun")  # Host names are lower-case
    assert (seen["hostname"], seen["port"], seen["proxyjump"]) == ("127.0.0.1", "10003", "pub")
    assert ssh_g(config, "github.com.rtun")["hostkeyalias"] == f"rtun-github.com-{'a' * 8}"


def test_ssh_config_emits_each_host_once_and_never_the_relays_name() -> None:
    entries = [entry("lab", "a" * 32), entry("lab", "b" * 32), entry("relay", "c" * 32)]
    text, problems = hostnames.ssh_config(entries, "me@relay.rtun:2222")
    assert host_lines(text) == [f"lab-{'a' * 8}.rtun", f"lab-{'b' * 8}.rtun"]
    assert problems == [f"left out machine {'c' * 32}: its Host name relay.rtun is the relay's"]
    clash = [entry("x", "a" * 32), entry("x", "a" * 31 + "b"), entry(f"x-{'a' * 31}b", "c" * 32)]
    text, problems = hostnames.ssh_config(clash, None)
    assert len(set(h.lower() for h in host_lines(text))) == len(host_lines(text))


def test_ssh_config_of_several_relays_fails_over_through_rtun_connect_proxy(tmp_path: Path) -> None:
    """Several relays: a ProxyCommand per machine (the relay chosen when ssh connects) that ssh
    parses back word for word, %-tokens kept literal; no relay's host can be a machine's."""
    entries = [entry("pi", "a" * 32, 10001), entry("r2", "b" * 32, 10002)]
    words = ["--via", "r1", "--via", "r2.rtun", "--registry", "/d/100%"]
    text, problems = hostnames.ssh_config(
        entries,
        "r1,r2.rtun",
        None,
        lambda alias: connect.proxy_command(["connect", "--proxy", alias] + words),
    )
    assert host_lines(text) == ["pi.rtun"]
    assert problems == [f"left out machine {'b' * 32}: its Host name r2.rtun is the relay's"]
    config = tmp_path / "config"
    config.write_text(text)
    seen = ssh_g(config, "pi.rtun")
    assert "    Port " not in text and "ProxyJump" not in text  # the proxy picks relay and port
    assert "proxyjump" not in seen and seen["hostkeyalias"] == f"rtun-pi-{'a' * 8}"
    command = seen["proxycommand"]
    # ssh -G shows it before %-expansion: %% is the one literal % ssh runs.
    assert command.endswith("connect --proxy pi --via r1 --via r2.rtun --registry /d/100%%"), command


@pytest.mark.parametrize(
    "via",
    ["pub\nHost *", "a b", "-oProxyCommand=x", "pub%h", 'p"b', "p#b", "pub\n", "", "a,", "*", "!pub", "é"],
)
def test_hostile_relay_names_are_refused(via: str) -> None:
    with pytest.raises(UsageError, match="is not an ssh destination"):
        hostnames.check_via(via)


@pytest.mark.parametrize("via", ["pub", "me@pub.example.org:2222", "a,b@c:22", "[::1]:22", "10.0.0.1"])
def test_ordinary_relay_names_pass(via: str) -> None:
    assert hostnames.check_via(via) == via


HOSTILE = [
    "pi\n",
    "pi\nHost *",
    "a b",
    'a"b',
    "a'b",
    "pi#x",
    "*",
    "!pi",
    "pi%h",
    "p" * 300,
    "café",
    "pi\x1b[2J",
    "pi\x00",
    "pi\u202e",
    "-oProxyCommand=touch /tmp/x",
    "pi\r",
    "\t",
    "pi\\",
]


def test_hostile_entries_never_reach_ssh_config_or_the_table(tmp_path: Path) -> None:
    directory = tmp_path / "hosts"
    directory.mkdir()
    good = entry("good", "f" * 32)
    (directory / good.filename).write_bytes(good.to_json())
    n = 0
    for field in ("name", "user", "hostname", "os", "agent_version", "last_seen", "machine_id"):
        for value in HOSTILE:
            n += 1
            data = json.loads(entry("ok", f"{n:032x}").to_json())
            data[field] = value
            (directory / f"{n:032x}.json").write_text(json.dumps(data))
    home = tmp_path / "home"
    home.mkdir()
    done = run_rtun(["ssh-config", "--registry", str(directory)], home)
    assert done.returncode == 0 and done.stderr.count(b": skipped ") == 50  # then how many more
    assert b"more files skipped" in done.stderr and b"\x1b" not in done.stderr
    config = tmp_path / "config"
    config.write_bytes(done.stdout)
    hosts = host_lines(done.stdout.decode())
    # What is left: the good one, and the entries whose free-text fields (os, agent_version,
    # which never reach ssh) hold the hostile text.
    assert "good.rtun" in hosts and all(h == "good.rtun" or h.startswith("ok-") for h in hosts)
    assert len(hosts) == 1 + 2 * sum(1 for v in HOSTILE if registry.valid(registry.TEXT_RE, v))
    for host in hosts:  # the whole file parses, and each block is ours
        assert ssh_g(config, host)["hostname"] == "127.0.0.1"
    shape = re.compile(r"Host [a-z0-9._-]+\.rtun|    (HostName|Port|User|HostKeyAlias) [A-Za-z0-9._@-]+|")
    assert all(shape.fullmatch(line) for line in done.stdout.decode().splitlines()[1:])
    done = run_rtun(["hosts", "--registry", str(directory), "--timeout", "0.2"], home)
    rows = done.stdout.decode().splitlines()
    assert len(rows) == len(hosts) + 1 and b"\x1b" not in done.stdout
    assert all(len(row.split()) >= 7 and row.isprintable() for row in rows[1:])


def test_duplicate_aliases_on_the_command_line_are_reported(tmp_path: Path) -> None:
    directory = tmp_path / "hosts"
    directory.mkdir()
    for e in (entry("x", "a" * 32), entry("x", "a" * 31 + "b"), entry(f"x-{'a' * 31}b", "c" * 32)):
        (directory / e.filename).write_bytes(e.to_json())
    done = run_rtun(["ssh-config", "--registry", str(directory)], tmp_path)
    hosts = host_lines(done.stdout.decode())
    assert done.returncode == 0 and len(hosts) == len(set(hosts))
    config = tmp_path / "config"
    config.write_bytes(done.stdout)
    for host in hosts:
        assert ssh_g(config, host)["hostname"] == "127.0.0.1"
