"""`rtun completion [--install] [bash|zsh|fish]`: the shell's completion script, printed or
written where that shell loads completions for this user.

The script is argcomplete's: on Tab it runs `rtun` with $_ARGCOMPLETE set, and cli.main hands
over to argcomplete, which completes from every command's own parser. argcomplete is optional
(the `completion` extra, also in `desktop`): without it this command says how to get it, and
every other command works as before.
"""

from __future__ import annotations

import argparse
import os

from rtun import paths
from rtun.command import Command
from rtun.errors import RtunError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Tuple

SHELLS = ("bash", "zsh", "fish")
# Where bash-completion's own loader lives, if it is installed (Debian, Fedora, Arch, Homebrew).
BASH_COMPLETION_LOADERS = (
    "/usr/share/bash-completion/bash_completion",
    "/etc/bash_completion",
    "/usr/local/share/bash-completion/bash_completion",
    "/opt/homebrew/etc/profile.d/bash_completion.sh",
    "/usr/local/etc/profile.d/bash_completion.sh",
)


class CompletionUnavailableError(RtunError):
    """argcomplete, which completes rtun's command line, is not installed for this Python."""


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--install",
        action="store_true",
        help="write the script where the shell loads completions for you, and say "
        "what (if anything) to add to its rc file",
    )
    parser.add_argument(
        "shell",
        nargs="?",
        choices=SHELLS,
        metavar="SHELL",
        help="bash, zsh or fish (default: the one $SHELL names)",
    )


def shell_from_environment() -> str:
    name = os.path.basename(os.environ.get("SHELL", ""))
    if name in SHELLS:
        return name
    said = f"$SHELL is {name}" if name else "$SHELL is not set"
    raise UsageError(f"name the shell: rtun completion [--install] bash|zsh|fish ({said})")


def script(shell: str) -> str:
    """The completion script for ``shell``, as argcomplete writes it for `rtun`."""
    try:
        from argcomplete.shell_integration import shellcode
    except ImportError:
        import sys

        raise CompletionUnavailableError(
            f"shell completion needs argcomplete, which is not installed for {sys.executable}: "
            f"{sys.executable} -m pip install argcomplete (scripts/install adds it on your computer)"
        ) from None
    code = shellcode(["rtun"], shell=shell)
    # Before 3.2.3, argcomplete's zsh script could not be a function autoloaded from $fpath.
    if shell == "zsh" and "zsh_eval_context" not in code:
        raise CompletionUnavailableError(
            "zsh completion needs argcomplete 3.2.3 or newer: python3 -m pip install -U argcomplete"
        )
    return code


def _absolute(variable: str, default: str) -> str:
    """An XDG-style directory variable; relative values are ignored, as the spec says."""
    value = os.environ.get(variable, "")
    return value if os.path.isabs(value) else default


def target(shell: str) -> str:
    """Where ``shell`` loads this user's completion for rtun."""
    home = paths.home()
    if shell == "bash":  # bash-completion's own order of lookup, loaded on the first Tab
        user_dir = os.environ.get("BASH_COMPLETION_USER_DIR", "").split(":")[0]
        if not os.path.isabs(user_dir):
            data = _absolute("XDG_DATA_HOME", os.path.join(home, ".local", "share"))
            user_dir = os.path.join(data, "bash-completion")
        return os.path.join(user_dir, "completions", "rtun")
    if shell == "zsh":  # a directory of its own on $fpath, which ~/.zshrc must name
        return os.path.join(_absolute("ZDOTDIR", home), ".zfunc", "_rtun")
    return os.path.join(
        _absolute("XDG_CONFIG_HOME", os.path.join(home, ".config")), "fish", "completions", "rtun.fish"
    )


def _rc_mentions(rc: str, text: str) -> bool:
    try:
        with open(rc, encoding="utf-8", errors="replace") as f:
            return text in f.read(1 << 20)
    except OSError:
        return False


def rc_advice(shell: str, path: str) -> "Tuple[str, List[str]]":
    """What loads the script, and the lines (if any) the user must add to which rc file."""
    if shell == "fish":
        return "new fish shells load it; nothing to add", []
    if shell == "zsh":
        rc = os.path.join(_absolute("ZDOTDIR", paths.home()), ".zshrc")
        directory = paths.tilde(os.path.dirname(path))
        if _rc_mentions(rc, os.path.basename(os.path.dirname(path))):
            return f"{paths.tilde(rc)} already puts {directory} on $fpath: new zsh shells load it", []
        return (
            f"add these lines to {paths.tilde(rc)} once, before any compinit there "
            "(oh-my-zsh: before it is sourced):",
            [f"fpath=({directory} $fpath)", "autoload -Uz compinit && compinit"],
        )
    rc = os.path.join(paths.home(), ".bashrc")
    if any(os.path.exists(loader) for loader in BASH_COMPLETION_LOADERS):
        return (
            "new bash shells load it through bash-completion (if yours does not run "
            f"bash-completion, add `source {paths.tilde(path)}` to {paths.tilde(rc)})"
        ), []
    line = f"source {paths.tilde(path)}"
    if _rc_mentions(rc, paths.tilde(path)) or _rc_mentions(rc, path):
        return f"{paths.tilde(rc)} already sources it: new bash shells load it", []
    return f"no bash-completion here: add this line to {paths.tilde(rc)} once:", [line]


def install(shell: str, text: str) -> str:
    """Write ``text`` to the shell's place, atomically (a shell starting now reads all or none)."""
    import tempfile

    path = target(shell)
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".rtun-completion-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.chmod(temporary, 0o644)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as exc:
        raise RtunError(f"cannot write {paths.tilde(path)}: {exc.strerror or exc}") from None
    return path


def _run(args: argparse.Namespace) -> int:
    shell = args.shell or shell_from_environment()
    text = script(shell)
    if not args.install:
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    path = install(shell, text)
    said, lines = rc_advice(shell, path)
    print(f"rtun completion: wrote the {shell} completion for rtun to {paths.tilde(path)}")
    print(said)
    for line in lines:
        print(f"    {line}")
    return 0


completion = Command(
    _arguments,
    _run,
    usage="rtun completion [--install] [bash|zsh|fish]",
    description="Print the shell completion script for rtun, or with --install "
    "write it where the shell loads completions for you.",
    examples=["rtun completion --install   # for the shell $SHELL names"],
)
