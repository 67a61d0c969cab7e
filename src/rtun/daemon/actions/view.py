"""VIEW: keep one received file in a private temporary directory and show it with the opener.

The checks of the name and content are in viewtypes.py. Here:

* the file is written with mode 0600 into ``<tmp>/rtun-view-<pid>-<random>/<random>/NAME``
  (directories 0700), never executable;
* the opener (``[view] opener``, else ``xdg-open`` or macOS ``open``) gets the path as one argv
  element: no shell, no interpolation. It is not waited for; its exit is reaped in the
  background and logged;
* viewed files are removed once older than ``[view] max_age``, and all of them when the daemon
  stops; a daemon that died leaves its directory to the next one's sweep.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import stat
import tempfile
import time
from typing import Optional, Sequence, Tuple

from rtun.daemon.actions.advice import in_config
from rtun.daemon.actions.files import Transfer
from rtun.daemon.actions.launch import find, launch
from rtun.daemon.actions.viewtypes import (
    HEAD_LEN,
    clean_name,
    default_opener,
    executable_content,
    extension,
    normalize_types,
    risky_type,
)
from rtun.daemon.storage.leftovers import private_directory, remove_leftovers
from rtun.daemon.storage.space import Claim, Space
from rtun.daemon.storage.tree import Tree
from rtun.protocol import messages
from rtun.protocol.events import FileStart
from rtun.protocol.messages import Rejected

log = logging.getLogger("rtun.daemon")

MIN_AGE = 30.0  # an opener gets at least this long to read the file, whatever max_age says
DIR_PREFIX = "rtun-view-"


class ViewFile(Transfer):
    """The one file of a VIEW, under its cleaned name in a directory of its own."""

    def __init__(self, tree: Tree, name: str, claim: Claim) -> None:
        super().__init__(tree, (), overwrite=False, claim=claim, default_mode=0o600)
        self.name = name
        self.path: Optional[str] = None

    def start_file(self, event: FileStart) -> None:
        super().start_file(FileStart((self.name,), None, None, event.size))

    def end_file(self) -> str:
        path = super().end_file()
        assert path is not None  # a VIEW's file has no mode: it is never held back
        self.path = path
        return path

    def remove(self) -> None:
        self.close()
        shutil.rmtree(self.tree.root, ignore_errors=True)


class Viewer:
    """The VIEW action; one instance per daemon, created on the first VIEW."""

    def __init__(
        self, opener: Sequence[str], allow_types: Sequence[str], max_age: float, umask: int, min_free: int = 0
    ) -> None:
        self.opener: Tuple[str, ...] = tuple(opener) or default_opener()
        self.allowed = normalize_types(allow_types)
        self.max_age = max(float(max_age), MIN_AGE)
        self.umask = umask
        self.min_free = min_free  # kept free in the temporary directory, as for sends
        self.space: Optional[Space] = None
        self.private_dir: Optional[str] = None
        self._private_fd: Optional[int] = None
        self._sweep_timer: Optional[asyncio.TimerHandle] = None

    def begin(self, request: messages.View) -> ViewFile:
        """Every check that does not need the data, before READY; then a place for the file."""
        name = clean_name(request.name)
        self.sweep()
        ext = risky_type(name, self.allowed)
        if ext is not None:
            raise Rejected(
                messages.E_REFUSED_TYPE,
                f"refusing to open {name}: {ext} files are run or installed by the desktop, "
                "not shown; to accept them anyway, " + in_config(f'add "{ext}" to [view] allow_types'),
            )
        self._opener_program()
        directory = self._private_dir()
        if self.space is None or self.space.directory != directory:
            self.space = Space(directory, self.min_free)
        claim = Claim(self.space, request.size)  # the temporary directory is often in RAM
        try:
            view_dir = tempfile.mkdtemp(prefix="", dir=directory)  # 0700, one per view
            return ViewFile(Tree(view_dir, self.umask), name, claim)
        except BaseException:
            claim.close()
            raise

    async def show(self, target: ViewFile) -> None:
        """After the upload: refuse a program, then start the opener."""
        assert target.path is not None
        try:
            self._check_content(target.path, target.name)
            await self._open(self._opener_program(), target.path)
        except BaseException:
            target.remove()
            raise
        target.close()
        log.info("viewing %s (%d bytes) with %s", target.path, target.bytes, self.opener[0])
        self._schedule_sweep()

    # ---- the steps ---------------------------------------------------------------------------

    def _opener_program(self) -> str:
        return find(self.opener, "[view] opener", "files")

    def _private_dir(self) -> str:
        """This daemon's directory for viewed files (made again if something removed it)."""
        if self.private_dir is not None:
            try:
                st = os.lstat(self.private_dir)
                if (
                    stat.S_ISDIR(st.st_mode)
                    and st.st_uid == os.getuid()
                    and stat.S_IMODE(st.st_mode) == 0o700
                ):
                    return self.private_dir
            except FileNotFoundError:
                pass
            log.warning("private view directory %s vanished or changed; making a new one", self.private_dir)
        else:
            for path in remove_leftovers(tempfile.gettempdir(), DIR_PREFIX):
                log.info("removed viewed files left by an earlier daemon: %s", path)
        self._release_private_dir()
        try:
            self.private_dir, self._private_fd = private_directory(DIR_PREFIX)
        except OSError as exc:
            raise Rejected(messages.E_CREATE, f"cannot make a temporary directory: {exc.strerror}") from None
        return self.private_dir

    def _release_private_dir(self) -> None:
        if self._private_fd is not None:
            os.close(self._private_fd)
            self._private_fd = None

    def _check_content(self, path: str, name: str) -> None:
        ext = extension(name)
        if ext and ext in self.allowed:
            return  # the user accepts this type, programs included
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(path, flags)
        try:
            head = os.read(fd, HEAD_LEN)
        finally:
            os.close(fd)
        kind = executable_content(head)
        if kind is not None:
            raise Rejected(
                messages.E_REFUSED_TYPE,
                f"refusing to open {name}: its content is {kind}, which the desktop might run",
            )

    async def _open(self, program: str, path: str) -> None:
        # Not waited for: the client gets its answer without waiting for the viewer to close.
        await launch((program,) + tuple(self.opener[1:]), path, "[view] opener", "files", path)

    # ---- clean-up ----------------------------------------------------------------------------

    def sweep(self, now: Optional[float] = None) -> None:
        """Remove viewed files older than max_age."""
        if self.private_dir is None:
            return
        limit = (time.time() if now is None else now) - self.max_age
        try:
            entries = list(os.scandir(self.private_dir))
        except OSError:
            return
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_mtime > limit:
                    continue
            except OSError:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
            log.info("removed expired viewed file %s", entry.path)

    def _schedule_sweep(self) -> None:
        """Keep a timer while viewed files exist, so they expire even if no VIEW follows."""
        if self._sweep_timer is not None:
            return
        loop = asyncio.get_running_loop()
        self._sweep_timer = loop.call_later(min(self.max_age, 3600.0) + 1, self._timed_sweep)

    def _timed_sweep(self) -> None:
        self._sweep_timer = None
        self.sweep()
        if self.private_dir is not None and os.path.isdir(self.private_dir) and os.listdir(self.private_dir):
            self._schedule_sweep()

    def close(self) -> None:
        """At shutdown: every viewed file goes."""
        if self._sweep_timer is not None:
            self._sweep_timer.cancel()
            self._sweep_timer = None
        if self.private_dir is not None:
            shutil.rmtree(self.private_dir, ignore_errors=True)
            log.info("removed viewed files in %s", self.private_dir)
            self.private_dir = None
        self._release_private_dir()
