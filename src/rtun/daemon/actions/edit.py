"""EDIT, this computer's half: a private copy of a server file, the editor that has it open, and
the saves the editor makes, found by polling. No socket here: daemon/editing.py speaks for it.

* the copy is ``<tmp>/rtun-edit-<pid>-<random>/NAME``, mode 0600 in a 0700 directory of its own,
  locked while the edit lives (the first edit of a daemon sweeps what dead ones left behind);
* the editor is ``[edit] editor``, else ``$RTUN_EDITOR`` of the daemon's environment, else the
  first of ``DEFAULT_EDITORS`` on $PATH. It gets the path as its last argv element (no shell),
  and the edit lasts until it exits, so it must be a command that waits for the file to be
  closed. $VISUAL and $EDITOR are not used: they usually name terminal editors, and the daemon
  has no terminal;
* a save is a new state of that one path (editors write in place, or rename a new file over
  it). The path is opened again each time, by name below the private directory's descriptor,
  with O_NOFOLLOW; it must be a regular file with no other link, it is read up to ``max_bytes``,
  and it is reported once it has stayed the same for one poll (an editor writing in place is
  not caught half way). Nothing else on this computer is ever read for an edit;
* at most ``max_open`` edits at once, each counted until its editor exits.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import shlex
import shutil
import stat
import tempfile
from typing import Callable, Mapping, Optional, Sequence, Set, Tuple, Union

from rtun.daemon.actions import advice
from rtun.daemon.actions.launch import find
from rtun.daemon.actions.view import ViewFile
from rtun.daemon.actions.viewtypes import FALLBACK_NAME, clean_name
from rtun.daemon.storage.leftovers import private_directory, remove_leftovers
from rtun.daemon.storage.space import Claim, Space
from rtun.daemon.storage.tree import Tree
from rtun.protocol import messages
from rtun.protocol.limits import MAX_PAYLOAD
from rtun.protocol.messages import Rejected
from rtun.protocol.units import size_text

log = logging.getLogger("rtun.daemon")

DIR_PREFIX = "rtun-edit-"
EDIT_FALLBACK_NAME = "rtun-edit"
POLL_SECONDS = 0.2  # between looks at the edited file: a save reaches the server in ~0.5 s
QUICK_EXIT = 2.0  # an editor that exits this soon after starting did not wait for the file
READ_CHUNK = 1024 * 1024
# Editors that wait until the file is closed when started this way, in the order tried.
DEFAULT_EDITORS: Tuple[Tuple[str, ...], ...] = (
    ("code", "--wait"),
    ("codium", "--wait"),
    ("subl", "-w"),
    ("zed", "--wait"),
    ("mate", "-w"),
    ("bbedit", "--wait"),
    ("gvim", "--nofork"),
    ("kate", "--block"),
    ("gedit", "--wait"),
)
# O_NONBLOCK: a FIFO put in the file's place must not hang the open (it is refused after fstat).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)

Signature = Tuple[int, int, int, int, int, int]  # what changes when a file is written or replaced


def edit_name(name: str) -> str:
    """The local name for the server's ``name``: view's clean_name, but a leading dot is kept
    (``.bashrc`` stays itself, so the editor picks its syntax; a hidden name in a private
    directory misleads nobody)."""
    cleaned = clean_name(name)
    if cleaned == FALLBACK_NAME and FALLBACK_NAME not in name:
        return EDIT_FALLBACK_NAME
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if base.startswith(".") and len(cleaned.encode("utf-8", "surrogateescape")) < 255:
        return "." + cleaned
    return cleaned


def editor_command(
    configured: Sequence[str],
    environ: Mapping[str, str],
    which: Callable[[str], Optional[str]] = shutil.which,
) -> Tuple[str, ...]:
    """The editor's argv, without the file: see the module's docstring for the order."""
    if configured:
        return tuple(configured)
    named = environ.get("RTUN_EDITOR", "").strip()
    if named:
        try:
            command = tuple(shlex.split(named))
        except ValueError:
            command = ()
        if not command:
            raise Rejected(
                messages.E_OPEN,
                "cannot edit files on your computer: $RTUN_EDITOR of its rtun daemon is not a command "
                f"({advice.setting('[edit] editor')} instead)",
            )
        return command
    for candidate in DEFAULT_EDITORS:
        if which(candidate[0]) is not None:
            return candidate
    raise Rejected(
        messages.E_OPEN,
        "cannot edit files on your computer: no editor found ("
        + advice.setting("[edit] editor", '["code", "--wait"]')
        + ")",
    )


def signature(st: os.stat_result) -> Signature:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class Unsendable(Exception):
    """What the editor left at the path cannot go back to the server; the text says why."""


def read_save(dir_fd: int, name: str, max_bytes: int) -> Optional[Tuple[bytes, str, Signature]]:
    """The file ``name`` below ``dir_fd``: its bytes, SHA-256 and signature; None when it is
    missing or changed while being read (look again later). Raises Unsendable."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unsendable("it was replaced by a symbolic link") from None
        raise Unsendable(f"it cannot be read ({exc.strerror or exc})") from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise Unsendable("it is no longer a regular file")
        if before.st_nlink != 1:  # a hard link to some other file of this computer's
            raise Unsendable("it has other hard links")
        if before.st_size > max_bytes:
            raise Unsendable(f"it is larger than [edit] max_bytes ({max_bytes} bytes)")
        pieces = []
        total = 0
        digest = hashlib.sha256()
        while True:
            piece = os.read(fd, min(READ_CHUNK, max_bytes + 1 - total))
            if not piece:
                break
            total += len(piece)
            if total > max_bytes:
                raise Unsendable(f"it is larger than [edit] max_bytes ({max_bytes} bytes)")
            pieces.append(piece)
            digest.update(piece)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if signature(after) != signature(before) or after.st_size != total:
        return None  # still being written
    return b"".join(pieces), digest.hexdigest(), signature(after)


def _read_closing(dir_fd: int, name: str, max_bytes: int) -> Optional[Tuple[bytes, str, Signature]]:
    try:
        return read_save(dir_fd, name, max_bytes)
    finally:
        os.close(dir_fd)


class Save:
    """A new content of the edited file, the ``seq``-th change the editor made."""

    __slots__ = ("seq", "data")

    def __init__(self, seq: int, data: bytes) -> None:
        self.seq, self.data = seq, data


class Skipped:
    """A change that cannot go back to the server (``reason`` says why, for both users)."""

    __slots__ = ("seq", "reason")

    def __init__(self, seq: int, reason: str) -> None:
        self.seq, self.reason = seq, reason


class Closed:
    """The editor exited: the edit is over. ``note`` is advice for the user, or ""."""

    __slots__ = ("status", "note")

    def __init__(self, status: Optional[int], note: str) -> None:
        self.status, self.note = status, note


Change = Union[Save, Skipped, Closed]


class EditFile(ViewFile):
    """The received copy, in a directory of its own held by ``dir_fd`` (locked: a sweep of
    another daemon leaves it alone). It counts against max_open from READY until its editor
    exits."""

    def __init__(self, tree: Tree, name: str, claim: Claim, dir_fd: int) -> None:
        super().__init__(tree, name, claim)
        self.dir_fd: Optional[int] = dir_fd

    def remove(self) -> None:
        super().remove()
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None


class OpenEdit:
    """A file open in the editor: its changes, one at a time, until the editor exits."""

    def __init__(
        self,
        target: EditFile,
        process: "asyncio.subprocess.Process",
        program: str,
        max_bytes: int,
        received: Tuple[str, Signature],
        editors: "Editors",
    ) -> None:
        assert target.path is not None and target.dir_fd is not None
        self.name = target.name
        self.path = target.path
        self.directory = target.tree.root
        self.program = program
        self.process = process
        self.max_bytes = max_bytes
        self._dir_fd: Optional[int] = target.dir_fd
        self._editors = editors
        self._target = target
        self._exit = asyncio.ensure_future(process.wait())
        self._started = asyncio.get_running_loop().time()
        self._sha = received[0]
        self._seen: Optional[Signature] = received[1]  # the state last reported: not a change
        self._settling: Optional[Signature] = None
        self.seq = 0
        self.saves = 0

    def _look(self) -> Optional[Signature]:
        if self._dir_fd is None:
            return None
        try:
            return signature(os.stat(self.name, dir_fd=self._dir_fd, follow_symlinks=False))
        except OSError:  # missing for a moment (an editor renaming), or gone
            return None

    async def next_change(self, timeout: float) -> Optional[Change]:
        """The next change, or Closed once the editor has exited (a save it made just before
        comes first), or None after ``timeout`` seconds with nothing new."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            exited = self._exit.done()
            change = await self._change(final=exited)
            if change is not None:
                return change
            if exited:
                return self._closed(loop.time())
            left = deadline - loop.time()
            if left <= 0:
                return None
            try:
                await asyncio.wait_for(asyncio.shield(self._exit), min(POLL_SECONDS, left))
            except asyncio.TimeoutError:
                pass

    async def _change(self, final: bool) -> Optional[Change]:
        now = self._look()
        if now == self._seen:
            self._settling = None
            return None
        if not final and now != self._settling:  # seen once: wait for it to stay put
            self._settling = now
            return None
        self._settling = None
        if now is None:  # removed, and not put back: nothing to send
            self._seen = None
            return None
        assert self._dir_fd is not None
        loop = asyncio.get_running_loop()
        # A descriptor of the reader's own: end() may close ours while the thread still reads.
        dir_fd = os.dup(self._dir_fd)
        try:
            found = await loop.run_in_executor(None, _read_closing, dir_fd, self.name, self.max_bytes)
        except Unsendable as exc:
            self._seen = now
            self.seq += 1
            return Skipped(self.seq, f"{self.name} on your computer was not sent back: {exc}")
        if found is None:
            return None  # changed while being read: the next look settles it
        data, sha, seen = found
        self._seen = seen
        if sha == self._sha:
            return None  # saved without a change
        self._sha = sha
        self.seq += 1
        self.saves += 1
        return Save(self.seq, data)

    def _closed(self, now: float) -> Closed:
        status = self.process.returncode
        if status is not None and status < 0:
            note = f"the editor on your computer was ended by signal {-status}"
        elif status:
            note = f"the editor on your computer exited with status {status}"
        elif not self.saves and now - self._started < QUICK_EXIT:
            note = (
                "the editor on your computer returned at once: if it does not wait until the "
                "file is closed, set [edit] editor in rtun's config there to one that does "
                "(such as code --wait)"
            )
            log.warning(
                "edit of %s: %s exited at once; it may not wait for the file", self.name, self.program
            )
        else:
            note = ""
        return Closed(status, note)

    def end(self) -> bool:
        """The edit is over: the copy goes. True if the editor still runs (the copy is then gone
        under it); it stays counted until it exits, so a server that keeps opening and dropping
        edits cannot fill the desktop with editors."""
        self._dir_fd = None
        self._target.remove()
        if self._exit.done():
            self._editors.release(self._target)
            return False
        self._exit.add_done_callback(lambda _: self._editors.release(self._target))
        return True


class Editors:
    """The EDIT action; one per daemon, made on the first EDIT."""

    def __init__(
        self,
        command: Sequence[str],
        max_bytes: int,
        max_open: int,
        umask: int,
        min_free: int = 0,
        environ: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.configured = tuple(command)
        self.max_bytes = min(max_bytes, MAX_PAYLOAD)  # a save is one payload reply
        self.max_open = max(max_open, 1)
        self.umask = umask
        self.min_free = min_free
        self.environ = os.environ if environ is None else environ
        self.space: Optional[Space] = None
        self._open: Set[EditFile] = set()  # the edits that count against max_open
        self._swept = False

    @property
    def open_count(self) -> int:
        return len(self._open)

    def check(self, request: messages.Edit) -> Tuple[str, ...]:
        """Refusals that need no disk, before READY; the editor's argv."""
        if request.size > self.max_bytes:
            raise Rejected(
                messages.E_TOO_LARGE,
                f"{size_text(request.size)} is more than your computer edits "
                f"([edit] max_bytes = {self.max_bytes}; {advice.setting('[edit] max_bytes')} to allow more)",
            )
        if len(self._open) >= self.max_open:
            raise Rejected(
                messages.E_BUSY,
                f"{len(self._open)} edits are open on your computer "
                f"([edit] max_open): close one in the editor first",
            )
        command = editor_command(self.configured, self.environ)
        find(command, "[edit] editor", "files for editing")
        return command

    def begin(self, request: messages.Edit) -> EditFile:
        """A private directory and a place in it for the file being received."""
        name = edit_name(request.name)
        tmp = tempfile.gettempdir()
        if not self._swept:
            self._swept = True
            for path in remove_leftovers(tmp, DIR_PREFIX):
                log.info("removed an edited file left by an earlier daemon: %s", path)
        if self.space is None or self.space.directory != tmp:
            self.space = Space(tmp, self.min_free)
        claim = Claim(self.space, request.size)  # the temporary directory is often in RAM
        directory = None
        dir_fd = None
        try:
            directory, dir_fd = private_directory(DIR_PREFIX, tmp)
            target = EditFile(Tree(directory, self.umask), name, claim, dir_fd)
        except BaseException as exc:
            claim.close()
            if dir_fd is not None:
                os.close(dir_fd)
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
            if isinstance(exc, OSError):
                raise Rejected(
                    messages.E_CREATE, f"cannot make a temporary directory: {exc.strerror or exc}"
                ) from None
            raise
        self._open.add(target)
        return target

    async def start(self, target: EditFile, command: Sequence[str]) -> OpenEdit:
        """After the upload: start the editor on the copy (the caller removes the copy if this
        fails)."""
        assert target.path is not None
        target.close()  # the claim and the tree's descriptors: the file is complete
        assert target.dir_fd is not None
        try:
            found = await asyncio.get_running_loop().run_in_executor(
                None, _read_closing, os.dup(target.dir_fd), target.name, self.max_bytes
            )
        except Unsendable as exc:
            raise Rejected(messages.E_CREATE, f"cannot read the received file back: {exc}") from None
        if found is None:
            raise Rejected(messages.E_CREATE, "the received file vanished before the editor started")
        program = find(command, "[edit] editor", "files for editing")
        argv = (program,) + tuple(command[1:]) + (target.path,)
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # a signal to the daemon's terminal leaves it alone
            )
        except OSError as exc:
            raise Rejected(
                messages.E_OPEN, f"cannot start the editor {command[0]!r}: {exc.strerror or exc}"
            ) from None
        return OpenEdit(target, process, command[0], self.max_bytes, (found[1], found[2]), self)

    def abandon(self, target: EditFile) -> None:
        """The edit failed before its editor started: the copy goes, and its place."""
        target.remove()
        self.release(target)

    def release(self, target: EditFile) -> None:
        self._open.discard(target)
