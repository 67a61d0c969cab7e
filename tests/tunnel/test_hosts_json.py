"""`rtun hosts --json`: the documented shape, every key present for every machine, with the live
probe against a real sshd (a registry on this host, as on the relay itself)."""

from __future__ import annotations

import json
from pathlib import Path

from rtun.tunnel import registry
from rtun.tunnel.connect import Listing
from rtun.tunnel.readers import hosts_document
from support.rtun import run_rtun
from support.sshd import SshServer, free_port

MACHINE_KEYS = {
    "name",
    "alias",
    "hostname",
    "machine_id",
    "user",
    "port",
    "local_port",
    "os",
    "agent_version",
    "status",
    "connected_at",
    "last_seen",
    "disconnected_at",
    "live",
    "state",
    "age_seconds",
    "tags",
    "relays",
    "relays_live",
}


def _entry(name: str, mid: str, port: int, **changes: object) -> registry.Entry:
    fields = dict(
        name=name,
        hostname=f"{name}-host",
        machine_id=mid,
        user="u",
        port=port,
        local_port=22,
        os="Linux",
        agent_version="0.1.0",
        connected_at="2024-01-01T00:00:00Z",
        last_seen="2024-01-01T00:00:00Z",
    )
    fields.update(changes)
    return registry.Entry(**fields)  # type: ignore[arg-type]


def test_hosts_json_gives_every_key_of_every_machine(sshd: SshServer, short_tmp: Path) -> None:
    directory = short_tmp / "hosts"
    directory.mkdir()
    machines = [
        _entry("pi", "a" * 32, sshd.port),  # a real sshd answers there: live
        _entry("lab", "b" * 32, free_port()),  # registered online, nothing answers: down
        _entry("old", "c" * 32, free_port(), status="offline", disconnected_at="2024-01-02T00:00:00Z"),
    ]
    for entry in machines:
        (directory / entry.filename).write_bytes(entry.to_json())
    (directory / ("d" * 32 + ".json")).write_text("not json")

    result = run_rtun(["hosts", "--registry", str(directory), "--json", "--timeout", "2"], short_tmp)

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert sorted(document) == ["cut", "machines", "skipped"]
    assert document["cut"] is None
    [skipped] = document["skipped"]
    assert "d" * 32 in skipped
    found = {m["name"]: m for m in document["machines"]}
    assert all(set(m) == MACHINE_KEYS for m in document["machines"])
    assert {name: (m["state"], m["live"]) for name, m in found.items()} == {
        "pi": ("live", True),
        "lab": ("down", False),
        "old": ("offline", False),
    }
    assert found["pi"]["port"] == sshd.port and found["pi"]["alias"] == "pi"
    assert found["pi"]["disconnected_at"] is None  # present, null: the key never goes missing
    assert found["old"]["disconnected_at"] == "2024-01-02T00:00:00Z"
    assert found["lab"]["age_seconds"] > 3600 * 24 * 300  # last seen in 2024
    # This host's registry: no relays to name; and no tags given, an empty list.
    assert (found["pi"]["relays"], found["pi"]["relays_live"], found["pi"]["tags"]) == ([], [], [])


def test_hosts_tag_filters_and_shows_tags(short_tmp: Path) -> None:
    directory = short_tmp / "hosts"
    directory.mkdir()
    for entry in (
        _entry("gpu1", "a" * 32, free_port(), tags=["gpu", "lab"]),
        _entry("gpu2", "b" * 32, free_port(), tags=["gpu"]),
        _entry("plain", "c" * 32, free_port()),
    ):
        (directory / entry.filename).write_bytes(entry.to_json())

    def names(*tags: str) -> list:
        argv = ["hosts", "--registry", str(directory), "--json", "--timeout", "1"]
        result = run_rtun(argv + [w for t in tags for w in ("--tag", t)], short_tmp)
        assert result.returncode == 0, result.stderr
        return sorted((m["name"], tuple(m["tags"])) for m in json.loads(result.stdout)["machines"])

    assert names() == [("gpu1", ("gpu", "lab")), ("gpu2", ("gpu",)), ("plain", ())]
    assert names("gpu") == [("gpu1", ("gpu", "lab")), ("gpu2", ("gpu",))]
    assert names("gpu", "lab") == [("gpu1", ("gpu", "lab"))]  # several: all must match
    assert names("nope") == []
    table = run_rtun(["hosts", "--registry", str(directory), "--timeout", "1"], short_tmp)
    header, *rows = table.stdout.decode().splitlines()
    assert "TAGS" in header.split() and any("gpu,lab" in row.split() for row in rows), table.stdout
    bad = run_rtun(["hosts", "--registry", str(directory), "--tag", "GPU!"], short_tmp)
    assert bad.returncode != 0 and b"--tag" in bad.stderr


def test_hosts_json_of_an_empty_registry_is_still_the_document(short_tmp: Path) -> None:
    directory = short_tmp / "hosts"
    directory.mkdir()
    result = run_rtun(["hosts", "--registry", str(directory), "--json"], short_tmp)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"machines": [], "skipped": [], "cut": None}


def test_unknown_fields_of_an_entry_stay_out_of_the_document() -> None:
    entry = _entry("pi", "e" * 32, 40000)
    entry.extra["future_field"] = "x"
    listing = Listing([entry], [], {entry.machine_id: False})

    [machine] = hosts_document(listing, now=registry.parse_iso(entry.last_seen) + 90)["machines"]

    assert set(machine) == MACHINE_KEYS and machine["age_seconds"] == 90
    assert "future_field" not in machine
    assert "schema" not in machine  # the registry file's format, not the machine's
