"""Unit tests of the upload framing: checksum lines, PUT entries and chunk headers, exact bytes."""

from __future__ import annotations

import hashlib
import json

import pytest

from rtun.protocol import framing, limits, messages

# ---- checksums -------------------------------------------------------------------------------


def test_checksum_line_round_trip():
    digest = hashlib.sha256(b"hello").hexdigest()
    raw = framing.encode_checksum(digest)
    assert raw == digest.encode() + b"\r\n"
    assert framing.parse_checksum(raw) == digest
    assert framing.parse_checksum(digest.encode() + b"\n") == digest


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\r\n",
        b"abc\r\n",
        hashlib.sha256(b"x").hexdigest().upper().encode() + b"\r\n",  # v1 sends lowercase hex
        hashlib.sha256(b"x").hexdigest().encode()[:-1] + b"\r\n",
        hashlib.sha256(b"x").hexdigest().encode() + b"0\r\n",
        b"z" * 64 + b"\r\n",
        b" " + hashlib.sha256(b"x").hexdigest().encode() + b"\r\n",
    ],
)
def test_malformed_checksum_is_a_checksum_error(raw):
    with pytest.raises(messages.Rejected) as info:
        framing.parse_checksum(raw)
    assert info.value.code == messages.E_CHECKSUM


# ---- PUT entries and chunk headers -----------------------------------------------------------


ENTRIES = [
    (
        framing.DirEntry("d", 0o755, 1700000000.5),
        {"type": "dir", "path": "d", "mode": 493, "mtime": 1700000000.5},
    ),
    (
        framing.FileEntry("d/f.txt", 0o640, 1700000000.0, 12),
        {"type": "file", "path": "d/f.txt", "mode": 416, "mtime": 1700000000.0, "size": 12},
    ),
    (
        framing.FileEntry("stdin.txt", 0o644, 5.0, None),
        {"type": "file", "path": "stdin.txt", "mode": 420, "mtime": 5.0},
    ),
    (framing.LinkEntry("d/l", "f.txt"), {"type": "link", "path": "d/l", "target": "f.txt"}),
    (framing.EndEntry(), {"type": "end"}),
]


@pytest.mark.parametrize("entry, obj", ENTRIES)
def test_entry_encoding_and_round_trip(entry, obj):
    raw = framing.encode_entry(entry)
    assert raw.endswith(b"\r\n") and raw.count(b"\n") == 1
    assert json.loads(raw) == obj
    assert framing.parse_entry(raw) == entry
    assert framing.parse_entry(raw[:-2] + b"\n") == entry


def test_entry_exact_bytes_and_ascii_only():
    assert framing.encode_entry(framing.EndEntry()) == b'{"type":"end"}\r\n'
    raw = framing.encode_entry(framing.LinkEntry("caf\u00e9\nx", "t"))
    assert raw == b'{"type":"link","path":"caf\\u00e9\\nx","target":"t"}\r\n'
    assert framing.parse_entry(raw) == framing.LinkEntry("caf\u00e9\nx", "t")


def test_entry_defaults():
    assert framing.parse_entry(b'{"type":"file","path":"a"}') == framing.FileEntry("a", 0o644, 0.0, None)


@pytest.mark.parametrize(
    "raw, code",
    [
        (b"not json\r\n", messages.E_BAD_REQUEST),
        (b"[]\r\n", messages.E_BAD_REQUEST),
        (b'{"type":"fifo","path":"p"}\r\n', messages.E_BAD_REQUEST),
        (b'{"path":"p"}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"file"}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"file","path":7}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"file","path":"p","size":-1}\r\n', messages.E_BAD_SIZE),
        (b'{"type":"file","path":"p","size":"1"}\r\n', messages.E_BAD_SIZE),
        (b'{"type":"file","path":"p","size":true}\r\n', messages.E_BAD_SIZE),
        (b'{"type":"file","path":"p","mode":65536}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"file","path":"p","mode":-1}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"dir","path":"p","mode":"755"}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"dir","path":"p","mtime":-1}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"dir","path":"p","mtime":1e300}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"dir","path":"p","mtime":true}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"link","path":"p"}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"link","path":"p","target":null}\r\n', messages.E_BAD_REQUEST),
        (b'{"type":"end"\xff}\r\n', messages.E_BAD_REQUEST),
    ],
)
def test_malformed_entry_raises_protocol_error(raw, code):
    with pytest.raises(messages.Rejected) as info:
        framing.parse_entry(raw)
    assert info.value.code == code


def test_chunk_header_bytes_and_parse():
    assert framing.encode_chunk_header(0) == b"0\r\n"
    assert framing.encode_chunk_header(1048576) == b"1048576\r\n"
    assert framing.parse_chunk_header(b"1048576\r\n") == 1048576
    assert framing.parse_chunk_header(b"0\n") == 0
    assert framing.parse_chunk_header(b"%d\r\n" % limits.MAX_CHUNK) == limits.MAX_CHUNK


@pytest.mark.parametrize(
    "raw",
    [
        b"\r\n",
        b"-1\r\n",
        b"x\r\n",
        b"1 \r\n",
        b"0x10\r\n",
        b"9999999999\r\n",
        b"%d\r\n" % (limits.MAX_CHUNK + 1),
        b"\xd9\xa3\r\n",
    ],
)
def test_malformed_chunk_header_is_bad_size(raw):
    with pytest.raises(messages.Rejected) as info:
        framing.parse_chunk_header(raw)
    assert info.value.code == messages.E_BAD_SIZE
