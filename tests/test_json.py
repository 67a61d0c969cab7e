"""`--json` of the client commands, end to end through the real forward: one JSON document on
stdout with the documented keys, parsed back. (`rtun hosts --json` is tested in
tests/tunnel/test_hosts_json.py, `rtun doctor --json` in tests/session/test_doctor_json.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

from support.rtun import run_rtun


def _document(result) -> dict:
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode("ascii")  # every non-ASCII character escaped
    document = json.loads(text)
    assert isinstance(document, dict) and text.endswith("}\n")
    return document


def test_ping_json_gives_the_socket_and_the_round_trip(forward, remote_home):
    document = _document(run_rtun(["ping", "--json"], remote_home))

    assert sorted(document) == ["reply", "rtt_ms", "socket"]
    assert document["reply"] == "PONG"
    assert document["socket"] == str(remote_home / ".rtun" / "rtun.sock")  # the one that answered
    assert isinstance(document["rtt_ms"], float) and 0 < document["rtt_ms"] < 10_000


def test_ping_json_without_a_daemon_prints_nothing_on_stdout(remote_home):
    result = run_rtun(["ping", "--json"], remote_home)

    assert (result.returncode, result.stdout) == (3, b"")
    assert len(result.stderr.decode().splitlines()) == 1


def test_send_json_lists_the_final_paths_on_the_computer(forward, remote_home, save_dir, short_tmp):
    tree = short_tmp / "notes"
    tree.mkdir()
    (tree / "a.txt").write_text("first")
    (tree / "caf\u00e9.txt").write_text("second")
    save_dir.mkdir(parents=True, exist_ok=True)
    (save_dir / "report.txt").write_text("already here")
    report = short_tmp / "report.txt"
    report.write_text("new")

    document = _document(run_rtun(["send", "--json", str(tree), str(report)], remote_home))

    # Keys are only ever added (README): --update and resumption added theirs, empty here.
    assert sorted(document) == ["replaced", "resumed", "saved", "unchanged", "warnings"]
    assert document["replaced"] == document["unchanged"] == document["resumed"] == []
    assert document["warnings"] == []
    assert document["saved"] == [
        str(save_dir / "notes" / "a.txt"),
        str(save_dir / "notes" / "caf\u00e9.txt"),
        str(save_dir / "report (1).txt"),
    ]  # the name it was saved under
    assert [Path(p).read_text() for p in document["saved"]] == ["first", "second", "new"]


def test_send_json_carries_the_warnings_and_ignores_quiet(forward, remote_home, save_dir, short_tmp):
    tree = short_tmp / "tree"
    tree.mkdir()
    (tree / "kept.txt").write_text("kept")
    os.symlink("/etc/passwd", tree / "passwd")  # points outside the transfer: the daemon skips it

    result = run_rtun(["send", "--json", "-q", str(tree)], remote_home)
    document = _document(result)

    assert document["saved"] == [str(save_dir / "tree" / "kept.txt")]
    [warning] = document["warnings"]
    assert "passwd" in warning and "outside" in warning
    assert result.stderr.decode() == f"rtun send: warning: {warning}\n"  # for the person, as without --json
