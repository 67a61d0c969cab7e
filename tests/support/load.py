"""A mixed load of real clients for the load test and the soak benchmark, and daemon probes.

Every client goes through the remote end of a real ``ssh -R`` forward: ``rtun send``,
``rtun ping`` and ``rtun notify`` as real processes, and raw v1 SEND, rtun/2 PUT and PING
connections (support.v1peer.RawClient) for the rest, as an old or hand-written client would.
The daemon is looked at from outside only: /proc/PID/fd and /proc/PID/status.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

from support.raw import RawClient
from support.rtun import RTUN, clean_env, run_rtun

KIB = 1024
MIB = 1024 * 1024
CHUNK = MIB  # rtun/2 chunk size used by the raw PUT client, as rtun's own client does


# ---- the daemon, seen from outside ------------------------------------------------------------


def open_fds(pid: int) -> int:
    """How many descriptors the process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_targets(pid: int) -> List[str]:
    """What each descriptor refers to (for failure messages)."""
    targets = []
    for name in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            targets.append(os.readlink(f"/proc/{pid}/fd/{name}"))
        except OSError:
            continue
    return targets


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def rss_kib(pid: int) -> int:
    """VmRSS: the resident set now, in KiB."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the peak resident set so far, in KiB."""
    return _status_kib(pid, "VmHWM")


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def parts_below(root: Path) -> List[Path]:
    """The daemon's temporary files (``.rtun-*.part``) anywhere below ``root``."""
    return sorted(p for p in root.rglob(".rtun-*.part"))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(MIB)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def dead_socket(path: Path) -> Path:
    """A socket file nothing listens on any more, as sshd leaves behind after a session."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    return path


# ---- raw clients (through the forward's remote socket) -----------------------------------------


def raw_ping(sock: Path, timeout: float = 30.0) -> bool:
    with RawClient(sock, timeout=timeout) as raw:
        return raw.request(b"PING\r\n") == b"OK PONG\r\n"


def v1_send(
    sock: Path, dest: str, data: bytes, timeout: float = 60.0, after_ping: Optional[Callable[[], None]] = None
) -> bytes:
    """A complete v1 SEND after the PING every client starts with; returns the last reply.
    ``after_ping`` runs between the two (to hold many connections open at once)."""
    with RawClient(sock, timeout=timeout) as raw:
        reply = raw.request(b"PING\r\n")
        if reply != b"OK PONG\r\n":
            return reply
        if after_ping is not None:
            after_ping()
        reply = raw.request(b"SEND %d %s\r\n" % (len(data), dest.encode()))
        if reply != b"READY\r\n":
            return reply
        raw.send(data)
        raw.send(hashlib.sha256(data).hexdigest().encode() + b"\r\n")
        return raw.line()


def put_send(
    sock: Path,
    dest_dir: str,
    name: str,
    data: bytes,
    timeout: float = 60.0,
    after_ping: Optional[Callable[[], None]] = None,
) -> Tuple[bytes, List[str]]:
    """An rtun/2 PUT of one file into ``dest_dir``; returns the last reply and the saved paths."""
    with RawClient(sock, timeout=timeout) as raw:
        reply = raw.request(b"PING\r\n")
        if reply != b"OK PONG\r\n":
            return reply, []
        if after_ping is not None:
            after_ping()
        reply = raw.request(b"SEND RTUN/2 notify2 put\r\n")
        if not reply.startswith(b"OK RTUN/2 ") or b"put" not in reply.split():
            return reply, []
        header = {"dest": dest_dir, "overwrite": False, "bytes": len(data), "files": 1}
        reply = raw.request(b"PUT " + json.dumps(header).encode() + b"\r\n")
        if reply != b"READY\r\n":
            return reply, []
        entry = {"type": "file", "path": name, "mode": 0o640, "mtime": 1700000000.5, "size": len(data)}
        raw.send(json.dumps(entry).encode() + b"\r\n")
        view = memoryview(data)
        for at in range(0, len(data), CHUNK):
            piece = view[at : at + CHUNK]
            raw.send(b"%d\r\n" % len(piece))
            raw.sock.sendall(piece)
        raw.send(b"0\r\n" + hashlib.sha256(data).hexdigest().encode() + b"\r\n")
        raw.send(b'{"type":"end"}\r\n')
        reply = raw.line()
        if not reply.startswith(b"OK {"):
            return reply, []
        saved = json.loads(reply[3:].decode()).get("saved", [])
        return reply, [str(p) for p in saved]


# ---- the mix ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    kind: str  # send, v1, put, ping, rawping, notify
    ok: bool
    detail: str = ""
    nbytes: int = 0
    seconds: float = 0.0  # wall time of the request (client start to its end)
    name: str = ""  # what it carried: a notification's title
    code: int = 0  # the exit code of a command


@dataclass
class Upload:
    """One file to deliver: where it is on the remote side, and where it must land locally."""

    kind: str  # send (the rtun command), v1 (raw SEND) or put (raw rtun/2 PUT)
    source: Path
    dest: str  # relative to the save directory
    size: int
    sha256: str


def make_sources(directory: Path, sizes: Sequence[int], seed: int = 8) -> List[Tuple[Path, int, str]]:
    """Files of the given sizes with random content; returns (path, size, sha256) for each."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    block = os.urandom(4 * MIB)
    made = []
    for i, size in enumerate(sizes):
        path = directory / f"src{i:03d}.bin"
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            left = size
            prefix = i.to_bytes(4, "big")  # no two files alike, even of the same size
            while left:
                start = rng.randrange(0, len(block) - 1)
                piece = (prefix + block[start : start + left - len(prefix)])[:left]
                f.write(piece)
                digest.update(piece)
                left -= len(piece)
        made.append((path, size, digest.hexdigest()))
    return made


def load_sizes(
    clients: int = 100, large: Sequence[int] = (50 * MIB, 20 * MIB, 8 * MIB), seed: int = 1
) -> List[int]:
    """A few large files and many small ones (1 KiB up to a few MiB), ``clients`` in all."""
    rng = random.Random(seed)
    sizes = list(large)
    while len(sizes) < clients:
        roll = rng.random()
        if roll < 0.7:
            sizes.append(rng.randint(1 * KIB, 64 * KIB))
        elif roll < 0.95:
            sizes.append(rng.randint(64 * KIB, 1 * MIB))
        else:
            sizes.append(rng.randint(1 * MIB, 4 * MIB))
    sizes[3] = 1 * KIB  # the smallest size asked for, exactly
    return sizes


MIX = ("send", "v1", "put", "v1", "put")  # one in five uploads is an `rtun send` process


def plan_uploads(
    sources: Sequence[Tuple[Path, int, str]], prefix: str, kinds: Sequence[str] = MIX
) -> List[Upload]:
    """The uploads, their kinds taken from ``kinds`` in turn (so the three large files, first,
    go once each way); every destination name distinct."""
    uploads = []
    for i, (path, size, digest) in enumerate(sources):
        kind = kinds[i % len(kinds)]
        uploads.append(Upload(kind, path, f"{prefix}/{kind}-{i:03d}.bin", size, digest))
    return uploads


def timed(run: Callable[[], Outcome]) -> Outcome:
    began = time.monotonic()
    outcome = run()
    outcome.seconds = time.monotonic() - began
    return outcome


def run_upload(
    upload: Upload,
    remote_home: Path,
    remote_sock: Path,
    save_dir: Path,
    after_ping: Optional[Callable[[], None]] = None,
) -> Outcome:
    return timed(lambda: _upload(upload, remote_home, remote_sock, save_dir, after_ping))


def _upload(
    upload: Upload,
    remote_home: Path,
    remote_sock: Path,
    save_dir: Path,
    after_ping: Optional[Callable[[], None]],
) -> Outcome:
    expected = str(save_dir / upload.dest)
    try:
        if upload.kind == "send":
            result = run_rtun(["send", str(upload.source), "--to", upload.dest], remote_home, timeout=300)
            printed = result.stdout.decode(errors="replace").strip()
            ok = result.returncode == 0 and printed == expected
            detail = f"exit {result.returncode}: {printed!r} {result.stderr.decode(errors='replace').strip()}"
        elif upload.kind == "v1":
            reply = v1_send(
                remote_sock, upload.dest, upload.source.read_bytes(), timeout=300, after_ping=after_ping
            )
            ok, detail = reply == b"OK\r\n", repr(reply)
        else:
            dest_dir, name = upload.dest.rsplit("/", 1)
            reply, saved = put_send(
                remote_sock, dest_dir, name, upload.source.read_bytes(), timeout=300, after_ping=after_ping
            )
            ok, detail = saved == [expected], f"{reply[:200]!r}"
    except (OSError, subprocess.SubprocessError) as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return Outcome(upload.kind, ok, f"{upload.dest}: {detail}", upload.size if ok else 0)


def run_ping(remote_home: Path, remote_sock: Path, use_command: bool) -> Outcome:
    return timed(lambda: _ping(remote_home, remote_sock, use_command))


def _ping(remote_home: Path, remote_sock: Path, use_command: bool) -> Outcome:
    try:
        if use_command:
            result = run_rtun(["ping"], remote_home, timeout=60)
            ok = result.returncode == 0 and result.stdout == b"OK PONG\n"
            return Outcome("ping", ok, f"exit {result.returncode}: {result.stdout!r} {result.stderr!r}")
        return Outcome("rawping", raw_ping(remote_sock))
    except (OSError, subprocess.SubprocessError) as exc:
        return Outcome("rawping" if not use_command else "ping", False, f"{type(exc).__name__}: {exc}")


def run_notify(remote_home: Path, n: int) -> Outcome:
    """`rtun notify`: shown (exit 0) or refused with one line (exit 4, no notification service)."""
    return timed(lambda: _notify(remote_home, n))


def _notify(remote_home: Path, n: int) -> Outcome:
    title = f"load {n}"
    try:
        result = run_rtun(["notify", "-t", title, f"message {n}"], remote_home, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return Outcome("notify", False, f"{type(exc).__name__}: {exc}", name=title, code=-1)
    stderr = result.stderr.decode(errors="replace")
    one_line = stderr.count("\n") == 1 and stderr.startswith("rtun notify: ")
    ok = result.returncode == 0 or (result.returncode == 4 and one_line)
    return Outcome(
        "notify", ok, f"exit {result.returncode}: {stderr.strip()!r}", name=title, code=result.returncode
    )


@dataclass
class MixResult:
    outcomes: List[Outcome] = field(default_factory=list)
    seconds: float = 0.0

    def of(self, *kinds: str) -> List[Outcome]:
        return [o for o in self.outcomes if o.kind in kinds]

    @property
    def failures(self) -> List[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def uploaded_bytes(self) -> int:
        return sum(o.nbytes for o in self.outcomes)


def run_mix(
    uploads: Sequence[Upload],
    remote_home: Path,
    remote_sock: Path,
    save_dir: Path,
    pingers: int = 10,
    notifiers: int = 3,
    min_pings: int = 2,
    on_tick: Optional[Callable[[], None]] = None,
    notify_base: int = 0,
) -> MixResult:
    """Every upload at once, each in a thread of its own, while ``pingers`` threads ping (the
    command and raw PING in turn) and ``notifiers`` threads run `rtun notify`, until the last
    upload is done (each at least ``min_pings`` / two times). Notification titles are
    ``load <notify_base + number>``, distinct within one mix.

    The raw uploads all connect and PING first, and send their requests only once every one of
    them is connected (or 30 s have passed), so the daemon holds them all at the same time.
    ``on_tick`` runs every 50 ms in the caller's thread meanwhile (to sample the daemon)."""
    result = MixResult()
    lock = threading.Lock()
    uploads_done = threading.Event()
    start = threading.Barrier(len(uploads) + pingers + notifiers + 1)
    raw_count = sum(1 for u in uploads if u.kind != "send")
    connected = threading.Barrier(raw_count) if raw_count else None

    def all_connected() -> None:
        assert connected is not None
        try:
            connected.wait(timeout=30)
        except threading.BrokenBarrierError:  # one failed to connect: it is reported itself
            pass

    def record(outcome: Outcome) -> None:
        with lock:
            result.outcomes.append(outcome)

    def uploader(upload: Upload) -> None:
        start.wait()
        outcome = run_upload(
            upload,
            remote_home,
            remote_sock,
            save_dir,
            after_ping=None if upload.kind == "send" else all_connected,
        )
        if upload.kind != "send" and connected is not None and not outcome.ok:
            connected.abort()  # no one waits 30 s for a client that failed before the barrier
        record(outcome)

    def pinger(n: int) -> None:
        start.wait()
        count = 0
        while count < min_pings or not uploads_done.is_set():
            record(run_ping(remote_home, remote_sock, use_command=(n + count) % 2 == 0))
            count += 1

    def notifier(n: int) -> None:
        start.wait()
        count = 0
        while count < 2 or not uploads_done.is_set():
            record(run_notify(remote_home, notify_base + n * 1000 + count))
            count += 1

    upload_threads = [threading.Thread(target=uploader, args=(u,), daemon=True) for u in uploads]
    other_threads = [threading.Thread(target=pinger, args=(n,), daemon=True) for n in range(pingers)]
    other_threads += [threading.Thread(target=notifier, args=(n,), daemon=True) for n in range(notifiers)]
    for t in upload_threads + other_threads:
        t.start()
    start.wait()
    began = time.monotonic()
    while any(t.is_alive() for t in upload_threads):
        if on_tick is not None:
            on_tick()
        for t in upload_threads:
            t.join(timeout=0.05)
            if t.is_alive():
                break
    uploads_done.set()
    for t in other_threads:
        t.join(timeout=120)
        if t.is_alive():
            record(Outcome("thread", False, "a ping or notify client did not finish in 120 s"))
    result.seconds = time.monotonic() - began
    return result


def check_delivered(uploads: Sequence[Upload], save_dir: Path) -> List[str]:
    """Every upload under its final name, byte-identical; returns what is wrong, if anything."""
    problems = []
    for upload in uploads:
        path = save_dir / upload.dest
        if not path.is_file():
            problems.append(f"{upload.dest}: missing")
        elif path.stat().st_size != upload.size:
            problems.append(f"{upload.dest}: {path.stat().st_size} bytes, sent {upload.size}")
        elif sha256_file(path) != upload.sha256:
            problems.append(f"{upload.dest}: content differs")
    return problems


# ---- mounts (root only) -------------------------------------------------------------------------


class Tmpfs:
    """A tmpfs of ``size`` mounted on ``directory``, for a save disk that fills or goes read-only."""

    def __init__(self, directory: Path, size: str) -> None:
        self.directory = directory
        self.size = size
        self.mounted = False

    def mount(self) -> "Tmpfs":
        self.directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size},mode=0755", "tmpfs", str(self.directory)],
            check=True,
            capture_output=True,
        )
        self.mounted = True
        return self

    def remount(self, options: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,{options}", str(self.directory)], check=True, capture_output=True
        )

    def unmount(self) -> None:
        if self.mounted:
            result = subprocess.run(["umount", str(self.directory)], capture_output=True)
            if result.returncode != 0:  # something still has it open: detach it lazily
                subprocess.run(["umount", "-l", str(self.directory)], capture_output=True)
            self.mounted = False


# ---- a transfer held in the middle ----------------------------------------------------------------


class StdinSend:
    """`rtun send - --to DEST` as a real process whose standard input the test writes, so a
    transfer can be held (or broken) in the middle: the daemon has a ``.part`` file by then."""

    def __init__(self, remote_home: Path, dest: str, *extra: str) -> None:
        self.dest = dest
        self.digest = hashlib.sha256()
        self.sent = 0
        self.process = subprocess.Popen(
            RTUN + ["send", "-", "--to", dest] + list(extra),
            env=clean_env(remote_home),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def feed(self, nbytes: int) -> bool:
        """Write ``nbytes`` more random bytes; False once the client no longer reads them."""
        data = os.urandom(nbytes)
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(data)
            self.process.stdin.flush()
        except (BrokenPipeError, ValueError):
            return False
        self.digest.update(data)
        self.sent += nbytes
        return True

    def finish(self, timeout: float = 60) -> Tuple[int, str, str]:
        """Close standard input and wait: (exit code, stdout, stderr)."""
        out, err = self.process.communicate(timeout=timeout)  # closes stdin first
        return self.process.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass


def part_with_data(root: Path, at_least: int) -> Optional[Path]:
    """Polled: a ``.part`` file below ``root`` holding at least ``at_least`` bytes, if any."""
    for path in parts_below(root):
        try:
            if path.stat().st_size >= at_least:
                return path
        except FileNotFoundError:
            continue
    return None


class FreeSpaceWatch:
    """Samples the free space of a disk in a thread until stopped; ``lowest`` is the minimum."""

    def __init__(self, path: Path, interval: float = 0.002) -> None:
        self.path = path
        self.interval = interval
        self.lowest = free_bytes(path)
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.lowest = min(self.lowest, free_bytes(self.path))
                self.samples += 1
            except OSError:
                pass
            self._stop.wait(self.interval)

    def __enter__(self) -> "FreeSpaceWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.lowest = min(self.lowest, free_bytes(self.path))
