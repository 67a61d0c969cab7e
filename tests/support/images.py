"""Real image files made with the standard library (no Pillow): a valid PNG of a few pixels,
and the first bytes of the other types rtun tells apart."""

from __future__ import annotations

import struct
import zlib


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png(width: int = 3, height: int = 2, seed: int = 0) -> bytes:
    """A valid RGB PNG, its pixels a function of ``seed`` (so two images differ)."""
    rows = b"".join(
        b"\x00" + bytes((seed + 37 * y + 11 * x) % 256 for x in range(width * 3)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows))
        + _chunk(b"IEND", b"")
    )


GIF = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01"
WEBP_HEAD = b"RIFF\x24\x00\x00\x00WEBPVP8 "
BMP_HEAD = b"BM\x3a\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00"
