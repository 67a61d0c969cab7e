"""Building ssh command lines, and turning ssh failures into advice."""

from __future__ import annotations

import pytest

from rtun.tunnel import sshcmd


def test_rtun_ssh_command_is_split_like_a_shell() -> None:
    base = sshcmd.ssh_base({"RTUN_SSH_COMMAND": "ssh -F '/tmp/my config' -o 'User=a b'"})
    assert base == ["ssh", "-F", "/tmp/my config", "-o", "User=a b"]
    assert sshcmd.ssh_base({}) == ["ssh"]


def test_missing_ssh_binary_is_a_clear_error() -> None:
    with pytest.raises(sshcmd.SshNotFoundError, match="RTUN_SSH_COMMAND"):
        sshcmd.ssh_base({"RTUN_SSH_COMMAND": "/nonexistent/ssh -v"})
    with pytest.raises(sshcmd.SshFailedError, match="not a valid command line"):
        sshcmd.ssh_base({"RTUN_SSH_COMMAND": "ssh -o 'unterminated"})


def test_tunnel_options_are_safe_and_keep_host_key_checking() -> None:
    options = sshcmd.tunnel_options()
    pairs = dict(o.split("=", 1) for o in options[1::2])
    assert set(options[0::2]) == {"-o"}
    assert pairs["BatchMode"] == "yes" and pairs["ExitOnForwardFailure"] == "yes"
    assert int(pairs["ServerAliveInterval"]) * (int(pairs["ServerAliveCountMax"]) + 1) <= 10
    assert "StrictHostKeyChecking" not in pairs and "UserKnownHostsFile" not in pairs


def test_master_argv_puts_user_command_first_and_destination_last() -> None:
    argv = sshcmd.master_argv(["ssh", "-F", "cfg"], "pub", "/tmp/c", ["-o", "BatchMode=yes"])
    assert argv[:3] == ["ssh", "-F", "cfg"]
    assert argv[-2:] == ["--", "pub"] and "-M" in argv and "-N" in argv
    assert argv[argv.index("-S") + 1] == "/tmp/c"


def test_mux_argv_never_opens_a_connection_of_its_own() -> None:
    argv = sshcmd.mux_argv(["ssh"], "pub", "/tmp/c", ["-W", "127.0.0.1:22"], None)
    assert "ProxyCommand=false" in argv and "ControlMaster=no" in argv
    assert argv[-2:] == ["--", "pub"]


def test_remote_forward_binds_the_servers_loopback_only() -> None:
    assert sshcmd.remote_forward_spec(12345, "localhost", 22) == "127.0.0.1:12345:localhost:22"
    assert sshcmd.remote_forward_spec(0, "::1", 2222) == "127.0.0.1:0:[::1]:2222"


@pytest.mark.parametrize("code, stderr, words", [
    (255, "Host key verification failed.", "accept it once"),
    (255, "user@host: Permission denied (publickey).", "authorized_keys"),
    (255, "ssh: connect to host x port 22: Connection refused", "sshd running"),
    (255, "ssh: Could not resolve hostname nope: Name or service not known", "does not resolve"),
    (255, "Timeout, server pub not responding.", "keepalives"),
    (255, "", "failed to connect"),
    (-9, "", "signal 9"),
])
def test_ssh_failures_map_to_hints(code: int, stderr: str, words: str) -> None:
    assert words in sshcmd.hint(code, stderr)
