"""The client side of `rtun send` and `rtun view`: walk what to send and stream it to the daemon.

Against an rtun/2 daemon a whole transfer is one PUT stream (one round trip, modes and mtimes
kept, final paths reported); against a v1 daemon each regular file is one v1 SEND.
"""

from __future__ import annotations

import os
import stat
import time

from rtun.client.handshake import pipelined
from rtun.client.outcome import Interrupted, SendResult, put_reply, with_hint
from rtun.client.sources import Item, Progress, Reader, SendPlan, plan
from rtun.client.stream import (
    early_ok,
    stream_file,
    stream_put,
    update_mode,
    upload_v1,
    write_file,
    write_put,
)
from rtun.errors import RemoteError, RtunError
from rtun.protocol import framing, messages, wire

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and dataclasses are not imported at run time: every send would pay
    from typing import List, Optional, Set, Tuple

    from rtun.client.options import SendOptions
    from rtun.client.pump import ClientConnection


def _send_v1(
    conn: ClientConnection, dest: str, work: SendPlan, *, progress: Progress, reader: Reader, done: Set[int]
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
            done.add(id(item))
        finally:
            if spooled is not None:
                spooled.close()
    return sent


def send(
    sources: List[str],
    to: Optional[str],
    *,
    options: SendOptions,
    quiet: bool = False,
    result: Optional[SendResult] = None,
) -> SendResult:
    """Everything in one PUT stream, but large files in ranges over parallel connections
    (``options.channels`` 0: as many as pay; 1: one), resumable unless ``options.resume`` is
    false; with ``options.update``, only what is not already there (update.py). ``to`` (--to)
    names the place inside ``options.dest``. ``result``: filled in as files are saved, so that
    after a failure part way it says what was saved (and ``not_saved`` what was not)."""
    dest_dir, work = plan(sources, to)
    options = options.below(dest_dir)
    # A destination that cannot be framed fails here, before connecting. Entries are encoded
    # once, in the stream: json's quoting frames any name (no pre-check per file).
    wire.encode_request(messages.Put(options.dest, options.overwrite, 0, 0))
    files = [item for item in work.items if isinstance(item.entry, framing.FileEntry)]
    if result is None:
        result = SendResult([], [])
    result.warnings = work.warnings
    done: Set[int] = set()  # id() of the items known saved
    ranged: List[Item] = []  # the large file being sent in ranges, while it is
    try:
        _send(work, options=options, quiet=quiet, result=result, done=done, ranged=ranged)
    except (RtunError, KeyboardInterrupt) as exc:
        failure = exc if isinstance(exc, RtunError) else Interrupted("interrupted")
        failure = with_hint(failure, ranged=bool(ranged), resume=options.resume, tree=len(files) > 1)
        result.not_saved = [i.entry.path for i in files if id(i) not in done]
        if failure is exc:
            raise
        raise failure from None
    return result


def _send(
    work: SendPlan,
    *,
    options: SendOptions,
    quiet: bool,
    result: SendResult,
    done: Set[int],
    ranged: List[Item],
) -> None:
    from rtun.client import parallel

    conn: Optional[ClientConnection] = None
    if options.update:  # which files are there already: the rest is what this send moves
        from rtun.client import update

        asked = work.items
        conn, work, result.unchanged, result.replaced = update.check(options, work)
        left = {id(i) for i in work.items}
        done.update(id(i) for i in asked if id(i) not in left)  # unchanged: nothing to save
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
    early = early_ok(head)
    started = time.monotonic()
    track = shared or bool(large)  # files will arrive in the directories after this PUT's end

    def first(c: ClientConnection) -> None:
        write_put(c, options, head, progress=progress, reader=reader, early=early, track=track)

    if conn is None:
        conn = pipelined(options.socket, first)
    else:
        first(conn)
    saved = result.saved
    try:
        if conn.features and "put" in conn.features:
            reply = stream_put(conn, head, progress=progress, reader=reader, early=early)
            saved += put_reply(reply, work.warnings)
            done.update(id(i) for i in head.items)
            made = reply.data.get("made")
            round_trip = (time.monotonic() - started) / 2
            ranges = "ranges" in conn.features
            # The connection goes on serving what follows: a new one costs a round trip to open.
            main: Optional[ClientConnection] = conn if ranges else None
            if shared:
                files = [i for i in stream.items if isinstance(i.entry, framing.FileEntry)]
                size = stream.total_bytes
                if ranges and _one_channel(options, size, round_trip):
                    # The round trip says one channel carries it: the files in one more PUT on
                    # this connection, as a tree that is not shared goes (no thread, no pool).
                    rest = SendPlan(files, total_bytes=size, total_files=len(files), warnings=work.warnings)
                    write_put(conn, options, rest, progress=progress, reader=reader, early=False)
                    saved += put_reply(
                        stream_put(conn, rest, progress=progress, reader=reader, early=False), work.warnings
                    )
                    done.update(id(i) for i in files)
                elif ranges:  # directories first (above), files over several connections, mtimes last
                    saved += _share_files(
                        conn,
                        files,
                        options=options,
                        warnings=work.warnings,
                        progress=progress,
                        round_trip=round_trip,
                        done=done,
                    )
                else:
                    rest = SendPlan(files, total_bytes=0, total_files=0, warnings=work.warnings)
                    saved += _put_again(options, rest, progress=progress, reader=reader)
                    done.update(id(i) for i in files)
            for item in large:
                if ranges:
                    ranged.append(item)
                    listed, main = _send_ranged(options, main, item, progress=progress, result=result)
                    ranged.clear()
                    saved += listed
                else:  # an rtun/2 daemon from before ranges: one more PUT
                    rest = SendPlan([item], total_bytes=_size(item), total_files=1, warnings=work.warnings)
                    saved += _put_again(options, rest, progress=progress, reader=reader)
                done.add(id(item))
            if isinstance(made, str) and made:  # files written after the directories' end moved them
                _restore_mtimes(options, main, head, token=made, warnings=work.warnings)
        else:
            if options.overwrite:
                work.warnings.append("--overwrite ignored: the daemon speaks only RTUN v1")
            saved += _send_v1(conn, options.dest, work, progress=progress, reader=reader, done=done)
    except BaseException:
        parallel.abandon(conn)
        raise
    finally:
        progress.close()
        conn.close()


SHARED_MIN = 8 * 1024 * 1024  # a tree's files are shared among connections past this many bytes


def _shareable(stream: SendPlan) -> bool:
    files = [i for i in stream.items if isinstance(i.entry, framing.FileEntry)]
    return len(files) >= 2 and stream.total_bytes >= SHARED_MIN and all(i.source is not None for i in files)


def _one_channel(options: SendOptions, size: int, round_trip: float) -> bool:
    """Left to choose (no --channels), the first round trip and the files' total say one
    channel (parallel.initial_channels: loopback, a LAN, or too little to keep more busy): a
    pool would cost a thread and a PUT per channel for nothing."""
    from rtun.client import parallel

    return options.channels == 0 and parallel.initial_channels(size, round_trip) == 1


def _put_again(options: SendOptions, rest: SendPlan, *, progress: Progress, reader: Reader) -> List[str]:
    with pipelined(
        options.socket, lambda c: write_put(c, options, rest, progress=progress, reader=reader, early=False)
    ) as again:
        return put_reply(
            stream_put(again, rest, progress=progress, reader=reader, early=False), rest.warnings
        )


def _share_files(
    first: ClientConnection,
    files: List[Item],
    *,
    options: SendOptions,
    warnings: List[str],
    progress: Progress,
    round_trip: float,
    done: Set[int],
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

    request = messages.Put(options.dest, options.overwrite, 0, 0, "", False, update_mode(options))

    def put(conn: ClientConnection) -> None:
        conn.expect_ok()  # READY
        reader = Reader()
        sent = []
        item = take()
        while item is not None:
            assert isinstance(item.entry, framing.FileEntry)
            write_file(conn, item.entry, item.source, report=pool.count, reader=reader)
            sent.append(item)
            item = take()
        conn.write(conn.sender.end())
        listed = put_reply(conn.expect_ok(), warnings)
        with lock:
            saved.extend(listed)
            done.update(id(i) for i in sent)

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
        start=parallel.initial_channels(total, round_trip),
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
        put_reply(main.expect_ok(), warnings)
        return
    with pipelined(options.socket, write) as conn:
        conn.expect_ok()  # READY
        put_reply(conn.expect_ok(), warnings)


def _size(item: Item) -> int:
    return (item.entry.size or 0) if isinstance(item.entry, framing.FileEntry) else 0


def _send_ranged(
    options: SendOptions,
    main: Optional[ClientConnection],
    item: Item,
    *,
    progress: Progress,
    result: SendResult,
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

    def resumed(kept: int) -> None:
        from rtun.protocol.units import size_text

        result.resumed.append({"path": item.entry.path, "bytes": kept, "of": st.st_size})
        progress.say(
            f"resumed: {size_text(kept)} of {size_text(st.st_size)} already on your computer ({name})"
        )

    try:
        return parallel.send_file(
            options.below(directory),
            item.source,
            st,
            name=name,
            report=progress.update,
            main=main,
            resumed=resumed,
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
            stream_file(conn, path, report=lambda n: None, reader=reader)

    with pipelined(socket_path, write) as conn:
        if not conn.features:  # a v1 daemon: this is a new connection
            upload_v1(conn, request, path, report=lambda n: None, reader=reader)
            return
        conn.expect_ok()  # READY
        if not early:
            stream_file(conn, path, report=lambda n: None, reader=reader)
        conn.expect_ok()
