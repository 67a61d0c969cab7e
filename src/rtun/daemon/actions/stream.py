"""The rtun/2 PUT stream: directories, files and links of a whole transfer in one round trip."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from typing import List, Tuple

from rtun import wire
from rtun.daemon import safepath
from rtun.daemon.actions import Refused
from rtun.daemon.actions.files import (
    READ_SIZE,
    PartFile,
    Tree,
    part_name,
    place_no_replace,
    refusal_for,
)
from rtun.daemon.peer import Peer

MAX_ENTRIES = 10_000_000


@dataclass
class StreamResult:
    saved: List[str] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    bytes: int = 0
    # Directory modes and mtimes are applied last: writing inside a directory changes its mtime.
    directories: List[Tuple[Tuple[str, ...], int, float]] = field(default_factory=list)


async def receive_entries(
    peer: Peer, tree: Tree, base: Tuple[str, ...], overwrite: bool
) -> StreamResult:
    result = StreamResult()
    for _ in range(MAX_ENTRIES):
        entry = wire.parse_entry(await peer.required_line())
        if isinstance(entry, wire.EndEntry):
            _apply_directory_metadata(tree, result.directories)
            return result
        parts = safepath.join(base, entry.path)
        if isinstance(entry, wire.DirEntry):
            tree.directory(parts)
            result.directories.append((parts, entry.mode, entry.mtime))
        elif isinstance(entry, wire.FileEntry):
            path, size = await _receive_file(peer, tree, parts, entry, overwrite)
            result.saved.append(path)
            result.bytes += size
        elif isinstance(entry, wire.LinkEntry):
            _make_link(tree, parts, entry.target, len(base) + 1, overwrite, result)
    raise Refused(wire.E_BAD_REQUEST, "too many entries in one transfer")


async def _receive_file(
    peer: Peer, tree: Tree, parts: Tuple[str, ...], entry: wire.FileEntry, overwrite: bool
) -> Tuple[str, int]:
    """Receive one file's chunks; returns its final path and size."""
    part = PartFile(tree.directory(parts[:-1]), "/".join(parts), entry.mode)
    try:
        while True:
            remaining = wire.parse_chunk_header(await peer.required_line())
            if remaining == 0:
                break
            if entry.size is not None and part.size + remaining > entry.size:
                raise Refused(wire.E_BAD_SIZE, f"{entry.path}: more data than the declared size")
            while remaining:
                data = await peer.read(min(remaining, READ_SIZE))
                part.write(data)
                remaining -= len(data)
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


def _apply_directory_metadata(tree: Tree, directories: List[Tuple[Tuple[str, ...], int, float]]) -> None:
    for parts, mode, mtime in sorted(directories, key=lambda d: len(d[0]), reverse=True):
        fd = tree.directory(parts, create=False)
        try:
            os.utime(fd, (mtime, mtime))
            os.fchmod(fd, stat.S_IMODE(mode) & 0o777)
        except OSError as exc:
            raise refusal_for(exc, "/".join(parts)) from None
