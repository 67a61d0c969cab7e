"""Building ssh command lines (rtun.ssh.argv), reading what ssh prints, and turning its failures into advice."""

from __future__ import annotations

import pytest

from rtun.protocol import peertext
from rtun.ssh import argv as sshargv
from rtun.ssh import banner, hints


def test_rtun_ssh_command_is_split_like_a_shell() -> None:
    assert sshargv.split_command("ssh -F '/tmp/my config' -o 'User=a b'") == [
        "ssh",
        "-F",
        "/tmp/my config",
        "-o",
        "User=a b",
    ]
    assert sshargv.split_command("") == sshargv.split_command("  ") == ["ssh"]
    with pytest.raises(sshargv.SshFailedError, match="not a valid command line"):
        sshargv.split_command("ssh -o 'unterminated")


def test_tunnel_options_are_safe_and_keep_host_key_checking() -> None:
    options = sshargv.tunnel_options()
    pairs = dict(o.split("=", 1) for o in options[1::2])
    assert set(options[0::2]) == {"-o"}
    assert pairs["BatchMode"] == "yes" and pairs["ExitOnForwardFailure"] == "yes"
    assert int(pairs["ServerAliveInterval"]) * (int(pairs["ServerAliveCountMax"]) + 1) <= 10
    assert "StrictHostKeyChecking" not in pairs and "UserKnownHostsFile" not in pairs
    custom = dict(o.split("=", 1) for o in sshargv.tunnel_options(7, 4, 20)[1::2])
    assert (custom["ServerAliveInterval"], custom["ServerAliveCountMax"], custom["ConnectTimeout"]) == (
        "7",
        "4",
        "20",
    )


def test_master_argv_puts_user_command_first_and_destination_last() -> None:
    argv = sshargv.master_argv(["ssh", "-F", "cfg"], "/tmp/c", "pub", ["-o", "BatchMode=yes"])
    assert argv[:3] == ["ssh", "-F", "cfg"]
    assert argv[-2:] == ["--", "pub"] and "-M" in argv and "-N" in argv
    assert argv[argv.index("-S") + 1] == "/tmp/c"


def test_mux_argv_never_opens_a_connection_of_its_own() -> None:
    argv = sshargv.mux_argv(["ssh"], "/tmp/c", "pub", ["-W", "127.0.0.1:22"], None)
    assert "ProxyCommand=false" in argv and "ControlMaster=no" in argv
    assert argv[-2:] == ["--", "pub"]
    assert sshargv.mux_argv(["ssh"], "/tmp/c", "pub", ["-T"], "sh -c true")[-3:] == [
        "--",
        "pub",
        "sh -c true",
    ]


def test_remote_forward_binds_the_servers_loopback_only() -> None:
    assert sshargv.remote_forward_spec(12345, "localhost", 22) == "127.0.0.1:12345:localhost:22"
    assert sshargv.remote_forward_spec(0, "::1", 2222) == "127.0.0.1:0:[::1]:2222"


def test_forwarded_port_is_the_servers_choice_for_port_zero() -> None:
    assert sshargv.forwarded_port("127.0.0.1:0:localhost:22", "40123\n") == 40123
    assert sshargv.forwarded_port("127.0.0.1:12345:localhost:22", "") == 12345


def test_banners() -> None:
    assert banner.is_banner(b"SSH-2.0-OpenSSH_9.6\r\n") and banner.is_banner(b"SSH-1.99-x")
    assert (
        not banner.is_banner(b"")
        and not banner.is_banner(b"HTTP/1.1 400")
        and not banner.is_banner(b"SSH-1.5-")
    )


def test_last_line_and_exit_reason() -> None:
    assert (
        peertext.last_line("first\r\n\nTimeout, server pub not responding.\n  \n")
        == "Timeout, server pub not responding."
    )
    assert hints.exit_reason(255, "Timeout, server pub not responding.\n") == (
        "ssh exited 255: Timeout, server pub not responding. "
        "(the server stopped answering keepalives; the connection was dropped)"
    )
    assert hints.exit_reason(-15, "") == "ssh exited -15 (ssh was killed by signal 15)"


@pytest.mark.parametrize(
    "code, stderr, words",
    [
        (255, "Host key verification failed.", "accept it once"),
        (255, "user@host: Permission denied (publickey).", "authorized_keys"),
        (255, "ssh: connect to host x port 22: Connection refused", "sshd running"),
        (255, "ssh: Could not resolve hostname nope: Name or service not known", "does not resolve"),
        (255, "Timeout, server pub not responding.", "keepalives"),
        (255, "", "failed to connect"),
        (-9, "", "signal 9"),
        (3, "", "status 3"),
    ],
)
def test_ssh_failures_map_to_hints(code: int, stderr: str, words: str) -> None:
    assert words in hints.hint(code, stderr)


def test_rtun_ssh_pays_only_for_light_modules_before_ssh_starts() -> None:
    # `rtun ssh` imports this package before it starts ssh: no subprocess, typing or selectors.
    import subprocess
    import sys

    code = (
        "import sys; import rtun.session.ssh; "
        "print(' '.join(m for m in ('subprocess', 'typing', 'selectors', 'dataclasses', "
        "'rtun.ssh.process', 'rtun.tunnel.registry') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == ""


def test_stream_argv_reaches_the_port_from_the_last_hop_of_a_chain() -> None:
    """rtun connect --proxy: ``ssh -W`` to the relay, a chain's first hops jumped through, and a
    ``host:port`` destination as a URI (ssh takes a port in a destination only that way)."""
    base = ["ssh", "-F", "cfg"]
    simple = sshargv.stream_argv(base, "relay", "127.0.0.1", 2222, 3)
    assert simple[:3] == base and simple[-4:] == ["-W", "127.0.0.1:2222", "--", "relay"]
    assert "ConnectTimeout=3" in simple and "-J" not in simple
    chain = sshargv.stream_argv(base, "jump,me@relay:2200", "127.0.0.1", 2222, 3)
    assert chain[chain.index("-J") + 1] == "jump" and chain[-1] == "ssh://me@relay:2200"
    v6 = sshargv.stream_argv(base, "[::1]", "127.0.0.1", 2222, 3)
    assert v6[-1] == "[::1]"
