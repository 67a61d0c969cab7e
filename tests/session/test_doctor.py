"""`rtun doctor [HOST]`: one line per check, and exit 1 when something would not work."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Dict, Iterator

import pytest

from session.harness import LOCAL_CHECKS, REMOTE_CHECKS, Laptop
from support.notifications import NotificationService, SessionBus
from support.rtun import RtunDaemon

NAMES = LOCAL_CHECKS + REMOTE_CHECKS


@pytest.fixture
def bus(short_tmp: Path) -> Iterator[SessionBus]:
    running = SessionBus().start()
    service = NotificationService(running, short_tmp / "notifications.jsonl").start()
    yield running
    service.stop()
    running.stop()


def _statuses(text: str) -> Dict[str, str]:
    found = {}
    for line in text.splitlines():
        label, _, rest = line.partition("  ")
        found[rest.strip().split(":")[0]] = label.strip()
    return found


def test_a_healthy_set_up_is_all_ok_and_exits_0(laptop: Laptop, bus, server_home):
    config = laptop.home / ".config" / "rtun" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        '[view]\nopener = ["/bin/true"]\n[open]\nbrowser = ["/bin/true"]\n'
        '[clipboard]\ncopy = ["/bin/true"]\n[edit]\neditor = ["/bin/true"]\n'
    )
    daemon = RtunDaemon(
        laptop.home, laptop.home / "Downloads", env={"DBUS_SESSION_BUS_ADDRESS": bus.address}
    ).start()
    try:
        assert laptop.rtun(["install", "srv"]).returncode == 0
        result = laptop.rtun(["doctor", "srv"], DBUS_SESSION_BUS_ADDRESS=bus.address)
        assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
        statuses = _statuses(result.stdout.decode())
        assert list(statuses) == NAMES and set(statuses.values()) == {"ok"}, result.stdout.decode()
        assert "OK PONG through srv, round trip" in result.stdout.decode()
        as_json = json.loads(
            laptop.rtun(["doctor", "--json", "srv"], DBUS_SESSION_BUS_ADDRESS=bus.address).stdout
        )
        assert as_json["ok"] is True and [c["name"] for c in as_json["checks"]] == NAMES
        assert as_json["laptop"] == laptop.laptop_id
    finally:
        daemon.stop()
    assert list((server_home / ".rtun").glob("rtun.sock.*")) == []  # its forward is gone too


def test_each_problem_is_one_red_line_with_what_to_do_and_exit_1(laptop: Laptop, server_home):
    (server_home / ".rtun").mkdir(mode=0o700)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(server_home / ".rtun" / "rtun.sock.1700000000"))
    dead.close()
    config = laptop.home / ".config" / "rtun" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[view]\nopener = ["no-such-opener"]\n')
    result = laptop.rtun(["doctor", "srv"])  # no daemon, no D-Bus, no client on srv
    assert result.returncode == 1
    text = result.stdout.decode()
    statuses = _statuses(text)
    assert list(statuses) == NAMES
    for name in ("daemon", "notifications", "opener", "client", "forward"):
        assert statuses[name] == "FAIL", text
    assert statuses["stale sockets"] == "warn" and statuses["config"] == "ok"
    for line in text.splitlines():
        if line.startswith("FAIL"):
            assert " -- " in line, line  # what to do about it
    assert "rtun server -d" in text and "rtun install srv" in text
    data = json.loads(laptop.rtun(["doctor", "--json", "srv"]).stdout)
    assert data["ok"] is False


def test_an_invalid_config_or_an_unreachable_host_fails(laptop: Laptop):
    config = laptop.home / ".config" / "rtun" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("[server]\nno_such_key = 1\n")
    bad = laptop.rtun(["doctor"])
    assert bad.returncode == 1 and bad.stdout.decode().startswith("FAIL  config: ")
    assert "unknown setting" in bad.stdout.decode()
    config.unlink()
    unreachable = laptop.rtun(["doctor", "no-such-host.invalid"])
    assert unreachable.returncode == 1
    assert _statuses(unreachable.stdout.decode())["ssh"] == "FAIL"
