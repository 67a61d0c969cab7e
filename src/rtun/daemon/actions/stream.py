"""The rtun/2 PUT stream: directories, files and links of a whole transfer in one round trip."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Tuple

from rtun import wire
from rtun.daemon import safepath
from rtun.daemon.actions import Refused
from rtun.daemon.actions.files import (
    PartFile,
    Tree,
    part_name,
    place_no_replace,
    refusal_for,
)
from rtun.daemon.peer import Peer

MAX_ENTRIES = 1_000_000  # bounds the daemon's memory for one transfer (its reply lists each file)
SPACE_CHECK_BYTES = 64 * 1024 * 1024  # files this large, or unsized ones this often, re-check


@dataclass
class StreamResult:
    saved: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    bytes: int = 0
    # Modes and mtimes of the directories this transfer made, applied last (writing inside a
    # directory changes its mtime). Directories that existed before are left as they were.
    directories: Dict[Tuple[str, ...], Tuple[int, float]] = field(default_factory=dict)


async def receive_entries(
    peer: Peer, tree: Tree, base: Tuple[str, ...], overwrite: bool,
    check_space: Callable[[int], None],
) -> StreamResult:
    """Receive entries until the end entry. ``check_space(n)`` refuses when n more bytes would
    not fit: the header's totals were checked already, but a large or unsized file is checked
    again, as nothing obliges a client to declare honest totals."""
    result = StreamResult()
    for _ in range(MAX_ENTRIES):
        entry = wire.parse_entry(await peer.required_line())
        if isinstance(entry, wire.EndEntry):
            _apply_directory_metadata(tree, result.directories)
            return result
        parts = safepath.join(base, entry.path)
        if isinstance(entry, wire.DirEntry):
            tree.directory(parts)
            if parts in tree.created:
                result.directories[parts] = (entry.mode, entry.mtime)
        elif isinstance(entry, wire.FileEntry):
            path, size = await _receive_file(peer, tree, parts, entry, overwrite, check_space)
            result.saved.append(path)
            result.bytes += size
        elif isinstance(entry, wire.LinkEntry):
            _make_link(tree, parts, entry.target, len(base) + 1, overwrite, result)
    raise Refused(wire.E_BAD_REQUEST, "too many entries in one transfer")


async def _receive_file(
    peer: Peer, tree: Tree, parts: Tuple[str, ...], entry: wire.FileEntry, overwrite: bool,
    check_space: Callable[[int], None],
) -> Tuple[str, int]:
    """Receive one file's chunks; returns its final path and size."""
    if entry.size is not None and entry.size >= SPACE_CHECK_BYTES:
        check_space(entry.size)
    part = PartFile(tree.directory(parts[:-1]), "/".join(parts), entry.mode)
    checked = 0
    try:
        while True:
            remaining = wire.parse_chunk_header(await peer.required_line())
            if remaining == 0:
                break
            if entry.size is not None and part.size + remaining > entry.size:
                raise Refused(wire.E_BAD_SIZE, f"{entry.path}: more data than the declared size")
            await part.receive(peer, remaining)
            if entry.size is None and part.size - checked >= SPACE_CHECK_BYTES:
                check_space(SPACE_CHECK_BYTES)
                checked = part.size
        part.verify(entry.size, wire.parse_checksum(await peer.required_line()))
        part.finish(entry.mtime)
        final = part.place(parts[-1], overwrite)
    except BaseException:
        part.discard()
        raise
    return tree.path(parts[:-1] + (final,)), part.size


def _make_link(
    tree: Tree, parts: Tuple[str, ...], target: str, root_depth: int, overwrite: bool,
    result: StreamResult,
) -> None:
    if not safepath.link_stays_inside(parts, target, root_depth):
        result.skipped.append(f"{'/'.join(parts)}: symbolic link points outside the transfer")
        return
    dir_fd = tree.directory(parts[:-1])
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
    result.saved.append(tree.path(parts[:-1] + (final,)))


def _apply_directory_metadata(tree: Tree, directories: Dict[Tuple[str, ...], Tuple[int, float]]) -> None:
    for parts, (mode, mtime) in sorted(directories.items(), key=lambda d: len(d[0]), reverse=True):
        fd = tree.directory(parts, create=False)
        try:
            os.utime(fd, (mtime, mtime))
            os.fchmod(fd, stat.S_IMODE(mode) & 0o777)
        except OSError as exc:
            raise refusal_for(exc, "/".join(parts)) from None
