"""Trees of small files sent in-process to a real daemon: one channel where the first round trip
says one is enough, each small file framed whole (one write), each entry encoded once."""

from __future__ import annotations

import collections
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from rtun.client import stream, upload
from rtun.client.options import SendOptions
from rtun.protocol import framing
from support.rtun import RtunDaemon
from support.turns import TurnCounter

MTIME = 1_600_000_000
FILE_SIZE = 64 * 1024  # the largest file the whole-file path takes


def _tree(top: Path, files: int, size: int = FILE_SIZE) -> Dict[Path, bytes]:
    """``files`` files of ``size`` bytes in three directories, whose mtimes are set last."""
    content = {}
    for d in ("a", "b", "a/deep"):
        (top / d).mkdir(parents=True, exist_ok=True)
    for i in range(files):
        path = top / ("a", "b", "a/deep")[i % 3] / f"f{i}.bin"
        content[path] = os.urandom(size)
        path.write_bytes(content[path])
    for d in ("a/deep", "a", "b", ""):
        os.utime(top / d, (MTIME, MTIME))
    return content


def _no_pieces(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a small file went framed in pieces (stream_file), not whole")


def _arrived(save_dir: Path, top: Path, content: Dict[Path, bytes]) -> None:
    for path, data in content.items():
        assert (save_dir / path.relative_to(top.parent)).read_bytes() == data
    for d in ("a/deep", "a", "b", ""):
        assert (save_dir / top.name / d).stat().st_mtime == MTIME, d


def _send_whole_files(
    daemon: RtunDaemon, short_tmp: Path, top: Path, monkeypatch: pytest.MonkeyPatch, channels: int = 0
) -> "Tuple[int, int]":
    """Send ``top`` with every file sent whole (a piecewise file fails the test), through a relay
    that counts connections: the connections, and the paths saved."""
    for module in (stream, upload):
        monkeypatch.setattr(module, "stream_file", _no_pieces)
    relay = TurnCounter(short_tmp / "t.sock", daemon.socket)
    options = SendOptions(socket=str(relay.listen), channels=channels)
    result = upload.send([str(top)], None, options=options, quiet=True)
    relay.close()
    return relay.connections, len(result.saved)


def test_a_large_tree_of_small_files_on_a_short_round_trip_is_one_put_on_one_connection(
    daemon: RtunDaemon, save_dir: Path, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = short_tmp / "many"
    content = _tree(top, 136)  # 8.5 MiB: past SHARED_MIN, but loopback needs one channel
    assert sum(map(len, content.values())) >= upload.SHARED_MIN
    monkeypatch.setattr(upload, "_share_files", lambda *a, **k: pytest.fail("shared among channels"))
    connections, saved = _send_whole_files(daemon, short_tmp, top, monkeypatch)
    assert connections == 1 and saved == 136
    _arrived(save_dir, top, content)


def test_a_tree_shared_among_channels_sends_its_small_files_whole(
    daemon: RtunDaemon, save_dir: Path, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = short_tmp / "shared"
    content = _tree(top, 136)
    connections, saved = _send_whole_files(daemon, short_tmp, top, monkeypatch, channels=2)
    assert connections == 2 and saved == 136
    _arrived(save_dir, top, content)


def test_each_entry_of_a_tree_is_encoded_once(
    daemon: RtunDaemon, save_dir: Path, short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = short_tmp / "once"
    content = _tree(top, 30, 1024)
    encoded: "collections.Counter[str]" = collections.Counter()
    encode = framing.encode_entry

    def counting(entry: Any) -> bytes:
        encoded[getattr(entry, "path", "")] += 1
        return encode(entry)

    monkeypatch.setattr(framing, "encode_entry", counting)
    upload.send([str(top)], None, options=SendOptions(socket=str(daemon.socket)), quiet=True)
    files = {f"once/{p.relative_to(top)}" for p in content}
    assert files <= set(encoded)
    assert set(encoded.values()) == {1}, encoded.most_common(3)
    _arrived(save_dir, top, content)
