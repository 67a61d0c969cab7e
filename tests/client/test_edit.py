"""`rtun edit` end to end: the real client on the "server" side, the real ssh -R forward, the real
daemon, and for the editor a real program that acts as one: it gets the path of the local copy,
makes the saves a plan file asks for (in place and by renaming a new file over it, as editors
do), waits after each until the server's file shows what it saved (or for a go-ahead file the
test makes), and exits, which closes the edit."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest

from rtun.client.edit import ServerFile, State, _key
from rtun.errors import RtunError
from support.notifications import SessionBus
from support.rtun import RTUN, RtunDaemon, clean_env, run_rtun
from support.wait import wait_until

EDITOR = r"""
import json, os, stat, sys, time
plan_file, path = sys.argv[1], sys.argv[-1]
with open(plan_file) as f:
    plan = json.load(f)
name = os.path.basename(path)
record_path = os.path.join(plan["records"], name + ".json")
st, parent = os.lstat(path), os.lstat(os.path.dirname(path))
record = {"path": path, "argv": sys.argv[1:], "initial": open(path).read(),
          "mode": stat.S_IMODE(st.st_mode), "dir_mode": stat.S_IMODE(parent.st_mode), "seen": []}

def keep():
    with open(record_path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(record_path + ".tmp", record_path)

def until(check, what):
    deadline = time.monotonic() + 20
    while not check():
        if time.monotonic() > deadline:
            record["error"] = "timed out waiting for " + what
            keep()
            sys.exit(3)
        time.sleep(0.01)

def shows(server, text):
    try:
        with open(server) as f:
            return f.read() == text
    except OSError:
        return False

keep()
for step in plan["steps"][name]:
    if "write" in step:
        if step.get("how") == "rename":
            with open(path + ".swp", "w") as f:
                f.write(step["write"])
            os.replace(path + ".swp", path)
        else:
            with open(path, "w") as f:
                f.write(step["write"])
    elif "await" in step:
        until(lambda: shows(step["await"], step["content"]), step["await"])
        st = os.stat(step["await"])
        record["seen"].append({"inode": st.st_ino, "mode": stat.S_IMODE(st.st_mode)})
    elif "touch" in step:
        open(step["touch"], "w").close()
    elif "await_file" in step:
        until(lambda: os.path.exists(step["await_file"]), step["await_file"])
    elif "symlink" in step:
        os.symlink(step["symlink"], path + ".lnk")
        os.replace(path + ".lnk", path)
    elif "hardlink" in step:
        os.link(step["hardlink"], path + ".lnk")
        os.replace(path + ".lnk", path)
    keep()
record["done"] = True
keep()
"""


class FakeEditor:
    """The scripted editor: ``plan(name, steps)``, then ``record(name)`` of what it saw."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.script = directory / "editor.py"
        self.script.write_text(EDITOR)
        self.plan_file = directory / "plan.json"
        self.records = directory / "records"
        self.records.mkdir()
        self.steps: Dict[str, List[Dict[str, Any]]] = {}
        self._save()

    @property
    def argv(self) -> List[str]:
        return [sys.executable, str(self.script), str(self.plan_file)]

    def plan(self, name: str, steps: List[Dict[str, Any]]) -> None:
        self.steps[name] = steps
        self._save()

    def _save(self) -> None:
        self.plan_file.write_text(json.dumps({"records": str(self.records), "steps": self.steps}))

    def record(self, name: str) -> Dict[str, Any]:
        path = self.records / f"{name}.json"
        result: Dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        return result


def save(text: str, server: Path, how: str = "inplace") -> List[Dict[str, Any]]:
    """One save, then a wait until the server's file shows it."""
    return [{"write": text, "how": how}, {"await": str(server), "content": text}]


@pytest.fixture
def editor(short_tmp: Path) -> FakeEditor:
    return FakeEditor(short_tmp / "editor")


@pytest.fixture
def server_dir(short_tmp: Path) -> Path:
    path = short_tmp / "srv"
    path.mkdir()
    return path


@pytest.fixture
def edit_config() -> str:
    """More config for one test (parametrize it)."""
    return ""


@pytest.fixture
def daemon(
    start_daemon, editor: FakeEditor, daemon_tmp: Path, edit_config: str, session_bus: SessionBus
) -> RtunDaemon:  # overrides tests/conftest.py's
    return start_daemon(
        env={"TMPDIR": str(daemon_tmp), "DBUS_SESSION_BUS_ADDRESS": session_bus.address},
        config=f"[edit]\neditor = {json.dumps(editor.argv)}\n{edit_config}",
    )


def start_edit(path: Path, remote_home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        RTUN + ["edit", str(path)],
        env=clean_env(remote_home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen) -> "subprocess.CompletedProcess[bytes]":
    out, err = process.communicate(timeout=30)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def copies(daemon_tmp: Path) -> List[Path]:
    return sorted(daemon_tmp.glob("rtun-edit-*"))


def leftovers(directory: Path) -> List[Path]:
    return sorted(directory.glob(".rtun-*.part"))


def lines(stderr: bytes) -> List[str]:
    text = stderr.decode()
    assert "Traceback" not in text, text
    return text.splitlines()


def test_three_saves_reach_the_server_file_atomically_with_its_mode(
    forward, remote_home, server_dir, editor, daemon_tmp, daemon
):
    path = server_dir / "notes.txt"
    path.write_text("zero\n")
    path.chmod(0o640)
    original = path.stat().st_ino
    editor.plan("notes.txt", save("one\n", path) + save("two\n", path, "rename") + save("three\n", path))

    result = run_rtun(["edit", str(path)], remote_home)

    assert result.returncode == 0, result.stderr
    record = editor.record("notes.txt")
    assert record.get("done"), record
    assert record["initial"] == "zero\n"
    local = Path(record["path"])
    assert local.name == "notes.txt" and local.parent.parent == daemon_tmp
    assert record["mode"] == 0o600 and record["dir_mode"] == 0o700
    assert record["argv"] == [str(editor.plan_file), str(local)]  # the path is one argv element
    assert path.read_text() == "three\n"
    # Each save replaced the file by a rename (a new inode each time), never wrote into it.
    inodes = [original] + [seen["inode"] for seen in record["seen"]]
    assert all(before != after for before, after in zip(inodes, inodes[1:])), inodes
    assert [seen["mode"] for seen in record["seen"]] == [0o640] * 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert leftovers(server_dir) == []
    assert [line for line in lines(result.stderr) if " saved " in f" {line}"] == [
        f"rtun edit: saved {path} (4 bytes)",
        f"rtun edit: saved {path} (4 bytes)",
        f"rtun edit: saved {path} (6 bytes)",
    ]
    wait_until(lambda: copies(daemon_tmp) == [], what="the local copy to be removed")
    log = daemon.log_text()
    assert "edit of notes.txt: save 3 written on the server" in log
    assert "three" not in log  # the content never reaches the log


def test_a_save_after_the_server_file_changed_is_refused(
    forward, remote_home, server_dir, editor, short_tmp, notifications, daemon
):
    path = server_dir / "config.ini"
    path.write_text("mine\n")
    go = short_tmp / "go"
    editor.plan("config.ini", save("one\n", path) + [{"await_file": str(go)}, {"write": "two\n"}])

    client = start_edit(path, remote_home)
    wait_until(lambda: editor.record("config.ini").get("seen"), what="the first save")
    path.write_text("theirs\n")  # someone else, on the server, behind the editor's back
    go.touch()
    result = finish(client)

    assert result.returncode == 1
    assert path.read_text() == "theirs\n"
    assert leftovers(server_dir) == []
    # The refused text outlives the editor: beside the file, with its mode, named in the message.
    [kept] = server_dir.glob("config.ini.rtun-conflict-*")
    assert kept.read_text() == "two\n"
    assert stat.S_IMODE(kept.stat().st_mode) == stat.S_IMODE(path.stat().st_mode)
    said = lines(result.stderr)
    assert (
        f"rtun edit: not saved: {path} changed on the server since the last save from the "
        f"editor; your text is kept in {kept}" in said
    )
    assert said[-1] == f"rtun edit: 1 change from the editor was not written to {path}"
    [note] = wait_until(lambda: notifications.notifications(), what="the conflict notification")
    assert note["summary"] == "rtun edit"
    assert note["body"].startswith(f"config.ini was not saved on the server: {path} changed on the server")
    assert note["body"].endswith(f"your text is kept in {kept}")
    assert "save 2 refused on the server" in daemon.log_text()


def test_two_edits_at_once(forward, remote_home, server_dir, editor, daemon_tmp, short_tmp):
    a, b = server_dir / "a.txt", server_dir / "b.txt"
    a.write_text("a0")
    b.write_text("b0")
    a_saved, b_saved = str(short_tmp / "a-saved"), str(short_tmp / "b-saved")
    # Each waits for the other's first save before its second: both must be open together.
    editor.plan("a.txt", save("a1", a) + [{"touch": a_saved}, {"await_file": b_saved}] + save("a2", a))
    editor.plan("b.txt", save("b1", b) + [{"touch": b_saved}, {"await_file": a_saved}] + save("b2", b))

    first, second = start_edit(a, remote_home), start_edit(b, remote_home)
    results = [finish(first), finish(second)]

    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert (a.read_text(), b.read_text()) == ("a2", "b2")
    assert editor.record("a.txt")["path"] != editor.record("b.txt")["path"]
    wait_until(lambda: copies(daemon_tmp) == [], what="both local copies to be removed")


@pytest.mark.parametrize("swap", ["symlink", "hardlink"])
def test_the_daemon_reads_back_only_the_file_it_was_given(
    forward, remote_home, server_dir, editor, local_home, daemon, swap
):
    secret = local_home / "secret.txt"
    secret.write_text("TOP SECRET of the laptop\n")
    path = server_dir / "notes.txt"
    path.write_text("original\n")
    editor.plan("notes.txt", [{swap: str(secret)}])  # then it exits

    result = run_rtun(["edit", str(path)], remote_home)

    assert result.returncode == 1
    assert path.read_text() == "original\n"
    assert all(b"TOP SECRET" not in p.read_bytes() for p in server_dir.rglob("*") if p.is_file())
    why = "it was replaced by a symbolic link" if swap == "symlink" else "it has other hard links"
    assert f"rtun edit: not saved: notes.txt on your computer was not sent back: {why}" in lines(
        result.stderr
    )
    assert "TOP SECRET" not in daemon.log_text()


def test_a_missing_file_opens_empty_and_is_created_on_the_first_save(
    forward, remote_home, server_dir, editor
):
    path = server_dir / "new.md"
    editor.plan("new.md", save("# New\n", path))

    result = run_rtun(["edit", str(path)], remote_home)

    assert result.returncode == 0, result.stderr
    assert editor.record("new.md")["initial"] == ""
    assert path.read_text() == "# New\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_ctrl_c_ends_the_edit_cleanly_and_the_daemon_lets_go(
    forward, remote_home, server_dir, editor, daemon_tmp, short_tmp, notifications, daemon
):
    path = server_dir / "notes.txt"
    path.write_text("before\n")
    go = short_tmp / "go"
    editor.plan("notes.txt", [{"await_file": str(go)}, {"write": "after\n"}, {"await_file": str(go) + "2"}])
    client = start_edit(path, remote_home)
    wait_until(lambda: editor.record("notes.txt"), what="the editor to start")

    client.send_signal(signal.SIGINT)
    result = finish(client)
    go.touch()  # a save now finds nobody to take it: the daemon ends the edit

    assert result.returncode == 130
    assert lines(result.stderr)[-1] == (
        f"rtun edit: interrupted; saves in the editor on your computer no longer reach {path}"
    )
    wait_until(lambda: copies(daemon_tmp) == [], what="the local copy to be removed")
    [note] = wait_until(lambda: notifications.notifications(), what="the notification")
    assert note["body"].startswith("The edit of notes.txt ended")
    assert path.read_text() == "before\n" and leftovers(server_dir) == []
    (short_tmp / "go2").touch()  # the editor may go


@pytest.mark.parametrize("edit_config", ["max_bytes = 100\n"])
def test_a_file_over_max_bytes_is_refused_with_exit_4(forward, remote_home, server_dir, editor, daemon_tmp):
    path = server_dir / "big.log"
    path.write_bytes(b"x" * 101)

    result = run_rtun(["edit", str(path)], remote_home)

    assert result.returncode == 4
    [line] = lines(result.stderr)
    assert line.startswith(
        "rtun edit: 101 bytes is more than your computer edits ([edit] max_bytes = 100; set "
    )
    assert line.endswith("then run `rtun server reload` there to allow more)")
    assert editor.record("big.log") == {} and copies(daemon_tmp) == []


@pytest.mark.parametrize("edit_config", ["[actions]\nedit = false\n"])
def test_a_denied_edit_is_refused_with_exit_4(forward, remote_home, server_dir, editor, daemon_tmp):
    path = server_dir / "notes.txt"
    path.write_text("x")

    result = run_rtun(["edit", str(path)], remote_home)

    assert result.returncode == 4
    [line] = lines(result.stderr)
    assert line.startswith(
        "rtun edit: edit is turned off on your computer; to turn it on, set [actions] edit = true"
    )
    assert editor.record("notes.txt") == {} and copies(daemon_tmp) == []
    assert path.read_text() == "x"


def test_editing_through_a_symbolic_link_edits_its_target_and_keeps_the_link(
    forward, remote_home, server_dir, editor
):
    target = server_dir / "real.conf"
    target.write_text("old\n")
    link = server_dir / "link.conf"
    link.symlink_to("real.conf")
    editor.plan("link.conf", save("new\n", target))  # the editor shows the name that was typed

    result = run_rtun(["edit", str(link)], remote_home)

    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == "real.conf"
    assert target.read_text() == "new\n"


_PROBE = """
import json, sys
from rtun.cli import main
code = main(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def test_rtun_edit_imports_only_the_stdlib_and_the_client(
    forward, remote_home, server_dir, editor, short_tmp
):
    path = server_dir / "notes.txt"
    path.write_text("a")
    editor.plan("notes.txt", save("b", path))
    report = short_tmp / "modules.json"

    done = subprocess.run(
        [sys.executable, "-c", _PROBE, str(report), "edit", str(path)],
        env=clean_env(remote_home),
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )

    assert report.exists(), done.stderr
    probe = json.loads(report.read_text())
    assert probe["code"] == 0 and path.read_text() == "b"
    assert "rtun.client.edit" in probe["modules"] and "rtun.client" in probe["modules"]
    outside = [
        m
        for m in probe["modules"]
        if not (
            m == "rtun"
            or m.startswith("rtun.")
            or m.split(".")[0] in sys.stdlib_module_names
            or m in ("__main__", "_distutils_hack")
        )
    ]
    assert outside == []
    assert not [
        m for m in probe["modules"] if m.startswith(("rtun.daemon", "rtun.tunnel", "rtun.client.upload"))
    ]


# ---- the client's own checks, without a daemon ------------------------------------------------


def _known(path: Path) -> ServerFile:
    """A ServerFile that last read ``path`` as it is now."""
    target = ServerFile(str(path))
    data = path.read_bytes() if path.exists() else b""
    key = _key(os.stat(path)) if path.exists() else None
    target.state = State(key, hashlib.sha256(data).hexdigest(), "since rtun edit opened it")
    return target


def test_a_rewrite_that_keeps_size_and_mtime_is_still_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("aaaa")
    target = _known(path)
    assert target.conflict() is None
    before = os.stat(path)
    path.write_text("bbbb")  # a clock too coarse to see it: the same size, the same mtime
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert target.conflict() == f"{path} changed on the server since rtun edit opened it"


def test_a_refused_text_is_kept_under_a_new_name_each_time(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("theirs\n")
    target = ServerFile(str(path))
    said = []
    for text in ("first\n", "second\n"):
        temporary = tmp_path / ".rtun-1-x.part"
        temporary.write_text(text)
        said.append(target._keep(str(temporary)))
        temporary.unlink()
    prefix = "; your text is kept in "
    assert all(message.startswith(prefix) for message in said)
    named = [Path(message[len(prefix) :]) for message in said]
    assert [p.read_text() for p in named] == ["first\n", "second\n"]  # the second replaced nothing
    assert sorted(tmp_path.glob("notes.txt.rtun-conflict-*")) == sorted(named)
    assert path.read_text() == "theirs\n"


def test_the_same_content_written_again_is_no_conflict(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("same")
    target = _known(path)
    (tmp_path / "new").write_text("same")
    os.replace(tmp_path / "new", path)  # a new inode, the same text
    assert target.conflict() is None


def test_a_file_removed_or_created_behind_the_editors_back_is_a_conflict(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("x")
    target = _known(path)
    path.unlink()
    assert target.conflict() == f"{path} was removed on the server since rtun edit opened it"
    fresh = _known(tmp_path / "new.txt")
    (tmp_path / "new.txt").write_text("someone else's")
    assert fresh.conflict() == f"{tmp_path / 'new.txt'} was created on the server since rtun edit opened it"


@pytest.mark.parametrize("kind, says", [("dir", "is a directory"), ("fifo", "is not a regular file")])
def test_what_cannot_be_edited_is_refused_before_connecting(tmp_path: Path, kind: str, says: str) -> None:
    path = tmp_path / "thing"
    path.mkdir() if kind == "dir" else os.mkfifo(path)
    with pytest.raises(RtunError, match=says):
        ServerFile(str(path)).open()
    with pytest.raises(RtunError, match="there is no directory"):
        ServerFile(str(tmp_path / "missing" / "f.txt")).open()
