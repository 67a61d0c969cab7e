"""The control masters that `rtun ssh` logins to one destination share: where a master's control
socket is, how a login finds a live one, and the lock under which one is started.

A login with no forwards of the user's own (-L, -R, -D, -w) on its command line gets its
master at ``~/.rtun/masters/KEY``, KEY a hash of its words: the ssh command line
(``RTUN_SSH_COMMAND``), the user's connection options, the destination as typed. Beside the
socket, ``KEY.config`` holds what ssh_config made of them for the login that started the master
(``ssh -G``, run while that master logs in: a ``Match exec``, a variable, another ``-F`` file),
with the working directory wherever a file or command in it is named relative to it; or
``private`` if that configuration adds forwards of its own, which must end with the login. A
later login joins only a master whose ``KEY.config`` is its own: two logins that would reach
different servers, or authenticate differently, never share.
A later login with the same KEY finds that master (an alive check on its socket) and becomes a
client of it: no TCP connection, key exchange or authentication of its own. The master is
started with ``ControlPersist`` (:func:`linger`): ssh puts it in the background, in a session
of its own, away from the terminal of the login that started it; it lives while any login
uses it and ends ``linger`` seconds after the last one.
"""

from __future__ import annotations

import os

from rtun import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional, Sequence

DIR_NAME = "masters"
LINGER = 10  # seconds a shared master stays after its last login: a next command reuses it
LINGER_ENV = "RTUN_SSH_LINGER"  # seconds; 0: no shared masters, one private master per login
LINGER_MAX = 86400


def linger() -> int:
    """The seconds a shared master outlives its last login (``RTUN_SSH_LINGER``, default 10;
    0 turns sharing off)."""
    value = os.environ.get(LINGER_ENV, "").strip()
    if not value:
        return LINGER
    try:
        return min(max(int(value), 0), LINGER_MAX)
    except ValueError:
        return LINGER


def _private_dir(path: str) -> bool:
    """Whether ``path`` is a real directory (no symlink) of this user that no one else may use."""
    import stat

    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def directory() -> "Optional[str]":
    """``~/.rtun/masters``, made 0700 if missing; None if it (or ``~/.rtun``) is not a private
    directory of this user: then a login gets a private master, as without sharing."""
    top = paths.rtun_dir()
    path = os.path.join(top, DIR_NAME)
    try:
        os.makedirs(top, mode=0o700, exist_ok=True)
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    return path if _private_dir(top) and _private_dir(path) else None


def _digest(data: bytes) -> str:
    """SHA-256 in hex. The interpreter's built-in module when there is one: hashlib would load
    OpenSSL (~3 ms) while the user waits for ssh to start."""
    import importlib

    for name in ("_sha2", "_sha256"):  # Python 3.12+, then 3.9-3.11
        try:
            return str(importlib.import_module(name).sha256(data).hexdigest())
        except (ImportError, AttributeError):
            continue
    import hashlib

    return hashlib.sha256(data).hexdigest()


# ssh -G keys whose values name files or commands: relative ones depend on the directory.
_PATH_KEYS = frozenset(
    "identityfile certificatefile userknownhostsfile globalknownhostsfile identityagent "
    "revokedhostkeys pkcs11provider securitykeyprovider xauthlocation proxycommand "
    "localcommand knownhostscommand remotecommand".split()
)
_FORWARD_KEYS = frozenset(("localforward", "remoteforward", "dynamicforward"))


PRIVATE = "private"  # KEY.config of a master that no other login may join


class Resolving:
    """``ssh -G`` for a connection, started now (it runs while the master logs in); ``signature``
    waits for it."""

    def __init__(self, base: "Sequence[str]", options: "Sequence[str]", destination: str) -> None:
        from rtun.session import spawn
        from rtun.ssh import argv as sshargv

        self._child: Optional[spawn.Child] = None
        self._signature: Optional[str] = None
        try:
            self._child = spawn.Child(sshargv.config_argv(base, destination, options), capture_stderr=True)
            self._child.close_stdin()
        except OSError:
            self._signature = PRIVATE

    def signature(self) -> str:
        """What names this configuration (:func:`signature`), or PRIVATE if ssh could not say
        or it adds forwards of its own."""
        child, self._child = self._child, None
        if child is not None:
            assert child.stdout is not None and child.stderr is not None
            text = child.stdout.read()
            child.stderr.read()
            code = child.wait()
            child.close_streams()
            config = text.decode("utf-8", "surrogateescape")
            self._signature = signature(config) if code == 0 and not forwards_in(config) else PRIVATE
        assert self._signature is not None
        return self._signature


def forwards_in(config: str) -> bool:
    """Whether ssh_config gives this connection forwards (or a tunnel) of the user's own, which
    a shared master would keep open after the login."""
    for line in config.splitlines():
        name, _, value = line.partition(" ")
        if name in _FORWARD_KEYS or (name == "tunnel" and value.strip() not in ("false", "no")):
            return True
    return False


def _relative(config: str) -> bool:
    for line in config.splitlines():
        name, _, value = line.partition(" ")
        value = value.strip()
        if name in _PATH_KEYS and value and value != "none" and not value.startswith(("/", "~")):
            return True
    return False


def key(base: "Sequence[str]", options: "Sequence[str]", destination: str) -> str:
    """What names a shared master: the ssh command line, the connection options, the destination."""
    words = [*base, "\0", *options, "\0", destination]
    return _digest("\0".join(words).encode("utf-8", "surrogateescape"))[:32]


def signature(config: str) -> str:
    """What ssh_config made of a connection (``ssh -G``'s lines), and the working directory
    where that names a file or command relative to it."""
    words = [config] + ([os.getcwd()] if _relative(config) else [])
    return _digest("\0".join(words).encode("utf-8", "surrogateescape"))


def write_signature(control: str, value: str) -> None:
    """``KEY.config`` beside the master's socket (in the private directory, no link followed)."""
    try:
        fd = os.open(control + ".config", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError:
        return
    try:
        os.write(fd, value.encode("ascii"))
    finally:
        os.close(fd)


def read_signature(control: str) -> "Optional[str]":
    try:
        fd = os.open(control + ".config", os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        return os.read(fd, 128).decode("ascii", "replace")
    finally:
        os.close(fd)


def control_path(base: "Sequence[str]", options: "Sequence[str]", destination: str) -> "Optional[str]":
    """The shared master's control socket for this connection; None if there is to be none
    (sharing is off, the directory is not private, the path would not fit sun_path)."""
    if linger() <= 0:
        return None
    where = directory()
    if where is None:
        return None
    path = os.path.join(where, key(base, options, destination))
    # ssh binds PATH.XXXXXXXXXXXXXXXX first, then links it to PATH.
    return path if len(os.fsencode(path)) + 20 < paths.SUN_PATH_MAX else None


LOCK_WAIT = 30.0  # seconds a login waits for another's master (at a prompt?) before its own


class Lock:
    """An exclusive lock beside the control socket, held from finding no master until the new
    one listens, so that two logins at once start one master (the second then shares it).
    ``held`` is False if another login kept it past ``wait`` seconds (it may sit at a password
    prompt): this login then gets a private master."""

    def __init__(self, control: str, say: "Callable[[str], None]", wait: float = LOCK_WAIT) -> None:
        import fcntl
        import time

        self.fd: Optional[int] = os.open(control + ".lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.held = True
                return
            except BlockingIOError:
                pass
            if time.monotonic() >= deadline:
                self.release()
                self.held = False
                return
            if not told:
                say("waiting for another login to the same host to finish logging in")
                told = True
            time.sleep(0.1)  # flock has no timeout: the lock is looked at again

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None


def find(control: str) -> "Optional[int]":
    """The PID of the live master at ``control``; None if there is none. A socket that refuses
    connections (its master was killed before it could remove it) is removed: ssh would not
    bind a new one over it."""
    if not os.path.lexists(control):  # a first login: no socket module to load (3-4 ms)
        return None
    import socket

    from rtun.ssh import mux

    pid = mux.alive(control)
    if pid is None and os.path.lexists(control):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(control)
            except ConnectionRefusedError:
                try:
                    os.unlink(control)
                except OSError:
                    pass
            except OSError:
                pass
    return pid
