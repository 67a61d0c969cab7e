"""A server that lies in its control session's report: what rtun prints of it is escaped, and a
home no command can use is refused. The "server" is a stand-in for ssh that prints the report
a hostile login shell could print (a real sshd cannot give HOME a control character)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, Dict

import pytest

from support.rtun import RTUN, clean_env

ESC = "\x1b]0;owned\x07\x1b[2J"


@pytest.fixture
def env(short_tmp: Path, daemon) -> "Callable[..., Dict[str, str]]":
    """The environment of a laptop whose daemon runs (RTUN_SOCK): `rtun ssh` starts none of its
    own, which would outlive the test."""

    def make(ssh: str) -> Dict[str, str]:
        return clean_env(short_tmp, RTUN_SSH_COMMAND=ssh, RTUN_SOCK=str(daemon.socket))

    return make


def fake_ssh(tmp: Path, home: str, error: str = "") -> str:
    script = tmp / "ssh"
    report = "\t".join(
        [
            "RTUN-PRELUDE",
            "1",
            f"home={home}",
            "host=h",
            "shell=/bin/sh",
            "client=1",
            "bin=",
            "fixed=",
            f"error={error}",
        ]
    )
    script.write_text("#!/bin/sh\nprintf '%s\\n' '" + report + "'\ncat >/dev/null\n")
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    "args", [["ssh", "srv", "true"], ["ssh", "--print-config", "srv"], ["install", "srv"]]
)
@pytest.mark.parametrize(
    "home, error", [(f"/h/{ESC}", ""), ("/h/\u202eevil", ""), ("/home/me", f"mkdir{ESC}")]
)
def test_what_the_server_reported_reaches_the_terminal_escaped(short_tmp, env, args, home, error):
    done = subprocess.run(
        RTUN + args,
        env=env(fake_ssh(short_tmp, home, error)),
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    said = done.stdout.decode() + done.stderr.decode()
    assert done.returncode != 0 and done.stdout == b""
    assert "\x1b" not in said and "\x07" not in said and "\u202e" not in said, said
    assert ("cannot use" in said) if not error else ("cannot make ~/.rtun private" in said)
    assert len(done.stderr.decode().strip().splitlines()) == 1


def test_doctor_shows_the_refusal_escaped(short_tmp, env):
    done = subprocess.run(
        RTUN + ["doctor", "srv"],
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env(fake_ssh(short_tmp, f"/h/{ESC}")),
    )
    assert done.returncode == 1
    assert "\x1b" not in done.stdout.decode() and "\\x1b]0;owned" in done.stdout.decode()
