"""`rtun ssh`'s command line: ssh's own options (where each one goes), the host, the command.
Pure: no processes (the ssh command lines are rtun.ssh.argv's).

rtun runs one control master per login and the user's session as a client of it, so each ssh
option goes where it acts: connection options to the master, session options (-t, -T, -e) to
the session, forwards (-L, -R, -D, -w) to the master only, so that no forward is asked twice.
"""

from __future__ import annotations

import argparse

from rtun.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional, Sequence, Tuple

# OpenSSH 9's getopt string: 1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:PQ:R:S:TVw:W:XYy
WITH_ARGUMENT = "bceilmopBDEFIJLOQRSwW"
FLAGS = "1246afgknqstvxACGKMNPTVXYy"
# What rtun ssh cannot combine with its own master and session: plain ssh does these.
REFUSED = {
    "f": "going to the background (-f)",
    "G": "printing the configuration (-G)",
    "M": "-M (rtun ssh runs its own control master)",
    "O": "control commands (-O)",
    "Q": "queries (-Q)",
    "S": "-S (rtun ssh runs its own control master)",
    "V": "-V",
    "W": "stdio forwarding (-W)",
    "s": "subsystems (-s)",
}
SESSION_ONLY = "tTen"  # the master's stdin is rtun's pipe and it never has a terminal
FORWARDS = "LRDw"
FORWARD_CONFIG = ("localforward", "remoteforward", "dynamicforward", "tunnel")  # as -o NAME=...
MASTER_ONLY = FORWARDS + "NJ"  # -J: a session never connects on its own (ProxyCommand=false)

# A session over the master: the user's ssh_config may not run its RemoteCommand or ask its
# forwards a second time.
SESSION_MUX = ["-o", "RemoteCommand=none", "-o", "ClearAllForwardings=yes"]

# rtun ssh's own flags, kept on the invocation (ssh has no long options: every ``--name``
# before the command is the rtun command's own, wherever it stands).
RTUN_FLAGS = ("--install", "--print-config")


class SshOption(argparse.Action):
    """Keeps each ssh option, in order, as (letter, value or None) in ``namespace.ssh_options``."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: "Optional[str]" = None,
    ) -> None:
        letter = (option_string or "-?")[1:]
        found = list(getattr(namespace, "ssh_options", None) or [])
        found.append((letter, values if isinstance(values, str) else None))
        namespace.ssh_options = found


def declare(parser: argparse.ArgumentParser) -> None:
    """ssh's options, before HOST (those after it are taken from the rest by :func:`split`, with
    the command's own long options, which :func:`from_args` parses with this parser)."""
    parser.set_defaults(own_parser=parser)
    for letter in FLAGS:
        parser.add_argument(
            f"-{letter}", nargs=0, action=SshOption, dest="ssh_options", default=[], help=argparse.SUPPRESS
        )
    for letter in WITH_ARGUMENT:
        parser.add_argument(
            f"-{letter}", action=SshOption, dest="ssh_options", default=[], help=argparse.SUPPRESS
        )


class Invocation:
    """What the user asked for: ssh options (letter, value), the host, the command words."""

    def __init__(
        self,
        host: str,
        options: "List[Tuple[str, Optional[str]]]",
        command: "List[str]",
        own: "Sequence[str]" = (),
    ) -> None:
        self.host = host
        self.options = options
        self.command = command
        self.own = list(own)  # the rtun command's own options found after the host, as words
        self.rtun_flags: Tuple[str, ...] = ()

    def has(self, letter: str) -> bool:
        return any(opt == letter for opt, _ in self.options)

    @property
    def forward_only(self) -> bool:
        """-N: no session, only the forward (and the user's own forwards)."""
        return self.has("N")

    @property
    def shareable(self) -> bool:
        """Whether a login may share its master with others (rtun.session.shared): not with
        forwards of the user's own, which would outlive the login in a shared master."""
        for letter, value in self.options:
            if letter in FORWARDS:
                return False
            if letter == "o" and value is not None:
                words = value.replace("=", " ").split()
                if words and words[0].lower() in FORWARD_CONFIG:
                    return False
        return True

    def refused(self) -> "Optional[str]":
        for letter, _ in self.options:
            if letter in REFUSED:
                return f"rtun ssh does not do {REFUSED[letter]}: use plain ssh for that"
        return None

    def words(self, skip: str) -> "List[str]":
        """The options as argv words, less the letters in ``skip``."""
        out: List[str] = []
        for letter, value in self.options:
            if letter not in skip:
                out += [f"-{letter}"] if value is None else [f"-{letter}", value]
        return out


def split(
    host: str,
    rest: "Sequence[str]",
    before: "List[Tuple[str, Optional[str]]]",
    takes_value: "Callable[[str], Optional[bool]]" = lambda name: None,
) -> Invocation:
    """ssh (like OpenSSH's own parser) takes options after the host too, up to the first word of
    the command or ``--``; take those out of ``rest``, and with them the command's own long
    options (``takes_value(name)``: True or False for one of them, None for no such option).
    Raises ValueError on a bad option."""
    options = list(before)
    own: List[str] = []
    words = list(rest)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--":
            i += 1
            break
        if word.startswith("--"):
            name = word.split("=", 1)[0]
            value = takes_value(name)
            if value is None:
                raise ValueError(f"unknown option {name}")
            own.append(word)
            if value and "=" not in word:
                i += 1
                if i >= len(words):
                    raise ValueError(f"option {name} needs an argument")
                own.append(words[i])
            i += 1
            continue
        if not word.startswith("-") or word == "-":
            break
        j = 1
        while j < len(word):
            letter = word[j]
            if letter in WITH_ARGUMENT:
                value_word = word[j + 1 :]
                if not value_word:
                    i += 1
                    if i >= len(words):
                        raise ValueError(f"option -{letter} needs an argument")
                    value_word = words[i]
                options.append((letter, value_word))
                break
            if letter not in FLAGS:
                raise ValueError(f"unknown ssh option -{letter}")
            options.append((letter, None))
            j += 1
        i += 1
    return Invocation(host, options, words[i:], own)


def _arity(parser: "Optional[argparse.ArgumentParser]") -> "Callable[[str], Optional[bool]]":
    """Whether each of the parser's long options takes a value (None: no such option). Only exact
    names: after the host, an abbreviation would be a guess."""

    def takes_value(name: str) -> "Optional[bool]":
        # argparse keeps its table private; typeshed declares it and it has not moved since 2.7.
        action = parser._option_string_actions.get(name) if parser is not None else None
        if action is None or not name.startswith("--"):
            return None
        return action.nargs != 0

    return takes_value


def from_args(args: argparse.Namespace) -> Invocation:
    """The invocation from a parser set up by :func:`declare` plus ``host`` and ``remote_command``
    (its REMAINDER); the command's own options found after the host are parsed into ``args`` as
    if given before it. Raises UsageError for a bad or a refused option."""
    parser: Optional[argparse.ArgumentParser] = getattr(args, "own_parser", None)
    try:
        inv = split(args.host, args.remote_command, list(args.ssh_options or []), _arity(parser))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    refused = inv.refused()
    if refused:
        raise UsageError(refused)
    if inv.own and parser is not None:
        _apply_own(parser, args, inv.own)
    inv.rtun_flags = tuple(flag for flag in RTUN_FLAGS if getattr(args, flag[2:].replace("-", "_"), False))
    return inv


def _apply_own(parser: argparse.ArgumentParser, args: argparse.Namespace, own: "List[str]") -> None:
    """Parse the own options (with the host, which the parser requires) and keep each one they
    set: the same checks and conversions as before the host."""
    again = parser.parse_args([*own, "--", args.host])
    for name, value in vars(again).items():
        if name not in ("host", "remote_command", "ssh_options") and value != parser.get_default(name):
            setattr(args, name, value)


def master_options(inv: Invocation) -> "List[str]":
    """The user's options for the connection (rtun.ssh.argv.master_argv): all but a session's."""
    return inv.words(SESSION_ONLY + "N")


def session_options(inv: "Optional[Invocation]", extra: "Sequence[str]" = ()) -> "List[str]":
    """Options of a session over the master (rtun.ssh.argv.mux_argv). With ``inv``, the user's
    options apply (the ssh_config too); without, ``-F /dev/null``: a bare request that reads no
    configuration."""
    own = inv.words(MASTER_ONLY) if inv is not None else ["-F", "/dev/null", "-T"]
    return SESSION_MUX + own + list(extra)
