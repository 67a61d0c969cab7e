"""`rtun connect --proxy`: ssh's ProxyCommand for a machine on several relays. It opens the
machine's port through the first relay that answers (``ssh -W``, a short ConnectTimeout), and
moves to the next relay when one does not bring the machine's sshd banner within the attempt's
time; then it carries the bytes both ways until either side ends.

What the proxy writes on stdout is the SSH stream: every word for the user goes to stderr.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import threading
import time
from typing import IO, List, Optional, Sequence, Tuple

from rtun.protocol import peertext
from rtun.ssh import argv as sshargv

ATTEMPT = 3  # seconds: ssh's ConnectTimeout for each relay; the banner may take as long again
CHUNK = 65536


def _first_bytes(process: "subprocess.Popen[bytes]", deadline: float) -> bytes:
    """What the stream brings first (an sshd banner starts with ``SSH-``), or b"" when it ends
    or stays silent until ``deadline``."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not selector.select(remaining):
            return b""
    return os.read(fd, CHUNK)


def _reason(process: "subprocess.Popen[bytes]", started: float) -> str:
    if process.poll() is None:
        process.kill()
        process.wait()
        return f"no answer within {time.monotonic() - started:.1f} s"
    assert process.stderr is not None
    said = peertext.last_line(process.stderr.read(65536).decode("utf-8", "replace"))
    return said or f"ssh exited {process.returncode}"


def open_stream(
    ssh: Sequence[str], hops: Sequence[Tuple[str, int]], timeout: int = ATTEMPT, log: Optional[IO[str]] = None
) -> Tuple["subprocess.Popen[bytes]", bytes]:
    """The first relay's stream that brings an sshd banner, and those first bytes; raises
    OSError naming every relay tried when none does."""
    failures: List[str] = []
    for relay, port in hops:
        started = time.monotonic()
        argv = sshargv.stream_argv(ssh, relay, "127.0.0.1", port, timeout)
        process = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        first = _first_bytes(process, started + 2 * timeout)
        if first.startswith(b"SSH-"):
            return process, first
        failures.append(f"{relay}: {_reason(process, started)}")
        if log is not None:
            print(f"rtun connect: {failures[-1]}; trying the next relay", file=log, flush=True)
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    raise OSError("no relay brought the machine's sshd: " + "; ".join(failures))


STREAM_END = 10.0  # seconds the stream to the relay may take to end once our side has


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _pump(source: int, sink: int) -> bool:
    """Copy until ``source`` ends (True) or ``sink`` fails (False)."""
    while True:
        try:
            data = os.read(source, CHUNK)
        except OSError:
            data = b""
        if not data:
            return True
        try:
            _write_all(sink, data)
        except OSError:
            return False


def carry(process: "subprocess.Popen[bytes]", first: bytes, stdin_fd: int = 0, stdout_fd: int = 1) -> int:
    """Bytes both ways between our stdin/stdout and the stream, until the stream ends."""
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    to_relay = process.stdin

    def upstream() -> None:
        _pump(stdin_fd, to_relay.fileno())
        to_relay.close()  # the client is done writing: half-close towards the machine

    threading.Thread(target=upstream, daemon=True).start()
    threading.Thread(target=process.stderr.read, daemon=True).start()  # never let it fill
    try:
        _write_all(stdout_fd, first)
        ended = _pump(process.stdout.fileno(), stdout_fd)
    except OSError:
        ended = False
    if not ended:  # our ssh client is gone: the stream to the relay goes too
        process.kill()
    try:
        return process.wait(timeout=STREAM_END)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
