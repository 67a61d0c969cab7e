"""Telling an image's type from its first bytes (pure)."""

from __future__ import annotations

import pytest

from rtun.protocol import messages
from rtun.protocol.imagetypes import is_image, sniff
from support.images import BMP_HEAD, GIF, JPEG_HEAD, WEBP_HEAD, png


@pytest.mark.parametrize(
    "data, mime",
    [
        (png(), "image/png"),
        (JPEG_HEAD, "image/jpeg"),
        (GIF, "image/gif"),
        (b"GIF87a\x01\x00", "image/gif"),
        (WEBP_HEAD, "image/webp"),
        (BMP_HEAD, "image/bmp"),
    ],
)
def test_each_image_type_is_told_by_its_signature(data: bytes, mime: str) -> None:
    assert mime in messages.IMAGE_TYPES
    assert sniff(data[:16]) == mime and is_image(data, mime)
    others = [other for other in messages.IMAGE_TYPES if other != mime]
    assert not any(is_image(data, other) for other in others)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"plain text\n",
        b"BMW is a car, not a bitmap\n",  # "BM" alone starts words
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # RIFF, but sound
        b"\x89PNG\r\n",  # cut short
        b"\xff\xd8",
        "Grüße".encode(),
    ],
)
def test_text_and_other_data_are_no_image(data: bytes) -> None:
    assert sniff(data) is None
    assert not any(is_image(data, mime) for mime in messages.IMAGE_TYPES)
