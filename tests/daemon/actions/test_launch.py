"""daemon/actions/launch.py with real programs: the argument arrives as one argv element (no shell),
the program runs in a session of its own, launch() does not wait for it, its exit is reaped and a
failure logged; a missing or unrunnable program is a refusal that names the setting."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from pathlib import Path
from typing import List

import pytest

from rtun.daemon.actions.launch import find, launch
from rtun.protocol import messages
from rtun.protocol.messages import Rejected

HOSTILE = "$(touch pwned); `touch pwned2` | rm -rf ~ && 'quoted' \"double\" \\ \n\t* ?"


def _program(directory: Path, body: str) -> Path:
    """An executable sh script that records its argv (NUL-separated), pid and session id."""
    path = directory / "opener"
    path.write_text(
        '#!/bin/sh\nprintf \'%s\\0\' "$@" > "$0.argv"\n'
        'ps -o sid= -p $$ > "$0.sid" 2>/dev/null || cut -d\' \' -f6 /proc/$$/stat > "$0.sid"\n'
        'echo $$ > "$0.pid.tmp" && mv "$0.pid.tmp" "$0.pid"\n' + body
    )
    path.chmod(0o755)
    return path


def _argv(program: Path) -> List[str]:
    return Path(str(program) + ".argv").read_bytes().decode().split("\0")[:-1]


def _gone(pid: int) -> bool:
    """Neither running nor a zombie: someone waited for it."""
    return not os.path.exists(f"/proc/{pid}")


def test_the_argument_arrives_as_one_element_after_the_commands_own(short_tmp: Path) -> None:
    program = _program(short_tmp, "")
    asyncio.run(_launch_and_wait([str(program), "--new-window", "two words"], HOSTILE, program))
    assert _argv(program) == ["--new-window", "two words", HOSTILE]
    assert not list(short_tmp.glob("pwned*")) and not (Path.cwd() / "pwned").exists()


async def _launch_and_wait(command: List[str], argument: str, program: Path) -> int:
    await launch(command, argument, "opener", "files", "a file")
    pid_file = Path(str(program) + ".pid")
    await _poll(pid_file.exists)
    pid = int(pid_file.read_text())
    await _poll(lambda: _gone(pid))
    return pid


async def _poll(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {condition}"
        await asyncio.sleep(0.02)  # the event loop must run: the reaper is a task on it


def test_launch_returns_while_the_program_runs_in_its_own_session(short_tmp: Path) -> None:
    program = _program(short_tmp, 'while [ ! -e "$0.go" ]; do sleep 0.02; done\n')

    async def run() -> None:
        await launch([str(program)], "x", "opener", "files", "a file")
        pid_file = Path(str(program) + ".pid")
        await _poll(pid_file.exists)
        pid = int(pid_file.read_text())
        assert not _gone(pid)  # launch() came back; the program still waits for its "go"
        await _poll(lambda: Path(str(program) + ".sid").stat().st_size > 0)
        assert int(Path(str(program) + ".sid").read_text()) == pid != os.getsid(0)
        Path(str(program) + ".go").write_text("")
        await _poll(lambda: _gone(pid))  # reaped: no zombie left behind

    asyncio.run(run())


def test_a_failing_program_is_logged_with_how_the_argument_is_shown(
    short_tmp: Path, caplog: pytest.LogCaptureFixture
) -> None:
    program = _program(short_tmp, "exit 3\n")

    def logged() -> bool:
        return any("status 3" in r.getMessage() for r in caplog.records)

    async def run() -> None:
        await launch([str(program)], "secret-ish argument", "opener", "files", "a file")
        await _poll(logged)

    with caplog.at_level(logging.WARNING, logger="rtun.daemon"):
        asyncio.run(run())
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.endswith("exited with status 3 for a file") for m in messages), messages
    assert not any("secret-ish" in m for m in messages)


def test_a_program_not_on_path_is_refused_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, short_tmp: Path
) -> None:
    monkeypatch.setenv("PATH", str(short_tmp))
    with pytest.raises(Rejected) as caught:
        find(["xdg-open", "--x"], "opener", "files")
    assert caught.value.code == messages.E_OPEN
    assert "'xdg-open' was not found" in caught.value.text and "set opener" in caught.value.text
    _program(short_tmp, "")
    assert find(["opener"], "opener", "files") == str(short_tmp / "opener")


def test_a_program_that_cannot_start_is_refused(short_tmp: Path) -> None:
    broken = short_tmp / "broken"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(stat.S_IRWXU)
    with pytest.raises(Rejected) as caught:
        asyncio.run(launch([str(broken)], "x", "opener", "files", "a file"))
    assert caught.value.code == messages.E_OPEN and "cannot start" in caught.value.text
