"""The command line itself: parsing, the one-line error rule, exit codes, `python -m rtun`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rtun import __version__
from rtun.cli import build_parser, main


@pytest.mark.parametrize("argv, expected", [
    (["send"], "rtun send: the following arguments are required: PATH (see rtun send --help)"),
    (["bogus"], "rtun: argument COMMAND: invalid choice: 'bogus'"),
    (["ping", "--nope"], "rtun: unrecognized arguments: --nope"),
])
def test_usage_errors_are_one_line_with_exit_code_2(capsys, argv, expected) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(expected)


def test_failures_print_one_line_and_their_exit_code(capsys, tmp_path) -> None:
    missing = str(tmp_path / "nothing.sock")
    assert main(["ping", "-s", missing]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"rtun ping: no rtun daemon answers on {missing}")


def test_diagnostic_commands_are_left_out_of_the_help() -> None:
    listed = build_parser().format_help()
    assert "ping" in listed and "send" in listed
    for hidden in ("pid", "echo", "shutdown"):
        assert f"    {hidden} " not in listed
    assert build_parser("pid").parse_args(["pid"]).command == "pid"


def test_python_dash_m_rtun_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "rtun", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == f"rtun {__version__}"
