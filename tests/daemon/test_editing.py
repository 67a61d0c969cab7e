"""EDIT and EDITWAIT on the wire: the daemon in process (its real server, on a real UNIX socket),
a client speaking the protocol byte by byte as a hostile or broken one could, and a stand-in
editor (a real process) that saves when the test drops a file in its control directory.
IDLE_SECONDS is cut short so the keep-alive and a vanished client show up at once."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from rtun.daemon import editing
from rtun.daemon.config import Config
from rtun.daemon.listener import bind
from rtun.daemon.server import Daemon
from support.raw import RawClient, v1_upload
from support.wait import wait_until

EDITOR = (
    "import os, sys, time\n"
    "control, path = sys.argv[1], sys.argv[2]\n"
    "open(os.path.join(control, 'started-%d' % os.getpid()), 'w').close()\n"
    "done = set()\n"
    "while not os.path.exists(os.path.join(control, 'quit')):\n"
    "    for name in sorted(os.listdir(control)):\n"
    "        if name.startswith('save-') and name not in done:\n"
    "            done.add(name)\n"
    "            data = open(os.path.join(control, name), 'rb').read()\n"
    "            open(path + '.new', 'wb').write(data)\n"
    "            os.replace(path + '.new', path)\n"
    "    time.sleep(0.01)\n"
)


class Notes:
    """Stands in for the desktop notifier (tests/client/test_edit.py uses the real one, on D-Bus)."""

    def __init__(self) -> None:
        self.shown: List[Tuple[str, str]] = []

    async def notify(self, title: str, body: str) -> None:
        self.shown.append((title, body))


class Served:
    """What a scenario gets: the socket, the editor's control directory, the temp directory."""

    def __init__(
        self, socket: Path, control: Path, tmp: Path, notes: Notes, stop: Callable[[], None]
    ) -> None:
        self.socket, self.control, self.tmp, self.notes, self.stop = socket, control, tmp, notes, stop

    def client(self) -> RawClient:
        return RawClient(self.socket)

    def copies(self) -> List[Path]:
        return sorted(self.tmp.glob("rtun-edit-*"))

    def editors_started(self) -> int:
        return len(list(self.control.glob("started-*")))

    def save(self, n: int, data: bytes) -> None:
        (self.control / f"save-{n}.tmp").write_bytes(data)
        os.replace(self.control / f"save-{n}.tmp", self.control / f"save-{n}")

    def quit(self) -> None:
        (self.control / "quit").touch()


@pytest.fixture
def serve(short_tmp: Path, daemon_tmp: Path, monkeypatch) -> Iterator[Callable[..., None]]:
    """``serve(scenario, **config)``: runs the blocking ``scenario(served)`` against a daemon."""
    monkeypatch.setattr(editing, "IDLE_SECONDS", 0.3)
    monkeypatch.setenv("TMPDIR", str(daemon_tmp))
    monkeypatch.setattr("tempfile.tempdir", None)
    control = short_tmp / "control"
    control.mkdir()

    def serve(scenario: Callable[[Served], None], **settings: Any) -> None:
        values: Dict[str, Any] = {"edit_editor": (sys.executable, "-c", EDITOR, str(control))}
        values.update(settings)
        config = Config(socket=str(short_tmp / "d.sock"), save_dir=str(short_tmp / "saved"), **values)
        os.makedirs(config.save_dir, exist_ok=True)
        notes = Notes()

        async def main() -> None:
            daemon = Daemon(config, bind(config.socket))
            daemon.services._notifier = notes  # type: ignore[assignment]
            running = asyncio.ensure_future(daemon.run())
            loop = asyncio.get_running_loop()
            served = Served(
                Path(config.socket),
                control,
                daemon_tmp,
                notes,
                lambda: loop.call_soon_threadsafe(daemon.stop),
            )
            try:
                await loop.run_in_executor(None, scenario, served)
            finally:
                daemon.stop()
                await running

        asyncio.run(main())

    yield serve
    (control / "quit").touch()  # editors still waiting go


def reply(client: RawClient) -> Tuple[bytes, Dict[str, Any]]:
    line = client.line()
    if line.startswith(b"OK {"):
        return line, json.loads(line[3:])
    return line, {}


def open_edit(client: RawClient, data: bytes, name: str = "f.txt") -> None:
    assert v1_upload_json(client, data, name) == b"OK\r\n"


def v1_upload_json(client: RawClient, data: bytes, name: str) -> bytes:
    header = json.dumps({"name": name, "bytes": len(data)})
    answer = client.command(f"EDIT {header}")
    if answer != b"READY\r\n":
        return answer
    client.send(data + hashlib.sha256(data).hexdigest().encode() + b"\r\n")
    return client.line()


def wait(client: RawClient, result: str = "", message: str = "") -> Tuple[bytes, Dict[str, Any]]:
    client.send(f"EDITWAIT {json.dumps({'result': result, 'message': message})}\r\n".encode())
    return reply(client)


def payload(client: RawClient, size: int) -> bytes:
    data = client.read(size)
    assert client.line() == hashlib.sha256(data).hexdigest().encode() + b"\r\n"
    return data


def test_an_edit_answers_idle_then_each_save_then_closed(serve) -> None:
    def scenario(s: Served) -> None:
        with s.client() as client:
            open_edit(client, b"from the server\n")
            [copy] = s.copies()
            assert (copy / "f.txt").read_bytes() == b"from the server\n"
            assert wait(client)[1] == {"event": "idle"}  # nothing yet: the keep-alive
            s.save(1, b"first save\n")
            line, event = wait(client)
            assert event == {"event": "save", "seq": 1, "bytes": 11}, line
            assert payload(client, 11) == b"first save\n"
            s.save(2, b"second\n")
            _, event = wait(client, "saved")
            assert (event["event"], event["seq"]) == ("save", 2) and payload(
                client, event["bytes"]
            ) == b"second\n"
            s.quit()
            assert wait(client, "saved")[1] == {"event": "closed", "status": 0, "message": ""}
            assert client.command("PING") == b"OK PONG\r\n"  # the connection serves on
        wait_until(lambda: s.copies() == [], what="the copy to be removed")
        assert s.notes.shown == []

    serve(scenario)


@pytest.mark.parametrize("early", [True, False])
def test_a_result_out_of_turn_ends_the_edit(serve, early: bool) -> None:
    def scenario(s: Served) -> None:
        with s.client() as client:
            open_edit(client, b"x")
            if early:
                line, _ = wait(client, "saved")
                assert line.startswith(b"ERROR 113 EDITWAIT reports a result, but no save was sent")
            else:
                s.save(1, b"y")
                assert wait(client)[1]["event"] == "save" and payload(client, 1) == b"y"
                line, _ = wait(client)
                assert line.startswith(b"ERROR 113 EDITWAIT must say what became of save 1")
            assert client.line() == b""  # closed, as after every refusal
        wait_until(lambda: s.copies() == [], what="the copy to be removed")

    serve(scenario)


def test_any_other_request_during_an_edit_ends_it_and_the_user_is_told(serve) -> None:
    def scenario(s: Served) -> None:
        with s.client() as client:
            open_edit(client, b"x")
            assert client.command("PING").startswith(
                b"ERROR 113 an edit takes only EDITWAIT until its editor closes"
            )
        wait_until(lambda: s.copies() == [], what="the copy to be removed")
        wait_until(lambda: s.notes.shown, what="the notification")
        [(title, body)] = s.notes.shown
        assert title == "rtun edit" and body.startswith("The edit of f.txt ended")
        assert "saves in the editor no longer reach the server" in body

    serve(scenario)


KEPT = "/srv/conf.ini changed on the server\x1b[2J since it was opened; your text is kept in /srv/conf.ini.rtun-conflict-1"


def test_a_refused_or_failed_save_is_told_to_the_user_here(serve) -> None:
    def scenario(s: Served) -> None:
        with s.client() as client:
            open_edit(client, b"x", "conf.ini")
            for n in (1, 2, 3):
                s.save(n, b"v%d" % n)
                _, event = wait(client, {1: "", 2: "conflict", 3: "conflict"}[n], KEPT if n == 3 else "")
                assert event["seq"] == n and payload(client, event["bytes"]) == b"v%d" % n
            s.quit()
            assert (
                wait(client, "failed", "cannot write conf.ini:\n permission denied")[1]["event"] == "closed"
            )
        wait_until(lambda: len(s.notes.shown) == 3, what="three notifications")
        assert s.notes.shown == [
            ("rtun edit", "conf.ini was not saved on the server: the file changed there."),
            # The client's words, one escaped line: where the refused text is kept.
            (
                "rtun edit",
                "conf.ini was not saved on the server: /srv/conf.ini changed on the server [2J since it "
                "was opened; your text is kept in /srv/conf.ini.rtun-conflict-1",
            ),
            ("rtun edit", "conf.ini was not saved on the server: cannot write conf.ini: permission denied"),
        ]

    serve(scenario)


def test_a_client_that_vanishes_mid_wait_lets_go_of_the_copy(serve) -> None:
    def scenario(s: Served) -> None:
        client = s.client()
        open_edit(client, b"x")
        client.send(b'EDITWAIT {"result":"","message":""}\r\n')
        client.close()  # gone, with the EDITWAIT unanswered: the next keep-alive finds out
        wait_until(lambda: s.copies() == [], timeout=5, what="the copy to be removed")
        wait_until(lambda: s.notes.shown, what="the notification")
        assert "the connection to the server was lost" in s.notes.shown[0][1]

    serve(scenario)


def test_the_transfer_slot_is_held_for_the_upload_only(serve) -> None:
    def scenario(s: Served) -> None:
        with s.client() as editing_client:
            open_edit(editing_client, b"x")
            with s.client() as sender:  # the one slot is free again while the editor is open
                assert v1_upload(sender, "SEND", "during-edit.txt", b"data") == b"OK\r\n"
            s.quit()
            assert wait(editing_client)[1]["event"] == "closed"

    serve(scenario, max_uploads=1)


@pytest.mark.parametrize(
    "settings, size, expected",
    [
        (
            {"edit_max_bytes": 10},
            11,
            b"ERROR 117 11 bytes is more than your computer edits ([edit] max_bytes = 10; set [edit] max_bytes in ",
        ),
        (
            {"edit_editor": ("/nonexistent/editor",)},
            1,
            b"ERROR 115 cannot open files for editing on your computer: '/nonexistent/editor' was not found",
        ),
    ],
)
def test_an_edit_refused_before_ready_gets_no_ready_and_leaves_nothing(
    serve, settings, size, expected
) -> None:
    def scenario(s: Served) -> None:
        with s.client() as client:
            assert v1_upload_json(client, b"x" * size, "f.txt").startswith(expected)
        assert s.copies() == [] and s.editors_started() == 0

    serve(scenario, **settings)


def test_more_edits_than_max_open_are_refused_until_one_closes(serve) -> None:
    def scenario(s: Served) -> None:
        with s.client() as first:
            open_edit(first, b"1")
            with s.client() as second:
                assert v1_upload_json(second, b"2", "g.txt").startswith(
                    b"ERROR 114 1 edits are open on your computer ([edit] max_open)"
                )
            s.quit()
            assert wait(first)[1]["event"] == "closed"
        (s.control / "quit").unlink()
        with s.client() as third:
            open_edit(third, b"3", "h.txt")
            s.quit()
            assert wait(third)[1]["event"] == "closed"

    serve(scenario, edit_max_open=1)


def test_an_upload_cut_short_starts_no_editor_and_leaves_nothing(serve) -> None:
    def scenario(s: Served) -> None:
        with s.client() as client:
            assert client.command('EDIT {"name":"f.txt","bytes":100}') == b"READY\r\n"
            client.send(b"only ten b")
        with s.client() as client:  # served after the cut one is over
            assert client.command("PING") == b"OK PONG\r\n"
        wait_until(lambda: s.copies() == [], what="the partial copy to be removed")
        assert s.editors_started() == 0

    serve(scenario)


def test_a_daemon_that_stops_ends_the_edit_with_a_last_line(serve) -> None:
    def scenario(s: Served) -> None:
        with s.client() as client:
            open_edit(client, b"x")
            client.send(b'EDITWAIT {"result":"","message":""}\r\n')
            s.stop()
            line = client.line()
            while line.startswith(b"OK "):  # keep-alives sent before the stop
                line = client.line()
            assert line.startswith(
                b"ERROR 114 the rtun daemon on your computer stopped: the edit of f.txt ended"
            )
        wait_until(lambda: s.copies() == [], what="the copy to be removed")

    serve(scenario, shutdown_grace=0.2)
