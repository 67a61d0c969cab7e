"""Shell completion for real: argcomplete's protocol spoken to rtun directly; the printed bash
script sourced in a real bash and driven as readline drives it; the installed scripts loaded by
bash (through bash-completion), zsh and fish as they load them, Tab pressed in a terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from rtun.cli import COMMANDS
from rtun.commands import completion
from support.rtun import RTUN, clean_env
from support.wait import wait_until

RTUN_SCRIPT = Path(sys.executable).with_name("rtun")  # the console script pip installed
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"


def _env(home: Path, **extra: str) -> Dict[str, str]:
    """A user whose `rtun` on PATH is this checkout's."""
    assert RTUN_SCRIPT.exists(), "the package is not installed in this venv (pip install -e .)"
    return clean_env(
        home, PATH=f"{RTUN_SCRIPT.parent}{os.pathsep}{os.environ['PATH']}", SHELL="/bin/sh", **extra
    )


def _needs(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        pytest.skip(f"{tool} is not installed (apt-get install {tool})")
    return found


# ---- argcomplete's protocol, spoken directly ----------------------------------------------------


def _candidates(line: str, home: Path, tmp: Path) -> List[str]:
    """What rtun offers for ``line`` with the cursor at its end: $COMP_LINE and $COMP_POINT in,
    candidates out on file descriptor 8, separated by $IFS (vertical tab by default)."""
    out = tmp / "candidates"
    env = _env(
        home,
        _ARGCOMPLETE="1",
        _ARGCOMPLETE_SHELL="bash",
        COMP_LINE=line,
        COMP_POINT=str(len(line)),
        COMP_TYPE="9",
        OUT=str(out),
    )
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" 8>"$OUT" 9>/dev/null'] + ["sh"] + RTUN,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == b"", done
    text = out.read_text()
    return [c.rstrip() for c in text.split("\x0b")] if text else []


def test_a_command_name_completes_from_its_first_letters(short_tmp: Path) -> None:
    assert sorted(_candidates("rtun se", short_tmp, short_tmp)) == ["send", "server"]
    assert sorted(_candidates("rtun do", short_tmp, short_tmp)) == ["doctor", "done"]


def test_every_listed_command_is_offered_and_the_diagnostics_are_not(short_tmp: Path) -> None:
    listed = [name for name, (help_text, _) in COMMANDS.items() if help_text and " " not in name]
    assert _candidates("rtun ", short_tmp, short_tmp) == listed
    assert "pid" not in _candidates("rtun p", short_tmp, short_tmp)


def test_options_of_each_command_complete_from_its_own_parser(short_tmp: Path) -> None:
    assert _candidates("rtun send --ov", short_tmp, short_tmp) == ["--overwrite"]
    assert _candidates("rtun done --min", short_tmp, short_tmp) == ["--min-seconds"]
    assert _candidates("rtun hosts --j", short_tmp, short_tmp) == ["--json"]
    assert _candidates("rtun completion ", short_tmp, short_tmp) == ["bash", "zsh", "fish"]
    assert _candidates("rtun tunnel ", short_tmp, short_tmp) == ["run", "install", "uninstall", "authorize"]
    assert _candidates("rtun tunnel authorize --print", short_tmp, short_tmp) == ["--print-script"]


def test_a_path_argument_completes_file_names(short_tmp: Path) -> None:
    (short_tmp / "report-2024.pdf").write_text("x")
    (short_tmp / "reports").mkdir()
    line = f"rtun send {short_tmp}/rep"
    assert sorted(_candidates(line, short_tmp, short_tmp)) == [
        f"{short_tmp}/report-2024.pdf",
        f"{short_tmp}/reports/",
    ]


# ---- the bash script, sourced in a real bash ----------------------------------------------------

# Sets COMP_WORDS, COMP_CWORD, COMP_LINE and COMP_POINT as readline does for a Tab at the end of
# the line, calls the function the script registered for rtun, prints each of COMPREPLY.
_DRIVE = r"""
drive() {
    COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_TYPE=9
    read -ra COMP_WORDS <<< "$COMP_LINE"
    [[ "$COMP_LINE" == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
    COMPREPLY=()
    local spec; spec=$(complete -p rtun) || return 1
    local function=${spec#*-F }; function=${function%% *}
    "$function" rtun "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
    printf '%s|\n' "${COMPREPLY[@]}"
    echo "--"
}
"""


def _bash(setup: str, lines: List[str], env: Dict[str, str]) -> List[List[str]]:
    program = setup + _DRIVE + "".join(f"drive {_quote(line)}\n" for line in lines)
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        env=env,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    groups = done.stdout.decode().split("--\n")[:-1]
    return [[c.rstrip("|") for c in group.splitlines()] for group in groups]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def test_the_printed_bash_script_completes_commands_and_options_in_bash(short_tmp: Path) -> None:
    env = _env(short_tmp)
    script = subprocess.run(RTUN + ["completion", "bash"], env=env, capture_output=True, timeout=60)
    assert script.returncode == 0, script.stderr
    (short_tmp / "rtun.bash").write_bytes(script.stdout)

    found = _bash(f"source {short_tmp}/rtun.bash\n", ["rtun se", "rtun send --ov", "rtun done --st"], env)

    assert "send" in found[0] and "server" in found[0]
    assert found[1] == ["--overwrite "]  # the whole option, and a space after it
    assert found[2] == ["--status "]


def test_the_installed_bash_script_is_where_bash_completion_loads_it(short_tmp: Path) -> None:
    if not os.path.exists(BASH_COMPLETION):
        pytest.skip("bash-completion is not installed (apt-get install bash-completion)")
    env = _env(short_tmp)
    installed = subprocess.run(
        RTUN + ["completion", "--install", "bash"], env=env, capture_output=True, timeout=60
    )
    assert installed.returncode == 0, installed.stderr
    target = short_tmp / ".local" / "share" / "bash-completion" / "completions" / "rtun"
    said = installed.stdout.decode()
    assert said.startswith(
        "rtun completion: wrote the bash completion for rtun to "
        "~/.local/share/bash-completion/completions/rtun\n"
    ), said
    assert "bash-completion" in said.splitlines()[1]

    # bash-completion's own loader, as it runs on the first Tab after `rtun `: nothing else
    # tells bash where the script is.
    found = _bash(f"source {BASH_COMPLETION}\n__load_completion rtun\n", ["rtun send --ov"], env)

    assert target.stat().st_mode & 0o777 == 0o644
    assert found == [["--overwrite "]]


def test_without_bash_completion_the_advice_is_the_line_to_source(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(completion, "BASH_COMPLETION_LOADERS", ())
    monkeypatch.setenv("HOME", str(tmp_path))
    path = str(tmp_path / ".local/share/bash-completion/completions/rtun")
    said, lines = completion.rc_advice("bash", path)
    assert said == "no bash-completion here: add this line to ~/.bashrc once:"
    assert lines == ["source ~/.local/share/bash-completion/completions/rtun"]
    (tmp_path / ".bashrc").write_text("source ~/.local/share/bash-completion/completions/rtun\n")
    assert completion.rc_advice("bash", path)[1] == []  # already there: nothing more to add


# ---- zsh and fish, as a person uses them -----------------------------------------------------------


class Terminal:
    """A shell in a tmux pane of its own server: keys in, the screen out."""

    def __init__(self, command: List[str], env: Dict[str, str], directory: Path) -> None:
        self.name = f"rtun-test-{uuid.uuid4().hex[:8]}"
        self.env = dict(env, TMUX_TMPDIR=str(directory))
        self._tmux("new-session", "-d", "-x", "150", "-y", "30", *command)

    def _tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-L", self.name, "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.decode()

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p")

    def type(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def wait_for(self, text: str) -> str:
        seen = [""]

        def shown() -> bool:
            seen[0] = self.screen()
            return text in seen[0]

        try:
            wait_until(shown, timeout=20, what=f"{text!r} on the screen")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{seen[0]}") from None
        return seen[0]

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-L", self.name, "kill-server"], env=self.env, capture_output=True, timeout=30
        )


@pytest.fixture
def terminals() -> Iterator[List[Terminal]]:
    opened: List[Terminal] = []
    yield opened
    for terminal in opened:
        terminal.close()


def test_zsh_completes_after_following_what_install_says(short_tmp: Path, terminals) -> None:
    zsh = _needs("zsh")
    _needs("tmux")
    env = _env(short_tmp)
    installed = subprocess.run(
        RTUN + ["completion", "--install", "zsh"], env=env, capture_output=True, timeout=60
    )
    assert installed.returncode == 0, installed.stderr
    said = installed.stdout.decode().splitlines()
    assert said[0] == "rtun completion: wrote the zsh completion for rtun to ~/.zfunc/_rtun"
    advice = [line.strip() for line in said[2:]]
    assert advice == ["fpath=(~/.zfunc $fpath)", "autoload -Uz compinit && compinit"]
    (short_tmp / ".zshrc").write_text("\n".join(advice) + "\nPS1='ready> '\n")

    terminal = Terminal([zsh, "-i"], env, short_tmp)
    terminals.append(terminal)
    terminal.wait_for("ready>")  # (the screen is read without trailing spaces)
    terminal.type("rtun send --ov", "Tab")
    terminal.wait_for("ready> rtun send --overwrite")
    terminal.type("C-u", "rtun se", "Tab")
    screen = terminal.wait_for("save files or directories")  # both, each with its help
    assert "server" in screen and "send" in screen

    again = subprocess.run(
        RTUN + ["completion", "--install", "zsh"], env=env, capture_output=True, timeout=60
    )
    assert "already puts ~/.zfunc on $fpath" in again.stdout.decode()  # read ~/.zshrc: nothing to add


def test_fish_loads_the_installed_script_on_its_own(short_tmp: Path) -> None:
    fish = _needs("fish")
    env = _env(short_tmp)
    installed = subprocess.run(
        RTUN + ["completion", "--install", "fish"], env=env, capture_output=True, timeout=60
    )
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.decode().splitlines() == [
        "rtun completion: wrote the fish completion for rtun to ~/.config/fish/completions/rtun.fish",
        "new fish shells load it; nothing to add",
    ]

    done = subprocess.run(
        [fish, "-c", "complete -C 'rtun se'; echo ==; complete -C 'rtun send --ov'"],
        env=env,
        capture_output=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )

    first, second = done.stdout.decode().split("==\n")
    assert [line.split("\t")[0] for line in first.splitlines()] == ["send", "server"]
    assert second.splitlines() == ["--overwrite\treplace existing files"]


# ---- without argcomplete ---------------------------------------------------------------------------

# Runs the CLI in a Python where importing argcomplete fails, as on a server without it.
_WITHOUT = (
    "import sys; sys.modules['argcomplete'] = None; from rtun.cli import main; "
    "code = main(sys.argv[1:]); "
    "print('imported:', ','.join(sorted(m for m in sys.modules if m.startswith('rtun.')))); "
    "sys.exit(code)"
)


def test_without_argcomplete_completion_says_how_to_get_it(short_tmp: Path) -> None:
    for args in (["completion", "bash"], ["completion", "--install", "zsh"]):
        done = subprocess.run(
            [sys.executable, "-c", _WITHOUT] + args, env=_env(short_tmp), capture_output=True, timeout=60
        )
        assert done.returncode == 1
        lines = done.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "rtun completion: shell completion needs argcomplete"
        ), lines
        assert "pip install argcomplete" in lines[0]
    assert not (short_tmp / ".zfunc").exists()  # nothing written


def test_without_argcomplete_a_tab_offers_nothing_and_costs_nothing(short_tmp: Path) -> None:
    env = _env(short_tmp, _ARGCOMPLETE="1", COMP_LINE="rtun se", COMP_POINT="7")
    done = subprocess.run([sys.executable, "-c", _WITHOUT], env=env, capture_output=True, timeout=60)
    assert done.returncode == 1 and done.stderr == b""
    assert done.stdout.decode() == "imported: rtun.cli,rtun.errors\n"  # no command's module loaded
