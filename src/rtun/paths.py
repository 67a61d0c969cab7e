"""Default locations (~/.rtun, the socket, the log, the save directory) and socket discovery.

Sockets that `rtun ssh` forwards are named ``rtun.sock.LAPTOP.HOST.NONCE``: LAPTOP is the
12-hex-digit id of the computer whose daemon the socket leads to, HOST the server's short host
name (so a sweep on one node of a cluster never touches another node's sockets in a shared
home), NONCE fresh per login. Discovery uses LAPTOP to follow a user into an old tmux shell.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import Dict, List, Optional, Tuple

SOCKET_NAME = "rtun.sock"
LAPTOP_ID_LENGTH = 12  # hex digits
_HEX = frozenset("0123456789abcdef")
# sun_path holds 108 bytes on Linux and 104 on the BSDs and macOS, the terminating NUL included.
SUN_PATH_MAX = 104 if sys.platform == "darwin" else 108


def home() -> str:
    return os.path.expanduser("~")


def tilde(path: str) -> str:
    """``path`` as a person reads it in a message: ``~/...`` for what is in the home directory."""
    prefix = home().rstrip("/")
    return "~" + path[len(prefix) :] if path == prefix or path.startswith(prefix + "/") else path


def rtun_dir() -> str:
    return os.path.join(home(), ".rtun")


def default_socket() -> str:
    return os.path.join(rtun_dir(), SOCKET_NAME)


def default_log() -> str:
    return os.path.join(rtun_dir(), "rtun.log")


def config_home() -> str:
    """$XDG_CONFIG_HOME, else ~/.config."""
    return os.environ.get("XDG_CONFIG_HOME") or os.path.join(home(), ".config")


def config_file() -> str:
    return os.path.join(config_home(), "rtun", "config.toml")


def default_save_dir() -> str:
    """The XDG download directory where one is set, else ~/Downloads."""
    configured = os.environ.get("XDG_DOWNLOAD_DIR") or _user_dirs_download()
    return configured or os.path.join(home(), "Downloads")


def _user_dirs_download() -> Optional[str]:
    try:
        # Paths are bytes to the OS: one in another encoding still names a directory.
        with open(
            os.path.join(config_home(), "user-dirs.dirs"), encoding="utf-8", errors="surrogateescape"
        ) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.strip().partition("=")
        if key == "XDG_DOWNLOAD_DIR" and sep:
            value = value.strip().strip('"').replace("$HOME", home())
            # xdg-user-dirs writes $HOME itself to mean "disabled".
            return value if value.rstrip("/") != home().rstrip("/") else None
    return None


def socket_path_fits(path: str) -> bool:
    return len(os.fsencode(path)) < SUN_PATH_MAX


def socket_candidates() -> List[str]:
    """Sockets an `ssh -R` may have created, newest first.

    sshd never removes the sockets it binds, so old ones pile up beside the live one. A stale
    socket may also belong to another node sharing this home over NFS, so discovery only ever
    skips candidates; it never deletes them.
    """
    directory = rtun_dir()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in names:
        if not name.startswith(SOCKET_NAME):
            continue
        path = os.path.join(directory, name)
        try:
            found.append((os.stat(path).st_mtime, path))
        except OSError:
            continue
    found.sort(reverse=True)
    return [path for _, path in found]


def session_socket_name(laptop: str, host: str, nonce: str) -> str:
    """``rtun.sock.LAPTOP.HOST.NONCE``: the remote end of one `rtun ssh` login."""
    return f"{SOCKET_NAME}.{laptop}.{host}.{nonce}"


def laptop_of(path: str) -> Optional[str]:
    """The laptop id in a session socket's name (``rtun.sock.LAPTOP.*``), else None."""
    parts = os.path.basename(path).split(".")
    if len(parts) < 4 or parts[0] + "." + parts[1] != SOCKET_NAME:
        return None
    laptop = parts[2]
    if len(laptop) != LAPTOP_ID_LENGTH or not _HEX.issuperset(laptop):
        return None
    return laptop


def same_laptop_first(candidates: List[str], laptop: Optional[str]) -> List[str]:
    """``candidates`` (newest first) with those of ``laptop`` moved to the front, in order."""
    if laptop is None:
        return list(candidates)
    mine = [path for path in candidates if laptop_of(path) == laptop]
    return mine + [path for path in candidates if laptop_of(path) != laptop]


def this_rtun() -> "Tuple[List[str], Dict[str, str]]":
    """How a service or a helper process runs the very rtun that is running now, however it was
    installed, and the environment that needs: this Python (a virtual environment's included) with ``-m rtun``, or
    with the single-file client's path (a zipapp, which ``-m rtun`` cannot import), and
    PYTHONPATH where the package is found only through it."""
    import rtun

    package = os.path.dirname(os.path.abspath(rtun.__file__))
    archive = package
    while archive != os.path.dirname(archive) and not os.path.exists(archive):
        archive = os.path.dirname(archive)  # inside a zip: climb to the archive itself
    if os.path.isfile(archive):
        return [sys.executable, archive], {}
    parent = os.path.dirname(package)
    given = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return [sys.executable, "-m", "rtun"], ({"PYTHONPATH": parent} if parent in given else {})
