"""Which image an image is, from its first bytes: the client names the type of a file it copies,
the daemon checks that a COPY's data is the image its type claims before a clipboard tool sees it.

No I/O: bytes in, a MIME type (one of ``messages.IMAGE_TYPES``) or None out.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs start-up time the client cannot spare
    from typing import Optional

SNIFF_BYTES = 16  # enough for every signature below


def sniff(head: bytes) -> Optional[str]:
    """The image type whose signature ``head`` (a file's first bytes) begins with, else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    # "BM", then the file size and two reserved zero words: "BM" alone starts much plain text.
    if head[:2] == b"BM" and len(head) >= 14 and head[6:10] == b"\0\0\0\0":
        return "image/bmp"
    return None


def is_image(data: bytes, mime: str) -> bool:
    """Whether ``data`` begins as an image of type ``mime`` does."""
    return sniff(data[:SNIFF_BYTES]) == mime
