"""The relay script, run in a real POSIX sh the way sshd runs it: inline (the login shell runs
rtun's ``sh -c`` command line) and as a forced command (``SSH_ORIGINAL_COMMAND`` set, the
authorized_keys command line run by the login shell). End to end through sshd: test_restricted.py."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Dict, Optional

import pytest

from rtun.tunnel import registry, relay, relayscript

MID = "0123456789abcdef0123456789abcdef"
OTHER = "f" * 32
NONCE = "5" * 32
SHELLS = [["sh", "-c"]] + ([["bash", "--posix", "-c"]] if shutil.which("bash") else [])


def entry(mid: str = MID, **changes) -> registry.Entry:
    base = dict(
        name="pi",
        hostname="pi",
        machine_id=mid,
        user="pi",
        port=12345,
        local_port=22,
        os="Linux",
        agent_version="0.1.0",
        connected_at="2024-05-01T10:00:00Z",
        last_seen="2024-05-01T10:01:00Z",
    )
    base.update(changes)
    return registry.Entry(**base)


def inline(
    command: str, data: bytes = b"", shell=SHELLS[0], env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess:
    """``command`` as sshd hands it to the login shell."""
    return subprocess.run(shell + [command], input=data, capture_output=True, timeout=30, env=env)


def forced(
    tmp: Path, original: Optional[str], data: bytes = b"", directory: Optional[Path] = None, shell=SHELLS[0]
) -> subprocess.CompletedProcess:
    """The authorized_keys command for machine MID, with the client's command in SSH_ORIGINAL_COMMAND."""
    script = tmp / "rtun-relay"
    script.write_text(relayscript.SCRIPT)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp)}
    if original is not None:
        env["SSH_ORIGINAL_COMMAND"] = original
    line = f"sh {script} serve {MID} {directory or tmp / 'hosts'}"
    return inline(line, data, shell, env)


def status(done: subprocess.CompletedProcess) -> str:
    return done.stdout.split(b"\n", 1)[0].decode()


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_put_creates_the_directory_and_replaces_the_entry_atomically(tmp_path: Path, shell) -> None:
    target = tmp_path / "a dir" / "hosts"
    e = entry()
    for port in (1111, 2222):
        e.port = port
        done = inline(relay.inline_request(str(target), "put", MID), e.to_json(), shell)
        assert (done.returncode, status(done)) == (0, "rtun-relay 1 ok"), done
    assert [p.name for p in target.iterdir()] == [e.filename]  # no temporary file left behind
    assert registry.parse_entry((target / e.filename).read_bytes()).port == 2222
    assert oct(target.stat().st_mode & 0o777) == "0o700"
    assert oct((target / e.filename).stat().st_mode & 0o777) == "0o644"


def test_inline_put_expands_the_home_of_the_login(tmp_path: Path) -> None:
    done = inline(
        relay.inline_request("~/.rtun/hosts", "put", MID),
        entry().to_json(),
        env={"HOME": str(tmp_path), "PATH": os.environ["PATH"]},
    )
    assert done.returncode == 0 and (tmp_path / ".rtun" / "hosts" / f"{MID}.json").exists()


def test_put_refuses_what_is_too_large_or_empty_and_keeps_the_old_entry(tmp_path: Path) -> None:
    assert forced(tmp_path, f"rtun-relay put {MID}", b'{"old": 1}').returncode == 0
    for data, reason in (
        (b"x" * (relayscript.MAX_ENTRY_BYTES + 1), "larger than"),
        (b"x" * (10 * relayscript.MAX_ENTRY_BYTES), "larger than"),
        (b"", "empty"),
    ):
        done = forced(tmp_path, f"rtun-relay put {MID}", data)
        assert done.returncode == 2 and reason in status(done), status(done)
    assert (tmp_path / "hosts" / f"{MID}.json").read_bytes() == b'{"old": 1}'
    assert os.listdir(tmp_path / "hosts") == [f"{MID}.json"]
    exact = b"y" * relayscript.MAX_ENTRY_BYTES
    assert forced(tmp_path, f"rtun-relay put {MID}", exact).returncode == 0


@pytest.mark.parametrize(
    "original",
    [
        None,
        "",
        "id",
        "sh -c id",
        f"rtun-relay put {MID} ",
        f" rtun-relay put {MID}",
        f"rtun-relay put {MID}\n",
        f"rtun-relay put {MID};id",
        f"rtun-relay put {MID}\nid",
        f"rtun-relay  put {MID}",
        "rtun-relay put ../../etc/passwd",
        f"rtun-relay put {MID.upper()}",
        "rtun-relay list",
        f"rtun-relay list {NONCE} x",
        "rtun-relay list $(id)",
        "rtun-relay list *",
        f"rtun-relay serve {MID} /",
        "rtun-relay get",
        f"RTUN-RELAY put {MID}",
    ],
)
def test_the_forced_command_accepts_nothing_but_its_grammar(tmp_path: Path, original) -> None:
    done = forced(tmp_path, original, b'{"x": 1}')
    assert done.returncode == 2 and status(done).startswith("rtun-relay 1 refused: this key runs only")
    assert done.stdout.count(b"\n") == 1 and b"uid=" not in done.stdout
    assert not (tmp_path / "hosts").exists()


def test_the_forced_command_writes_only_its_own_machines_entry(tmp_path: Path) -> None:
    done = forced(tmp_path, f"rtun-relay put {OTHER}", b'{"x": 1}')
    assert done.returncode == 2 and f"may only write the entry of machine {MID}" in status(done)
    assert not (tmp_path / "hosts").exists()
    done = forced(tmp_path, f"rtun-relay put {MID}", b'{"x": 1}')
    assert done.returncode == 0 and os.listdir(tmp_path / "hosts") == [f"{MID}.json"]


def test_a_bad_forced_command_line_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "rtun-relay"
    script.write_text(relayscript.SCRIPT)
    env = {"PATH": os.environ["PATH"], "SSH_ORIGINAL_COMMAND": f"rtun-relay put {MID}"}
    for line in (
        f"sh {script} serve",
        f"sh {script} serve x {tmp_path}",
        f"sh {script} serve {MID}",
        f"sh {script} put {MID}",
    ):
        done = inline(line, b"{}", env=env)
        assert done.returncode == 2 and b"refused" in done.stdout, line
    assert not (tmp_path / ".rtun").exists()


def _listing(directory: Path, shell=SHELLS[0]) -> registry.Files:
    done = inline(relay.inline_request(str(directory), "list", NONCE), shell=shell)
    assert done.returncode == 0 and status(done) == "rtun-relay 1 ok", done
    return relay.parse_listing(done.stdout.split(b"\n", 1)[1], NONCE)


@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_list_frames_hostile_content_and_names(tmp_path: Path, shell) -> None:
    e = entry()
    (tmp_path / e.filename).write_bytes(e.to_json())
    hostile = {  # contents that look like the listing's own lines and separators
        "1" * 32: b"C\nE\nS " + b"2" * 32 + b".json\n",
        "2" * 32: b"\n--rtun-" + b"6" * 32 + b"--\n" + b"E\n",
        "3" * 32: b"\x00\xff no newline at the end",
        "4" * 32: b"",
    }
    for name, content in hostile.items():
        (tmp_path / f"{name}.json").write_bytes(content)
    (tmp_path / "we ird\nS x\n.json").write_bytes(b"S 1\n")  # not an entry's name: ignored
    (tmp_path / ("5" * 32 + ".json")).write_bytes(b"x" * 100000)  # too large: named, never sent
    os.mkfifo(tmp_path / ("6" * 32 + ".json"))  # must not hang the listing
    os.symlink("/etc/passwd", tmp_path / ("7" * 32 + ".json"))
    (tmp_path / ("8" * 32 + ".json")).mkdir()
    found = _listing(tmp_path, shell)
    assert dict(found.files) == {e.filename: e.to_json(), **{f"{k}.json": v for k, v in hostile.items()}}
    assert sorted(found.problems) == [f"skipped {'5' * 32}.json: larger than 16384 bytes"] + [
        f"skipped {c * 32}.json: not a regular file" for c in "678"
    ]
    assert found.cut is None


def test_list_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert _listing(tmp_path / "none") == registry.Files()


def test_list_says_when_it_is_cut_and_reads_every_file_once(tmp_path: Path) -> None:
    # The script with a cap of 40 files instead of MAX_FILES, which is its only change.
    script = relayscript.SCRIPT.replace(f"-gt {relayscript.MAX_FILES} ]", "-gt 40 ]")
    assert script != relayscript.SCRIPT
    for n in range(43):
        (tmp_path / f"{n:032x}.json").write_bytes(b"{}")
    directory = tmp_path.parent / f"{tmp_path.name}-relay"
    directory.mkdir()
    (directory / "rtun-relay").write_text(script)
    env = {"PATH": os.environ["PATH"], "SSH_ORIGINAL_COMMAND": f"rtun-relay list {NONCE}"}
    done = inline(f"sh {directory}/rtun-relay serve {MID} {tmp_path}", env=env)
    found = relay.parse_listing(done.stdout.split(b"\n", 1)[1], NONCE)
    assert len(found.files) == 40 and len(set(found.files)) == 40 and found.problems == []
    assert found.cut is not None and found.cut.startswith("listing cut: 3 of 43 entry files not read")


def test_a_listing_cut_short_in_transit_says_so() -> None:
    sep = b"\n--rtun-" + NONCE.encode() + b"--\n"
    body = b"S " + b"a" * 32 + b".json\nS " + b"b" * 32 + b".json\nN 2 0\nC\n{}" + sep + b"{"
    found = relay.parse_listing(body, NONCE, truncated=True)
    assert found.files == [("a" * 32 + ".json", b"{}")]
    assert found.cut is not None and "1 of 2 listed entries not read" in found.cut


@pytest.mark.parametrize(
    "body", [b"", b"S x\nC\n", b"Q 1\nC\nE\n", b"N 1\nC\nE\n", b"S " + b"a" * 32 + b".json x\n"]
)
def test_a_garbled_listing_is_a_problem_not_a_crash(body: bytes) -> None:
    found = relay.parse_listing(body, NONCE)
    assert found.files == [] and len(found.problems) == 1 and "garbled" in found.problems[0]


def test_replies_are_told_from_a_login_shells_words() -> None:
    assert relay.parse_reply(b"rtun-relay 1 ok\nbody") == relay.Reply("ok", "", b"body")
    assert relay.parse_reply(b"rtun-relay 1 refused: no \x1b[2J\n").detail == "no \\x1b[2J"
    for stdout in (b"", b"sh: 1: rtun-relay: not found\n", b"rtun-relay 1 maybe\n", b"rtun-relay 2 ok\n"):
        assert relay.parse_reply(stdout) is None


def test_json_of_a_written_entry_survives_the_round_trip(tmp_path: Path) -> None:
    e = entry(os='Linux "quoted" \\ back')
    assert inline(relay.inline_request(str(tmp_path), "put", MID), e.to_json()).returncode == 0
    found = _listing(tmp_path)
    assert registry.parse_files(found.files) == ([e], [])
    assert json.loads(found.files[0][1])["os"] == e.os


class Account:
    """sshd's part, for the Relay client: each command run by the login shell, either as given
    (a plain account) or replaced by a forced command that gets it in SSH_ORIGINAL_COMMAND."""

    def __init__(self, tmp: Path, forced_command: Optional[str] = None) -> None:
        self.tmp, self.forced_command, self.commands = tmp, forced_command, []

    def __call__(self, command: str, data: bytes, timeout: float, limit: Optional[int]):
        from rtun.ssh.process import run_bounded

        self.commands.append(command)
        env = {"PATH": os.environ["PATH"], "HOME": str(self.tmp)}
        if self.forced_command is not None:
            env["SSH_ORIGINAL_COMMAND"] = command
            command = self.forced_command
        # sshd runs the command from the home directory, where relative paths start.
        return run_bounded(
            ["env", "-i"] + [f"{k}={v}" for k, v in env.items()] + ["sh", "-c", f'cd "$HOME" && {command}'],
            data,
            timeout,
            limit,
        )


def test_on_a_plain_account_the_client_falls_back_to_the_inline_script_once(tmp_path: Path) -> None:
    account = Account(tmp_path)
    client = relay.Relay(account, str(tmp_path / "hosts"))
    client.put(entry())
    client.put(entry(port=2))
    assert client.mode == relay.Relay.INLINE
    assert [c.split(" ")[0] for c in account.commands] == ["rtun-relay", "sh", "sh"]
    assert registry.parse_files(client.list().files)[0] == [entry(port=2)]


def test_through_a_forced_command_the_client_speaks_its_grammar(tmp_path: Path) -> None:
    script = tmp_path / "rtun-relay"
    script.write_text(relayscript.SCRIPT)
    account = Account(tmp_path, f"sh {script} serve {MID} hosts")
    client = relay.Relay(account, "/ignored")
    client.put(entry())
    assert client.mode == relay.Relay.FORCED and account.commands == [f"rtun-relay put {MID}"]
    assert os.listdir(tmp_path / "hosts") == [f"{MID}.json"]  # the line's directory, from the home
    assert [n for n, _ in client.list().files] == [f"{MID}.json"]
    with pytest.raises(
        relay.RelayError, match=f"refused the entry: this key may only write the entry of machine {MID}"
    ):
        client.put(entry(mid=OTHER))


def test_a_forced_command_without_its_script_is_named_in_the_error(tmp_path: Path) -> None:
    account = Account(tmp_path, f"sh {tmp_path}/missing serve {MID} hosts")
    with pytest.raises(relay.RelayError, match="is the relay script installed"):
        relay.Relay(account, "hosts").put(entry())


def test_the_listening_ports_come_with_the_listing_on_linux(tmp_path: Path) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        found = _listing(tmp_path)
        assert found.listening is not None and listener.getsockname()[1] in found.listening
    sep = b"\n--rtun-" + NONCE.encode() + b"--\n"
    assert relay.parse_listing(b"N 0 0\nC\nE\nP\n", NONCE).listening == frozenset()
    assert relay.parse_listing(b"N 0 0\nC\nE\n", NONCE).listening is None  # not Linux: probe all
    garbled = relay.parse_listing(b"S " + b"a" * 32 + b".json\nN 1 0\nC\n{}" + sep + b"E\nP\nL zz\n", NONCE)
    assert garbled.listening is None and "garbled" in garbled.problems[0]
