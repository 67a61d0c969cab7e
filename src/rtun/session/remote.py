"""What runs on the server, as text: the control session's script, the sweep of stale sockets,
and the line that makes a session know its socket. Pure: no processes.

The server's login shell parses every command ssh sends, and it may be bash, zsh, dash, fish or
csh. So the control session's command is one that all of them read the same way, and the real
script arrives on its standard input, for /bin/sh. A user's session is prefixed in the syntax of
their own shell, so that their command means exactly what it means with plain ssh.
"""

from __future__ import annotations

from rtun import paths
from rtun.protocol import peertext

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Tuple

MARKER = "RTUN-PRELUDE"
DONE = "RTUN-DONE"  # the control session's last word: the socket is removed
REMOTE_SUN_PATH = 104  # the smaller sun_path of the servers rtun runs on (macOS, the BSDs)
STALE_AFTER = 86400  # seconds: only sockets older than this that refuse connections are swept
_TAG_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
HOST_TAG_MAX = 20

# Parsed alike by sh, bash, zsh, ksh, fish, csh and tcsh: no backslash, no quote in the quotes.
CONTROL_COMMAND = """exec /bin/sh -c 'read -r l && eval "$l"'"""

# Line 1, run by /bin/sh: make ~/.rtun private and say where home is (no Python: fast, and
# servers without one work too). Line 2 is the sweep, line 3 the socket to remove when the
# session ends; the end is rtun closing the pipe, or the connection going away. Then, if other
# sockets are left, the sweep runs on, detached, after the user has their prompt back.
PRELUDE = (
    'PATH="$PATH:/usr/bin:/bin"; umask 077; e=; b=; c=; f=; d="$HOME/.rtun"; '
    # Another login may make it between the test and mkdir: it is the test after that counts.
    '[ -d "$d" ] || mkdir "$d" 2>/dev/null || [ -d "$d" ] || e=mkdir; '
    '[ -n "$e" ] || case $(ls -ldL "$d" 2>/dev/null) in drwx------*) ;; '
    '*) chmod 700 "$d" 2>/dev/null && f=1 || e=chmod;; esac; '
    "{ read -r h </proc/sys/kernel/hostname; } 2>/dev/null || h=$(uname -n 2>/dev/null); "
    'command -v rtun >/dev/null 2>&1 || [ -x "$HOME/.local/bin/rtun" ] && c=1; '
    '[ -x "$d/bin/rtun" ] && b=1; '
    "printf '"
    + MARKER
    + "\\t1\\thome=%s\\thost=%s\\tshell=%s\\tclient=%s\\tbin=%s\\tfixed=%s\\terror=%s\\n' "
    '"$HOME" "$h" "$SHELL" "$c" "$b" "$f" "$e"; '
    'read -r p; read -r s; read -r x; case "$s" in /*) rm -f "$s";; esac; echo ' + DONE + "; "
    'set -- "$d"/rtun.sock.*.*.*; [ -e "$1" ] && '
    '{ command -v python3 && python3 -I -S -c "$p"; } </dev/null >/dev/null 2>&1 &'
)

# Line 2: the sweep, for any Python 3. It removes only sockets of this host's naming
# (rtun.sock.LAPTOP.TAG.NONCE with this host's TAG, so never another NFS node's), older than a
# day, that refuse connections: nobody listens on them any more.
_SWEEP = """
import os, socket, stat, time
def tag(host):
    t = "".join(c if c in %(chars)r else "-" for c in host.split(".")[0])[:%(max)d].strip("-")
    return t or "host"
d = os.path.join(os.environ["HOME"], ".rtun")
mine = tag(socket.gethostname())
now = time.time()
for name in os.listdir(d):
    parts = name.split(".")
    if len(parts) != 5 or parts[:2] != ["rtun", "sock"] or parts[3] != mine:
        continue
    path = os.path.join(d, name)
    try:
        st = os.lstat(path)
    except OSError:
        continue
    if not stat.S_ISSOCK(st.st_mode) or now - st.st_mtime < %(age)d:
        continue
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(path)
    except ConnectionRefusedError:
        try:
            os.unlink(path)
        except OSError:
            pass
    except OSError:
        pass
    finally:
        s.close()
"""


def sweep_line() -> str:
    source = _SWEEP % {"chars": "".join(sorted(_TAG_CHARS)), "max": HOST_TAG_MAX, "age": STALE_AFTER}
    return f"exec(compile({source!r}, 'rtun-sweep', 'exec'))"


def control_input() -> bytes:
    """The control session's first two lines (it reads them as soon as it starts)."""
    return (PRELUDE + "\n" + sweep_line() + "\n").encode()


def host_tag(host: str) -> str:
    """The host part of a socket name, as the sweep computes it: short name, safe characters."""
    short = host.split(".")[0]
    tag = "".join(c if c in _TAG_CHARS else "-" for c in short)[:HOST_TAG_MAX].strip("-")
    return tag or "host"


def session_socket(home: str, laptop: str, host: str, nonce: str) -> str:
    """``HOME/.rtun/rtun.sock.LAPTOP.HOST.NONCE``, the host part cut short if the path would not
    fit any server's sun_path; raises ValueError if even that does not help."""
    directory = home.rstrip("/") + "/.rtun/"
    tag = host_tag(host)
    while True:
        path = directory + paths.session_socket_name(laptop, tag, nonce)
        if len(path.encode("utf-8", "surrogateescape")) < REMOTE_SUN_PATH:
            return path
        if len(tag) <= 1:
            raise ValueError(f"the home directory on the server is too long for a socket path: {home}")
        tag = tag[: len(tag) // 2]


def parse_prelude(line: str) -> "Optional[Dict[str, str]]":
    """The control session's report, from its marker line; None for any other line."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) < 2 or fields[0] != MARKER:
        return None
    report = {}
    for item in fields[2:]:
        key, _, value = item.partition("=")
        report[key] = value
    return report


def python_command(program: bytes) -> str:
    """Run ``program`` (sent first on stdin) with the server's python3; what follows it on stdin
    is the program's own input. Every login shell reads this command the same way."""
    return f"exec python3 -c 'import sys;exec(sys.stdin.buffer.read({len(program)}))'"


# ---- the user's session -----------------------------------------------------------------------


def shell_family(shell: str) -> str:
    name = shell.rsplit("/", 1)[-1]
    if name.startswith("fish"):
        return "fish"
    if name in ("csh", "tcsh"):
        return "csh"
    return "posix"


def quote(text: str, family: str) -> str:
    """One word in the syntax of the user's shell."""
    if family == "fish":
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + text.replace("'", "'\\''") + "'"


def session_command(
    shell: str,
    socket: str,
    extra_path: "Optional[str]",
    command: "Optional[str]",
    *,
    login: str = 'exec "$SHELL" -l',
    require_socket: bool = False,
) -> str:
    """The command line of the session: RTUN_SOCK (and ``extra_path`` at the end of PATH) set in
    the login shell, then the user's ``command`` as they typed it, or ``login``. With
    ``require_socket``, it first ends (exit 255, silently) unless ``socket`` is there: the
    session may start while its forward is still being answered, and the server handles the
    forward before the session, so a socket missing then means a refused forward (rtun says
    why), never one still to come."""
    family = shell_family(shell)
    sock = quote(socket, family)
    if family == "fish":
        line = f"test -S {sock}; or exit 255; " if require_socket else ""
        line += f"set -gx RTUN_SOCK {sock}; "
        line += f"set -gx PATH $PATH {quote(extra_path, family)}; " if extra_path else ""
    elif family == "csh":
        # csh has no -S test, and its exit does not stop the rest of a -c line: exec does.
        line = f"if (! -e {sock}) exec /bin/sh -c 'exit 255'; " if require_socket else ""
        line += f"setenv RTUN_SOCK {sock}; "
        line += f'setenv PATH "${{PATH}}":{quote(extra_path, family)}; ' if extra_path else ""
    else:
        line = f"[ -S {sock} ] || exit 255; " if require_socket else ""
        line += f"RTUN_SOCK={sock}; export RTUN_SOCK; "
        line += f'PATH="$PATH":{quote(extra_path, family)}; export PATH; ' if extra_path else ""
        if extra_path and command is None and shell.rsplit("/", 1)[-1].startswith("bash"):
            line += _prompt_hook(quote(extra_path, family))
    return line + (command if command is not None else login)


PROMPT_MARK = "RTUN-AT-THE-PROMPT"


def prompt_probe(shell: str, extra_path: "Optional[str]") -> "Tuple[str, bytes]":
    """The command and the typed input that show what an interactive `rtun ssh` login finds at
    its prompt: the session's own command line, its login shell interactive (profiles, rc
    files and prompt hooks all run), reading a line that prints where ``rtun`` is."""
    command = session_command(shell, "", extra_path, None, login='exec "$SHELL" -l -i')
    typed = f"echo {PROMPT_MARK}; command -v rtun; echo {PROMPT_MARK}; exit\n"
    return command, typed.encode()


def prompt_found(output: str) -> "Optional[str]":
    """Where the probe's shell found ``rtun`` ("" where it did not), or None if the probe did
    not get that far."""
    parts = output.split(PROMPT_MARK)
    if len(parts) < 3:
        return None
    found = [line.strip() for line in parts[1].splitlines() if line.strip().startswith("/")]
    return found[0] if found else ""


def _prompt_hook(directory: str) -> str:
    """bash's login reads /etc/profile, which on Debian and others sets PATH afresh: what was
    added before ``exec "$SHELL" -l`` is gone at the prompt. PROMPT_COMMAND, which profiles leave
    alone, puts ``directory`` back before the first prompt (and keeps it there), with no edit of
    the server's rc files; a PROMPT_COMMAND of the session's own still runs after it."""
    hook = f'case ":$PATH:" in *:{directory}:*) ;; *) PATH="$PATH":{directory} ;; esac'
    return (
        f'PROMPT_COMMAND={quote(hook, "posix")}"${{PROMPT_COMMAND:+; $PROMPT_COMMAND}}"; '
        "export PROMPT_COMMAND; "
    )


# ---- plain ssh ---------------------------------------------------------------------------------

# What may be written into ssh_config. ssh reads quotes, backslashes, "=", "#" (a comment since
# OpenSSH 8.7), %-tokens and ${VAR} in a line; a value with any of them, or with anything else
# outside these sets, is refused rather than quoted: a server's home that could be read as two
# words would choose the local socket of the forward (the session bus, an agent, docker.sock).
_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._+-@")
_CONFIG_PATH = _WORD | frozenset("/ ")  # written in double quotes
_CONFIG_VALUE = _WORD | frozenset(":,[]")  # host names, [IPv6], ports, users, jump lists


def home_problem(home: str) -> "Optional[str]":
    """Why the home a server reported cannot be used at all (None if it can): it is text the
    server chose, and it goes into socket paths, command lines and messages."""
    if not home.startswith("/"):
        return "not an absolute path"
    if not home.isprintable():
        return "it holds control or format characters"
    return None


def config_path(path: str, what: str) -> str:
    """``path`` as one ssh_config word (in double quotes); ValueError if it cannot be one."""
    if not path.startswith("/") or any(ch not in _CONFIG_PATH for ch in path):
        raise ValueError(
            f"cannot write {what} {peertext.escaped(path)} into an ssh_config safely "
            "(letters, digits, spaces and / . _ + - @ only): use `rtun ssh` instead"
        )
    return f'"{path}"'


def config_value(value: str, what: str) -> str:
    """A host name, port, user or jump list as one ssh_config word; ValueError if it cannot be."""
    if not value or any(ch not in _CONFIG_VALUE for ch in value):
        raise ValueError(
            f"cannot write the {what} {peertext.escaped(value)} into an ssh_config "
            "safely: use `rtun ssh` instead"
        )
    return value


def plain_block(alias: str, config: "Dict[str, str]", home: str, laptop: str, local_socket: str) -> str:
    """An ssh_config block that makes plain `ssh ALIAS-rtun` do what `rtun ssh ALIAS` does;
    ValueError if a value (the server's home above all) cannot be written there safely.

    The forward has one fixed name per laptop (ssh_config has no token that is fresh per
    login); the RemoteCommand moves it aside at once to a name of its own, so the fixed name is
    free again for the next login, sets RTUN_SOCK and removes the socket when the shell ends.
    """
    alias = config_value(alias.rpartition("@")[2], "host name")  # user@host: the user is in -G's
    prefix = f"{paths.SOCKET_NAME}.{config_value(laptop, 'laptop id')}"
    incoming = config_path(f"{home.rstrip('/')}/.rtun/{prefix}.new", "the server's home")
    local = config_path(local_socket, "the daemon's socket")
    command = (
        f'h=$(uname -n | cut -d. -f1); s="$HOME/.rtun/{prefix}.$h.$$"; '
        f'mv -f "$HOME/.rtun/{prefix}.new" "$s" && RTUN_SOCK="$s" && export RTUN_SOCK; '
        """trap 'rm -f "$s"' EXIT HUP TERM; "$SHELL" -l"""
    )
    lines = [
        f"# Plain `ssh {alias}-rtun`: {alias} with the forward to the rtun daemon of this computer",
        "# and RTUN_SOCK set. Generated by `rtun ssh --print-config`; limits in docs/sessions.md.",
        f"Host {alias}-rtun",
        f"    HostName {config_value(config.get('hostname', alias), 'host name')}",
    ]
    for key, name in (("port", "Port"), ("user", "User"), ("proxyjump", "ProxyJump")):
        value = config.get(key, "")
        if value and value.lower() != "none":
            lines.append(f"    {name} {config_value(value, name)}")
    lines += [
        f"    RemoteForward {incoming} {local}",
        f"    RemoteCommand {command}",
        "    RequestTTY yes",
    ]
    return "\n".join(lines) + "\n"
