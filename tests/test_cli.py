"""The command line itself: parsing, the one-line error rule, exit codes, `python -m rtun`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rtun import __version__
from rtun.cli import COMMANDS, load, main, parse
from rtun.command import Command


@pytest.mark.parametrize("argv, expected", [
    (["send"], "rtun send: the following arguments are required: PATH (see rtun send --help)"),
    (["bogus"], "rtun: argument COMMAND: invalid choice: 'bogus'"),
    (["ping", "--nope"], "rtun ping: unrecognized arguments: --nope"),
    ([], "rtun: the following arguments are required: COMMAND"),
])
def test_usage_errors_return_2_with_one_line(capsys, argv, expected) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(expected), err


def test_help_and_version_return_0(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"rtun {__version__}"
    assert main(["send", "--help"]) == 0
    assert "--overwrite" in capsys.readouterr().out


def test_failures_print_one_line_and_their_exit_code(capsys, tmp_path) -> None:
    missing = str(tmp_path / "nothing.sock")
    assert main(["ping", "-s", missing]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"rtun ping: no rtun daemon answers on {missing}")


def test_diagnostic_commands_are_left_out_of_the_help(capsys) -> None:
    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert "ping" in listed and "send" in listed
    for hidden in ("pid", "echo", "shutdown"):
        assert f"    {hidden} " not in listed
    assert parse(["pid"])[1].command == "pid"


def test_every_command_in_the_table_is_a_command() -> None:
    for name in COMMANDS:
        assert isinstance(load(name), Command), name


def test_a_command_builds_only_its_own_parser() -> None:
    command, args = parse(["send", "--to", "x/", "a", "b"])
    assert (args.command, args.to, args.paths) == ("send", "x/", ["a", "b"])
    assert not hasattr(args, "title")  # notify's option is not declared for send


def test_python_dash_m_rtun_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "rtun", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"rtun {__version__}"
