"""Receiving files: v1 SEND (one file) and rtun/2 PUT (a whole tree in one stream).

Every file is written under a temporary name in its final directory, its SHA-256 checked, its
mode and mtime applied, and only then given its final name; a file that exists already is kept
and the new one gets a free name unless the client asked to overwrite. All paths are opened
relative to directory descriptors with O_NOFOLLOW, so nothing is written outside the save
directory, even through a symbolic link that is already on disk.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
from typing import Dict, List, Optional, Set, Tuple

from rtun import wire
from rtun.daemon import safepath
from rtun.daemon.actions import Refused, pid_alive
from rtun.daemon.config import Config
from rtun.daemon.peer import Peer

log = logging.getLogger("rtun.daemon")

READ_SIZE = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_UMASK = os.umask(0o022)  # read once, as the daemon starts: os.umask can only be read by setting it
os.umask(_UMASK)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def refusal_for(exc: OSError, what: str) -> Refused:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Refused(wire.E_NO_SPACE, f"no space left for {what}")
    if exc.errno == errno.ELOOP:
        return Refused(wire.E_BAD_PATH, f"{what}: refusing to write through a symbolic link")
    if exc.errno == errno.ENOTDIR:
        return Refused(wire.E_BAD_PATH, f"{what}: a parent is not a directory")
    return Refused(wire.E_CREATE, f"{what}: {exc.strerror or exc}")


class Tree:
    """Directory descriptors below the save directory, opened without following links.

    Only the descriptors along the most recent path stay open (a tree of thousands of
    directories must not run the daemon out of descriptors), so a descriptor returned by
    ``directory`` is valid until the next call.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        self._fds: Dict[Tuple[str, ...], int] = {(): os.open(root, _DIR_FLAGS)}
        self.created: Set[Tuple[str, ...]] = set()  # directories this transfer made

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def directory(self, parts: Tuple[str, ...], create: bool = True) -> int:
        """The descriptor of the directory ``parts``, made if missing."""
        fd = self._fds.get(parts)
        if fd is not None:
            return fd
        for cached in [key for key in self._fds if key and key != parts[:len(key)]]:
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
                    self.created.add(parts)
                except FileExistsError:
                    pass
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno == errno.ENOTDIR and _is_link(name, parent):
                exc.errno = errno.ELOOP  # O_DIRECTORY reports a link as "not a directory"
            raise refusal_for(exc, "/".join(parts)) from None
        self._fds[parts] = fd
        return fd

    def path(self, parts: Tuple[str, ...]) -> str:
        return os.path.join(self.root, *parts)


def check_space(directory: str, needed: int, reserve: int = 0) -> None:
    """Refuse, before any byte is written, a transfer that would leave less than ``reserve``."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError as exc:
        raise Refused(wire.E_STAT, f"cannot check free space: {exc.strerror}") from None
    if needed + reserve > free:
        raise Refused(
            wire.E_NO_SPACE,
            f"not enough space in {directory}: {needed} bytes needed, "
            f"{max(free - reserve, 0)} available",
        )


def _lstat(name: str, dir_fd: int) -> Optional[os.stat_result]:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _lexists(name: str, dir_fd: int) -> bool:
    return _lstat(name, dir_fd) is not None


def _is_replaceable(name: str, dir_fd: int) -> bool:
    st = _lstat(name, dir_fd)
    return st is not None and not stat.S_ISDIR(st.st_mode)


def _is_link(name: str, dir_fd: int) -> bool:
    st = _lstat(name, dir_fd)
    return st is not None and stat.S_ISLNK(st.st_mode)


def part_name() -> str:
    """A temporary name that says which daemon process wrote it (see sweep_partial_files)."""
    return f"{safepath.PART_PREFIX}{os.getpid()}-{os.urandom(6).hex()}{safepath.PART_SUFFIX}"


class PartFile:
    """A file being received: a temporary name in its final directory until ``place``."""

    def __init__(self, dir_fd: int, what: str, mode: int) -> None:
        self.dir_fd = dir_fd
        self.what = what
        # Created with its final permissions (setuid, setgid and sticky dropped); finish()
        # restores any bit the umask took away.
        self.mode = stat.S_IMODE(mode) & 0o777
        self.name = part_name()
        try:
            self.fd: Optional[int] = os.open(self.name, _NEW_FILE_FLAGS, self.mode, dir_fd=dir_fd)
        except OSError as exc:
            raise refusal_for(exc, what) from None
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.hash.update(data)
        self.size += len(data)
        view = memoryview(data)
        try:
            while view:
                written = os.write(self.fd, view)  # type: ignore[arg-type]
                view = view[written:]
        except OSError as exc:
            raise refusal_for(exc, self.what) from None

    async def receive(self, peer: Peer, length: int) -> None:
        """Write the next ``length`` bytes the peer sends."""
        while length:
            data = await peer.read(min(length, READ_SIZE))
            self.write(data)
            length -= len(data)

    def verify(self, expected_size: Optional[int], expected_sha: str) -> None:
        if expected_size is not None and self.size != expected_size:
            raise Refused(wire.E_SHORT, f"expected {expected_size} bytes, got {self.size} bytes")
        actual = self.hash.hexdigest()
        if actual != expected_sha:
            raise Refused(wire.E_CHECKSUM, f"expected {expected_sha}, got {actual}")

    def finish(self, mtime: Optional[float]) -> None:
        """Apply the mode the umask narrowed, and the mtime; then close."""
        assert self.fd is not None
        try:
            if self.mode & _UMASK:
                os.fchmod(self.fd, self.mode)
            if mtime is not None:
                os.utime(self.fd, (mtime, mtime))
            os.close(self.fd)
        except OSError as exc:
            raise refusal_for(exc, self.what) from None
        finally:
            self.fd = None

    def place(self, name: str, overwrite: bool) -> str:
        """Give the file its final name (or a free one); returns the name used."""
        try:
            return place_no_replace(self.dir_fd, self.name, name, overwrite)
        except OSError as exc:
            raise refusal_for(exc, self.what) from None

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.unlink(self.name, dir_fd=self.dir_fd)
        except FileNotFoundError:
            pass


def place_no_replace(dir_fd: int, temporary: str, name: str, overwrite: bool) -> str:
    """Rename ``temporary`` to ``name``, or to the first free ``name (N)`` unless ``overwrite``
    allows replacing a file there (a directory is never replaced). Returns the name used."""
    for attempt in range(10000):
        candidate = safepath.free_name(name, attempt)
        if overwrite and _is_replaceable(candidate, dir_fd):
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
            if _lexists(candidate, dir_fd):
                continue
            os.rename(temporary, candidate, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return candidate
        os.unlink(temporary, dir_fd=dir_fd)
        return candidate
    raise OSError(errno.EEXIST, "no free name")


class Uploads:
    """The SEND and PUT actions, confined to the configured save directory."""

    def __init__(self, config: Config) -> None:
        self.save_dir = os.path.abspath(config.save_dir)
        self.min_free = config.min_free_bytes

    def check_space(self, needed: int) -> None:
        check_space(self.save_dir, needed, self.min_free)

    async def receive_file(self, request: wire.Send, peer: Peer) -> bytes:
        """v1 SEND: READY, ``size`` raw bytes, the SHA-256 line; the final path is logged."""
        parts = safepath.components(request.path)
        self.check_space(request.size)
        tree = Tree(self.save_dir)
        try:
            name = await receive_v1_upload(peer, tree, parts, request.size, overwrite=False)
        finally:
            tree.close()
        log.info("received %s (%d bytes)", name, request.size)
        return wire.ok()

    async def receive_stream(self, request: wire.Put, peer: Peer) -> bytes:
        from rtun.daemon.actions.stream import receive_entries

        base = safepath.components(request.dest) if request.dest else ()
        self.check_space(request.total_bytes)
        tree = Tree(self.save_dir)
        try:
            await peer.reply(wire.READY)
            result = await receive_entries(peer, tree, base, request.overwrite, self.check_space)
        finally:
            tree.close()
        log.info(
            "received %d files (%d bytes) into %s%s", len(result.saved), result.bytes,
            tree.path(base), f", skipped {len(result.skipped)}" if result.skipped else "",
        )
        return wire.ok_data({"saved": result.saved, "skipped": result.skipped})


async def receive_v1_upload(
    peer: Peer, tree: Tree, parts: Tuple[str, ...], size: int, overwrite: bool, mode: int = 0o644
) -> str:
    """The v1 upload exchange (also VIEW's): returns the final local path."""
    dir_fd = tree.directory(parts[:-1])
    part = PartFile(dir_fd, "/".join(parts), mode)
    try:
        await peer.reply(wire.READY)
        await part.receive(peer, size)
        part.verify(size, wire.parse_checksum(await peer.required_line()))
        part.finish(None)
        final = part.place(parts[-1], overwrite)
    except BaseException:
        part.discard()
        raise
    return tree.path(parts[:-1] + (final,))


def sweep_partial_files(root: str) -> List[str]:
    """Remove temporary files that a killed daemon left behind; returns what was removed."""
    removed = []
    for directory, dirs, files in os.walk(root):  # os.walk does not follow links by default
        for name in files:
            if not (name.startswith(safepath.PART_PREFIX) and name.endswith(safepath.PART_SUFFIX)):
                continue
            owner = name[len(safepath.PART_PREFIX):].split("-", 1)[0]
            if owner.isdigit() and (int(owner) == os.getpid() or pid_alive(int(owner))):
                continue  # this daemon's own upload, or another live daemon's
            try:
                os.unlink(os.path.join(directory, name))
                removed.append(os.path.join(directory, name))
            except OSError:
                pass
    return removed
