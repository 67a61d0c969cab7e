"""The client side of `rtun send` and `rtun view`: walk what to send and stream it to the daemon.

Against an rtun/2 daemon a whole transfer is one PUT stream (one round trip, modes and mtimes
kept, final paths reported); against a v1 daemon each regular file is one v1 SEND.
"""

from __future__ import annotations

import os
import stat
import time

from rtun.client.handshake import pipelined
from rtun.client.sources import Item, Progress, Reader, SendPlan, plan
from rtun.errors import RemoteError, RtunError
from rtun.protocol import framing, messages, wire
from rtun.protocol.sender import SizeChanged

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and dataclasses are not imported at run time: every send would pay
    from typing import Callable, List, Optional, Tuple, Union

    from rtun.client.options import SendOptions
    from rtun.client.pump import ClientConnection


class SendResult:
    def __init__(self, saved: List[str], warnings: List[str]) -> None:
        self.saved = saved
        self.warnings = warnings


def _early(work: SendPlan) -> bool:
    """Small enough to send without waiting for READY: a refusal wastes little."""
    from rtun.protocol.limits import MAX_EARLY_DATA

    return work.total_bytes + 256 * len(work.items) <= MAX_EARLY_DATA and all(
        item.source is not None or not isinstance(item.entry, framing.FileEntry) for item in work.items
    )


def _write_put(
    conn: ClientConnection,
    options: SendOptions,
    work: SendPlan,
    *,
    progress: Progress,
    reader: Reader,
    early: bool,
    track: bool = False,
) -> None:
    """The PUT request; when ``early``, its whole stream too, without waiting for READY."""
    request = messages.Put(options.dest, options.overwrite, work.total_bytes, work.total_files, "", track)
    conn.write(conn.sender.send(request, early=early))
    if early:
        _write_entries(conn, work, progress=progress, reader=reader)


def _stream_put(
    conn: ClientConnection, work: SendPlan, *, progress: Progress, reader: Reader, early: bool
) -> messages.Reply:
    """After the PUT request: READY, every entry with its files' data (unless they went early),
    then the reply listing each path."""
    conn.expect_ok()  # READY
    if not early:
        _write_entries(conn, work, progress=progress, reader=reader)
    return conn.expect_ok()


def _write_entries(conn: ClientConnection, work: SendPlan, *, progress: Progress, reader: Reader) -> None:
    sender = conn.sender
    for item in work.items:
        entry = item.entry
        if isinstance(entry, framing.FileEntry):
            if entry.size is not None and entry.size <= SMALL_WRITE and item.source is not None:
                _send_small(conn, entry, item.source, report=progress.update, reader=reader)
                continue
            conn.write(sender.entry(entry))
            _stream_file(conn, item.source, report=progress.update, reader=reader)
        else:
            conn.write(sender.entry(entry))
    conn.write(sender.end())


SMALL_WRITE = 64 * 1024  # a file this small goes to the socket buffer in one write with its framing


def _send_small(
    conn: ClientConnection,
    entry: framing.FileEntry,
    source: str,
    *,
    report: Callable[[int], None],
    reader: Reader,
) -> None:
    """A small file of a PUT: one read, one write of it framed whole."""
    data = reader.read_whole(source, entry.size)
    try:
        conn.write(conn.sender.whole_file(entry, data))
    except SizeChanged:
        raise RtunError(f"{source} changed size while it was being sent; nothing was saved") from None
    report(len(data))


def _stream_file(
    conn: ClientConnection, source: Optional[str], *, report: Callable[[int], None], reader: Reader
) -> None:
    """The current file's data and its end, as the sender frames them (PUT or v1)."""
    sender = conn.sender
    try:
        for data in reader.chunks(source):
            conn.write(sender.data(data))
            conn.write(data)
            report(len(data))
        conn.write(sender.end_file())
    except SizeChanged:
        # The stream is framed by the declared size: nothing after this could be understood.
        raise RtunError(
            f"{source or 'standard input'} changed size while it was being sent; nothing was saved"
        ) from None


def upload_v1(
    conn: ClientConnection,
    request: Union[messages.Send, messages.View],
    source: str,
    *,
    report: Callable[[int], None],
    reader: Reader,
) -> None:
    """The v1 exchange shared by SEND and VIEW: READY, the raw bytes, the SHA-256 line, OK."""
    conn.request(request)  # READY
    _stream_file(conn, source, report=report, reader=reader)
    conn.expect_ok()


def _send_v1(
    conn: ClientConnection, dest: str, work: SendPlan, *, progress: Progress, reader: Reader
) -> List[str]:
    """One SEND per regular file, as RTUN v1 clients do; the daemon does not say where."""
    sent = []
    for item in work.items:
        if not isinstance(item.entry, framing.FileEntry):
            if isinstance(item.entry, framing.LinkEntry):
                work.warnings.append(f"skipped link {item.entry.path}: the daemon speaks only v1")
            continue
        source = item.source
        spooled = None
        if source is None:  # v1 needs the size up front: spool standard input first
            import tempfile

            spooled = tempfile.NamedTemporaryFile(prefix="rtun-stdin-")
            for data in reader.chunks(None):
                spooled.write(data)
            spooled.flush()
            source = spooled.name
        try:
            size = os.stat(source).st_size
            path = f"{dest}/{item.entry.path}" if dest else item.entry.path
            upload_v1(conn, messages.Send(size, path), source, report=progress.update, reader=reader)
            sent.append(path)
        finally:
            if spooled is not None:
                spooled.close()
    return sent


def send(sources: List[str], to: Optional[str], *, options: SendOptions, quiet: bool = False) -> SendResult:
    """Everything in one PUT stream, but large files in ranges over parallel connections
    (``options.channels`` 0: as many as pay; 1: one), resumable unless ``options.resume`` is
    false. ``to`` (--to) names the place inside ``options.dest``."""
    from rtun.client import parallel

    dest_dir, work = plan(sources, to)
    options = options.below(dest_dir)
    for item in work.items:  # a name that cannot be framed fails here, before connecting
        framing.encode_entry(item.entry)
    wire.encode_request(messages.Put(options.dest, options.overwrite, 0, 0))
    large = [item for item in work.items if item.source is not None and _size(item) >= parallel.RANGED_MIN]
    stream = SendPlan(
        [item for item in work.items if item not in large],
        total_bytes=work.total_bytes - sum(_size(item) for item in large),
        total_files=work.total_files - len(large),
        warnings=work.warnings,
    )
    progress = Progress(work.total_bytes or None, files=work.total_files, enabled=not quiet)
    reader = Reader()
    shared = options.channels != 1 and _shareable(stream)
    head = (
        SendPlan(
            [i for i in stream.items if not isinstance(i.entry, framing.FileEntry)],
            total_bytes=0,
            total_files=0,
            warnings=work.warnings,
        )
        if shared
        else stream
    )
    early = _early(head)
    started = time.monotonic()
    track = shared or bool(large)  # files will arrive in the directories after this PUT's end
    conn = pipelined(
        options.socket,
        lambda c: _write_put(c, options, head, progress=progress, reader=reader, early=early, track=track),
    )
    saved: List[str] = []
    try:
        if conn.features and "put" in conn.features:
            reply = _stream_put(conn, head, progress=progress, reader=reader, early=early)
            saved += _put_reply(reply, work.warnings)
            made = reply.data.get("made")
            round_trip = (time.monotonic() - started) / 2
            ranges = "ranges" in conn.features
            # The connection goes on serving what follows: a new one costs a round trip to open.
            main: Optional[ClientConnection] = conn if ranges else None
            if shared:
                files = [i for i in stream.items if isinstance(i.entry, framing.FileEntry)]
                if ranges:  # directories first (above), files over several connections, mtimes last
                    saved += _share_files(
                        conn,
                        files,
                        options=options,
                        warnings=work.warnings,
                        progress=progress,
                        round_trip=round_trip,
                    )
                else:
                    rest = SendPlan(files, total_bytes=0, total_files=0, warnings=work.warnings)
                    saved += _put_again(options, rest, progress=progress, reader=reader)
            for item in large:
                if ranges:
                    listed, main = _send_ranged(options, main, item, progress=progress)
                    saved += listed
                else:  # an rtun/2 daemon from before ranges: one more PUT
                    rest = SendPlan([item], total_bytes=_size(item), total_files=1, warnings=work.warnings)
                    saved += _put_again(options, rest, progress=progress, reader=reader)
            if isinstance(made, str) and made:  # files written after the directories' end moved them
                _restore_mtimes(options, main, head, token=made, warnings=work.warnings)
        else:
            if options.overwrite:
                work.warnings.append("--overwrite ignored: the daemon speaks only RTUN v1")
            saved = _send_v1(conn, options.dest, work, progress=progress, reader=reader)
    finally:
        progress.close()
        conn.close()
    return SendResult(saved, work.warnings)


SHARED_MIN = 8 * 1024 * 1024  # a tree's files are shared among connections past this many bytes


def _shareable(stream: SendPlan) -> bool:
    files = [i for i in stream.items if isinstance(i.entry, framing.FileEntry)]
    return len(files) >= 2 and stream.total_bytes >= SHARED_MIN and all(i.source is not None for i in files)


def _put_again(options: SendOptions, rest: SendPlan, *, progress: Progress, reader: Reader) -> List[str]:
    with pipelined(
        options.socket, lambda c: _write_put(c, options, rest, progress=progress, reader=reader, early=False)
    ) as again:
        return _put_reply(
            _stream_put(again, rest, progress=progress, reader=reader, early=False), rest.warnings
        )


def _share_files(
    first: ClientConnection,
    files: List[Item],
    *,
    options: SendOptions,
    warnings: List[str],
    progress: Progress,
    round_trip: float,
) -> List[str]:
    """A tree's files, taken in order from one queue by several PUTs, on ``first`` and on
    connections of their own (see parallel.Pool)."""
    import threading

    from rtun.client import parallel

    queue = list(reversed(files))
    lock = threading.Lock()
    pool = parallel.Pool(progress.update)
    saved: List[str] = []

    def take() -> Optional[Item]:
        with lock:
            if pool.failure is not None or not queue:
                return None
            return queue.pop()

    request = messages.Put(options.dest, options.overwrite, 0, 0)

    def put(conn: ClientConnection) -> None:
        conn.expect_ok()  # READY
        reader = Reader()
        item = take()
        while item is not None:
            conn.write(conn.sender.entry(item.entry))
            _stream_file(conn, item.source, report=pool.count, reader=reader)
            item = take()
        conn.write(conn.sender.end())
        listed = _put_reply(conn.expect_ok(), warnings)
        with lock:
            saved.extend(listed)

    def channel() -> None:
        with pipelined(options.socket, lambda c: c.write(c.sender.send(request))) as conn:
            put(conn)

    def on_first() -> None:
        first.write(first.sender.send(request))
        put(first)

    pool.start(on_first)
    total = sum(_size(item) for item in files)
    pool.grow(
        options.channels,
        round_trip=round_trip,
        add=lambda: pool.start(channel),
        left=lambda: len(queue),
        start=parallel.initial_channels(total),
    )
    pool.join()
    return sorted(saved)


def _restore_mtimes(
    options: SendOptions, main: Optional[ClientConnection], head: SendPlan, *, token: str, warnings: List[str]
) -> None:
    """The directories' mtimes, which the files written into them moved."""
    dirs = [i for i in head.items if isinstance(i.entry, framing.DirEntry)]
    if not dirs:
        return

    def write(conn: ClientConnection) -> None:
        conn.write(conn.sender.send(messages.Put(options.dest, options.overwrite, 0, 0, token), early=True))
        for item in dirs:
            conn.write(conn.sender.entry(item.entry))
        conn.write(conn.sender.end())

    if main is not None:
        write(main)
        main.expect_ok()  # READY
        _put_reply(main.expect_ok(), warnings)
        return
    with pipelined(options.socket, write) as conn:
        conn.expect_ok()  # READY
        _put_reply(conn.expect_ok(), warnings)


def _size(item: Item) -> int:
    return (item.entry.size or 0) if isinstance(item.entry, framing.FileEntry) else 0


def _put_reply(reply: messages.Reply, warnings: List[str]) -> List[str]:
    skipped = reply.data.get("skipped", [])
    warnings.extend(s for s in skipped if isinstance(s, str))
    warnings.extend(_unlisted(reply.data.get("unlisted")))
    return wire.saved_paths(reply)


def _send_ranged(
    options: SendOptions, main: Optional[ClientConnection], item: Item, *, progress: Progress
) -> Tuple[List[str], Optional[ClientConnection]]:
    """One large file in ranges (on ``main`` if it is given); the saved path, and ``main`` if
    it can still serve (a refusal closes it)."""
    from rtun.client import parallel

    assert item.source is not None and isinstance(item.entry, framing.FileEntry)
    directory, _, name = item.entry.path.rpartition("/")
    try:
        st = os.stat(item.source)
    except OSError as exc:
        raise RtunError(f"cannot read {item.source}: {exc.strerror}") from None
    if st.st_size != item.entry.size:
        raise RtunError(f"{item.source} changed size while it was being sent; it was not saved")
    try:
        return parallel.send_file(
            options.below(directory), item.source, st, name=name, report=progress.update, main=main
        ), main
    except RemoteError as exc:
        if exc.code != messages.E_BUSY:
            raise
    # Every ranged slot of the daemon is taken (or this file is being sent by someone else):
    # the file goes whole in a PUT, without resumption.
    if main is not None:
        main.close()
    rest = SendPlan([item], total_bytes=st.st_size, total_files=1, warnings=[])
    return _put_again(options, rest, progress=progress, reader=Reader()), None


def _unlisted(counts: object) -> List[str]:
    """What the daemon saved or skipped past the length of its reply's listing."""
    if not isinstance(counts, dict):
        return []
    said = []
    for key, what in (("saved", "saved"), ("skipped", "skipped")):
        n = counts.get(key)
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            said.append(f"{n} more files {what}, too many to list")
    return said


def view(socket_path: Optional[str], path: str) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise RtunError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise RtunError(f"{path} is a directory; only files can be viewed")
    if not stat.S_ISREG(st.st_mode):
        raise RtunError(f"{path} is not a regular file")
    from rtun.protocol.limits import MAX_EARLY_DATA

    request = messages.View(st.st_size, os.path.basename(path))
    wire.encode_request(request)
    reader = Reader()
    early = st.st_size <= MAX_EARLY_DATA

    def write(conn: ClientConnection) -> None:
        conn.write(conn.sender.send(request, early=early))
        if early:
            _stream_file(conn, path, report=lambda n: None, reader=reader)

    with pipelined(socket_path, write) as conn:
        if not conn.features:  # a v1 daemon: this is a new connection
            upload_v1(conn, request, path, report=lambda n: None, reader=reader)
            return
        conn.expect_ok()  # READY
        if not early:
            _stream_file(conn, path, report=lambda n: None, reader=reader)
        conn.expect_ok()
