"""The `rtun` command: parses arguments, calls one function, turns errors into one line and an exit code.

Only the stdlib is imported here; each command imports what it needs when it runs, so the
remote-side commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Callable, NoReturn, Optional, Sequence

from rtun import __version__
from rtun.errors import RtunError

Handler = "Callable[[argparse.Namespace], int]"


class _Parser(argparse.ArgumentParser):
    """argparse, except that a usage error is one line, like every other failure."""

    def error(self, message: str) -> "NoReturn":
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _lazy(target: str) -> Handler:
    """A handler named "module:function", imported only when its command runs."""

    def run(args: argparse.Namespace) -> int:
        module_name, _, function_name = target.partition(":")
        return getattr(importlib.import_module(module_name), function_name)(args)

    return run


def _socket_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-s", "--socket", metavar="PATH",
        help="daemon socket (default: $RTUN_SOCK, else the newest live ~/.rtun/rtun.sock*)",
    )


def _server(p: argparse.ArgumentParser) -> None:
    p.add_argument("-s", "--socket", metavar="PATH", help="socket to listen on (default ~/.rtun/rtun.sock)")
    p.add_argument("-d", "--daemon", action="store_true", help="detach; print the PID once ready")
    p.add_argument("-l", "--log", metavar="FILE", help="log file (default ~/.rtun/rtun.log with -d)")
    p.add_argument("-D", "--dir", metavar="DIR", help="where received files go (default: downloads)")
    p.add_argument("-v", "--verbose", action="store_true", default=None, help="log more detail")
    p.add_argument("--config", metavar="FILE", help="config file (default ~/.config/rtun/config.toml)")


def _notify(p: argparse.ArgumentParser) -> None:
    _socket_option(p)
    p.add_argument("-t", "--title", help="title (default: this server's host name)")
    p.add_argument("message", nargs="+", help="message words; - reads standard input")


def _send(p: argparse.ArgumentParser) -> None:
    _socket_option(p)
    p.add_argument("-r", "--recursive", action="store_true", help="accepted for RTUN compatibility")
    p.add_argument("--to", metavar="DEST", help="relative path inside the save directory")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no saved paths")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or directories; - reads stdin")


def _view(p: argparse.ArgumentParser) -> None:
    _socket_option(p)
    p.add_argument("file")


def _echo(p: argparse.ArgumentParser) -> None:
    _socket_option(p)
    p.add_argument("text", nargs="*")


# name: (help, arguments, handler). No help keeps a command out of the list (RTUN's diagnostics).
REACH_BACK_COMMANDS = {
    "server": ("run the local daemon that remote commands reach", _server, "rtun.commands:server"),
    "ping": ("check that the daemon answers (prints OK PONG)", _socket_option, "rtun.commands:ping"),
    "notify": ("show a desktop notification on your computer", _notify, "rtun.commands:notify"),
    "send": ("save files or directories on your computer", _send, "rtun.commands:send"),
    "view": ("open a file with your computer's desktop opener", _view, "rtun.commands:view"),
    "open": ("the same as view", _view, "rtun.commands:view"),
    "pid": (None, _socket_option, "rtun.commands:pid"),
    "echo": (None, _echo, "rtun.commands:echo"),
    "shutdown": (None, _socket_option, "rtun.commands:shutdown"),
}


def _add_reach_back_commands(
    sub: "argparse._SubParsersAction[argparse.ArgumentParser]", only: "Optional[str]"
) -> None:
    for name, (help_text, add_arguments, target) in REACH_BACK_COMMANDS.items():
        if only in (None, name):
            p = sub.add_parser(name, help=help_text) if help_text else sub.add_parser(name)
            add_arguments(p)
            p.set_defaults(handler=_lazy(target))


def _add_tunnel_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Commands of the reverse tunnel agent (rtun.tunnel)."""

    class DefaultToRun(argparse._SubParsersAction):  # type: ignore[type-arg]
        """`rtun tunnel SERVER` is `rtun tunnel run SERVER`: a first word naming no sub-form
        selects `run` (write `rtun tunnel run install` for a server called "install")."""

        class AnyWord:
            """The sub-form names, for help; argparse's choice check lets any word through."""

            def __init__(self, names: "dict[str, argparse.ArgumentParser]") -> None:
                self.names = names

            def __contains__(self, word: object) -> bool:
                return True

            def __iter__(self):  # type: ignore[no-untyped-def]
                return iter(self.names)

        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            self.choices = self.AnyWord(self._name_parser_map)

        def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
            if values and values[0] not in self._name_parser_map:
                values = ["run"] + list(values)
            super().__call__(parser, namespace, values, option_string)

    def agent_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", help="name in the registry (default: this host name)")
        local = p.add_mutually_exclusive_group()
        local.add_argument("--local-port", type=int, metavar="PORT", help="this machine's sshd port (default 22)")
        local.add_argument("--local", metavar="HOST:PORT", help="forward to HOST:PORT instead of localhost:22")
        p.add_argument("--port", type=int, help="preferred server port (default: derived from the machine id)")
        p.add_argument("--registry", metavar="DIR", help="registry directory on the server (default ~/.rtun/hosts)")
        p.add_argument("--login-user", metavar="USER", help="user to log in as, advertised in the registry "
                       "(default: the user running the agent)")
        for flag, kind, text in (
            ("--probe-interval", float, "seconds between end-to-end probes through the tunnel (60)"),
            ("--probe-timeout", float, "seconds a probe may take (10)"),
            ("--heartbeat", float, "seconds between last_seen refreshes in the registry (60)"),
            ("--max-backoff", float, "longest wait between retries, in seconds (60)"),
            ("--stable-after", float, "seconds up after which the backoff resets (60)"),
            ("--alive-interval", int, "ssh ServerAliveInterval (3; with --alive-count 2: ~9 s to notice)"),
            ("--alive-count", int, "ssh ServerAliveCountMax (2)"),
            ("--connect-timeout", int, "ssh ConnectTimeout (10)"),
        ):
            p.add_argument(flag, type=kind, metavar="N", help=text)
        p.add_argument("--machine-id", help=argparse.SUPPRESS)  # tests: several machines on one host

    def service_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--system", action="store_true", help="a system service (root) instead of a user one")
        p.add_argument("--dry-run", action="store_true", help="print the service file; write nothing")
        p.add_argument("--run-as", metavar="USER", help="with --system: the user the agent runs as")
        p.add_argument("--init", choices=("systemd", "launchd"), help="service manager (default: this OS's)")
        p.add_argument("--no-start", action="store_true", help="write the file but do not enable or start it")

    p = sub.add_parser(
        "tunnel", help="keep a reverse SSH tunnel from SERVER to this machine's sshd",
        usage="rtun tunnel [options] SERVER\n"
              "       rtun tunnel install [--system] [--dry-run] [options] SERVER\n"
              "       rtun tunnel uninstall [--system] [--dry-run]",
        description="Run the reverse tunnel agent in the foreground (for systemd and launchd), "
        "or install it as a service started at boot. SERVER is any ssh destination.",
    )
    agent_options(p)
    service_options(p)
    p.set_defaults(handler=_lazy("rtun.tunnel.commands:tunnel"), tunnel_action="run")
    forms = p.add_subparsers(action=DefaultToRun, dest="tunnel_action", metavar="SERVER | install | uninstall")
    forms.required = True
    # The sub-forms leave unset options alone (SUPPRESS), so an option given before the
    # server (`rtun tunnel --name pi SERVER`) is kept.
    run = forms.add_parser("run", argument_default=argparse.SUPPRESS, prog="rtun tunnel",
                           usage="rtun tunnel [options] SERVER")
    run.add_argument("server", metavar="SERVER", help="ssh destination (ssh_config aliases work)")
    agent_options(run)
    install = forms.add_parser("install", argument_default=argparse.SUPPRESS, prog="rtun tunnel install",
                               help="start the agent at boot (systemd unit or launchd agent)")
    install.add_argument("server", metavar="SERVER", help="ssh destination (ssh_config aliases work)")
    agent_options(install)
    service_options(install)
    uninstall = forms.add_parser("uninstall", argument_default=argparse.SUPPRESS, prog="rtun tunnel uninstall",
                                 help="stop and remove the boot service")
    service_options(uninstall)

    p = sub.add_parser("hosts", help="list the machines registered on a tunnel server")
    p.add_argument("--via", metavar="SERVER", help="read the registry on SERVER over ssh (default: this host)")
    p.add_argument("--registry", metavar="DIR", help="registry directory (default ~/.rtun/hosts)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=3.0, metavar="S", help="live probe timeout (3)")
    p.set_defaults(handler=_lazy("rtun.tunnel.commands:hosts"))

    p = sub.add_parser("connect", help="ssh to a registered machine through its tunnel",
                       usage="rtun connect NAME [--via SERVER] [-l USER] [-- COMMAND...]")
    p.add_argument("name", metavar="NAME", help="machine name (see `rtun hosts`)")
    p.add_argument("--via", metavar="SERVER", help="jump through SERVER (default: you are on it)")
    p.add_argument("-l", "--login", metavar="USER", help="user on the machine (default: from the registry)")
    p.add_argument("--registry", metavar="DIR", help="registry directory (default ~/.rtun/hosts)")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command to run instead of a shell")
    p.set_defaults(handler=_lazy("rtun.tunnel.commands:connect"))

    p = sub.add_parser("ssh-config", help="print an ssh_config Host block per registered machine")
    p.add_argument("--via", metavar="SERVER", help="add ProxyJump SERVER (default: you are on it)")
    p.add_argument("--registry", metavar="DIR", help="registry directory (default ~/.rtun/hosts)")
    p.set_defaults(handler=_lazy("rtun.tunnel.commands:ssh_config"))


def build_parser(command: "Optional[str]" = None) -> argparse.ArgumentParser:
    """The parser for ``command`` alone when it is a reach-back command (they start faster
    that way: every subparser costs time), else for every command."""
    parser = _Parser(
        prog="rtun",
        description="Reach back to your computer from an SSH session, and keep machines "
        "behind NAT reachable through a reverse tunnel.",
    )
    parser.add_argument("--version", action="version", version=f"rtun {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    only = command if command in REACH_BACK_COMMANDS else None
    _add_reach_back_commands(sub, only)
    if only is None:
        _add_tunnel_commands(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except RtunError as exc:
        print(f"rtun {args.command}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"rtun {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: still one line, with the traceback on request
        if os.environ.get("RTUN_DEBUG"):
            raise
        print(f"rtun {args.command}: internal error: {type(exc).__name__}: {exc} "
              "(RTUN_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1

