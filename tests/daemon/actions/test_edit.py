"""The edit action on its own: the local name, the choice of editor, reading a save back, and the
watch over a real editor process (a stand-in written in Python). The exchange on a connection is
in tests/daemon/test_editing.py, the end-to-end tests through sshd in tests/client/test_edit.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import sys
from pathlib import Path
from typing import Awaitable, Callable, List, Optional, Tuple, TypeVar

import pytest

from rtun.daemon.actions import edit as edit_action
from rtun.daemon.actions.edit import (
    DEFAULT_EDITORS,
    Closed,
    Editors,
    OpenEdit,
    Save,
    Skipped,
    Unsendable,
    edit_name,
    editor_command,
    read_save,
)
from rtun.protocol import messages
from rtun.protocol.events import FileStart
from rtun.protocol.messages import Rejected

T = TypeVar("T")

# Waits for a quit file (argv[1]) and exits with the status written in it; the path is argv[2].
WAITING_EDITOR = (
    "import os, sys, time\n"
    "while not os.path.exists(sys.argv[1]):\n"
    "    time.sleep(0.01)\n"
    "sys.exit(int(open(sys.argv[1]).read() or 0))\n"
)


# ---- names and editors -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent, local",
    [
        ("notes.txt", "notes.txt"),
        (".bashrc", ".bashrc"),  # the dot stays: the editor picks its syntax by the name
        ("../../etc/.env", ".env"),
        ("C:\\work\\main.py", "main.py"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ("...", "rtun-edit"),
        ("a\x1b[31mb", "a[31mb"),
    ],
)
def test_the_local_name_is_a_clean_base_name(sent: str, local: str) -> None:
    assert edit_name(sent) == local


def test_the_configured_editor_comes_first_then_rtun_editor_then_one_found_on_path() -> None:
    everything = lambda name: f"/usr/bin/{name}"  # noqa: E731
    assert editor_command(("gvim", "-f"), {"RTUN_EDITOR": "subl -w"}, everything) == ("gvim", "-f")
    assert editor_command((), {"RTUN_EDITOR": "'my editor' --wait", "VISUAL": "vim"}, everything) == (
        "my editor",
        "--wait",
    )
    assert editor_command((), {"VISUAL": "vim", "EDITOR": "nano"}, everything) == ("code", "--wait")
    only_subl = lambda name: "/opt/subl" if name == "subl" else None  # noqa: E731
    assert editor_command((), {}, only_subl) == ("subl", "-w")
    assert [command[0] for command in DEFAULT_EDITORS][:3] == ["code", "codium", "subl"]


@pytest.mark.parametrize(
    "environ, says",
    [
        ({}, "no editor found"),
        ({"RTUN_EDITOR": "'unclosed"}, "$RTUN_EDITOR"),
        ({"RTUN_EDITOR": "   "}, "no editor found"),  # blank is unset
    ],
)
def test_no_usable_editor_is_a_refusal_that_names_the_setting(environ, says) -> None:
    with pytest.raises(Rejected) as caught:
        editor_command((), environ, lambda name: None)
    assert caught.value.code == messages.E_OPEN and says in caught.value.text
    if "found" in says:
        assert "[edit] editor" in caught.value.text


# ---- reading a save back ---------------------------------------------------------------------


def _read(directory: Path, name: str, max_bytes: int = 1000) -> Optional[Tuple[bytes, str, tuple]]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return read_save(fd, name, max_bytes)
    finally:
        os.close(fd)


def test_a_regular_file_is_read_with_its_digest(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"text\n")
    found = _read(tmp_path, "f.txt")
    assert found is not None
    assert found[:2] == (b"text\n", hashlib.sha256(b"text\n").hexdigest())
    assert _read(tmp_path, "missing.txt") is None


def _symlink(directory: Path, secret: Path) -> None:
    (directory / "f.txt").symlink_to(secret)


def _hardlink(directory: Path, secret: Path) -> None:
    os.link(secret, directory / "f.txt")


def _fifo(directory: Path, secret: Path) -> None:
    os.mkfifo(directory / "f.txt")  # an open for reading would block: it must not


def _too_large(directory: Path, secret: Path) -> None:
    (directory / "f.txt").write_bytes(b"x" * 1001)


@pytest.mark.parametrize(
    "make, why",
    [
        (_symlink, "replaced by a symbolic link"),
        (_hardlink, "other hard links"),
        (_fifo, "no longer a regular file"),
        (_too_large, "larger than [edit] max_bytes (1000 bytes)"),
    ],
)
def test_anything_but_a_lone_regular_file_is_never_read(tmp_path: Path, make, why) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")
    directory = tmp_path / "copy"
    directory.mkdir()
    make(directory, secret)
    with pytest.raises(Unsendable, match=why.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        _read(directory, "f.txt")


# ---- the action and a real editor process ----------------------------------------------------


def run(coroutine: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coroutine())


def make_editors(tmp_path: Path, max_bytes: int = 1 << 20, max_open: int = 4) -> Editors:
    quit_file = tmp_path / "quit"
    command = (sys.executable, "-c", WAITING_EDITOR, str(quit_file))
    return Editors(command, max_bytes, max_open, 0o022, min_free=0, environ={})


def received(editors: Editors, name: str, data: bytes):
    """A file as the exchange receives it: begin, its events, end."""
    target = editors.begin(messages.Edit(len(data), name))
    target.start_file(FileStart((), None, None, len(data)))
    target.write(memoryview(data))
    target.end_file()
    target.finish()
    return target


@pytest.fixture(autouse=True)
def private_tmp(daemon_tmp: Path, monkeypatch) -> Path:
    """This process's $TMPDIR, where the private copies go (tempfile reads $TMPDIR once: reset
    its cache)."""
    monkeypatch.setenv("TMPDIR", str(daemon_tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    return daemon_tmp


async def _started(
    tmp_path: Path, data: bytes = b"v0\n", name: str = "f.txt", editors: Optional[Editors] = None
) -> Tuple[Editors, OpenEdit]:
    editors = editors or make_editors(tmp_path)
    command = editors.check(messages.Edit(len(data), name))
    target = received(editors, name, data)
    return editors, await editors.start(target, command)


def _quit(tmp_path: Path, status: int = 0) -> None:
    (tmp_path / "quit").write_text(str(status))


def test_the_copy_is_private_and_the_editor_gets_its_path_last(tmp_path: Path, private_tmp: Path) -> None:
    async def scenario() -> None:
        editors, edit = await _started(tmp_path, b"hello\n", "../x/notes.md")
        path = Path(edit.path)
        assert path.name == "notes.md" and path.parent.parent == private_tmp
        assert path.parent.name.startswith(f"rtun-edit-{os.getpid()}-")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert path.read_bytes() == b"hello\n"
        with open(f"/proc/{edit.process.pid}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[-2] == os.fsencode(path)
        _quit(tmp_path)
        assert isinstance(await edit.next_change(10), Closed)
        edit.end()
        assert not path.parent.exists() and editors.open_count == 0

    run(scenario)


def test_a_save_is_reported_once_it_stays_put(tmp_path: Path) -> None:
    async def scenario() -> None:
        _, edit = await _started(tmp_path)
        path = Path(edit.path)
        with open(path, "w") as f:  # an editor writing in place, half way
            f.write("v1 first half")
        assert await edit._change(final=False) is None  # seen once
        with open(path, "a") as f:
            f.write(", second half\n")
        assert await edit._change(final=False) is None  # changed again
        change = await edit._change(final=False)  # the same as last time: settled
        assert isinstance(change, Save) and change.data == b"v1 first half, second half\n"
        assert change.seq == 1
        assert await edit._change(final=False) is None  # nothing new
        _quit(tmp_path)
        edit.end()

    run(scenario)


def test_saves_by_rename_come_in_order_and_a_save_without_change_is_not_one(tmp_path: Path) -> None:
    async def scenario() -> None:
        _, edit = await _started(tmp_path)
        path = Path(edit.path)
        seen: List[bytes] = []
        for text in (b"v1\n", b"v1\n", b"v2\n"):
            (path.parent / "new").write_bytes(text)
            os.replace(path.parent / "new", path)
            change = await edit.next_change(0.6)
            if change is not None:
                assert isinstance(change, Save)
                seen.append(change.data)
        assert seen == [b"v1\n", b"v2\n"]
        (path.parent / "new").write_bytes(b"v0\n")  # back to what came from the server: a change
        os.replace(path.parent / "new", path)
        change = await edit.next_change(5)
        assert isinstance(change, Save) and change.data == b"v0\n" and change.seq == 3
        _quit(tmp_path)
        edit.end()

    run(scenario)


def test_a_symbolic_link_in_the_copys_place_is_skipped_once_with_the_reason(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"secret")

    async def scenario() -> None:
        _, edit = await _started(tmp_path)
        path = Path(edit.path)
        path.unlink()
        path.symlink_to(secret)
        change = await edit.next_change(5)
        assert isinstance(change, Skipped)
        assert change.reason == "f.txt on your computer was not sent back: it was replaced by a symbolic link"
        assert await edit.next_change(0.5) is None  # said once, not at every look
        _quit(tmp_path)
        edit.end()

    run(scenario)


def test_a_save_made_just_before_the_editor_exits_comes_before_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        _, edit = await _started(tmp_path)
        Path(edit.path).write_bytes(b"last words\n")
        _quit(tmp_path, 3)
        await asyncio.wait_for(edit.process.wait(), 10)
        change = await edit.next_change(5)
        assert isinstance(change, Save) and change.data == b"last words\n"
        closed = await edit.next_change(5)
        assert isinstance(closed, Closed) and closed.status == 3
        assert closed.note == "the editor on your computer exited with status 3"
        assert edit.end() is False

    run(scenario)


def test_an_editor_that_returns_at_once_is_told_apart(tmp_path: Path) -> None:
    _quit(tmp_path, 0)  # it exits as soon as it starts, as `code` does without --wait

    async def scenario() -> None:
        _, edit = await _started(tmp_path)
        closed = await edit.next_change(5)
        assert isinstance(closed, Closed) and closed.status == 0
        assert "returned at once" in closed.note and "[edit] editor" in closed.note
        edit.end()

    run(scenario)


def test_sizes_and_the_number_of_open_edits_are_refused_before_ready(tmp_path: Path) -> None:
    async def scenario() -> None:
        editors = make_editors(tmp_path, max_bytes=100, max_open=2)
        with pytest.raises(Rejected) as caught:
            editors.check(messages.Edit(101, "big"))
        assert caught.value.code == messages.E_TOO_LARGE and "[edit] max_bytes = 100" in caught.value.text
        _, first = await _started(tmp_path, editors=editors)
        waiting = received(editors, "g.txt", b"g")  # received, its editor not yet started
        with pytest.raises(Rejected) as caught:
            editors.check(messages.Edit(1, "h.txt"))
        assert caught.value.code == messages.E_BUSY and "2 edits are open" in caught.value.text
        editors.abandon(waiting)
        assert not Path(waiting.tree.root).exists()
        editors.check(messages.Edit(1, "h.txt"))  # room again
        # An edit that ends while its editor still runs keeps counting until the editor exits.
        assert first.end() is True
        assert not Path(first.path).exists() and editors.open_count == 1
        _quit(tmp_path)
        await asyncio.wait_for(first.process.wait(), 10)
        await asyncio.sleep(0)  # the exit's callbacks run
        assert editors.open_count == 0

    run(scenario)


def test_an_editor_that_is_not_there_is_refused_before_ready(tmp_path: Path) -> None:
    editors = Editors(("/nonexistent/editor",), 100, 2, 0o022, environ={})
    with pytest.raises(Rejected) as caught:
        editors.check(messages.Edit(1, "f.txt"))
    assert caught.value.code == messages.E_OPEN and "/nonexistent/editor" in caught.value.text


def test_a_dead_daemons_copies_are_swept_and_a_live_ones_kept(tmp_path: Path, private_tmp: Path) -> None:
    dead = private_tmp / "rtun-edit-999999-abc"
    dead.mkdir()
    (dead / "f.txt").write_text("left behind")

    async def scenario() -> None:
        editors, edit = await _started(tmp_path)
        assert not dead.exists()
        # Another daemon's sweep leaves this one's copy alone: it is locked while the edit lives.
        from rtun.daemon.storage.leftovers import remove_leftovers

        os.rename(edit.directory, private_tmp / "rtun-edit-1-live")
        assert remove_leftovers(str(private_tmp), edit_action.DIR_PREFIX) == []
        os.rename(private_tmp / "rtun-edit-1-live", edit.directory)
        _quit(tmp_path)
        edit.end()

    run(scenario)
