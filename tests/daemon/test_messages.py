"""The daemon's refusals as the user meets them: the real client on the server side of a real
`ssh -R` forward through sshd, printing what crossed the socket. Printed on the server, they say
"your computer", name the config file and the setting, and that `rtun server reload` applies a
change; a rate limit says what used it up, when to retry, and which settings decide."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.rtun import RtunDaemon, run_rtun

CONFIG = (
    "in ~/.config/rtun/config.toml on your computer (`rtun config --path` there prints its path), "
    "then run `rtun server reload` there"
)


@pytest.fixture
def daemon_config() -> str:
    """The daemon's config file (parametrize it): {tool} is a program that does nothing."""
    return ""


@pytest.fixture
def daemon(start_daemon, daemon_tmp: Path, daemon_config: str, short_tmp: Path) -> RtunDaemon:
    tool = short_tmp / "tool"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    return start_daemon(env={"TMPDIR": str(daemon_tmp)}, config=daemon_config.replace("{tool}", str(tool)))


def _line(result) -> str:
    text = result.stderr.decode()
    assert "Traceback" not in text and len(text.splitlines()) == 1, text
    return text.strip()


def _file(directory: Path, name: str) -> Path:
    path = directory / name
    path.write_bytes(b"\x89PNG" + name.encode())
    return path


@pytest.mark.parametrize(
    "daemon_config", ['[view]\nopener = ["{tool}"]\nburst = 2\nrate = 0.01\n[open]\nbrowser = ["{tool}"]\n']
)
def test_a_rate_limit_says_what_used_it_up_when_to_retry_and_which_settings_decide(
    forward, remote_home, short_tmp
):
    assert run_rtun(["view", str(_file(short_tmp, "a.png"))], remote_home).returncode == 0
    assert run_rtun(["open", "https://example.org/?token=secret"], remote_home).returncode == 0
    result = run_rtun(["view", str(_file(short_tmp, "c.png"))], remote_home)
    assert result.returncode == 4
    line = _line(result)
    assert line.startswith("rtun view: too many files opened in a short time: 2 in the last ")
    assert "1 file viewed" in line and "1 page opened" in line and "try again in " in line
    assert "[view] burst = 2 sets how many may open at once" in line and "[view] rate = 0.01" in line
    assert line.endswith(f"to change them, set them {CONFIG}")
    # What was opened is counted, never named: the socket may be reached from another server.
    assert "a.png" not in line and "example.org" not in line and "secret" not in line


@pytest.mark.parametrize("daemon_config", ['[view]\nopener = ["/nonexistent/opener"]\n'])
def test_a_missing_opener_names_your_computer_the_setting_and_reload(forward, remote_home, short_tmp):
    result = run_rtun(["view", str(_file(short_tmp, "a.png"))], remote_home)
    assert result.returncode == 4
    assert _line(result) == (
        "rtun view: cannot open files on your computer: '/nonexistent/opener' was not found there; "
        f"install it, or set [view] opener {CONFIG}"
    )


@pytest.mark.parametrize("daemon_config", ['[view]\nopener = ["{tool}"]\n'])
def test_a_risky_type_names_the_setting_that_accepts_it(forward, remote_home, short_tmp):
    program = short_tmp / "setup.exe"
    program.write_bytes(b"MZ")
    result = run_rtun(["view", str(program)], remote_home)
    assert result.returncode == 4
    assert _line(result).endswith(f'; to accept them anyway, add ".exe" to [view] allow_types {CONFIG}')


def test_paste_off_says_how_to_turn_it_on(forward, remote_home):
    result = run_rtun(["paste"], remote_home)
    assert result.returncode == 4
    assert _line(result).endswith(f"; to turn it on, set [actions] paste = true {CONFIG}")
    assert "this computer" not in _line(result)
