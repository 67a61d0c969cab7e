"""Registry entries: format, hostile input, and the server-side shell scripts run in a real sh."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rtun.tunnel import registry

MID = "0123456789abcdef0123456789abcdef"


def entry(**changes) -> registry.Entry:
    base = dict(name="pi", hostname="pi.lan", machine_id=MID, user="pi", port=12345, local_port=22,
                os="Linux 6.1", agent_version="0.1.0", connected_at="2024-05-01T10:00:00Z",
                last_seen="2024-05-01T10:01:00Z")
    base.update(changes)
    return registry.Entry(**base)


def test_entry_round_trips_through_json_with_schema_first() -> None:
    e = entry(status="offline", disconnected_at="2024-05-01T10:02:00Z")
    raw = e.to_json()
    assert list(json.loads(raw))[0] == "schema"
    assert registry.parse_entry(raw) == e


def test_unknown_fields_are_kept_aside_not_rejected() -> None:
    data = json.loads(entry().to_json())
    data["future_field"] = {"x": 1}
    parsed = registry.parse_entry(json.dumps(data).encode())
    assert parsed.extra == {"future_field": {"x": 1}}


@pytest.mark.parametrize("change, reason", [
    ({"port": 0}, "out of range"),
    ({"port": "22"}, "not a int"),
    ({"port": True}, "not a int"),
    ({"name": "-oProxyCommand=x"}, "invalid value"),
    ({"name": "a\x1b[2Jb"}, "invalid value"),
    ({"user": "-l"}, "invalid value"),
    ({"os": "x\ny"}, "invalid value"),
    ({"status": "hacked"}, "invalid value"),
    ({"last_seen": "2024-13-45T99:99:99Z"}, "not a valid time"),
    ({"schema": 2}, "unsupported schema"),
    ({"machine_id": "../../etc/passwd"}, "invalid value"),
])
def test_invalid_fields_are_rejected_with_a_reason(change: dict, reason: str) -> None:
    data = json.loads(entry().to_json())
    data.update(change)
    with pytest.raises(registry.RegistryError, match=reason.replace("(", r"\(")):
        registry.parse_entry(json.dumps(data).encode())


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"[]", b"NaN", b"[" * 100000, b" " * 70000,
                                 b'{"schema": 1}', b'{"port": NaN}'])
def test_garbage_is_a_registry_error_never_a_crash(raw: bytes) -> None:
    with pytest.raises(registry.RegistryError):
        registry.parse_entry(raw)


def test_parse_files_reports_bad_files_and_keeps_good_ones() -> None:
    good = entry()
    files = [(good.filename, good.to_json()), ("x.json", b"{"), ("f" * 32 + ".json", good.to_json())]
    entries, problems = registry.parse_files(files)
    assert entries == [good]
    assert len(problems) == 2 and "does not match" in problems[1]


def _sh(command: str, **kwargs) -> subprocess.CompletedProcess:
    # The command is what ssh hands to the login shell; run it the same way.
    return subprocess.run(["sh", "-c", command], capture_output=True, timeout=10, **kwargs)


def test_write_command_creates_the_directory_and_replaces_atomically(tmp_path: Path) -> None:
    target = tmp_path / "a dir" / "hosts"
    e = entry()
    for port in (1111, 2222):
        e.port = port
        done = _sh(registry.write_command(str(target), e.filename), input=e.to_json())
        assert done.returncode == 0, done.stderr
    assert [p.name for p in target.iterdir()] == [e.filename]  # no temporary file left behind
    assert registry.parse_entry((target / e.filename).read_bytes()).port == 2222
    assert oct(target.stat().st_mode & 0o777) == "0o700"


def test_write_command_expands_the_home_of_the_login(tmp_path: Path) -> None:
    e = entry()
    done = _sh(registry.write_command("~/.rtun/hosts", e.filename), input=e.to_json(),
               env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0 and (tmp_path / ".rtun" / "hosts" / e.filename).exists()


def test_list_command_output_parses_back_including_hostile_names(tmp_path: Path) -> None:
    e = entry()
    (tmp_path / e.filename).write_bytes(e.to_json())
    (tmp_path / "we ird\nF 9 9\n.json").write_bytes(b"F 1 1\nxx")
    (tmp_path / ("b" * 32 + ".json")).write_bytes(b"x" * 100000)
    (tmp_path / "ignored.txt").write_text("not json")
    done = _sh(registry.list_command(str(tmp_path)))
    assert done.returncode == 0, done.stderr
    files, problems = registry.parse_listing(done.stdout)
    assert problems == []
    by_name = dict(files)
    assert set(by_name) == {e.filename, "we ird\nF 9 9\n.json", "b" * 32 + ".json"}
    assert by_name[e.filename] == e.to_json()
    assert len(by_name["b" * 32 + ".json"]) == registry.MAX_ENTRY_BYTES + 1  # capped on the server


def test_list_command_on_a_missing_directory_lists_nothing(tmp_path: Path) -> None:
    done = _sh(registry.list_command(str(tmp_path / "none")))
    assert done.returncode == 0 and registry.parse_listing(done.stdout) == ([], [])


def test_garbled_listing_stops_with_a_problem() -> None:
    files, problems = registry.parse_listing(b"F 3 2\nabcxyGARBAGE")
    assert files == [("abc", b"xy")] and "garbled" in problems[0]
