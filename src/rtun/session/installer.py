"""Putting the single-file client on a server: ~/.rtun/bin/rtun, through an rtun connection.

The server needs only python3 (3.9 or newer): no pip, no network. The installer below runs
there (any Python 3 can run it far enough to say its version is too old), checks the bundle's
SHA-256, replaces the old copy atomically unless it is the same version of the same sources,
and runs the result to read its version back. rtun then compares that with its own and says how to put it on PATH.

Beside it goes ~/.rtun/bin/rtun-open, a three-line sh script that runs `rtun open`: BROWSER and
an xdg-open stand-in need a program name of one word (pip installs the same name as a console
script). It names the client by its absolute path, so a symlink to it works from anywhere.
"""

from __future__ import annotations

import hashlib

from rtun import __version__
from rtun.errors import RtunError
from rtun.protocol import peertext
from rtun.session import bundle, remote

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List

    from rtun.session.master import Login

MARKER = "RTUN-INSTALL"
TARGET = "~/.rtun/bin/rtun"
OPEN_SHIM_NAME = "rtun-open"
# {rtun}: the client's absolute path, quoted for sh.
OPEN_SHIM = """#!/bin/sh
# `rtun open` under a name of its own, for BROWSER=rtun-open and as an xdg-open stand-in.
exec {rtun} open "$@"
"""

_PROGRAM = r"""
import hashlib, os, subprocess, sys, zipfile
def say(*fields):
    sys.stdout.write("\t".join(("RTUN-INSTALL",) + fields) + "\n")
    sys.stdout.flush()
python = "%d.%d.%d" % tuple(sys.version_info[:3])
if sys.version_info < (3, 9):
    say("status=old", "python=" + python)
    sys.exit(0)
size, digest, identity = sys.stdin.buffer.readline().decode().split(" ", 2)
identity = identity.strip()
data = sys.stdin.buffer.read(int(size))
if hashlib.sha256(data).hexdigest() != digest:
    say("status=damaged", "python=" + python)
    sys.exit(1)
home = os.environ.get("HOME") or os.path.expanduser("~")
top = os.path.join(home, ".rtun")
bindir = os.path.join(top, "bin")
target = os.path.join(bindir, "rtun")
for d in (top, bindir):
    if not os.path.isdir(d):
        os.mkdir(d, 0o700)
def version_of(path):
    try:
        out = subprocess.run([sys.executable, path, "--version"], capture_output=True,
                             stdin=subprocess.DEVNULL, timeout=60).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return "-"
    lines = out.splitlines()  # the client's own line; a daemon's version may follow
    words = lines[0].split() if lines else []
    return words[1] if len(words) == 2 and words[0] == "rtun" else "-"
before = "-"
same = False
if os.path.exists(target):
    try:
        with zipfile.ZipFile(target) as z:
            same = z.comment.decode("utf-8", "replace") == identity
    except (OSError, zipfile.BadZipFile):
        pass
    before = version_of(target)
def put(path, content):
    temporary = "%s.%d.tmp" % (path, os.getpid())
    with open(temporary, "wb") as f:
        f.write(content)
    os.chmod(temporary, 0o755)
    os.replace(temporary, path)
if not same:
    put(target, data)
shim = OPEN_SHIM.replace("{rtun}", "'" + target.replace("'", "'\\''") + "'").encode()
try:
    with open(os.path.join(bindir, OPEN_SHIM_NAME), "rb") as f:
        shim_same = f.read() == shim
except OSError:
    shim_same = False
if not shim_same:
    put(os.path.join(bindir, OPEN_SHIM_NAME), shim)
def first_on(path_value):
    for d in path_value.split(os.pathsep):
        candidate = os.path.join(d or ".", "rtun")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return "-"
found = first_on(os.environ.get("PATH", ""))
shell = os.environ.get("SHELL", "")
if os.path.basename(shell) in ("sh", "bash", "zsh", "dash", "ksh", "mksh", "fish"):
    try:  # the PATH of a login shell, where the user types `rtun`
        out = subprocess.run([shell, "-lc", "command -v rtun"], capture_output=True,
                             stdin=subprocess.DEVNULL, timeout=20).stdout.decode("utf-8", "replace")
        lines = [l for l in out.splitlines() if l.startswith("/")]
        found = lines[-1] if lines else "-"
    except (OSError, subprocess.SubprocessError):
        pass
say("status=" + ("unchanged" if same else "written"), "before=" + before,
    "after=" + version_of(target), "python=" + python, "target=" + target, "found=" + found,
    "shell=" + shell)
"""


def open_shim(target: str) -> str:
    """The rtun-open script for the client at ``target`` (an absolute path)."""
    return OPEN_SHIM.replace("{rtun}", remote.quote(target, "posix"))


def _program() -> bytes:
    """The installer, with the shim's text and name defined in front of it."""
    return (f"OPEN_SHIM = {OPEN_SHIM!r}\nOPEN_SHIM_NAME = {OPEN_SHIM_NAME!r}\n" + _PROGRAM).encode()


def _parse(text: str) -> "Dict[str, str]":
    for line in text.splitlines():
        fields = line.split("\t")
        if fields[0] == MARKER:
            return dict(item.partition("=")[::2] for item in fields[1:])
    return {}


def path_hint(shell: str) -> str:
    family = remote.shell_family(shell)
    if family == "fish":
        return "fish_add_path ~/.rtun/bin"
    if family == "csh":
        return "echo 'set path = ($path ~/.rtun/bin)' >> ~/.cshrc"
    return (
        "echo 'export PATH=\"$HOME/.rtun/bin:$PATH\"' >> ~/.profile  (bash: ~/.bash_profile if you have one)"
    )


def install(conn: "Login") -> "List[str]":
    """Install or upgrade the client on ``conn``'s server; the lines to show the user."""
    host = conn.host
    payload = bundle.build()
    program = _program()
    header = b"%d %s %s\n" % (len(payload), hashlib.sha256(payload).hexdigest().encode(), bundle.identity())
    done = conn.run(remote.python_command(program), program + header + payload)
    said = done.stderr.decode("utf-8", "replace")
    result = _parse(done.stdout.decode("utf-8", "replace"))
    if not result:
        if done.returncode == 127 or "not found" in said:
            raise RtunError(f"no python3 on {host}: the rtun client needs Python 3.9 or newer there")
        reason = peertext.last_line(said) or f"exit {done.returncode}"
        raise RtunError(f"installing on {host} failed: {reason}")
    status, python = result.get("status"), result.get("python", "?")
    if status == "old":
        raise RtunError(f"python3 on {host} is {python}: the rtun client needs Python 3.9 or newer")
    if status == "damaged":
        raise RtunError(f"the client arrived damaged on {host} (checksum mismatch): try again")
    after, before = result.get("after", "-"), result.get("before", "-")
    if after != __version__:
        raise RtunError(f"{TARGET} on {host} says it is version {after}, not {__version__} as here")
    where = f"{TARGET} (python3 {python})"
    if status == "unchanged":
        lines = [f"rtun {after} on {host} is up to date: {where}"]
    elif before == "-":
        lines = [f"installed rtun {after} on {host}: {where}"]
    elif before == after:
        lines = [f"replaced rtun {after} on {host} (it was built from other sources): {where}"]
    else:
        lines = [f"upgraded rtun on {host} from {before} to {after}: {where}"]
    found, target = result.get("found", "-"), result.get("target", "")
    if found == "-":
        lines.append(
            f"`rtun ssh {host}` logins find it at the prompt; for plain ssh logins too, "
            f"run there: {path_hint(result.get('shell', ''))}"
        )
    elif found != target:
        lines.append(f"note: {found} comes first on PATH on {host}, before {TARGET}")
    return lines
