"""The ssh_config block of `rtun ssh --print-config` under a hostile server: whatever home the
server reports, real `ssh -G` reads the printed block as a forward to the daemon's socket, or
rtun refuses to print it (issue 15, defect 2)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtun.session import remote

LAPTOP = "0123456789abcdef"
DAEMON = "/home/me/.rtun/rtun.sock"
CONFIG = {"hostname": "srv.example.org", "port": "2222", "user": "me", "proxyjump": "none"}
HOSTILE_HOMES = [
    "/x/h /run/user/1000/bus #",  # the reported attack: "forward /x/h to the session bus"
    "/x/h\t/run/user/1000/bus",
    "/x/h\n    RemoteForward /tmp/r /run/user/1000/bus",
    '/x/"h /run/user/1000/bus"',
    "/x/'h /run/user/1000/bus'",
    "/x/h\\ /run/user/1000/bus",
    "/x/h#/run/user/1000/bus",
    "/x/%d/.ssh/agent",
    "/x/${SSH_AUTH_SOCK}",
    "/x/h=/run/user/1000/bus",
    "/x/h\x1b]0;owned\x07",
    "/x/\u202eh",
    "/x/h:/run/user/1000/bus",
    "relative/home",
]
needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the OpenSSH client")


def forward_of(block: str, tmp_path: Path) -> str:
    """What real ssh reads from the block: its remoteforward line, as `ssh -G` prints it."""
    config = tmp_path / "config"
    config.write_text(block)
    out = subprocess.run(
        ["ssh", "-G", "-F", str(config), "srv-rtun"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    found = [line for line in out.splitlines() if line.startswith("remoteforward ")]
    assert len(found) == 1, out
    return found[0][len("remoteforward ") :]


def refused_or_safe(home: str, tmp_path: Path) -> None:
    try:
        block = remote.plain_block("srv", CONFIG, home, LAPTOP, DAEMON)
    except ValueError as exc:
        assert "\n" not in str(exc) and str(exc).isprintable()
        return
    incoming = f"{home.rstrip('/')}/.rtun/rtun.sock.{LAPTOP}.new"
    assert forward_of(block, tmp_path) == f"{incoming} {DAEMON}"


@needs_ssh
@pytest.mark.parametrize("home", HOSTILE_HOMES)
def test_a_hostile_home_is_refused(home, tmp_path):
    with pytest.raises(ValueError, match="into an ssh_config safely"):
        remote.plain_block("srv", CONFIG, home, LAPTOP, DAEMON)


@needs_ssh
@pytest.mark.parametrize("home", ["/home/me", "/home/John Smith", "/srv/a.b_c+d-e@f/", "/h  two  spaces"])
def test_a_home_ssh_can_read_is_one_word_that_leads_to_the_daemon(home, tmp_path):
    block = remote.plain_block("srv", CONFIG, home, LAPTOP, "/home/my laptop/.rtun/rtun.sock")
    incoming = f"{home.rstrip('/')}/.rtun/rtun.sock.{LAPTOP}.new"
    assert forward_of(block, tmp_path) == f"{incoming} /home/my laptop/.rtun/rtun.sock"


@needs_ssh
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.sampled_from(list("ab /#%$\"'\\=:\t\n\r{}~,@.\x1b\u202e\x85")), max_size=20))
def test_any_home_parses_to_the_daemons_socket_or_is_refused(tmp_path, tail):
    refused_or_safe("/x/" + tail, tmp_path)


@pytest.mark.parametrize(
    "key, value",
    [
        ("hostname", "evil #\n    RemoteForward /tmp/r /run/user/1000/bus"),
        ("user", "me %d"),
        ("port", "22 # x"),
        ("proxyjump", 'a"b'),
        ("hostname", "h=/x"),
    ],
)
def test_values_from_ssh_g_that_ssh_config_cannot_hold_are_refused(key, value):
    with pytest.raises(ValueError, match="into an ssh_config"):
        remote.plain_block("srv", {**CONFIG, key: value}, "/home/me", LAPTOP, DAEMON)


def test_the_alias_is_one_host_pattern():
    assert "Host srv-rtun\n" in remote.plain_block("me@srv", CONFIG, "/home/me", LAPTOP, DAEMON)
    for alias in ("a b", "a*", "!a", "a#b", "a\nb"):
        with pytest.raises(ValueError):
            remote.plain_block(alias, CONFIG, "/home/me", LAPTOP, DAEMON)


@pytest.mark.parametrize(
    "home, problem",
    [
        ("relative", "not an absolute path"),
        ("/x/\x1b[2J", "control"),
        ("/x/\u202eh", "control"),
        ("/x/a\nb", "control"),
        ("", "not an absolute path"),
    ],
)
def test_a_home_no_command_can_use_is_named(home, problem):
    assert problem in (remote.home_problem(home) or "")
    assert remote.home_problem("/home/John Smith #1") is None  # shell-quoted where it is used


# ---- through the real sshd: a server whose home is the reported attack -------------------------


@pytest.fixture
def server_home(short_tmp: Path) -> Path:
    home = short_tmp / "h #b"  # "#" starts an ssh_config comment; the space splits a word
    home.mkdir()
    return home


def test_print_config_refuses_a_hostile_home_in_one_line_and_rtun_ssh_still_works(
    laptop, laptop_daemon, server_home
):
    from session.harness import RTUN_REMOTE

    printed = laptop.rtun(["ssh", "--print-config", "srv"])
    assert printed.returncode != 0 and printed.stdout == b""
    said = printed.stderr.decode().strip()
    assert len(said.splitlines()) == 1 and "safely" in said and "Traceback" not in said, said
    # rtun ssh quotes the same home for the login shell: the socket is in it, and leads here.
    done = laptop.rtun(["ssh", "srv", f'echo "$RTUN_SOCK"; {RTUN_REMOTE} pid'])
    assert done.returncode == 0, done.stderr
    sock, pid = done.stdout.decode().splitlines()
    assert sock.startswith(f"{server_home}/.rtun/rtun.sock.{laptop.laptop_id}.")
    assert pid.startswith(f"OK PID {laptop_daemon.process.pid},")
