"""`rtun ssh`'s command line and the ssh command lines built from it (pure: no processes)."""

from __future__ import annotations

import pytest

from rtun.cli import parse
from rtun.errors import UsageError
from rtun.session import sshopts
from rtun.ssh import argv as sshargv


def _inv(*argv: str) -> sshopts.Invocation:
    _, args = parse(["ssh", *argv])
    return sshopts.from_args(args)


def test_options_before_and_after_the_host_are_ssh_options_and_the_rest_is_the_command():
    inv = _inv("-p", "2222", "-oLogLevel=ERROR", "srv", "-l", "me", "-tt", "ls", "-l", "/tmp")
    assert inv.host == "srv"
    assert inv.options == [("p", "2222"), ("o", "LogLevel=ERROR"), ("l", "me"), ("t", None), ("t", None)]
    assert inv.command == ["ls", "-l", "/tmp"]


def test_double_dash_ends_the_options_and_rtun_flags_may_come_after_the_host():
    inv = _inv("srv", "--install", "-v", "--", "-x", "y")
    assert inv.command == ["-x", "y"]
    assert inv.rtun_flags == ("--install",)
    assert inv.has("v")
    assert _inv("--install", "srv").rtun_flags == ("--install",)


def _parsed(*argv: str):
    _, args = parse(list(argv))
    return sshopts.from_args(args), args


def test_a_commands_own_options_after_the_host_are_parsed_as_before_it():
    inv, args = _parsed("doctor", "srv", "-p", "2222", "--json", "--config", "/c.toml")
    assert (args.json, args.config, inv.options, inv.command) == (True, "/c.toml", [("p", "2222")], [])
    inv, args = _parsed("doctor", "srv", "--config=/d.toml")
    assert (args.json, args.config) == (False, "/d.toml")
    inv, args = _parsed("ssh", "srv", "--print-config", "-A")
    assert inv.rtun_flags == ("--print-config",) and args.print_config and inv.has("A")


def test_options_after_the_first_command_word_are_the_commands():
    inv, args = _parsed("ssh", "srv", "--install", "ls", "--json", "--print-config", "-p", "1")
    assert inv.command == ["ls", "--json", "--print-config", "-p", "1"]
    assert inv.rtun_flags == ("--install",) and not args.print_config and inv.options == []


@pytest.mark.parametrize(
    "argv, message",
    [
        (["doctor", "srv", "--jsn"], "unknown option --jsn"),
        (["doctor", "srv", "--config"], "option --config needs an argument"),
        (["install", "srv", "--json"], "unknown option --json"),  # install has no --json
        (["ssh", "srv", "--ins"], "unknown option --ins"),  # no abbreviations after the host
    ],
)
def test_an_unknown_or_incomplete_own_option_after_the_host_is_named(argv, message):
    with pytest.raises(UsageError) as caught:
        _parsed(*argv)
    assert caught.value.message == message


@pytest.mark.parametrize(
    "argv, message",
    [
        (["-f", "srv"], "-f"),
        (["srv", "-O", "exit"], "-O"),
        (["srv", "-W", "h:22"], "-W"),
        (["-S", "/x", "srv"], "-S"),
        (["srv", "-s", "sftp"], "subsystems"),
    ],
)
def test_what_rtun_ssh_cannot_do_is_a_usage_error_naming_it(argv, message):
    with pytest.raises(UsageError) as caught:
        _inv(*argv)
    assert message in caught.value.message and "plain ssh" in caught.value.message


def test_an_unknown_option_after_the_host_is_a_usage_error():
    with pytest.raises(UsageError, match="-Z"):
        _inv("srv", "-Z", "ls")
    with pytest.raises(UsageError, match="-p needs an argument"):
        _inv("srv", "-p")


def test_each_option_goes_where_it_acts():
    inv = _inv("-A", "-L", "8080:localhost:80", "-J", "jump", "-t", "-e", "none", "srv", "cmd")
    master = sshargv.master_argv(["ssh"], "/ctl", inv.host, sshopts.master_options(inv), "CONTROL")
    session = sshargv.mux_argv(["ssh"], "/ctl", inv.host, sshopts.session_options(inv, ["-x"]), "CMD")
    # The connection: forwards and the jump host, never a terminal; rtun's options first (first wins).
    assert master[:4] == ["ssh", "-M", "-S", "/ctl"] and master.index("-T") < master.index("-A")
    assert "-L" in master and "-J" in master and "-t" not in master and "-e" not in master
    assert master[-3:] == ["--", "srv", "CONTROL"]
    # The session: the terminal and escape character; no forward asked twice, no login of its own.
    assert "-t" in session and "-e" in session and "-A" in session
    assert "-L" not in session and "-J" not in session
    assert "ProxyCommand=false" in session and "ClearAllForwardings=yes" in session
    assert session[-4:] == ["-x", "--", "srv", "CMD"]


def test_paths_in_forwards_and_control_paths_keep_percent_signs_literal():
    assert sshargv.socket_forward_spec("/h/a%b/s", "/l/s") == "/h/a%%b/s:/l/s"
    assert sshargv.control_argv(["ssh"], "/c%d", "srv", "exit")[3:5] == ["-S", "/c%%d"]
    # Both drivers' masters and their clients alike.
    assert sshargv.master_argv(["ssh"], "/c%d", "srv", [])[2:4] == ["-S", "/c%%d"]
    assert sshargv.mux_argv(["ssh"], "/c%d", "srv")[1:3] == ["-S", "/c%%d"]
    bare = sshargv.mux_argv(["ssh"], "/c", "srv", sshopts.session_options(None), "true")
    assert bare[-6:] == ["-F", "/dev/null", "-T", "--", "srv", "true"]
    for bad in ("/h/a:b", "relative", "/h/new\nline"):
        with pytest.raises(ValueError):
            sshargv.socket_forward_spec(bad, "/l/s")


def test_ssh_config_output_is_parsed_first_value_first():
    assert sshargv.parse_config("RemoteCommand tmux a\nremotecommand other\nport 22\n") == {
        "remotecommand": "tmux a",
        "port": "22",
    }
