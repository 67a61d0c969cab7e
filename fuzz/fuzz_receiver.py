"""Coverage-guided fuzzing of what a hostile peer controls: the daemon's protocol core.

Each input is fed to ``rtun.protocol.receiver.Receiver`` the way the daemon's pump feeds it
(through ``get_buffer``/``buffer_updated``, in pieces, answering every request as the daemon
does), or, for one input in four, handed to ``rtun.protocol.names.components`` as a path.
RANGES, RANGE and COMMIT go to the daemon's own ranged files (``RangedFiles``) on a real
directory of a counted 8 MiB disk with a 1 MiB reserve, with the disk account as invariant: no
part file takes more of the disk (st_blocks) than it paid for, and the disk never goes past
the reserve. A crash is any exception other than the protocol's own ``Rejected`` and
``Truncated``, or a broken invariant (see ``_Driver``). Usage: fuzz/README.md.

``one_input`` needs nothing but rtun, so tests/protocol/test_fuzz.py runs it under hypothesis
too; atheris is imported only when this file is run.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import posixpath
import shutil
import sys
import tempfile
from typing import Any, Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":  # instrument rtun for coverage before anything imports it
    import atheris

    with atheris.instrument_imports(include=["rtun"]):
        from rtun.daemon.actions.ranges import RangedFile, RangedFiles
        from rtun.daemon.storage.space import Space
        from rtun.daemon.storage.writing import Workers
        from rtun.protocol import limits, messages, names, wire
        from rtun.protocol.events import (
            Data,
            Directory,
            FileEnd,
            FileStart,
            Link,
            Upload,
            UploadEnd,
            WholeFile,
        )
        from rtun.protocol.receiver import CLOSED, NEED_DATA, Receiver, Truncated
else:
    from rtun.daemon.actions.ranges import RangedFile, RangedFiles
    from rtun.daemon.storage.space import Space
    from rtun.daemon.storage.writing import Workers
    from rtun.protocol import limits, messages, names, wire
    from rtun.protocol.events import Data, Directory, FileEnd, FileStart, Link, Upload, UploadEnd, WholeFile
    from rtun.protocol.receiver import CLOSED, NEED_DATA, Receiver, Truncated

Rejected = messages.Rejected
WORKERS = Workers(1)  # the ranged files' writes, as the daemon's helper threads make them
MAX_STEPS = 200_000  # events per input: more means the receiver loops without consuming
SMALL_BUFFER = limits.MAX_LINE + 1 + 512  # the smallest buffer allowed, so inputs can fill it


class Broken(AssertionError):
    """An invariant of the receiver does not hold: a finding."""


def _check_parts(parts: Tuple[str, ...], what: str) -> None:
    for part in parts:
        if part in ("", ".", "..") or "/" in part or "\x00" in part:
            raise Broken(f"{what}: unsafe component {part!r} in {parts!r}")
    root = "/r"
    joined = posixpath.normpath(posixpath.join(root, *parts)) if parts else root
    if joined != root and not joined.startswith(root + "/"):
        raise Broken(f"{what}: {parts!r} leaves the root")


def _receiver(small: bool) -> Receiver:
    if not small:
        return Receiver()
    try:  # an idle and an upload buffer size since the idle buffer shrank
        return Receiver(SMALL_BUFFER, SMALL_BUFFER + 4096)  # type: ignore[call-arg,unused-ignore]
    except TypeError:
        return Receiver(SMALL_BUFFER)


class _Disk:
    """Ranged files on a real directory whose disk is ``CAPACITY`` bytes: what the files in
    it take (st_blocks) is what the disk has used."""

    CAPACITY = 8 * 1024 * 1024
    RESERVE = 1024 * 1024

    _root: Optional[str] = None  # one per process, emptied after each input (rmdir is slow)

    def __init__(self) -> None:
        if _Disk._root is None:
            _Disk._root = tempfile.mkdtemp(prefix="rtun-fuzz-")
            atexit.register(shutil.rmtree, _Disk._root, True)
        self.root = _Disk._root
        self.space = Space(self.root, self.RESERVE, free=lambda d: self.CAPACITY - self.used())
        self.files = RangedFiles(self.root, self.space, 0o022, WORKERS)
        self.file: Optional[RangedFile] = None  # the one this connection opened or joined
        self.range: Optional[messages.Range] = None
        self.position = 0

    def used(self) -> int:
        total = 0
        for directory, _, files in os.walk(self.root):
            for name in files:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
        return total

    def check(self) -> None:
        if self.used() > self.CAPACITY - self.RESERVE:
            raise Broken(f"the disk went past its reserve: {self.used()} bytes used")
        for ranged in list(self.files._files.values()) + ([self.file] if self.file else []):
            part = ranged.part
            if part is not None and part.fd is not None:
                taken = os.fstat(part.fd).st_blocks * 512
                if taken > ranged.paid:
                    raise Broken(f"a part file takes {taken} bytes, {ranged.paid} paid for")
        if self.space.outstanding < 0:
            raise Broken(f"claims went negative: {self.space.outstanding}")

    def attached(self) -> RangedFile:
        if self.file is None or self.file.part is None:
            raise Rejected(messages.E_BAD_REQUEST, "RANGE or COMMIT before RANGES")
        return self.file

    def close(self) -> None:
        if self.range is not None and self.file is not None:
            self.file.end_range(self.range.offset)
        if self.file is not None:
            self.files.detach(self.file)
        self.files.close()
        if self.space.outstanding:
            raise Broken(f"{self.space.outstanding} bytes still claimed after every file went")
        for directory, _, files in os.walk(self.root):  # what COMMIT placed
            for name in files:
                os.unlink(os.path.join(directory, name))


class _Driver:
    """The daemon's side of one connection, in memory, with the invariants checked as it goes."""

    def __init__(self, reject_uploads: bool, small: bool) -> None:
        self.receiver = _receiver(small)
        self.reject_uploads = reject_uploads
        self.upload: Optional[Upload] = None
        self.file: Optional[FileStart] = None
        self.file_bytes = 0
        self.file_hash: Any = None
        self.closed = False
        self.disk: Optional[_Disk] = None  # made at the first RANGES

    def ranged(self, event: Any) -> bool:
        """RANGES, RANGE (its events) and COMMIT as the daemon handles them; False for others."""
        disk = self.disk
        if isinstance(event, messages.Ranges):
            if disk is None:
                disk = self.disk = _Disk()
            if disk.file is not None:
                disk.files.detach(disk.file)
                disk.file = None
            disk.file = disk.files.open(event)
            self.receiver.reply(data={"have": disk.file.have()})
        elif isinstance(event, messages.Commit):
            ranged = disk.attached() if disk is not None else None
            if disk is None or ranged is None:
                raise Rejected(messages.E_BAD_REQUEST, "COMMIT before RANGES")
            disk.file = None
            disk.files.detach(ranged)
            disk.files.commit(ranged, event.digest)
            self.receiver.reply(data={"saved": [], "skipped": []})
        elif isinstance(event, Upload) and isinstance(event.request, messages.Range):
            if disk is None:
                raise Rejected(messages.E_BAD_REQUEST, "RANGE before RANGES")
            ranged = disk.attached()
            ranged.begin_range(event.request.offset, event.request.size)
            disk.range, disk.position = event.request, event.request.offset
            return False  # accepted as any upload
        elif disk is not None and disk.range is not None and isinstance(event, Data):
            disk.attached().write(disk.position, event.data).result()
            disk.position += len(event.data)
            return False
        elif disk is not None and disk.range is not None and isinstance(event, FileEnd):
            disk.attached().verified_range(disk.range.offset, disk.range.size, bytes.fromhex(event.digest))
            return False
        elif disk is not None and disk.range is not None and isinstance(event, UploadEnd):
            disk.attached().end_range(disk.range.offset)
            disk.range = None
            return False
        else:
            return False
        return True

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.closed:
            room = self.receiver.get_buffer()
            if not len(room):
                raise Broken("the receive buffer is full, yet the receiver needs more data")
            n = min(len(room), len(view))
            room[:n] = view[:n]
            self.receiver.buffer_updated(n)
            view = view[n:]
            self.drain()

    def end(self) -> None:
        if self.closed:
            return
        self.receiver.receive_eof()
        self.drain()
        if not self.closed:
            raise Broken("at the end of the stream the receiver neither closed nor refused")

    def drain(self) -> None:
        """Events until the receiver needs data; a rejection ends the connection, as in the daemon."""
        try:
            for _ in range(MAX_STEPS):
                if self.closed:
                    return
                event = self.receiver.next_event()
                if event is NEED_DATA:
                    return
                self.handle(event)
            raise Broken(f"{MAX_STEPS} events without needing data")
        except Rejected as exc:
            self.refuse(exc.code, exc.text)
        except Truncated:
            self.closed = True
        finally:
            if self.disk is not None:
                self.disk.check()

    def refuse(self, code: int, text: str) -> None:
        line = self.receiver.reject(code, text)
        if not (line.startswith(b"ERROR %d " % code) and line.endswith(b"\r\n") and line.count(b"\n") == 1):
            raise Broken(f"refusal is not one line: {line!r}")
        if self.receiver.next_event() is not CLOSED:
            raise Broken("the receiver goes on reading after a refusal")
        self.closed = True

    def handle(self, event: Any) -> None:
        r = self.receiver
        if self.ranged(event):
            pass
        elif event is CLOSED:
            self.closed = True
        elif isinstance(event, Upload):
            _check_parts(event.parts, "upload")
            if self.reject_uploads:
                self.refuse(messages.E_NO_SPACE, "not enough space")
                return
            self.upload = event
            ready, first = r.accept()
            if ready != wire.READY:
                raise Broken(f"accept() gave {ready!r}")
            if first is not None:
                self.start(first)
        elif isinstance(event, FileStart):
            self.start(event)
        elif isinstance(event, WholeFile):
            self.start(FileStart(event.parts, event.mode, event.mtime, event.size))
            if not isinstance(self.upload.request, messages.Put):
                raise Broken("a whole file outside a PUT")
            if len(event.data) != event.size or hashlib.sha256(event.data).hexdigest() != event.digest:
                raise Broken(f"a whole file of {len(event.data)} bytes, declared {event.size}, unverified")
            self.file = None
        elif isinstance(event, Data):
            if self.file is None:
                raise Broken("data outside a file")
            chunk = bytes(event.data)
            self.file_bytes += len(chunk)
            self.file_hash.update(chunk)
            if self.file.size is not None and self.file_bytes > self.file.size:
                raise Broken(f"{self.file_bytes} bytes of a file declared {self.file.size}")
        elif isinstance(event, FileEnd):
            if self.file is None:
                raise Broken("FileEnd outside a file")
            if event.size != self.file_bytes or (self.file.size is not None and event.size != self.file.size):
                raise Broken(
                    f"FileEnd says {event.size}, data was {self.file_bytes}, declared {self.file.size}"
                )
            self.file = None
        elif isinstance(event, (Directory, Link)):
            if self.upload is None or self.file is not None:
                raise Broken(f"{type(event).__name__} outside a PUT's entries")
            _check_parts(event.parts, type(event).__name__)
            if isinstance(event, Link):
                names.check_link_target(event.target)  # the receiver checked it: must not raise
        elif isinstance(event, UploadEnd):
            if self.file is not None:
                raise Broken("the upload ended inside a file")
            request = self.upload.request if self.upload is not None else None
            self.upload = None
            reply = (
                r.reply(data={"saved": [], "skipped": []}) if isinstance(request, messages.Put) else r.reply()
            )
            if not reply.startswith(b"OK"):
                raise Broken(f"reply() gave {reply!r}")
        elif isinstance(event, messages.Message):  # a plain request: the daemon answers it
            r.reply("fine")
        else:
            raise Broken(f"unexpected event {event!r}")

    def start(self, event: FileStart) -> None:
        if self.file is not None:
            raise Broken("a file started inside another")
        if self.upload is None:
            raise Broken("a file outside an upload")
        _check_parts(event.parts, "file")
        if not event.parts and not isinstance(
            self.upload.request, (messages.View, messages.Copy, messages.Edit, messages.Range)
        ):
            raise Broken("a file with no name")
        self.file, self.file_bytes, self.file_hash = event, 0, hashlib.sha256()


def _pieces(data: bytes, sizes: bytes) -> Iterator[bytes]:
    """``data`` cut where ``sizes`` says (each byte a piece length, 0 meaning the rest)."""
    at = 0
    for size in sizes:
        if at >= len(data):
            return
        step = size or len(data)
        yield data[at : at + step]
        at += step
    if at < len(data):
        yield data[at:]


def _expand(data: bytes) -> bytes:
    """A tiny language so short inputs can reach long lines and full buffers: ``\\xfe n b``
    stands for byte ``b`` repeated ``n * 1024`` times."""
    out = bytearray()
    i = 0
    while i < len(data):
        if data[i] == 0xFE and i + 2 < len(data):
            out += bytes([data[i + 2]]) * (data[i + 1] * 1024)
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def check_components(text: str) -> None:
    """names.components either refuses ``text`` or returns parts that stay under any root."""
    try:
        parts = names.components(text)
    except Rejected as exc:
        if exc.code != messages.E_BAD_PATH:
            raise Broken(f"components refused {text!r} with code {exc.code}") from exc
        return
    if not parts:
        raise Broken(f"components({text!r}) is empty")
    _check_parts(parts, "components")
    if "/".join(parts) != text:
        raise Broken(f"components({text!r}) changed the path: {parts!r}")


def one_input(data: bytes) -> None:
    """The fuzz target. First byte: what to do with the rest."""
    if not data:
        return
    control, body = data[0], data[1:]
    if control & 3 == 3:
        check_components(body.decode("utf-8", "surrogateescape"))
        return
    split = body.find(b"\xff\xff")  # optional piece sizes after the stream
    stream, sizes = (body, b"") if split < 0 else (body[:split], body[split + 2 :])
    if control & 4:
        stream = _expand(stream)
    driver = _Driver(reject_uploads=bool(control & 8), small=bool(control & 16))
    try:
        for piece in _pieces(stream, sizes or b"\x00"):
            driver.feed(piece)
            if driver.closed:
                break
        driver.end()
    finally:
        if driver.disk is not None:
            driver.disk.close()


# ---- seeds -----------------------------------------------------------------------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode() + b"\r\n"


def _line(obj: Dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


def ranged_stream(
    size: int,
    ranges: List[Tuple[int, int, int, bool]],
    commit: bool,
    join: bool = False,
    key: str = "ab" * 16,
    compact: bool = False,
) -> bytes:
    """RANGES of a file of ``size`` bytes, its ranges (offset, length, fill byte, digest
    right), in the order given, and with ``commit`` a COMMIT of the ranges as the client
    believes it sent them. ``compact``: data in whole KiB written in ``_expand``'s language."""
    out = bytearray(
        wire.encode_request(messages.Ranges("d", "f.bin", size, 0o755, 1.0, key, False, True, join))
    )
    digests: Dict[int, Tuple[int, bytes]] = {}
    for offset, length, fill, right in ranges:
        data = bytes([fill]) * length
        digest = hashlib.sha256(data if right else data + b"!")
        if compact and length % 1024 == 0 and length <= 255 * 1024 and fill != 0xFE:
            data = bytes([0xFE, length // 1024, fill])  # _expand gives back the data
        out += (
            wire.encode_request(messages.Range(offset, length)) + data + digest.hexdigest().encode() + b"\r\n"
        )
        digests = {o: d for o, d in digests.items() if not (o < offset + length and offset < o + d[0])}
        digests[offset] = (length, digest.digest())
    if commit:
        combined = hashlib.sha256(b"".join(d for _, (_, d) in sorted(digests.items())))
        out += wire.encode_request(messages.Commit(combined.hexdigest()))
    return bytes(out)


def seeds() -> List[bytes]:
    """Valid and nearly valid streams: where the fuzzer starts."""
    put = (
        b'PUT {"dest":"in","overwrite":false,"bytes":11,"files":2}\r\n'
        + _line({"type": "dir", "path": "d", "mode": 0o750, "mtime": 1})
        + _line({"type": "file", "path": "d/a.txt", "mode": 0o640, "mtime": 1700000000, "size": 11})
        + b"5\r\nhello6\r\n world0\r\n"
        + _sha(b"hello world")
        + _line({"type": "link", "path": "d/l", "target": "a.txt"})
        + _line({"type": "file", "path": "d/e", "mode": 420, "mtime": 2.5})
        + b"0\r\n"
        + _sha(b"")
        + b'{"type":"end"}\r\n'
    )
    streams = [
        b"PING\r\nECHO hi\r\nPID\r\n",
        b"SEND 3 dir/x.bin\r\nabc" + _sha(b"abc") + b"PING\r\n",
        b"VIEW 2 a.png\r\nhi" + _sha(b"hi"),
        b"SEND RTUN/2 notify2 put\r\n" + put + b"PING\r\n",
        b'NOTIFY2 {"title":"t","body":"b\\nc"}\r\nNOTIFY host body text\r\n',
        b"SEND 0 empty\r\n" + _sha(b""),
        b'PUT {"dest":""}\r\n{"type":"file","path":"big"}\r\n\xfe\x08a',
    ]
    out = [bytes([0]) + s for s in streams]
    out += [bytes([4]) + streams[-1], bytes([16]) + streams[3] + b"\xff\xff\x01\x07\x03\x00"]
    out += [bytes([8]) + streams[1]]
    hello = b"SEND RTUN/2 ranges\r\n"
    unit = limits.MIN_RANGE
    out += [
        bytes([4])
        + hello
        + ranged_stream(
            3 * unit + 5,
            [(3 * unit, 5, 1, True), (0, 2 * unit, 2, True), (unit, 2 * unit, 3, True)],
            True,
            compact=True,
        ),
        bytes([4])
        + hello
        + ranged_stream(4 * unit, [(2 * unit, unit, 1, False), (0, 3 * unit, 4, True)], True, compact=True)
        + b"PING\r\n",
        bytes([20])
        + hello
        + ranged_stream(2 * unit, [(unit, unit, 9, True)], False, compact=True)
        + b"\xff\xff\x07\x00",
    ]
    out += [bytes([3]) + p.encode() for p in ("a/b/c.txt", "../x", "a//b", ".rtun-1-ab.part", "d\u202eexe")]
    return out


def write_corpus(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for i, seed in enumerate(seeds()):
        with open(os.path.join(directory, f"seed-{i:02d}"), "wb") as f:
            f.write(seed)


def main(argv: List[str]) -> None:
    import atheris

    if len(argv) > 2 and argv[1] == "--write-corpus":
        write_corpus(argv[2])
        return
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
