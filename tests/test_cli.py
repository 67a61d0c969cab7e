"""The command line itself: parsing, the one-line error rule, exit codes, `python -m rtun`."""

from __future__ import annotations

import argparse
import socketserver
import subprocess
import sys
import threading
import time

import pytest

from rtun import __version__
from rtun.cli import COMMANDS, full_parser, load, main, parse
from rtun.command import Command
from rtun.protocol import peertext
from support.rtun import run_rtun
from support.v1peer import V1Peer


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["send"], "rtun send: the following arguments are required: PATH (see rtun send --help)"),
        (["bogus"], "rtun: unknown command 'bogus': see rtun --help for the commands"),
        (["sned", "x"], "rtun: unknown command 'sned': did you mean `rtun send`?"),
        (["tunel"], "rtun: unknown command 'tunel': did you mean `rtun tunnel`?"),
        (["\x1b[2Jx"], "rtun: unknown command '\\x1b[2Jx'"),
        (["ping", "--nope"], "rtun ping: unrecognized arguments: --nope"),
        (["--nope"], "rtun: the following arguments are required: COMMAND"),
    ],
)
def test_usage_errors_return_2_with_one_line(capsys, argv, expected) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(expected), err


def test_rtun_alone_lists_the_commands(capsys) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in ("send", "notify", "ssh", "tunnel", "doctor"):
        assert f"    {name} " in out
    assert "rtun COMMAND --help" in out


def test_each_commands_help_has_examples_and_points_to_the_docs(capsys) -> None:
    for name in ("send", "notify", "done", "edit", "open", "copy", "ping", "server"):
        assert main([name, "--help"]) == 0
        out = capsys.readouterr().out
        assert "examples:\n  rtun " in out or "examples:\n  " in out, name
        assert "more: README.md and docs/" in out, name


def test_help_and_version_return_0(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no daemon to be found
    monkeypatch.delenv("RTUN_SOCK", raising=False)
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"rtun {__version__}\n"
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


# ---- rtun --version ----------------------------------------------------------------------------


def test_version_names_the_daemon_that_answers_through_the_forward(forward, remote_home) -> None:
    result = run_rtun(["--version"], remote_home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [f"rtun {__version__}", f"daemon {__version__}"]


def test_version_without_a_daemon_prints_the_client_alone_at_once(remote_home, short_tmp) -> None:
    stale = short_tmp / "stale.sock"
    import socket

    left = socket.socket(socket.AF_UNIX)
    left.bind(str(stale))  # a socket nothing listens on, as sshd leaves behind
    left.close()
    began = time.monotonic()
    result = run_rtun(["--version"], remote_home, RTUN_SOCK=str(stale))
    assert (result.returncode, result.stdout, result.stderr) == (0, f"rtun {__version__}\n".encode(), b"")
    assert time.monotonic() - began < 5  # no probe timeout waited out


def test_version_of_a_v1_daemon_says_it_speaks_v1(remote_home, short_tmp) -> None:
    peer = V1Peer(short_tmp / "v1.sock", short_tmp / "saved").start()
    try:
        result = run_rtun(["--version"], remote_home, RTUN_SOCK=str(short_tmp / "v1.sock"))
    finally:
        peer.stop()
    assert result.stdout.decode().splitlines() == [f"rtun {__version__}", "daemon 1 (v1 protocol)"]


# ---- the whole tree, for completion ------------------------------------------------------------


def _choices(parser: argparse.ArgumentParser) -> dict:
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_the_full_parser_has_every_listed_command_with_its_own_options() -> None:
    commands = _choices(full_parser())
    listed = [name for name, (help_text, _) in COMMANDS.items() if help_text and " " not in name]
    assert list(commands) == listed  # the diagnostics (pid, echo, shutdown) stay hidden
    options = {name: {o for a in p._actions for o in a.option_strings} for name, p in commands.items()}
    assert {"--overwrite", "--to", "--json", "-s"} <= options["send"]
    assert {"--min-seconds", "--status", "--since"} <= options["done"]
    tunnel = commands["tunnel"]
    assert list(_choices(tunnel)) == ["run", "install", "uninstall", "authorize"]
    assert "--print-script" in {o for a in _choices(tunnel)["authorize"]._actions for o in a.option_strings}
    assert "--name" in options["tunnel"]  # the agent's own options, beside its forms


def test_a_normal_run_never_builds_the_full_parser(monkeypatch, capsys) -> None:
    import rtun.cli

    monkeypatch.setattr(rtun.cli, "full_parser", lambda: pytest.fail("built the full parser"))
    assert main(["send", "--help"]) == 0
    assert "--json" in capsys.readouterr().out


class _HostileDaemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers PING and HELLO, with a terminal escape in its version word."""

    daemon_threads = True

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                if line == b"PING\r\n":
                    self.wfile.write(b"OK PONG\r\n")
                elif line.startswith(b"SEND RTUN/2 "):
                    self.wfile.write(b"OK RTUN/2 notify2 version=1.0\x1b]0;owned\x07\r\n")
                else:
                    return


def test_the_daemons_version_is_shown_never_obeyed(remote_home, short_tmp) -> None:
    server = _HostileDaemon(str(short_tmp / "hostile.sock"), _HostileDaemon.Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_rtun(["--version"], remote_home, RTUN_SOCK=str(short_tmp / "hostile.sock"))
    finally:
        server.shutdown()
        server.server_close()
    assert result.stdout.decode().splitlines() == [f"rtun {__version__}", "daemon 1.0\\x1b]0;owned\\x07"]


def test_printable_escapes_what_a_terminal_would_act_on() -> None:
    assert peertext.escaped("plain caf\u00e9 \u4e2d") == "plain caf\u00e9 \u4e2d"
    assert peertext.escaped("a\x1b[2Jb\x07\u202ec\x85\n") == "a\\x1b[2Jb\\x07\\u202ec\\x85\\n"


def test_help_is_wrapped_to_the_terminal_without_importing_shutil() -> None:
    import os
    import subprocess
    import sys

    probe = (
        "import sys; from rtun.cli import main; code = main(['send', '--help']); "
        "sys.stderr.write('shutil' in sys.modules and 'SHUTIL' or '')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, "COLUMNS": "50"}
    )
    assert done.returncode == 0
    options = done.stdout.partition("options:")[2].partition("\n\n")[0].splitlines()
    assert len(options) > 10 and max(len(line) for line in options) <= 50  # examples keep their lines
    assert "SHUTIL" not in done.stderr  # 3 ms of every command's start (bz2, lzma)


# ---- start-up ----------------------------------------------------------------------------------

# Run in a fresh interpreter: the modules it has beyond those it started with, as JSON.
_NEW_MODULES = """
import json, sys
before = set(sys.modules)
{body}
sys.stdout.flush()
sys.stderr.write(json.dumps(sorted(set(sys.modules) - before)))
"""


def _new_modules(body: str, home) -> list:
    from support.rtun import clean_env

    probe = _NEW_MODULES.format(body=body)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=clean_env(home))
    assert done.returncode == 0, done.stderr
    import json

    return [m for m in json.loads(done.stderr) if m != "json"], done.stdout


def test_rtun_ping_imports_only_rtun_beyond_what_the_start_up_baseline_imports(forward, remote_home) -> None:
    # docs/benchmarks.md: `rtun ping` is measured against `python3 -c 'import socket, json, argparse'`.
    baseline, _ = _new_modules("import socket, json, argparse", remote_home)
    ping, out = _new_modules("from rtun.cli import main\nassert main(['ping']) == 0", remote_home)
    assert out == "OK PONG\n"
    extra = sorted(set(ping) - set(baseline))
    assert all(m == "__future__" or m == "rtun" or m.startswith("rtun.") for m in extra), extra
    # gettext's catalogue search (locale), importlib, and the client modules ping does not use
    for unwanted in ("locale", "importlib", "rtun.client.requests", "rtun.client.handshake", "typing"):
        assert unwanted not in ping, unwanted


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_commands_help_is_argparses_usual_text(capsys, name) -> None:
    assert main([*name.split(), "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rtun ") and "\noptions:\n  -h, --help  " in out, out
    assert "show this help message and exit" in out


def test_argparse_asks_gettext_again_once_a_command_is_parsed(capsys) -> None:
    import gettext

    assert main(["ping", "--nope"]) == 2
    assert main(["send", "--help"]) == 0
    assert vars(argparse)["_"] is gettext.gettext  # other parsers in this process translate
