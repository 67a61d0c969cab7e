"""The client side of `rtun edit FILE`: the server file goes to the editor on your computer, and
each save made there comes back and replaces it here, unless the file changed here meanwhile.

A save is written to a temporary file beside the original (``.rtun-<pid>-<random>.part``, the
name the daemon gives files in transit), given the original's mode (and owner, where allowed),
flushed to disk and renamed over the original, so a reader sees the old file or the new one,
never a mix. Just before the rename the original is compared with what rtun edit last read or
wrote: the same inode, size and mtime, and the same SHA-256 when the mtime is too recent to
prove anything (coarse clocks). If it differs the save is refused as a conflict: the other
change stays, and the refused text is kept beside it as ``FILE.rtun-conflict-<time>`` (the same
mode; never replacing a file), named in the message, so that closing the editor (whose copy
goes with it) loses nothing.

Stdlib only, and imported only by `rtun edit`: it runs on the server.
"""

from __future__ import annotations

import os
import stat
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing is not imported at run time: it slows every command's start
    from typing import List, Optional, Tuple

    from rtun.client.pump import ClientConnection

from rtun.errors import RtunError
from rtun.protocol import messages, peertext

CHUNK = 1024 * 1024
RACY_NS = 2_000_000_000  # a write this soon after a recorded mtime may keep it (2 s: FAT, SMB)
INTERRUPTED = 130
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _say(text: str) -> None:
    sys.stderr.write(f"rtun edit: {text}\n")
    sys.stderr.flush()


def _reason(exc: OSError) -> str:
    return (exc.strerror or str(exc)).lower()


def _key(st: os.stat_result) -> "Tuple[int, int, int, int]":
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _lstat(path: str) -> "Optional[os.stat_result]":
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _sha256_of(path: str) -> "Optional[str]":
    import hashlib

    digest = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError:
        return None
    try:
        while True:
            piece = os.read(fd, CHUNK)
            if not piece:
                return digest.hexdigest()
            digest.update(piece)
    except OSError:
        return None
    finally:
        os.close(fd)


class State:
    """The server file as rtun edit last read or wrote it; ``key`` None: it did not exist."""

    __slots__ = ("key", "sha", "since", "taken_ns")

    def __init__(self, key: "Optional[Tuple[int, int, int, int]]", sha: str, since: str) -> None:
        import time

        self.key = key
        self.sha = sha
        self.since = since  # how a conflict message names this moment
        self.taken_ns = time.time_ns()

    def racy(self) -> bool:
        """Whether a write right after this state was taken could have kept its mtime."""
        return self.key is not None and self.key[3] + RACY_NS >= self.taken_ns


class ServerFile:
    """The file being edited. A symbolic link is followed: its target is edited, the link
    stays a link."""

    def __init__(self, path: str) -> None:
        self.shown = path
        self.path = os.path.realpath(path)
        self.directory = os.path.dirname(self.path)
        self.name = os.path.basename(os.path.abspath(path)) or os.path.basename(self.path)
        self.state = State(None, "", "since rtun edit opened it")

    def open(self) -> "Tuple[Optional[int], int]":
        """A descriptor to read the file from and its size; (None, 0) for a new file. Refuses,
        before anything is sent, what the saves could not replace."""
        st = _lstat(self.path)
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise RtunError(f"{self.shown} is a directory; only files can be edited")
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise RtunError(f"{self.shown} is not a regular file")
        if not os.path.isdir(self.directory):
            raise RtunError(f"cannot edit {self.shown}: there is no directory {self.directory}")
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise RtunError(
                f"cannot edit {self.shown}: saves replace it through a temporary file "
                f"in {self.directory}, which is not writable"
            )
        if st is None:
            return None, 0
        if not os.access(self.path, os.W_OK):
            raise RtunError(f"cannot edit {self.shown}: it is not writable")
        try:
            fd = os.open(self.path, os.O_RDONLY | _NOFOLLOW)
        except OSError as exc:
            raise RtunError(f"cannot read {self.shown}: {_reason(exc)}") from None
        if os.fstat(fd).st_nlink > 1:
            _say(f"note: {self.shown} has other hard links; each save replaces it, so they keep the old text")
        return fd, os.fstat(fd).st_size

    def send(self, conn: "ClientConnection", fd: "Optional[int]", size: int) -> None:
        """EDIT, READY, the file's bytes and SHA-256, then the daemon's OK (the editor is open)."""
        import hashlib

        conn.request(messages.Edit(size, self.name))  # READY, or the daemon's refusal
        digest = hashlib.sha256()
        before = os.fstat(fd) if fd is not None else None
        sent = 0
        while fd is not None and sent < size:
            try:
                piece = os.read(fd, min(CHUNK, size - sent))
            except OSError as exc:
                raise RtunError(f"cannot read {self.shown}: {_reason(exc)}") from None
            if not piece:
                break
            conn.write(conn.sender.data(piece))
            conn.write(piece)
            digest.update(piece)
            sent += len(piece)
        if before is not None:
            after = os.fstat(fd)  # type: ignore[arg-type]
            if sent != size or _key(after) != _key(before):
                raise RtunError(f"{self.shown} changed while it was being sent; try again")
        conn.write(conn.sender.end_file())
        conn.expect_ok()
        self.state = State(
            _key(before) if before is not None else None, digest.hexdigest(), "since rtun edit opened it"
        )

    def conflict(self) -> "Optional[str]":
        """Why the file may not be replaced now (it changed since the last read or write), or
        None."""
        st = _lstat(self.path)
        known = self.state
        since = known.since
        if known.key is None:
            return None if st is None else f"{self.shown} was created on the server {since}"
        if st is None:
            return f"{self.shown} was removed on the server {since}"
        if not stat.S_ISREG(st.st_mode):
            return f"{self.shown} is no longer a regular file on the server"
        if _key(st) == known.key and not known.racy():
            return None
        if st.st_size == known.key[2] and _sha256_of(self.path) == known.sha:
            import time

            now = time.time_ns()
            if _key(st) == known.key and now > known.key[3] + RACY_NS:
                known.taken_ns = now  # the same now, and any later write gets a later mtime
            return None
        return f"{self.shown} changed on the server {since}"

    def save(self, conn: "ClientConnection") -> "Tuple[str, str]":
        """Read one save's payload and put it in place: ("saved", size) or ("conflict" or
        "failed", the reason)."""
        import hashlib

        from rtun.protocol.names import PART_PREFIX, PART_SUFFIX

        temporary = os.path.join(
            self.directory, f"{PART_PREFIX}{os.getpid()}-{os.urandom(6).hex()}{PART_SUFFIX}"
        )
        try:
            # 0600 until the content is complete and the mode is the original's.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        except OSError as exc:
            conn.read_payload(lambda piece: None)  # the stream goes on regardless
            return "failed", f"cannot write {self.shown}: {_reason(exc)}"
        digest = hashlib.sha256()
        failure: "List[OSError]" = []

        def write(piece: bytes) -> None:
            if failure:
                return
            digest.update(piece)
            try:
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
            except OSError as exc:
                failure.append(exc)

        placed = False
        try:
            size = conn.read_payload(write)
            if failure:
                return "failed", f"cannot write {self.shown}: {_reason(failure[0])}"
            self._give_metadata(fd)
            os.fsync(fd)
            written = os.fstat(fd)  # before the rename: a write after it must not look like ours
            why = self.conflict()
            if why is not None:
                return "conflict", why + self._keep(temporary)
            os.replace(temporary, self.path)
            placed = True
            _sync_directory(self.directory)
            self.state = State(_key(written), digest.hexdigest(), "since the last save from the editor")
            return "saved", f"{size} bytes"
        except OSError as exc:
            return "failed", f"cannot write {self.shown}: {_reason(exc)}"
        finally:
            os.close(fd)
            if not placed:
                try:
                    os.unlink(temporary)
                except OSError:
                    pass

    def _keep(self, temporary: str) -> str:
        """Keep a refused save's text (the temporary, complete and with the file's mode) under a
        new name beside the file; what to add to the conflict message."""
        import time

        base = os.fsencode(os.path.basename(self.path))[:200]  # room for the suffix in NAME_MAX
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for n in range(1, 100):
            name = os.fsdecode(base + f".rtun-conflict-{stamp}{'' if n == 1 else f'-{n}'}".encode())
            kept = os.path.join(self.directory, name)
            try:
                os.link(temporary, kept)  # never replaces: an existing name is EEXIST
            except FileExistsError:
                continue
            except OSError as exc:
                return f"; your text is only in the editor (cannot keep it in {kept}: {_reason(exc)})"
            return f"; your text is kept in {kept}"
        return "; your text is only in the editor"

    def _give_metadata(self, fd: int) -> None:
        """The original's mode and owner (a new file gets what the umask leaves of 0666)."""
        current = _lstat(self.path)
        if current is None or not stat.S_ISREG(current.st_mode):
            mask = os.umask(0o077)
            os.umask(mask)
            os.fchmod(fd, 0o666 & ~mask)
            return
        mine = os.fstat(fd)
        if (current.st_uid, current.st_gid) != (mine.st_uid, mine.st_gid):
            try:  # root keeps the owner; a user keeps the group if a member of it
                os.fchown(fd, current.st_uid, current.st_gid)
            except OSError:
                try:
                    os.fchown(fd, -1, current.st_gid)
                except OSError:
                    pass
        os.fchmod(fd, stat.S_IMODE(current.st_mode))  # after chown, which may clear setuid


def _sync_directory(directory: str) -> None:
    """Make the rename itself durable (some file systems cannot: then it is only in order)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _follow(conn: "ClientConnection", target: ServerFile, *, quiet: bool) -> int:
    """EDITWAIT until the editor closes; the count of changes that did not reach the file."""
    from rtun.protocol.sender import PAYLOAD

    result, message = "", ""
    refused = changes = 0
    while True:
        reply = conn.request(messages.EditWait(result, message))
        result, message = "", ""
        data = reply.data
        event = data.get("event")
        if (event == "save") != (conn.sender.state == PAYLOAD):
            raise RtunError("the rtun daemon on your computer sent a malformed edit event")
        if event == "save":
            changes += 1
            result, message = target.save(conn)
            if result == "saved":
                if not quiet:
                    _say(f"saved {target.shown} ({message})")
            else:
                refused += 1
                _say(f"not saved: {message}")
        elif event == "skipped":
            changes += 1
            refused += 1
            _say(
                f"not saved: {peertext.one_line(data.get('message')) or 'the daemon did not send a save back'}"
            )
        elif event == "closed":
            note = peertext.one_line(data.get("message"))
            if note:
                _say(note)
            return refused
        elif event != "idle":
            raise RtunError(
                "the rtun daemon on your computer sent an edit event this rtun does "
                "not know: update rtun here"
            )


def edit(socket_path: "Optional[str]", path: str, *, quiet: bool = False) -> int:
    """The whole edit; the exit code (see README.md: 0 every save written, 1 some refused)."""
    from rtun.client.discovery import connect
    from rtun.client.handshake import negotiate, require

    target = ServerFile(path)
    fd, size = target.open()
    try:
        try:
            with negotiate(connect(socket_path)) as conn:
                require(conn, "edit", "editing files")
                target.send(conn, fd, size)
                if fd is not None:
                    os.close(fd)
                    fd = None
                if not quiet:
                    _say(
                        f"{target.shown} is open in the editor on your computer; this ends "
                        "when the editor closes it"
                    )
                refused = _follow(conn, target, quiet=quiet)
        except KeyboardInterrupt:
            _say(f"interrupted; saves in the editor on your computer no longer reach {target.shown}")
            return INTERRUPTED
    finally:
        if fd is not None:
            os.close(fd)
    if refused:
        raise RtunError(
            f"{refused} change{'s' if refused > 1 else ''} from the editor "
            f"{'were' if refused > 1 else 'was'} not written to {target.shown}"
        )
    return 0
