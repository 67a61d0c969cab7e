"""`rtun doctor --json`: the documented shape, whether the checks pass or fail, against a real
daemon and a real notification service on a private session bus."""

from __future__ import annotations

import json
import socketserver
import threading
from pathlib import Path
from typing import Callable, Iterator, Tuple

import pytest

from rtun import __version__
from rtun.protocol import wire
from session.harness import LOCAL_CHECKS, REMOTE_CHECKS
from support.notifications import NotificationService, SessionBus
from support.rtun import RtunDaemon, run_rtun

CHECK_KEYS = ["detail", "fix", "name", "status"]


def _doctor(home: Path, *args: str, **env: str) -> Tuple[int, dict]:
    result = run_rtun(["doctor", "--json", *args], home, **env)
    document = json.loads(result.stdout)  # the whole of stdout is one document
    assert sorted(document) == ["checks", "host", "laptop", "ok", "version"]
    assert all(sorted(check) == CHECK_KEYS for check in document["checks"])
    return result.returncode, document


def _config(home: Path, opener: str) -> None:
    """``opener`` as the program the daemon starts for view, open, copy and edit alike."""
    path = home / ".config" / "rtun" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'[view]\nopener = ["{opener}"]\n[open]\nbrowser = ["{opener}"]\n'
        f'[clipboard]\ncopy = ["{opener}"]\n[edit]\neditor = ["{opener}"]\n'
    )


@pytest.fixture
def bus(short_tmp: Path) -> Iterator[SessionBus]:
    running = SessionBus().start()
    service = NotificationService(running, short_tmp / "notifications.jsonl").start()
    yield running
    service.stop()
    running.stop()


def test_a_healthy_computer_is_ok_in_the_document(
    local_home: Path, start_daemon: Callable[..., RtunDaemon], bus: SessionBus
) -> None:
    _config(local_home, "/bin/true")
    start_daemon()  # after the config is written: a daemon started before would not use it

    code, document = _doctor(local_home, DBUS_SESSION_BUS_ADDRESS=bus.address)

    assert code == 0
    assert (document["ok"], document["version"], document["host"]) == (True, __version__, None)
    assert isinstance(document["laptop"], str) and len(document["laptop"]) == 12
    assert [c["name"] for c in document["checks"]] == LOCAL_CHECKS
    assert [c["status"] for c in document["checks"]] == ["ok"] * 8
    daemon_check = document["checks"][1]
    assert f"rtun {__version__}, rtun/2: notify2" in daemon_check["detail"]
    assert "version=" not in daemon_check["detail"]  # the version word is not a feature


def test_failures_are_in_the_document_with_what_to_do_and_exit_1(local_home: Path) -> None:
    _config(local_home, "no-such-opener")

    code, document = _doctor(local_home)  # no daemon, no session bus

    assert code == 1 and document["ok"] is False
    statuses = {c["name"]: c["status"] for c in document["checks"]}
    assert statuses == {
        "config": "ok",
        "daemon": "fail",
        "notifications": "fail",
        "opener": "fail",
        "browser": "fail",
        "clipboard": "fail",
        "editor": "fail",
        "save directory": "ok",
    }
    assert all(c["fix"] for c in document["checks"] if c["status"] == "fail")


class _OlderDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """An rtun/2 daemon of another version, as the HELLO reply tells it (PING and HELLO only)."""

    daemon_threads = True

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                if line == b"PING\r\n":
                    self.wfile.write(b"OK PONG\r\n")
                elif line.startswith(b"SEND RTUN/2 "):
                    self.wfile.write(f"OK {wire.hello_reply(('notify2', 'put'), '0.0.9')}\r\n".encode())
                else:
                    return


def test_a_daemon_of_another_version_is_a_warning_saying_to_restart_it(
    local_home: Path, short_tmp: Path
) -> None:
    rtun_dir = local_home / ".rtun"
    rtun_dir.mkdir(mode=0o700)
    server = _OlderDaemon(str(rtun_dir / "rtun.sock"), _OlderDaemon.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _config(local_home, "/bin/true")
        code, document = _doctor(local_home)
    finally:
        server.shutdown()
        server.server_close()
    [check] = [c for c in document["checks"] if c["name"] == "daemon"]
    assert check["status"] == "warn"
    assert (
        "rtun 0.0.9, rtun/2: notify2, put" in check["detail"]
        and f"rtun here is {__version__}" in check["detail"]
    )
    assert "restart it" in check["fix"]
    assert code == 1  # for the notification check: no session bus here


def test_the_host_is_named_in_the_document(laptop) -> None:
    result = laptop.rtun(["doctor", "--json", "srv"])  # no daemon: the remote checks still run
    document = json.loads(result.stdout)
    assert document["host"] == "srv" and document["ok"] is False
    names = [c["name"] for c in document["checks"]]
    assert names == LOCAL_CHECKS + REMOTE_CHECKS
    assert all(sorted(check) == CHECK_KEYS for check in document["checks"])
