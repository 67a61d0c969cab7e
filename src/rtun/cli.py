"""The `rtun` command: picks the command, builds its parser, runs it, turns errors into one line.

Only the stdlib is imported here. Each command is a :class:`rtun.command.Command` in its own
module, imported only when it runs, so the remote-side commands start fast.
"""

from __future__ import annotations

import argparse
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Any, NoReturn, Optional, Sequence, Tuple

    from rtun.command import Command

from rtun import __version__
from rtun.errors import RtunError, UsageError

# name: (help, "module:object"). No help keeps a command out of `rtun --help` (RTUN's
# diagnostics). A two-word name is a form of its first word (`rtun tunnel install`).
COMMANDS = {
    "server": ("run the local daemon that remote commands reach", "rtun.commands.server:server"),
    "server status": (None, "rtun.commands.server:status_command"),
    "server stop": (None, "rtun.commands.server:stop"),
    "server restart": (None, "rtun.commands.server:restart"),
    "server reload": (None, "rtun.commands.server:reload"),
    "server install": (None, "rtun.commands.server:install"),
    "server uninstall": (None, "rtun.commands.server:uninstall"),
    "ping": ("check that the daemon answers (prints OK PONG)", "rtun.commands.basic:ping"),
    "notify": ("show a desktop notification on your computer", "rtun.commands.notify:notify"),
    "send": ("save files or directories on your computer", "rtun.commands.send:send"),
    "view": ("open a file with your computer's desktop opener", "rtun.commands.view:view"),
    "open": (
        "open a URL in your computer's browser, or a file as view does",
        "rtun.commands.open:open_target",
    ),
    "copy": ("put standard input on your computer's clipboard", "rtun.commands.clipboard:copy"),
    "paste": ("print your computer's clipboard (off unless allowed there)", "rtun.commands.clipboard:paste"),
    "edit": ("edit a server file in your computer's editor; saves come back here", "rtun.commands.edit:edit"),
    "forward": (
        "reach a port of this server from your computer (Jupyter, a dev server)",
        "rtun.commands.forward:forward_command",
    ),
    "done": ("run a command, then notify your computer when it ends", "rtun.commands.done:done"),
    "config": (
        "print the daemon's config file path and the settings in effect",
        "rtun.commands.config:config",
    ),
    "completion": (
        "print or install shell completion for bash, zsh or fish",
        "rtun.commands.completion:completion",
    ),
    "pid": (None, "rtun.commands.basic:pid"),
    "echo": (None, "rtun.commands.basic:echo"),
    "shutdown": (None, "rtun.commands.basic:shutdown"),
    "tunnel": (
        "keep a reverse SSH tunnel from each RELAY to this machine's sshd",
        "rtun.tunnel.commands:tunnel",
    ),
    "tunnel run": (None, "rtun.tunnel.commands:tunnel"),
    "tunnel install": (None, "rtun.tunnel.commands:install"),
    "tunnel uninstall": (None, "rtun.tunnel.commands:uninstall"),
    "tunnel authorize": (None, "rtun.tunnel.commands:authorize"),
    "hosts": ("list the machines registered on a tunnel server", "rtun.tunnel.readers:hosts"),
    "connect": ("ssh to a registered machine through its tunnel", "rtun.tunnel.readers:connect"),
    "ssh-config": (
        "print an ssh_config Host block per registered machine",
        "rtun.tunnel.readers:ssh_config",
    ),
    "ssh": (
        "log in to a server with the forward to this computer (RTUN_SOCK set there)",
        "rtun.session.ssh:ssh",
    ),
    "install": ("copy the single-file rtun client to a server without pip", "rtun.session.install:install"),
    "doctor": ("check what rtun needs here (and on HOST), one line per check", "rtun.session.doctor:doctor"),
}


class _Exit(Exception):
    """argparse wants to end the program (after --help or --version); main returns instead."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size gives it, without importing shutil
    (which brings bz2 and lzma: 3 ms of every command's start, for help text it rarely shows)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    stdout = sys.__stdout__
    try:
        return (os.get_terminal_size(stdout.fileno()).columns if stdout is not None else 0) or 80
    except (ValueError, OSError):
        return 80


class _Formatter(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)  # argparse's own margin


class _RawFormatter(_Formatter, argparse.RawDescriptionHelpFormatter):
    """A command's help: its examples keep their lines."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting: a usage error is one line and exit code 2."""

    def __init__(self, **kwargs: "Any") -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(**kwargs)

    def error(self, message: str) -> "NoReturn":
        raise UsageError(f"{message} (see {self.prog} --help)")

    def exit(self, status: int = 0, message: "Optional[str]" = None) -> "NoReturn":
        if message:
            sys.stderr.write(message)
        raise _Exit(status)


class _Version(argparse.Action):
    """``--version``: this client's version at once, then the daemon's where one answers."""

    def __init__(
        self,
        option_strings: "Sequence[str]",
        dest: str = argparse.SUPPRESS,
        default: str = argparse.SUPPRESS,
        help: "Optional[str]" = None,
    ) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: "Optional[str]" = None,
    ) -> None:
        print(f"rtun {__version__}", flush=True)  # first, whatever the daemon takes to answer
        daemon = _daemon_version()
        if daemon is not None:
            from rtun.protocol import peertext

            print(f"daemon {peertext.escaped(daemon)}")
        raise _Exit(0)


def _daemon_version() -> "Optional[str]":
    from rtun.client import requests

    try:
        return requests.daemon_version(None)
    except RtunError:  # no daemon here, or it went away: the client's version is the answer
        return None


def _top_parser(listed: bool = True) -> _Parser:
    """`rtun` itself: --version, --help and (``listed``) the list of commands."""
    parser = _Parser(
        prog="rtun",
        description="Reach back to your computer from an SSH session, and keep machines "
        "behind NAT reachable through a reverse tunnel.",
        epilog=f"`rtun COMMAND --help` shows a command's options and examples; more: {DOCS}",
    )
    parser.add_argument(
        "--version", action=_Version, help="print this rtun's version, and the daemon's if one answers"
    )
    if listed:
        sub = parser.add_subparsers(dest="command", metavar="COMMAND")
        sub.required = True
        for name, (help_text, _) in COMMANDS.items():
            if help_text is not None:
                sub.add_parser(name, help=help_text)
    return parser


def full_parser() -> _Parser:
    """Every listed command's own parser under one: what shell completion walks. Only completion
    builds it; running a command builds that command's parser alone."""
    top = _top_parser(listed=False)
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        if help_text is None or " " in name:
            continue
        parser = sub.add_parser(name, help=help_text)
        forms = [other for other in COMMANDS if other.startswith(name + " ")]
        if not forms:
            _declare(name, parser)
            continue
        # `rtun tunnel` takes options and a SERVER, or a form's name (`rtun tunnel install`):
        # argparse cannot have both positionals, so completion offers its options and forms.
        own = _Parser(add_help=False)
        _declare(name, own)
        for action in own._actions:
            if action.option_strings:
                parser._add_action(action)
        inner = parser.add_subparsers(dest="form", metavar="FORM")
        for form in forms:
            _declare(form, inner.add_parser(form.split(" ", 1)[1]))
    return top


def _declare(name: str, parser: argparse.ArgumentParser) -> None:
    try:
        load(name).arguments(parser)
    except ImportError:  # a module that needs what is not installed here: its name completes
        pass


def _complete() -> int:
    """Shell completion, in argcomplete's protocol: the shell's script runs rtun with
    $_ARGCOMPLETE and $COMP_LINE set and reads the candidates from file descriptor 8."""
    try:
        import argcomplete
    except ImportError:
        return 1  # nothing to offer; `rtun completion` says how to get it
    # Options only after a "-": `rtun <Tab>` lists the commands, `rtun send -<Tab>` the options.
    argcomplete.autocomplete(full_parser(), always_complete_options=False)  # exits once answered
    return 1


def _command_name(argv: "Sequence[str]") -> "Optional[str]":
    if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
        return f"{argv[0]} {argv[1]}"
    if argv and argv[0] in COMMANDS:
        return argv[0]
    return None


def load(name: str) -> "Command":
    module_name, _, attribute = COMMANDS[name][1].partition(":")
    __import__(module_name)  # importlib.import_module's work, without importing importlib
    command: Command = getattr(sys.modules[module_name], attribute)
    return command


def _untranslated(message: str) -> str:
    return message


def parse(argv: "Sequence[str]") -> "Tuple[Command, argparse.Namespace]":
    """The command named by ``argv`` and its parsed arguments; raises UsageError.

    argparse's own words (``usage:``, ``options:``, its errors) are taken as written while it
    runs: it asks gettext for each (three times for every parser made), and gettext imports
    locale and looks for a catalogue on disk for each language on every call, a millisecond
    of every command's start. Python ships no catalogue for argparse; rtun's text is English."""
    names = vars(argparse)  # the module's globals, where its functions find `_`
    translate = names.get("_")
    if translate is None:  # an argparse that does not call gettext this way
        return _parse(argv)
    names["_"] = _untranslated
    try:
        return _parse(argv)
    finally:
        names["_"] = translate


def _parse(argv: "Sequence[str]") -> "Tuple[Command, argparse.Namespace]":
    argv = list(argv)
    name = _command_name(argv)
    if name is None:
        if not argv:  # `rtun` alone: what there is to run
            _top_parser().print_help()
            raise _Exit(0)
        if not argv[0].startswith("-"):
            raise UsageError(_unknown(argv[0]))
        _top_parser().parse_args(argv)  # --help, --version, or a usage error
        raise UsageError("name a command (see rtun --help)")
    command = load(name)
    parser = _Parser(
        prog=f"rtun {name}",
        usage=command.usage,
        description=command.description,
        epilog=_epilog(name, command),
        formatter_class=_RawFormatter,
    )
    command.arguments(parser)
    args = parser.parse_args(argv[len(name.split()) :])
    args.command = name
    return command, args


def _unknown(word: str) -> str:
    """An unknown command, with the nearest listed one when it is close (a typo)."""
    import difflib

    listed = [name for name, (help_text, _) in COMMANDS.items() if help_text is not None]
    near = difflib.get_close_matches(word, listed, n=1, cutoff=0.6)
    advice = f"did you mean `rtun {near[0]}`?" if near else "see rtun --help for the commands"
    return f"unknown command '{word}': {advice}"  # escaped where main() prints it


DOCS = "README.md and docs/ in rtun's source; `man rtun` where the page is installed"


def _epilog(name: str, command: "Command") -> str:
    """Below the options: the command's examples, and where the rest is written."""
    examples = "".join(f"  {line}\n" for line in command.examples)
    return (f"examples:\n{examples}\n" if examples else "") + f"more: {DOCS}"


def main(argv: "Optional[Sequence[str]]" = None) -> int:
    if "_ARGCOMPLETE" in os.environ:  # the shell asks what to complete; costs nothing otherwise
        return _complete()
    argv = sys.argv[1:] if argv is None else list(argv)
    name = _command_name(argv) or "rtun"
    prefix = "rtun" if name == "rtun" else f"rtun {name}"
    try:
        command, args = parse(argv)
        return command.run(args)
    except _Exit as done:
        return done.status
    except RtunError as exc:
        from rtun.protocol import peertext  # a daemon's text is shown, never obeyed by the terminal

        print(f"{prefix}: {peertext.escaped(exc.message, peertext.PATH_LIMIT)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: still one line, with the traceback on request
        if os.environ.get("RTUN_DEBUG"):
            raise
        print(
            f"{prefix}: internal error: {type(exc).__name__}: {exc} (RTUN_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1
