"""`rtun view` end to end: the real client, a real ssh -R forward, and the daemon configured with
a recording opener that writes down its argv and what it found at the path it was given."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

import pytest

from rtun.daemon.actions.view import Viewer
from support.raw import RawClient, v1_upload
from support.rtun import run_rtun
from support.wait import wait_until

RECORDER = r"""
import hashlib, json, os, stat, sys
record, args = sys.argv[1], sys.argv[2:]
path = args[-1]
st = os.lstat(path)
with open(path, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()
parent = os.path.dirname(path)
entry = {
    "args": args,
    "mode": stat.S_IMODE(st.st_mode),
    "regular": stat.S_ISREG(st.st_mode),
    "sha256": digest,
    "parent_mode": stat.S_IMODE(os.lstat(parent).st_mode),
    "private_mode": stat.S_IMODE(os.lstat(os.path.dirname(parent)).st_mode),
}
with open(record + ".tmp", "w") as f:
    f.write(json.dumps(entry))
os.rename(record + ".tmp", record + "." + str(os.getpid()))
"""


class Opener:
    """The recording opener: each run leaves one JSON file ``<record>.<pid>``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.directory = directory
        self.script = directory / "recorder.py"
        self.script.write_text(RECORDER)
        self.record = directory / "opened"

    @property
    def argv(self) -> List[str]:
        return [sys.executable, str(self.script), str(self.record)]

    def calls(self) -> List[Dict[str, Any]]:
        return [
            json.loads(p.read_text())
            for p in sorted(self.directory.glob("opened.*"))
            if not p.name.endswith(".tmp")
        ]

    def wait_calls(self, count: int) -> List[Dict[str, Any]]:
        return wait_until(
            lambda: len(self.calls()) >= count and self.calls(),
            what=f"the opener to be called {count} time(s)",
        )


def toml_list(items: List[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


@pytest.fixture
def opener(short_tmp: Path) -> Opener:
    return Opener(short_tmp / "opener")


@pytest.fixture
def view_extra() -> str:
    """More [view] settings for one test (parametrize it)."""
    return ""


@pytest.fixture
def view_config(opener: Opener, view_extra: str) -> str:
    return f"[view]\nopener = {toml_list(opener.argv)}\n{view_extra}"


@pytest.fixture
def daemon(start_daemon, daemon_tmp, view_config):  # overrides tests/conftest.py's
    return start_daemon(env={"TMPDIR": str(daemon_tmp)}, config=view_config)


def private_dirs(daemon_tmp: Path) -> List[Path]:
    return sorted(daemon_tmp.glob("rtun-view-*"))


def stored_files(daemon_tmp: Path) -> List[Path]:
    return sorted(p for p in daemon_tmp.rglob("*") if p.is_file())


def make_file(directory: Path, name: str, content: bytes, mode: int = 0o644) -> Path:
    path = directory / name
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_view_opens_a_private_non_executable_copy(
    forward, remote_home, short_tmp, opener, daemon_tmp, daemon
):
    content = b"%PDF-1.4 not really\n" + bytes(range(256)) * 100
    name = "my report; $(touch pwned) 'q' ✓.pdf"
    source = make_file(short_tmp, name, content, mode=0o755)

    result = run_rtun(["view", str(source)], remote_home)

    assert result.returncode == 0, result.stderr
    [call] = opener.wait_calls(1)
    path = Path(call["args"][0])
    assert call["args"] == [str(path)]  # one argv element: no shell split it
    assert path.name == name
    [private] = private_dirs(daemon_tmp)
    assert path.parent.parent == private
    assert call["private_mode"] == 0o700 and call["parent_mode"] == 0o700
    assert call["regular"] and call["mode"] == 0o600  # no execute bit, whatever the source had
    assert call["sha256"] == hashlib.sha256(content).hexdigest()
    assert path.read_bytes() == content
    assert not list(short_tmp.rglob("pwned"))
    assert f"viewing {path}" in daemon.log_text()


def test_rtun_open_is_the_same_as_view(forward, remote_home, short_tmp, opener):
    source = make_file(short_tmp, "notes.txt", b"hello\n")

    result = run_rtun(["open", str(source)], remote_home)

    assert result.returncode == 0, result.stderr
    [call] = opener.wait_calls(1)
    assert Path(call["args"][0]).name == "notes.txt"


@pytest.mark.parametrize(
    "name",
    ["install.sh", "launcher.desktop", "SETUP.EXE", "tool.jar", "App.AppImage", "run.command", "link.webloc"],
)
def test_view_refuses_a_risky_type_before_it_reaches_the_opener(
    forward, remote_home, short_tmp, opener, daemon_tmp, name
):
    source = make_file(short_tmp, name, b"#!/bin/sh\necho owned\n", mode=0o755)

    result = run_rtun(["view", str(source)], remote_home)

    assert result.returncode != 0
    err = result.stderr.decode()
    ext = os.path.splitext(name)[1].lower()
    assert f"refusing to open {name}" in err and ext in err and "allow_types" in err
    # A harmless file viewed afterwards is the opener's first and only call.
    assert run_rtun(["view", str(make_file(short_tmp, "ok.txt", b"ok"))], remote_home).returncode == 0
    assert [Path(c["args"][0]).name for c in opener.wait_calls(1)] == ["ok.txt"]
    assert [p.name for p in stored_files(daemon_tmp)] == ["ok.txt"]


@pytest.mark.parametrize("view_extra", ['allow_types = [".SH"]\n'])
def test_view_opens_a_risky_type_the_user_allows(forward, remote_home, short_tmp, opener):
    content = b"#!/bin/sh\necho hi\n"
    source = make_file(short_tmp, "build.sh", content, mode=0o755)

    result = run_rtun(["view", str(source)], remote_home)

    assert result.returncode == 0, result.stderr
    [call] = opener.wait_calls(1)
    assert Path(call["args"][0]).name == "build.sh"
    assert call["mode"] == 0o600 and call["sha256"] == hashlib.sha256(content).hexdigest()


def test_view_refuses_a_program_hidden_under_a_harmless_name(
    forward, remote_home, short_tmp, opener, daemon_tmp
):
    elf = make_file(short_tmp, "paper.pdf", b"\x7fELF\x02\x01\x01" + b"\0" * 100)
    launcher = make_file(
        short_tmp, "readme.txt", b"#!/usr/bin/env xdg-open\n\n[Desktop Entry]\nType=Application\nExec=sh\n"
    )

    for source, what in ((elf, "ELF program"), (launcher, "desktop launcher")):
        result = run_rtun(["view", str(source)], remote_home)
        assert result.returncode != 0
        assert f"refusing to open {source.name}: its content is" in result.stderr.decode()
        assert what in result.stderr.decode()

    assert run_rtun(["view", str(make_file(short_tmp, "ok.txt", b"ok"))], remote_home).returncode == 0
    assert [Path(c["args"][0]).name for c in opener.wait_calls(1)] == ["ok.txt"]
    assert [p.name for p in stored_files(daemon_tmp)] == ["ok.txt"]  # nothing refused was kept


@pytest.mark.parametrize("view_config", ['[view]\nopener = ["/nonexistent/rtun-opener"]\n'])
def test_view_with_a_missing_opener_fails_with_the_reason(forward, remote_home, short_tmp, daemon_tmp):
    result = run_rtun(["view", str(make_file(short_tmp, "a.txt", b"a"))], remote_home)

    assert result.returncode != 0
    err = result.stderr.decode()
    assert "/nonexistent/rtun-opener" in err and "not found" in err
    assert stored_files(daemon_tmp) == []


def test_view_of_a_directory_is_an_error(forward, remote_home, short_tmp, opener):
    (short_tmp / "adir").mkdir()

    result = run_rtun(["view", str(short_tmp / "adir")], remote_home)

    assert result.returncode != 0
    assert "directory" in result.stderr.decode()
    assert run_rtun(["view", str(make_file(short_tmp, "ok.txt", b"ok"))], remote_home).returncode == 0
    assert [Path(c["args"][0]).name for c in opener.wait_calls(1)] == ["ok.txt"]


def test_view_from_a_v1_client_keeps_only_the_base_name(forward, opener, daemon_tmp):
    data = b"hostile name"
    with RawClient(forward.remote) as client:
        assert client.command("PING") == b"OK PONG\r\n"
        assert v1_upload(client, "VIEW", "../../../.. /..\\.bashrc", data) == b"OK\r\n"

    [call] = opener.wait_calls(1)
    path = Path(call["args"][0])
    assert path.name == "bashrc"
    assert path.parent.parent == private_dirs(daemon_tmp)[0]
    assert path.read_bytes() == data


def test_view_refuses_a_risky_type_instead_of_ready(forward, opener, daemon_tmp):
    with RawClient(forward.remote) as client:
        client.send(b"PING\r\nVIEW 1000000 evil.desktop\r\n")
        assert client.line() == b"OK PONG\r\n"
        reply = client.line()
        assert reply.startswith(b"ERROR 110 refusing to open evil.desktop")  # no READY: no data
        assert client.line() == b""  # and the daemon closed, as v1 peers expect
    assert opener.calls() == [] and stored_files(daemon_tmp) == []


def test_view_leaves_no_zombie_opener(forward, remote_home, short_tmp, opener, daemon):
    for i in range(3):
        source = make_file(short_tmp, f"f{i}.txt", b"x")
        assert run_rtun(["view", str(source)], remote_home).returncode == 0
    opener.wait_calls(3)

    def children_states() -> List[str]:
        pid = daemon.process.pid
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            for child in (task / "children").read_text().split():
                try:
                    states.append(Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0])
                except FileNotFoundError:
                    pass
        return states

    wait_until(lambda: children_states() == [], what="the openers to be reaped")


def test_viewed_files_are_removed_at_shutdown(forward, remote_home, short_tmp, opener, daemon_tmp, daemon):
    assert run_rtun(["view", str(make_file(short_tmp, "a.txt", b"a"))], remote_home).returncode == 0
    opener.wait_calls(1)
    assert len(stored_files(daemon_tmp)) == 1

    assert daemon.stop() == 0

    assert private_dirs(daemon_tmp) == []


def test_sweep_removes_only_views_older_than_max_age(tmp_path: Path):
    viewer = Viewer(opener=(), allow_types=(), max_age=3600.0, umask=0o022)
    viewer.private_dir = str(tmp_path)
    old, new = tmp_path / "old", tmp_path / "new"
    for d in (old, new):
        d.mkdir()
        (d / "file.txt").write_text("x")
    now = time.time()
    os.utime(old, (now - 3601, now - 3601))

    viewer.sweep(now)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["new"]
    viewer.close()
    assert not tmp_path.exists()


@pytest.mark.parametrize("view_extra", ["burst = 2\nrate = 0.01\n"])
def test_a_burst_of_views_opens_only_a_few(forward, remote_home, short_tmp, opener):
    refused = 0
    for i in range(5):
        path = make_file(short_tmp, f"p{i}.png", b"\x89PNG" + bytes([i]))
        result = run_rtun(["view", str(path)], remote_home)
        if result.returncode == 4:
            assert b"too many files opened" in result.stderr
            refused += 1
        else:
            assert result.returncode == 0, result.stderr
    assert refused == 3
    assert len(opener.wait_calls(2)) == 2
