"""Registry entries: format, hostile input, and reading a registry directory on the relay itself
(the relay script's side is test_relayscript.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rtun.protocol import peertext
from rtun.tunnel import registry

MID = "0123456789abcdef0123456789abcdef"


def entry(**changes) -> registry.Entry:
    base = dict(
        name="pi",
        hostname="pi.lan",
        machine_id=MID,
        user="pi",
        port=12345,
        local_port=22,
        os="Linux 6.1",
        agent_version="0.1.0",
        connected_at="2024-05-01T10:00:00Z",
        last_seen="2024-05-01T10:01:00Z",
    )
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


def test_tags_round_trip_and_are_left_out_when_there_are_none() -> None:
    tagged = entry(tags=["gpu", "lab"])
    assert registry.parse_entry(tagged.to_json()).tags == ["gpu", "lab"]
    assert "tags" not in json.loads(entry().to_json())  # an untagged entry is as before
    data = json.loads(tagged.to_json())
    data["tags"] = ["gpu", "gpu", "lab"]
    assert registry.parse_entry(json.dumps(data).encode()).tags == ["gpu", "lab"]


@pytest.mark.parametrize(
    "tags",
    [
        "gpu",  # not a list
        ["GPU"],
        ["-rf"],
        ["gpu\n"],
        ["\x1b[31mred"],
        ["a" * 33],
        [1],
        [None],
        [["gpu"]],
        [f"t{i}" for i in range(17)],
    ],
)
def test_an_entry_with_bad_tags_is_refused_whole(tags: object) -> None:
    data = json.loads(entry().to_json())
    data["tags"] = tags
    with pytest.raises(registry.RegistryError, match="field 'tags'"):
        registry.parse_entry(json.dumps(data).encode())


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"port": 0}, "out of range"),
        ({"port": "22"}, "not a int"),
        ({"port": True}, "not a int"),
        ({"name": "-oProxyCommand=x"}, "invalid value"),
        ({"name": "a\x1b[2Jb"}, "invalid value"),
        ({"user": "-l"}, "invalid value"),
        ({"os": "x\ny"}, "invalid value"),
        # `$` in a Python pattern matches before a final newline: every field must fullmatch.
        ({"name": "pi\n"}, "invalid value"),
        ({"user": "pi\n"}, "invalid value"),
        ({"hostname": "pi\n"}, "invalid value"),
        ({"os": "Linux\n"}, "invalid value"),
        ({"agent_version": "0.1\n"}, "invalid value"),
        ({"machine_id": "0123456789abcdef0123456789abcdef\n"}, "invalid value"),
        ({"last_seen": "2024-05-01T10:01:00Z\n"}, "invalid value"),
        ({"name": "a b"}, "invalid value"),
        ({"name": "pi#x"}, "invalid value"),
        ({"name": "*"}, "invalid value"),
        ({"name": "!pi"}, "invalid value"),
        ({"name": "pi%h"}, "invalid value"),
        ({"name": 'p"i'}, "invalid value"),
        ({"name": "x" * 64}, "invalid value"),
        ({"name": "caf\u00e9"}, "invalid value"),
        ({"user": "a\u202eb"}, "invalid value"),
        ({"os": "\u0085"}, "invalid value"),
        ({"status": "hacked"}, "invalid value"),
        ({"last_seen": "2024-13-45T99:99:99Z"}, "not a valid time"),
        ({"schema": 2}, "unsupported schema"),
        ({"machine_id": "../../etc/passwd"}, "invalid value"),
    ],
)
def test_invalid_fields_are_rejected_with_a_reason(change: dict, reason: str) -> None:
    data = json.loads(entry().to_json())
    data.update(change)
    with pytest.raises(registry.RegistryError, match=reason.replace("(", r"\(")):
        registry.parse_entry(json.dumps(data).encode())


@pytest.mark.parametrize(
    "raw", [b"", b"\xff\xfe", b"[]", b"NaN", b"[" * 100000, b" " * 70000, b'{"schema": 1}', b'{"port": NaN}']
)
def test_garbage_is_a_registry_error_never_a_crash(raw: bytes) -> None:
    with pytest.raises(registry.RegistryError):
        registry.parse_entry(raw)


def test_parse_files_reports_bad_files_and_keeps_good_ones() -> None:
    good = entry()
    files = [(good.filename, good.to_json()), ("x.json", b"{"), ("f" * 32 + ".json", good.to_json())]
    entries, problems = registry.parse_files(files)
    assert entries == [good]
    assert len(problems) == 2 and "does not match" in problems[1]


def _write(directory: Path, e: registry.Entry) -> None:
    (directory / e.filename).write_bytes(e.to_json())


def test_read_local_takes_entry_names_and_regular_files_only(tmp_path: Path) -> None:
    good = entry()
    _write(tmp_path, good)
    (tmp_path / "x.json").write_text("{}")  # not an entry's name: not an entry
    (tmp_path / "evil\nname.json").write_text("{}")
    (tmp_path / ("a" * 32 + ".json\n")).write_text("{}")
    os.mkfifo(tmp_path / ("b" * 32 + ".json"))
    os.symlink(tmp_path / good.filename, tmp_path / ("c" * 32 + ".json"))
    (tmp_path / ("d" * 32 + ".json")).write_bytes(b" " * (registry.MAX_ENTRY_BYTES + 1))
    found = registry.read_local(str(tmp_path))
    assert found.files == [(good.filename, good.to_json())] and found.cut is None
    assert sorted(found.problems) == sorted(
        [
            f"skipped {'b' * 32}.json: not a regular file",
            f"skipped {'c' * 32}.json: not a regular file",
            f"skipped {'d' * 32}.json: larger than {registry.MAX_ENTRY_BYTES} bytes",
        ]
    )


def test_read_local_says_when_the_listing_is_cut_and_keeps_the_small_entries(tmp_path: Path) -> None:
    big = registry.MAX_ENTRY_BYTES
    count = registry.MAX_LISTING_BYTES // big + 5  # junk just under the size cap, past the budget
    for n in range(count):
        (tmp_path / f"{n:032x}.json").write_bytes(b" " * big)
    real = entry(machine_id="f" * 32)
    _write(tmp_path, real)
    found = registry.read_local(str(tmp_path))
    assert (real.filename, real.to_json()) in found.files  # smallest first: junk cannot hide it
    assert found.cut is not None and "6 of" in found.cut and "not read" in found.cut


def test_a_missing_registry_is_empty_and_an_unreadable_one_is_a_problem(tmp_path: Path) -> None:
    assert registry.read_local(str(tmp_path / "none")) == registry.Files()
    (tmp_path / "file").write_text("")
    assert "cannot read" in registry.read_local(str(tmp_path / "file")).problems[0]


def test_printable_escapes_everything_a_terminal_would_act_on() -> None:
    assert peertext.ascii_escaped("plain text ~") == "plain text ~"
    assert peertext.ascii_escaped("a\nb\x1b[2J\u202e\\\udcff") == "a\\nb\\x1b[2J\\u202e\\\\\\udcff"
    assert peertext.ascii_escaped("x" * 300, 10) == "x" * 10 + "..."
