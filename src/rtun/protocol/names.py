"""Turning a path the peer sent into components that can only name places below a directory.

Pure functions: storage then walks the components with directory file descriptors and
O_NOFOLLOW, so a symbolic link already on disk cannot redirect a write either.
"""

from __future__ import annotations

import re
from typing import List, Tuple

from rtun.protocol import messages, peertext
from rtun.protocol.limits import MAX_COMPONENT_BYTES, MAX_DEPTH, MAX_PATH_BYTES
from rtun.protocol.messages import Rejected

# The daemon's temporary names for files being received: peers may not use them.
PART_PREFIX = ".rtun-"
PART_SUFFIX = ".part"


# C0 and C1 controls, DEL, and the format characters that make text read as something it is not
# (bidirectional marks, embeddings, overrides and isolates; zero-width joiners and the BOM):
# refused in every name and link target, so none reaches the disk, a terminal or the log.
_MISLEADING = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def misleading(text: str) -> bool:
    """Whether ``text`` holds a control or bidirectional character."""
    return _MISLEADING.search(text) is not None


def is_part_name(name: str) -> bool:
    return name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)


def components(path: str) -> Tuple[str, ...]:
    """Split a relative path into safe components, or refuse it with a reason."""
    # Called once per entry of a transfer: the message text is only made for a refusal.
    if not path:
        raise Rejected(messages.E_BAD_PATH, "empty path")
    if "\x00" in path:
        raise Rejected(messages.E_BAD_PATH, f"path contains a NUL byte: {peertext.quoted(path)}")
    if misleading(path):
        raise Rejected(
            messages.E_BAD_PATH, f"path contains control or bidirectional characters: {peertext.quoted(path)}"
        )
    if path.startswith("/"):
        raise Rejected(messages.E_BAD_PATH, f"absolute paths are not accepted: {peertext.quoted(path)}")
    try:
        encoded_length = len(path.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates from a JSON "\ud800" escape
        raise Rejected(messages.E_BAD_PATH, f"path is not valid Unicode: {peertext.quoted(path)}") from None
    if encoded_length > MAX_PATH_BYTES:
        raise Rejected(messages.E_BAD_PATH, "path is too long")
    parts = tuple(path.split("/"))
    if len(parts) > MAX_DEPTH:
        raise Rejected(messages.E_BAD_PATH, "path is nested too deeply")
    may_be_long = encoded_length > MAX_COMPONENT_BYTES  # else no component can be
    for part in parts:
        if part in ("", ".", ".."):
            raise Rejected(
                messages.E_BAD_PATH, f"path has an empty, '.' or '..' component: {peertext.quoted(path)}"
            )
        if may_be_long and len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise Rejected(
                messages.E_BAD_PATH,
                f"a path component is longer than {MAX_COMPONENT_BYTES} bytes: {peertext.quoted(path)}",
            )
        if part.startswith(PART_PREFIX) and part.endswith(PART_SUFFIX):  # is_part_name
            raise Rejected(
                messages.E_BAD_PATH,
                f"names like {peertext.quoted(part)} are the daemon's own temporary files",
            )
    return parts


def check_link_target(target: str) -> None:
    """A link target is text the desktop shows: no controls, no bidirectional tricks, bounded."""
    if misleading(target):
        raise Rejected(
            messages.E_BAD_PATH,
            f"link target contains control or bidirectional characters: {peertext.quoted(target)}",
        )
    try:
        encoded = target.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected(messages.E_BAD_PATH, "link target is not valid Unicode") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise Rejected(messages.E_BAD_PATH, "link target is too long")


def join(base: Tuple[str, ...], path: str) -> Tuple[str, ...]:
    parts = base + components(path)
    if len(parts) > MAX_DEPTH:
        raise Rejected(messages.E_BAD_PATH, "path is nested too deeply")
    return parts


def link_stays_inside(link: Tuple[str, ...], target: str, root_depth: int) -> bool:
    """Whether a symlink at ``link`` pointing to ``target`` stays inside the transfer.

    The transfer's root is the first ``root_depth`` components of the link's path (the
    directory that was sent). The target must be relative, climb with ``..`` only at its start
    and no higher than the root, then name plain components. Text normalisation alone is not
    enough: in ``a/../../x`` the ``a`` may itself be a link, and ``..`` then leaves from where
    ``a`` points. With ``..`` only at the start, every link resolves inside the root by
    induction, whatever links the later components pass through.
    """
    if not target or target.startswith("/") or "\x00" in target or root_depth < 1:
        return False
    if len(link) <= root_depth:
        return False
    climbs = 0
    names: List[str] = []
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if names:
                return False
            climbs += 1
        else:
            names.append(part)
    return climbs <= len(link) - 1 - root_depth
