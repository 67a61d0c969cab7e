"""Coverage-guided fuzzing of what a hostile peer controls: the daemon's protocol core.

Each input is fed to ``rtun.protocol.receiver.Receiver`` the way the daemon's pump feeds it
(through ``get_buffer``/``buffer_updated``, in pieces, answering every request as the daemon
does), or, for one input in four, handed to ``rtun.protocol.names.components`` as a path.
A crash is any exception other than the protocol's own ``Rejected`` and ``Truncated``, or a
broken invariant (see ``_Driver``). Usage: fuzz/README.md.

``one_input`` needs nothing but rtun, so tests/protocol/test_fuzz.py runs it under hypothesis
too; atheris is imported only when this file is run.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import sys
from typing import Any, Dict, Iterator, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
if __name__ == "__main__":  # instrument rtun for coverage before anything imports it
    import atheris

    with atheris.instrument_imports(include=["rtun"]):
        from rtun.protocol import limits, names, wire
        from rtun.protocol.receiver import (
            CLOSED, NEED_DATA, Data, Directory, FileEnd, FileStart, Link, Receiver, Truncated,
            Upload, UploadEnd,
        )
else:
    from rtun.protocol import limits, names, wire
    from rtun.protocol.receiver import (
        CLOSED, NEED_DATA, Data, Directory, FileEnd, FileStart, Link, Receiver, Truncated, Upload,
        UploadEnd,
    )

Rejected = wire.Rejected
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

    def refuse(self, code: int, text: str) -> None:
        line = self.receiver.reject(code, text)
        if not (line.startswith(b"ERROR %d " % code) and line.endswith(b"\r\n") and line.count(b"\n") == 1):
            raise Broken(f"refusal is not one line: {line!r}")
        if self.receiver.next_event() is not CLOSED:
            raise Broken("the receiver goes on reading after a refusal")
        self.closed = True

    def handle(self, event: Any) -> None:
        r = self.receiver
        if event is CLOSED:
            self.closed = True
        elif isinstance(event, Upload):
            _check_parts(event.parts, "upload")
            if self.reject_uploads:
                self.refuse(wire.E_NO_SPACE, "not enough space")
                return
            self.upload = event
            ready, first = r.accept()
            if ready != wire.READY:
                raise Broken(f"accept() gave {ready!r}")
            if first is not None:
                self.start(first)
        elif isinstance(event, FileStart):
            self.start(event)
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
                raise Broken(f"FileEnd says {event.size}, data was {self.file_bytes}, declared {self.file.size}")
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
            reply = r.reply(data={"saved": [], "skipped": []}) if isinstance(request, wire.Put) else r.reply()
            if not reply.startswith(b"OK"):
                raise Broken(f"reply() gave {reply!r}")
        elif isinstance(event, wire.Message):  # a plain request: the daemon answers it
            r.reply("fine")
        else:
            raise Broken(f"unexpected event {event!r}")

    def start(self, event: FileStart) -> None:
        if self.file is not None:
            raise Broken("a file started inside another")
        if self.upload is None:
            raise Broken("a file outside an upload")
        _check_parts(event.parts, "file")
        if not event.parts and not isinstance(self.upload.request, wire.View):
            raise Broken("a file with no name")
        self.file, self.file_bytes, self.file_hash = event, 0, hashlib.sha256()


def _pieces(data: bytes, sizes: bytes) -> Iterator[bytes]:
    """``data`` cut where ``sizes`` says (each byte a piece length, 0 meaning the rest)."""
    at = 0
    for size in sizes:
        if at >= len(data):
            return
        step = size or len(data)
        yield data[at:at + step]
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
        if exc.code != wire.E_BAD_PATH:
            raise Broken(f"components refused {text!r} with code {exc.code}")
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
    stream, sizes = (body, b"") if split < 0 else (body[:split], body[split + 2:])
    if control & 4:
        stream = _expand(stream)
    driver = _Driver(reject_uploads=bool(control & 8), small=bool(control & 16))
    for piece in _pieces(stream, sizes or b"\x00"):
        driver.feed(piece)
        if driver.closed:
            break
    driver.end()


# ---- seeds -----------------------------------------------------------------------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).hexdigest().encode() + b"\r\n"


def _line(obj: Dict[str, Any]) -> bytes:
    return json.dumps(obj).encode() + b"\r\n"


def seeds() -> List[bytes]:
    """Valid and nearly valid streams: where the fuzzer starts."""
    put = (b'PUT {"dest":"in","overwrite":false,"bytes":11,"files":2}\r\n'
           + _line({"type": "dir", "path": "d", "mode": 0o750, "mtime": 1})
           + _line({"type": "file", "path": "d/a.txt", "mode": 0o640, "mtime": 1700000000, "size": 11})
           + b"5\r\nhello6\r\n world0\r\n" + _sha(b"hello world")
           + _line({"type": "link", "path": "d/l", "target": "a.txt"})
           + _line({"type": "file", "path": "d/e", "mode": 420, "mtime": 2.5})
           + b"0\r\n" + _sha(b"")
           + b'{"type":"end"}\r\n')
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
