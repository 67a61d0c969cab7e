"""Writing below one directory: descriptors opened with O_NOFOLLOW, files that get their final
name only when complete (until then a temporary name, or on Linux none at all), and never
replacing what is there unless asked.

Every path is opened relative to a directory descriptor, so nothing is written outside the root,
even through a symbolic link that is already on disk. Storage failures become the protocol's one
rejection type, with the reason the client sees.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Dict, Iterator, Optional, Tuple, Union

from rtun.daemon.storage.direct import DirectWrites, on_disk
from rtun.daemon.storage.leftovers import hold
from rtun.daemon.storage.writing import Workers, write_all
from rtun.protocol import messages
from rtun.protocol.messages import Rejected
from rtun.protocol.names import PART_PREFIX, PART_SUFFIX

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# Linux: a file with no name at all until it is linked in, which a killed daemon cannot leave
# behind. It saves a small file the temporary name's two directory updates and its lock.
UNNAMED_FLAGS = getattr(os, "O_TMPFILE", 0) | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0)
# What open(O_TMPFILE) says where the file system (or an old kernel) has no unnamed files.
NO_UNNAMED = (errno.EOPNOTSUPP, errno.ENOTSUP, errno.EISDIR, errno.EINVAL)


def current_umask() -> int:
    """The process umask (it can only be read by setting it). Read it before any other thread
    runs; a detached daemon keeps the user's."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def refusal_for(exc: OSError, what: str) -> Rejected:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Rejected(messages.E_NO_SPACE, f"no space left for {what}")
    if exc.errno == errno.ELOOP:
        return Rejected(messages.E_BAD_PATH, f"{what}: refusing to write through a symbolic link")
    if exc.errno == errno.ENOTDIR:
        return Rejected(messages.E_BAD_PATH, f"{what}: a parent is not a directory")
    return Rejected(messages.E_CREATE, f"{what}: {exc.strerror or exc}")


def _lstat(name: str, dir_fd: int) -> Optional[os.stat_result]:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


_pid_prefix = ""


def _forget_pid() -> None:
    global _pid_prefix
    _pid_prefix = ""


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pid)  # a daemon that detaches forks after import


def part_name() -> str:
    """A temporary name no peer may use (names.is_part_name); the PID says who wrote it."""
    global _pid_prefix
    if not _pid_prefix:  # one getpid() per process, not one per file
        _pid_prefix = f"{PART_PREFIX}{os.getpid()}-"
    return f"{_pid_prefix}{os.urandom(6).hex()}{PART_SUFFIX}"


def free_name(name: str, attempt: int) -> str:
    """The ``attempt``-th alternative to an existing name: ``report (1).pdf``, ``report (2).pdf``.

    A leading dot is part of the stem (``.bashrc (1)``), and only the last suffix moves
    (``data.tar (1).gz``), as browsers name repeated downloads.
    """
    if attempt == 0:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not stem or not dot:
        return f"{name} ({attempt})"
    return f"{stem} ({attempt}).{suffix}"


def _candidates(name: str) -> Iterator[str]:
    """``name``, then ``name (1)``, ``name (2)``...: the names a file may be placed under."""
    for attempt in range(10000):
        # Counting up makes a thousand files of one name cost a million link() calls on the
        # daemon's loop: past the first few, numbers are drawn at random.
        yield free_name(name, attempt if attempt < 16 else 16 + int.from_bytes(os.urandom(4), "big"))
    raise OSError(errno.EEXIST, "no free name")


# How a file is placed where its name is taken (the ``overwrite`` of the placing functions):
KEEP = 0  # beside it, as ``name (N)``
OVERWRITE = 1  # --overwrite: over a file or a link, never a directory
UPDATE = 2  # --update: over a regular file only; beside a directory, link or anything else


def _replaceable(candidate: str, dir_fd: int, overwrite: int) -> bool:
    """A file is there that ``overwrite`` (OVERWRITE or UPDATE) may replace."""
    st = _lstat(candidate, dir_fd)
    if st is None:
        return False
    return stat.S_ISREG(st.st_mode) if overwrite == UPDATE else not stat.S_ISDIR(st.st_mode)


def place_no_replace(dir_fd: int, temporary: str, name: str, overwrite: int) -> str:
    """Rename ``temporary`` to ``name``, or to the first free ``name (N)`` unless ``overwrite``
    (OVERWRITE, UPDATE) allows replacing a file there (a directory is never replaced). Returns
    the name used."""
    for candidate in _candidates(name):
        if overwrite and _replaceable(candidate, dir_fd, overwrite):
            os.rename(temporary, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return candidate
        try:
            # link() fails if the name exists, even if it appeared a moment ago: unlike
            # rename(), it never replaces anything.
            os.link(temporary, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # A filesystem without hard links: check, then rename.
            if _lstat(candidate, dir_fd) is not None:
                continue
            os.rename(temporary, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return candidate
        os.unlink(temporary, dir_fd=dir_fd)
        return candidate
    raise AssertionError("unreachable: _candidates raises when it runs out")


def place_unnamed(dir_fd: int, fd: int, name: str, overwrite: int) -> str:
    """Link the unnamed file open as ``fd`` into ``dir_fd`` as place_no_replace places a
    temporary one: ``name`` or the first free ``name (N)``, replacing only a file and only with
    ``overwrite``. Returns the name used."""
    source = f"/proc/self/fd/{fd}"  # linkat(AT_SYMLINK_FOLLOW) of this names the open file
    if not overwrite:
        try:
            os.link(source, name, dst_dir_fd=dir_fd, follow_symlinks=True)  # the usual case: free
            return name
        except FileExistsError:
            pass
    for candidate in _candidates(name):
        if overwrite and _replaceable(candidate, dir_fd, overwrite):
            temporary = part_name()  # rename() replaces; it needs a name to move
            os.link(source, temporary, dst_dir_fd=dir_fd, follow_symlinks=True)
            try:
                os.rename(temporary, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError:
                os.unlink(temporary, dir_fd=dir_fd)
                raise
            return candidate
        try:
            os.link(source, candidate, dst_dir_fd=dir_fd, follow_symlinks=True)  # never replaces
        except FileExistsError:
            continue
        return candidate
    raise AssertionError("unreachable: _candidates raises when it runs out")


class Tree:
    """Directory descriptors below ``root``, opened without following links.

    Only the descriptors along the most recent path stay open (a tree of thousands of
    directories must not run the daemon out of descriptors), so a descriptor returned by
    ``directory`` is valid until the next call. ``umask`` is the local user's, read at the
    daemon's start: it narrows every mode a sender asks for, so nothing arrives group- or
    world-writable unless the user's own files would be. ``workers`` (the daemon's helper
    threads) write large files past the page cache and small files of a tree; without them,
    everything is written on the caller's thread.
    """

    def __init__(self, root: str, umask: int, workers: Optional[Workers] = None) -> None:
        self.root = root
        self.umask = umask
        self.workers = workers
        os.makedirs(root, exist_ok=True)
        self._fds: Dict[Tuple[str, ...], int] = {(): os.open(root, _DIR_FLAGS)}
        # The directory the last call to ``directory`` made, if it made the one asked for (a set
        # of every one made would grow with what a peer sends).
        self.made: Optional[Tuple[str, ...]] = None
        # Whether small files may be received unnamed here: until the file system says no.
        self.unnamed = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
        self.on_disk = workers is not None and on_disk(root)  # large files past the page cache (direct.py)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def directory(self, parts: Tuple[str, ...], create: bool = True) -> int:
        """The descriptor of the directory ``parts``, made if missing."""
        self.made = None
        fd = self._fds.get(parts)
        if fd is not None:
            return fd
        for cached in [key for key in self._fds if key and key != parts[: len(key)]]:
            os.close(self._fds.pop(cached))
        return self._open(parts, create)

    def _open(self, parts: Tuple[str, ...], create: bool) -> int:
        fd = self._fds.get(parts)
        if fd is not None:
            return fd
        parent = self._open(parts[:-1], create)
        name = parts[-1]
        try:
            if create:
                try:
                    os.mkdir(name, 0o777, dir_fd=parent)  # the umask applies
                    self.made = parts
                except FileExistsError:
                    pass
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                st = _lstat(name, parent)
                if st is not None and stat.S_ISLNK(st.st_mode):
                    exc.errno = errno.ELOOP  # O_DIRECTORY reports a link as "not a directory"
            raise refusal_for(exc, "/".join(parts)) from None
        self._fds[parts] = fd
        return fd

    def path(self, parts: Tuple[str, ...]) -> str:
        """``root/parts...`` (os.path.join's result, cheaper: it is made for every file saved)."""
        if not parts:
            return self.root
        return f"{self.root}{'' if self.root.endswith('/') else '/'}{'/'.join(parts)}"

    def new_file(
        self, parts: Tuple[str, ...], mode: int, unnamed: bool = False, direct: bool = False
    ) -> "Union[PartFile, UnnamedFile]":
        """A file to receive: under a temporary name, or with no name at all until it is placed
        if ``unnamed`` is asked for and the system allows it (Linux); ``direct`` (for large
        files) writes it past the page cache where the system allows."""
        dir_fd = self.directory(parts[:-1])
        if unnamed and self.unnamed:
            try:
                return UnnamedFile(dir_fd, "/".join(parts), mode, self.umask)
            except NoUnnamed:
                self.unnamed = False
        return PartFile(
            dir_fd, "/".join(parts), mode, self.umask, self.workers if direct and self.on_disk else None
        )

    def existing(self, parts: Tuple[str, ...]) -> Optional[os.stat_result]:
        """What is at ``parts`` now (lstat: a link is itself), found without following any link
        (directory descriptors opened O_NOFOLLOW from the root); None if nothing is, or its
        directory is not there."""
        try:
            dir_fd = self.directory(parts[:-1], create=False)
        except Rejected:
            return None
        try:
            return _lstat(parts[-1], dir_fd)
        except OSError:
            return None

    def link_target(self, parts: Tuple[str, ...]) -> Optional[str]:
        """The target of the link at ``parts`` (as ``existing`` finds it), else None."""
        try:
            return os.readlink(parts[-1], dir_fd=self.directory(parts[:-1], create=False))
        except (OSError, Rejected):
            return None

    def link(self, parts: Tuple[str, ...], target: str, overwrite: int) -> str:
        """A symbolic link, placed like a file; returns its final path."""
        dir_fd = self.directory(parts[:-1])
        temporary = part_name()
        try:
            os.symlink(target, temporary, dir_fd=dir_fd)
            final = place_no_replace(dir_fd, temporary, parts[-1], overwrite)
        except OSError as exc:
            try:
                os.unlink(temporary, dir_fd=dir_fd)
            except OSError:
                pass
            raise refusal_for(exc, "/".join(parts)) from None
        return self.path(parts[:-1] + (final,))

    def set_metadata(self, parts: Tuple[str, ...], mode: int, mtime: float) -> None:
        """A directory's mode (less setuid, setgid, sticky and what the umask takes) and mtime."""
        fd = self.directory(parts, create=False)
        try:
            os.utime(fd, (mtime, mtime))
            os.fchmod(fd, stat.S_IMODE(mode) & 0o777 & ~self.umask)
        except OSError as exc:
            raise refusal_for(exc, "/".join(parts)) from None


class _Received:
    """What a file being received does until it is placed: written, given its mtime, placed
    under its final name (or a free one) and closed, or discarded."""

    def __init__(self, dir_fd: int, what: str, mode: int, umask: int) -> None:
        self.dir_fd = dir_fd
        self.what = what
        # Created with its final permissions: setuid, setgid and sticky dropped, the umask
        # applied (by open itself).
        self.mode = stat.S_IMODE(mode) & 0o777 & ~umask
        self.fd: Optional[int] = None
        self.size = 0

    def write(self, data: memoryview) -> None:
        assert self.fd is not None
        self.size += len(data)
        try:
            write_all(self.fd, data)
        except OSError as exc:
            raise refusal_for(exc, self.what) from None

    def finish(self, mtime: Optional[float], drop_execute: bool = False) -> None:
        """Apply the mtime (and take away the execute bits if asked)."""
        assert self.fd is not None
        try:
            if drop_execute and self.mode & 0o111:
                self.mode &= ~0o111
                os.fchmod(self.fd, self.mode)
            if mtime is not None:
                os.utime(self.fd, (mtime, mtime))
        except OSError as exc:
            raise refusal_for(exc, self.what) from None

    def place(self, name: str, overwrite: int) -> str:
        """Give the file its final name (or a free one), then close it; returns the name used."""
        assert self.fd is not None
        try:
            return self._place(name, overwrite)
        except OSError as exc:
            raise refusal_for(exc, self.what) from None
        finally:
            os.close(self.fd)
            self.fd = None

    def _place(self, name: str, overwrite: int) -> str:
        raise NotImplementedError

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class PartFile(_Received):
    """A file being received under a temporary name in its final directory, until ``place``;
    with ``direct`` (helper threads), written past the page cache where the system allows
    (storage/direct.py)."""

    def __init__(
        self, dir_fd: int, what: str, mode: int, umask: int, direct: Optional[Workers] = None
    ) -> None:
        super().__init__(dir_fd, what, mode, umask)
        self.name = part_name()
        try:
            self.fd = os.open(self.name, _NEW_FILE_FLAGS, self.mode, dir_fd=dir_fd)
        except OSError as exc:
            raise refusal_for(exc, what) from None
        try:
            hold(self.fd)  # until closed: the leftover sweep of another daemon leaves it alone
        except OSError as exc:  # a file system without locks
            os.close(self.fd)
            os.unlink(self.name, dir_fd=dir_fd)
            raise refusal_for(exc, what) from None
        self._direct = DirectWrites.open(self.fd, direct) if direct is not None else None

    def write(self, data: memoryview) -> None:
        if self._direct is None:
            return super().write(data)
        self.size += len(data)
        try:
            self._direct.write(data)
        except OSError as exc:
            raise refusal_for(exc, self.what) from None

    def _written(self) -> None:
        """Whatever direct writes still hold is on its way to the disk."""
        direct, self._direct = self._direct, None
        if direct is not None:
            try:
                direct.close()
            except OSError as exc:
                raise refusal_for(exc, self.what) from None

    def finish(self, mtime: Optional[float], drop_execute: bool = False) -> None:
        self._written()  # before the mtime: a later write would move it
        super().finish(mtime, drop_execute)

    def _place(self, name: str, overwrite: int) -> str:
        self._written()
        # The lock is held until the temporary name is gone.
        return place_no_replace(self.dir_fd, self.name, name, overwrite)

    def discard(self) -> None:
        if self._direct is not None:
            self._direct.abandon()  # no helper may still write when the descriptor closes
            self._direct = None
        super().discard()
        try:
            os.unlink(self.name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            pass


class NoUnnamed(Exception):
    """This file system (or kernel) cannot make unnamed files."""


class UnnamedFile(_Received):
    """A file being received with no name at all (O_TMPFILE) until ``place`` links it in: a
    killed daemon leaves nothing behind, so there is nothing to lock against the sweep."""

    def __init__(self, dir_fd: int, what: str, mode: int, umask: int) -> None:
        super().__init__(dir_fd, what, mode, umask)
        try:
            self.fd = os.open(".", UNNAMED_FLAGS, self.mode, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in NO_UNNAMED:
                raise NoUnnamed() from None
            raise refusal_for(exc, what) from None

    def _place(self, name: str, overwrite: int) -> str:
        assert self.fd is not None
        return place_unnamed(self.dir_fd, self.fd, name, overwrite)
